"""The option table: every command-line option and config-file key, its kind, converter, default and help.

The lexer (``_argv``), the config file (``_config_file``) and the help and ``--generate-config`` renderers
(``_render``) all read this one table; none of them knows an option by name except where noted there.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import attrs

from ._values import FLOAT, INT, PORT, TEXT, Converter, log_format, log_level

__all__ = ["CONFIGURABLE", "OPTIONS", "Kind", "Option", "action", "switch", "value"]


class Kind(enum.Enum):
    """How an option is written and what it holds."""

    #: true or false: ``--x``, ``--x=false``, ``--x false``, ``--no-x``; ``c.IdleCuller.x = True``.
    SWITCH = "switch"
    #: A command-line action such as ``--help``: alone it means true; no ``--no-`` form; never in a config file.
    ACTION = "action"
    #: Takes a value: ``--x=V`` or ``--x V``, read by the option's converter.
    VALUE = "value"


@attrs.frozen(kw_only=True)
class Option:
    #: The key in the parsed values (and, for culling options, the Config field / original trait name).
    dest: str
    kind: Kind
    help: str
    convert: Converter = TEXT
    default: Any = None
    #: Shown in ``--help`` and ``--generate-config``; False for aliases that only exist for compatibility.
    listed: bool = True
    #: Also settable as ``c.IdleCuller.<dest>`` in a config file.
    configurable: bool = True


def value(
    dest: str,
    help: str,
    convert: Converter = TEXT,
    default: Any = None,
    *,
    listed: bool = True,
    configurable: bool = True,
) -> Option:
    """An option that takes a value, e.g. ``--timeout=600``."""
    return Option(
        dest=dest,
        kind=Kind.VALUE,
        help=help,
        convert=convert,
        default=default,
        listed=listed,
        configurable=configurable,
    )


def switch(dest: str, help: str, *, default: bool, configurable: bool = True) -> Option:
    """A true/false option, e.g. ``--cull-users`` / ``--no-cull-users``."""
    return Option(dest=dest, kind=Kind.SWITCH, help=help, default=default, configurable=configurable)


def action(dest: str, help: str, *, listed: bool = True) -> Option:
    """A command-line-only action, e.g. ``--help``: true when given."""
    return Option(dest=dest, kind=Kind.ACTION, help=help, listed=listed, configurable=False)


#: Every option, keyed by its dashed command-line name, in ``--help`` order.
OPTIONS: dict[str, Option] = {
    # The original's options, with its defaults.
    "url": value("url", "The JupyterHub API URL (default: $JUPYTERHUB_API_URL, else http://127.0.0.1:8081/hub/api)."),
    "timeout": value("timeout", "The idle timeout in seconds.", FLOAT, 600),
    "cull-every": value("cull_every", "Seconds between passes; 0 means timeout/2.", FLOAT, 0),
    "max-age": value("max_age", "Cull servers older than this many seconds even if active; 0 disables it.", FLOAT, 0),
    "cull-users": switch("cull_users", "Delete idle users too (temporary-user deployments).", default=False),
    "cull-admin-users": switch(
        "cull_admin_users", "Whether admin users may be deleted (with --cull-users).", default=True
    ),
    "remove-named-servers": switch(
        "remove_named_servers", "Delete culled named servers, not only stop them.", default=False
    ),
    "cull-default-servers": switch("cull_default_servers", "Whether idle default servers are culled.", default=True),
    "cull-named-servers": switch("cull_named_servers", "Whether idle named servers are culled.", default=True),
    "concurrency": value("concurrency", "Most requests in flight to the hub at once; 0 means no bound.", INT, 10),
    "api-page-size": value("api_page_size", "Users per page of the user list; 0 leaves it to the hub.", INT, 0),
    "ssl-enabled": switch("ssl_enabled", "The hub API uses internal TLS (JupyterHub's internal_ssl).", default=False),
    "internal-certs-location": value(
        "internal_certs_location", "Where internal_ssl wrote its certificates.", default="internal-ssl"
    ),
    "config": value(
        "config_file", "Config file to load (loaded if it exists).", default="idle_culler_config.py", configurable=False
    ),
    "generate-config": action("generate_config", "Print a config file with every option and exit."),
    # Ours.
    "inspect-kernels": switch(
        "inspect_kernels",
        "Before culling an idle server, ask it (through the proxy) for its kernels and terminals: a busy kernel "
        "spares it. The token needs access:servers.",
        default=False,
    ),
    "max-busy": value(
        "max_busy",
        "With --inspect-kernels: seconds a busy kernel protects its server at most; 0 means no limit.",
        FLOAT,
        0,
    ),
    "kernel-activity-only": switch(
        "kernel_activity_only",
        "With --inspect-kernels: measure idleness from kernels and terminals only, so an open browser tab no longer "
        "keeps a server alive (a user editing files without a kernel counts as idle). Every ready server is then "
        "inspected at each pass, not only the idle ones.",
        default=False,
    ),
    "public-url": value(
        "public_url",
        "The hub's public URL, where --inspect-kernels reaches servers when the hub gives no full_url "
        "(default: the hub's, from $JUPYTERHUB_PUBLIC_HUB_URL).",
    ),
    "once": action("once", "Run one pass and exit: status 0 if it completed without errors, else 1."),
    "progress-bar": switch(
        "progress_bar", "With --once on a terminal, draw a progress bar.", default=True, configurable=False
    ),
    "dry-run": switch("dry_run", "Decide and log as usual, but send no DELETE.", default=False),
    "show-config": action("show_config", "Print the effective configuration as JSON and exit."),
    "demo": action("demo", "Run one pass against a simulated hub in this process, print what it culled, exit."),
    "log-level": value("log_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", log_level, logging.INFO),
    "debug": action("debug", "Same as --log-level=DEBUG."),
    "log-format": value(
        "log_format", "text (JupyterHub-like lines) or json (one object per line).", log_format, "text"
    ),
    "metrics-port": value("metrics_port", "Serve Prometheus metrics on this port (0: off).", PORT, 0),
    "metrics-address": value("metrics_address", "Address for --metrics-port.", default="127.0.0.1"),
    "progress-interval": value("progress_interval", "Seconds between progress lines during a pass.", FLOAT, 10),
    "max-retries": value("max_retries", "Retries of a request that failed transiently.", INT, 5),
    "grace-period": value("grace_period", "Seconds in-flight requests get after SIGTERM/SIGINT.", FLOAT, 5),
    "rules-file": value(
        "rules_file", "A TOML ([[rules]] tables) or JSON file of rules per user, group, server and profile."
    ),
    "warn-before": value(
        "warn_before",
        "Warn a server's user at least this many seconds before its cull (to the server itself, and to --warn-url "
        "or warn_hook); 0: off.",
        FLOAT,
        0,
    ),
    "warn-url": value(
        "warn_url", "POST each warning (and its cancellation or cull) here as JSON, never with the hub token."
    ),
    "warn-servers": switch(
        "warn_servers",
        "With --warn-before, deliver each warning to the server itself (trio-culler-notice) and read its user's "
        "keep before the cull (needs tokens).",
        default=True,
    ),
    "state-file": value(
        "state_file",
        'With --warn-before, the file that keeps who was warned, and when, across restarts ("": memory only).',
        default="trio-culler-state.json",
    ),
    "explain": value(
        "explain",
        "Print, without acting, how this user's servers would be decided (rule, idle time, limits) and exit.",
        configurable=False,
    ),
    "explain-server": value(
        "explain_server", 'With --explain: only this server ("" is the default one).', configurable=False
    ),
    "use-proxy-env": switch("use_proxy_env", "Route hub traffic through HTTP(S)_PROXY (off: ignored).", default=False),
    "status-page": switch(
        "status_page",
        "Serve the status page when the hub gives this service a url (JUPYTERHUB_SERVICE_URL) or with --status-bind.",
        default=True,
    ),
    "status-bind": value(
        "status_bind", "Serve the status page on HOST:PORT (standalone; see the README's OAuth setup)."
    ),
    "status-history": value(
        "status_history", "Passes and culls the status page keeps (memory is bounded by it).", INT, 100
    ),
    "help": action("help", "Show this help and exit."),
    "version": action("version", "Show the version and exit."),
    # Compatibility spellings, not listed.
    "logging": value(
        "log_level", "1.x (tornado) spelling of --log-level.", log_level, listed=False, configurable=False
    ),
    "help-all": action("help", "Same as --help.", listed=False),
    "h": action("help", "Same as --help.", listed=False),
}

#: The options a config file may set, keyed by ``dest`` (the ``c.IdleCuller.<dest>`` name).
CONFIGURABLE: dict[str, Option] = {option.dest: option for option in OPTIONS.values() if option.configurable}
