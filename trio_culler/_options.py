"""The command line and config file of ``jupyterhub-idle-culler`` 1.x and 2.0, read into plain values.

Both generations of syntax are accepted, because deployments generated for either exist:

- ``--opt=value`` and ``--opt value``; ``--cull_every`` as well as ``--cull-every`` (1.x, tornado);
  ``--IdleCuller.timeout=600`` (2.0, traitlets);
- boolean options with no value mean true (``--cull-users``), which 2.0 rejects and 1.x accepted;
  ``--no-cull-users`` means false; values ``true/false/1/0/yes/no/on/off`` in any case;
- ``--logging=debug`` (1.x) alongside ``--log-level=DEBUG`` and ``--debug``.

A config file is Python assigning ``c.IdleCuller.<option> = value`` (2.0's format); ``get_config()`` returns
``c``, as in traitlets config files. Command-line values override the file.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._errors import ConfigError

__all__ = ["OPTIONS", "Option", "ParsedArgs", "load_config_file", "parse_args", "render_default_config"]

_TRUE = frozenset({"true", "1", "yes", "on", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "f"})


def parse_bool(text: str, option: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"--{option}: expected true or false, not {text!r}")


def _number(kind: type[int] | type[float]) -> Callable[[str, str], float]:
    def convert(text: str, option: str) -> float:
        try:
            value = kind(text.strip())
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ConfigError(f"--{option}: expected {noun}, not {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{option}: must not be negative, not {text!r}")
        return value

    return convert


def _text(text: str, _option: str) -> str:
    return text


def _log_level(text: str, option: str) -> int:
    names = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "critical": 50}
    lowered = text.strip().lower()
    if lowered in names:
        return names[lowered]
    if lowered.isdigit():
        return int(lowered)
    raise ConfigError(f"--{option}: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {text!r}")


def _log_format(text: str, option: str) -> str:
    if text.strip().lower() not in ("text", "json"):
        raise ConfigError(f"--{option}: expected text or json, not {text!r}")
    return text.strip().lower()


@attrs.frozen
class Option:
    #: The key in the parsed values (and, for culling options, the Config field / original trait name).
    dest: str
    kind: str  # "bool" | "flag" | "value"
    help: str
    convert: Callable[[str, str], Any] = _text
    default: Any = None
    #: Shown in ``--help`` and ``--generate-config``; False for aliases that only exist for compatibility.
    listed: bool = True
    #: Also settable as ``c.IdleCuller.<dest>`` in a config file.
    configurable: bool = True


def _o(
    dest: str,
    kind: str,
    help: str,
    convert: Callable[[str, str], Any] = _text,
    default: Any = None,
    **kw: Any,
) -> Option:
    return Option(dest, kind, help, convert, default, **kw)


_INT = _number(int)
_FLOAT = _number(float)

#: Every option, keyed by its dashed command-line name.
OPTIONS: dict[str, Option] = {
    # The original's options, with its defaults.
    "url": _o(
        "url",
        "value",
        "The JupyterHub API URL (default: $JUPYTERHUB_API_URL, else http://127.0.0.1:8081/hub/api).",
    ),
    "timeout": _o("timeout", "value", "The idle timeout in seconds.", _FLOAT, 600),
    "cull-every": _o("cull_every", "value", "Seconds between passes; 0 means timeout/2.", _FLOAT, 0),
    "max-age": _o(
        "max_age",
        "value",
        "Cull servers older than this many seconds even if active; 0 disables it.",
        _FLOAT,
        0,
    ),
    "cull-users": _o("cull_users", "bool", "Delete idle users too (temporary-user deployments).", default=False),
    "cull-admin-users": _o(
        "cull_admin_users", "bool", "Whether admin users may be deleted (with --cull-users).", default=True
    ),
    "remove-named-servers": _o(
        "remove_named_servers", "bool", "Delete culled named servers, not only stop them.", default=False
    ),
    "cull-default-servers": _o(
        "cull_default_servers", "bool", "Whether idle default servers are culled.", default=True
    ),
    "cull-named-servers": _o("cull_named_servers", "bool", "Whether idle named servers are culled.", default=True),
    "concurrency": _o(
        "concurrency", "value", "Most requests in flight to the hub at once; 0 means no bound.", _INT, 10
    ),
    "api-page-size": _o("api_page_size", "value", "Users per page of the user list; 0 leaves it to the hub.", _INT, 0),
    "ssl-enabled": _o(
        "ssl_enabled", "bool", "The hub API uses internal TLS (JupyterHub's internal_ssl).", default=False
    ),
    "internal-certs-location": _o(
        "internal_certs_location",
        "value",
        "Where internal_ssl wrote its certificates.",
        default="internal-ssl",
    ),
    "config": _o(
        "config_file",
        "value",
        "Config file to load (loaded if it exists).",
        default="idle_culler_config.py",
        configurable=False,
    ),
    "generate-config": _o(
        "generate_config", "flag", "Print a config file with every option and exit.", configurable=False
    ),
    # Ours.
    "once": _o(
        "once",
        "flag",
        "Run one pass and exit: status 0 if it completed without errors, else 1.",
        configurable=False,
    ),
    "progress-bar": _o(
        "progress_bar", "bool", "With --once on a terminal, draw a progress bar.", default=True, configurable=False
    ),
    "dry-run": _o("dry_run", "bool", "Decide and log as usual, but send no DELETE.", default=False),
    "show-config": _o("show_config", "flag", "Print the effective configuration as JSON and exit.", configurable=False),
    "demo": _o(
        "demo",
        "flag",
        "Run one pass against a simulated hub in this process, print what it culled, exit.",
        configurable=False,
    ),
    "log-level": _o("log_level", "value", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", _log_level, logging.INFO),
    "debug": _o("debug", "flag", "Same as --log-level=DEBUG.", configurable=False),
    "log-format": _o(
        "log_format",
        "value",
        "text (JupyterHub-like lines) or json (one object per line).",
        _log_format,
        "text",
    ),
    "metrics-port": _o("metrics_port", "value", "Serve Prometheus metrics on this port (0: off).", _INT, 0),
    "metrics-address": _o("metrics_address", "value", "Address for --metrics-port.", default="127.0.0.1"),
    "progress-interval": _o("progress_interval", "value", "Seconds between progress lines during a pass.", _FLOAT, 10),
    "max-retries": _o("max_retries", "value", "Retries of a request that failed transiently.", _INT, 5),
    "grace-period": _o("grace_period", "value", "Seconds in-flight requests get after SIGTERM/SIGINT.", _FLOAT, 5),
    "use-proxy-env": _o(
        "use_proxy_env", "bool", "Route hub traffic through HTTP(S)_PROXY (off: ignored).", default=False
    ),
    "help": _o("help", "flag", "Show this help and exit.", configurable=False),
    "version": _o("version", "flag", "Show the version and exit.", configurable=False),
    # Compatibility spellings, not listed.
    "logging": _o(
        "log_level",
        "value",
        "1.x (tornado) spelling of --log-level.",
        _log_level,
        listed=False,
        configurable=False,
    ),
    "help-all": _o("help", "flag", "Same as --help.", listed=False, configurable=False),
    "h": _o("help", "flag", "Same as --help.", listed=False, configurable=False),
}

_CONFIGURABLE = {option.dest: option for option in OPTIONS.values() if option.configurable}


@attrs.frozen
class ParsedArgs:
    #: dest -> value, only for what the command line set.
    values: dict[str, Any]


def _normalise(name: str) -> str:
    for prefix in ("IdleCuller.", "Application."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace("_", "-")


def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, [n for n, o in OPTIONS.items() if o.listed], n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return ConfigError(f"unknown option --{name}{hint}; see --help")


def _looks_like_bool(token: str) -> bool:
    return token.strip().lower() in _TRUE | _FALSE


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Read ``argv`` (without the program name) into values; raises ConfigError naming the option."""
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise ConfigError(f"unexpected argument {token!r}: options look like --timeout=600")
        raw_name, has_value, value = token.lstrip("-").partition("=")
        name = _normalise(raw_name)
        negated = False
        if name not in OPTIONS and name.startswith("no-") and OPTIONS.get(name[3:]) is not None:
            name, negated = name[3:], True
        option = OPTIONS.get(name)
        if option is None:
            raise _unknown(name)
        if negated:
            if option.kind != "bool" or has_value:
                raise ConfigError(f"--no-{name} takes no value and only applies to true/false options")
            values[option.dest] = False
        elif option.kind in ("bool", "flag"):
            if has_value:
                values[option.dest] = parse_bool(value, name)
            elif index < len(argv) and _looks_like_bool(argv[index]):
                # `--cull-users true`: the traitlets form with a space.
                values[option.dest] = parse_bool(argv[index], name)
                index += 1
            else:
                values[option.dest] = True
        else:
            if not has_value:
                if index >= len(argv) or argv[index].startswith("--"):
                    raise ConfigError(f"--{name} needs a value, e.g. --{name}=VALUE")
                value = argv[index]
                index += 1
            values[option.dest] = option.convert(value, name)
    return ParsedArgs(values)


class _Section:
    """``c.IdleCuller``: records assignments; reading an unset option gives its default."""

    def __init__(self, name: str, store: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_store", store)

    def __setattr__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __getattr__(self, key: str) -> Any:
        if key in self._store:
            return self._store[key]
        option = _CONFIGURABLE.get(key)
        return None if option is None else option.default


class _ConfigRoot:
    def __init__(self) -> None:
        object.__setattr__(self, "_sections", {})

    def __getattr__(self, name: str) -> _Section:
        sections: dict[str, dict[str, Any]] = object.__getattribute__(self, "_sections")
        return _Section(name, sections.setdefault(name, {}))

    def __setattr__(self, key: str, value: Any) -> None:
        raise ConfigError(f"config file: assign options as c.IdleCuller.{key} = ..., not c.{key}")


def load_config_file(path: str, *, required: bool) -> dict[str, Any]:
    """Execute a config file and return ``{dest: value}``; a missing default file is not an error."""
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"--config: no such file {path!r}")
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path!r}: {error.strerror or error}") from None
    root = _ConfigRoot()
    namespace: dict[str, Any] = {
        "c": root,
        "get_config": lambda: root,
        "__file__": path,
        "__name__": "__config__",
    }
    try:
        exec(compile(source, path, "exec"), namespace)
    except ConfigError:
        raise
    except SyntaxError as error:
        raise ConfigError(f"--config: {path}:{error.lineno}: {error.msg}") from None
    except Exception as error:
        raise ConfigError(f"--config: {path} raised {type(error).__name__}: {error}") from None
    sections: dict[str, dict[str, Any]] = object.__getattribute__(root, "_sections")
    values: dict[str, Any] = {}
    for section, assigned in sections.items():
        for key, value in assigned.items():
            if section == "Application" and key == "log_level":
                values["log_level"] = _config_value(OPTIONS["log-level"], key, value)
            elif section != "IdleCuller":
                logging.getLogger("trio_culler").warning(
                    "Ignoring c.%s.%s in %s: not a culler option", section, key, path
                )
            elif key == "cull_arbiter_hook":
                if value is None:
                    continue
                if not callable(value):
                    raise ConfigError(f"c.IdleCuller.cull_arbiter_hook in {path} must be callable")
                values[key] = value
            elif key in ("config_file", "generate_config"):
                continue
            elif key in _CONFIGURABLE:
                if value is None and _CONFIGURABLE[key].default is None:
                    continue  # None is the "unset" default (e.g. url: take JUPYTERHUB_API_URL)
                values[key] = _config_value(_CONFIGURABLE[key], key, value)
            else:
                raise ConfigError(f"c.IdleCuller.{key} in {path}: unknown option")
    return values


def _config_value(option: Option, key: str, value: Any) -> Any:
    """A config file holds Python values; accept them where the command line would accept their text."""
    name = f"IdleCuller.{key}"
    if option.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value, name)
        raise ConfigError(f"c.{name} must be True or False, not {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"c.{name} must not be a boolean")
    if option.convert is _text:
        if not isinstance(value, str):
            raise ConfigError(f"c.{name} must be a string, not {value!r}")
        return value
    if option.convert is _INT and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"c.{name} must be a whole number, not {value!r}")
    return option.convert(str(value), name)


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
        default = "" if option.default is None or option.kind == "flag" else f" (default {option.default})"
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
