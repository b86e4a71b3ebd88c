"""The option table as text: ``--help`` and ``--generate-config``."""

from __future__ import annotations

from ._table import OPTIONS, Kind

__all__ = ["render_default_config", "render_help"]


def render_default_config() -> str:
    """A config file listing every option with its default, commented out (``--generate-config``)."""
    lines = [
        "# Configuration file for trio-culler (and jupyterhub-idle-culler 2.0).",
        "",
        "c = get_config()  # noqa",
        "",
    ]
    for option in OPTIONS.values():
        if not option.listed or not option.configurable:
            continue
        lines.append(f"## {option.help}")
        default = option.default
        if option.dest == "log_level":
            default = "INFO"
        lines.append(f"# c.IdleCuller.{option.dest} = {default!r}")
        lines.append("")
    lines.append("## A callable (inactive, inactive_limit, server) -> bool, sync or async, consulted instead of")
    lines.append("## `inactive >= timeout` for every ready server with a known idle time.")
    lines.append("# c.IdleCuller.cull_arbiter_hook = None")
    lines.append("")
    lines.append("## Rules per user, group, server and profile; the first that matches decides (see the README), e.g.")
    lines.append('##   [{"users": ["svc-*"], "cull": False}, {"groups": ["overnight"], "timeout": 86400}]')
    lines.append("# c.IdleCuller.rules = []")
    lines.append("")
    lines.append("## A callable (user, server, cull_at), sync or async, called --warn-before seconds before a cull.")
    lines.append("# c.IdleCuller.warn_hook = None")
    return "\n".join(lines) + "\n"


def render_help(program: str) -> str:
    lines = [
        f"usage: {program} [--option=value ...]",
        "",
        "Stops idle JupyterHub servers (and users) through the hub's REST API.",
        "",
    ]
    for name, option in OPTIONS.items():
        if not option.listed:
            continue
        default = "" if option.default is None or option.kind is Kind.ACTION else f" (default {option.default})"
        if option.dest == "log_level":
            default = " (default INFO)"
        lines.append(f"  --{name:<26}{option.help}{default}")
    lines += [
        "",
        "Environment: JUPYTERHUB_API_TOKEN (required to run), JUPYTERHUB_API_URL, JUPYTERHUB_REQUEST_TIMEOUT",
        "(seconds per request, default 60), JUPYTERHUB_SSL_KEYFILE / _CERTFILE / _CLIENT_CA (with --ssl-enabled).",
        "Values may be written --opt=value or --opt value; --flag alone means true; --no-flag means false.",
    ]
    return "\n".join(lines) + "\n"
