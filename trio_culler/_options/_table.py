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
    #: The key in the parsed values (and, for culling options, the Config field / original trait name); a row of
    #: :data:`OPTIONS` gives it only where it is not the option's name with underscores.
    dest: str = ""
    kind: Kind
    help: str
    convert: Converter = TEXT
    default: Any = None
    #: Shown in ``--help`` and ``--generate-config``; False for aliases that only exist for compatibility.
    listed: bool = True
    #: Also settable as ``c.IdleCuller.<dest>`` in a config file.
    configurable: bool = True


def value(
    help: str,
    convert: Converter = TEXT,
    default: Any = None,
    *,
    listed: bool = True,
    configurable: bool = True,
    dest: str = "",
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


def switch(help: str, *, default: bool, configurable: bool = True) -> Option:
    """A true/false option, e.g. ``--cull-users`` / ``--no-cull-users``."""
    return Option(kind=Kind.SWITCH, help=help, default=default, configurable=configurable)


def action(help: str, *, listed: bool = True, dest: str = "") -> Option:
    """A command-line-only action, e.g. ``--help``: true when given."""
    return Option(dest=dest, kind=Kind.ACTION, help=help, listed=listed, configurable=False)


#: Every option, keyed by its dashed command-line name, in ``--help`` order.
OPTIONS: dict[str, Option] = {
    # The original's options, with its defaults.
    "url": value("The JupyterHub API URL (default: $JUPYTERHUB_API_URL, else http://127.0.0.1:8081/hub/api)."),
    "timeout": value("The idle timeout in seconds.", FLOAT, 600),
    "cull-every": value("Seconds between passes; 0 means timeout/2.", FLOAT, 0),
    "max-age": value("Cull servers older than this many seconds even if active; 0 disables it.", FLOAT, 0),
    "cull-users": switch("Delete idle users too (temporary-user deployments).", default=False),
    "cull-admin-users": switch("Whether admin users may be deleted (with --cull-users).", default=True),
    "remove-named-servers": switch("Delete culled named servers, not only stop them.", default=False),
    "cull-default-servers": switch("Whether idle default servers are culled.", default=True),
    "cull-named-servers": switch("Whether idle named servers are culled.", default=True),
    "concurrency": value("Most requests in flight to the hub at once; 0 means no bound.", INT, 10),
    "api-page-size": value("Users per page of the user list; 0 leaves it to the hub.", INT, 0),
    "ssl-enabled": switch("The hub API uses internal TLS (JupyterHub's internal_ssl).", default=False),
    "internal-certs-location": value("Where internal_ssl wrote its certificates.", default="internal-ssl"),
    "config": value(
        "Config file to load (loaded if it exists).",
        default="idle_culler_config.py",
        configurable=False,
        dest="config_file",
    ),
    "generate-config": action("Print a config file with every option and exit."),
    # Ours.
    "inspect-kernels": switch(
        "Before culling an idle server, ask it (through the proxy) for its kernels and terminals: a busy kernel "
        "spares it. The token needs access:servers.",
        default=False,
    ),
    "max-busy": value(
        "With --inspect-kernels: seconds a busy kernel protects its server at most; 0 means no limit.",
        FLOAT,
        0,
    ),
    "kernel-activity-only": switch(
        "With --inspect-kernels: measure idleness from kernels and terminals only, so an open browser tab no longer "
        "keeps a server alive (a user editing files without a kernel counts as idle). Every ready server is then "
        "inspected at each pass, not only the idle ones.",
        default=False,
    ),
    "public-url": value(
        "The hub's public URL, where --inspect-kernels reaches servers when the hub gives no full_url "
        "(default: the hub's, from $JUPYTERHUB_PUBLIC_HUB_URL).",
    ),
    "once": action("Run one pass and exit: status 0 if it completed without errors, else 1."),
    "progress-bar": switch("With --once on a terminal, draw a progress bar.", default=True, configurable=False),
    "dry-run": switch("Decide and log as usual, but send no DELETE.", default=False),
    "show-config": action("Print the effective configuration as JSON and exit."),
    "demo": action("Run one pass against a simulated hub in this process, print what it culled, exit."),
    "log-level": value("DEBUG, INFO, WARNING, ERROR or CRITICAL.", log_level, logging.INFO),
    "debug": action("Same as --log-level=DEBUG."),
    "log-format": value("text (JupyterHub-like lines) or json (one object per line).", log_format, "text"),
    "metrics-port": value("Serve Prometheus metrics on this port (0: off).", PORT, 0),
    "metrics-address": value("Address for --metrics-port.", default="127.0.0.1"),
    "progress-interval": value("Seconds between progress lines during a pass.", FLOAT, 10),
    "max-retries": value("Retries of a request that failed transiently.", INT, 5),
    "grace-period": value("Seconds in-flight requests get after SIGTERM/SIGINT.", FLOAT, 5),
    "rules-file": value("A TOML ([[rules]] tables) or JSON file of rules per user, group, server and profile."),
    "warn-before": value(
        "Warn a server's user at least this many seconds before its cull (to the server itself, and to --warn-url "
        "or warn_hook); 0: off.",
        FLOAT,
        0,
    ),
    "warn-url": value("POST each warning (and its cancellation or cull) here as JSON, never with the hub token."),
    "warn-servers": switch(
        "With --warn-before, deliver each warning to the server itself (trio-culler-notice) and read its user's "
        "keep before the cull (needs tokens).",
        default=True,
    ),
    "state-file": value(
        'With --warn-before, the file that keeps who was warned, and when, across restarts ("": memory only).',
        default="trio-culler-state.json",
    ),
    "explain": value(
        "Print, without acting, how this user's servers would be decided (rule, idle time, limits) and exit.",
        configurable=False,
    ),
    "explain-server": value('With --explain: only this server ("" is the default one).', configurable=False),
    "use-proxy-env": switch("Route hub traffic through HTTP(S)_PROXY (off: ignored).", default=False),
    "status-page": switch(
        "Serve the status page when the hub gives this service a url (JUPYTERHUB_SERVICE_URL) or with --status-bind.",
        default=True,
    ),
    "status-bind": value("Serve the status page on HOST:PORT (standalone; see the README's OAuth setup)."),
    "status-history": value("Passes and culls the status page keeps (memory is bounded by it).", INT, 100),
    "help": action("Show this help and exit."),
    "version": action("Show the version and exit."),
    # Compatibility spellings, not listed.
    "logging": value(
        "1.x (tornado) spelling of --log-level.", log_level, listed=False, configurable=False, dest="log_level"
    ),
    "help-all": action("Same as --help.", listed=False, dest="help"),
    "h": action("Same as --help.", listed=False, dest="help"),
}
# A row gives ``dest`` only where it is not the option's name with underscores (``cull-every``: ``cull_every``,
# the original's trait name).
OPTIONS = {name: attrs.evolve(option, dest=option.dest or name.replace("-", "_")) for name, option in OPTIONS.items()}

#: The options a config file may set, keyed by ``dest`` (the ``c.IdleCuller.<dest>`` name).
CONFIGURABLE: dict[str, Option] = {option.dest: option for option in OPTIONS.values() if option.configurable}
