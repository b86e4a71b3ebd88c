"""A culler whose configuration cannot be used, kept up where exiting would take its hub down.

JupyterHub waits at start-up for a managed service with a ``url``, and refuses to start when that service exits
first ("Service idle-culler exited with status 2"): a typo in a rules file would take the whole hub down. So a
managed service with a ``url`` (the hub sets ``JUPYTERHUB_SERVICE_URL``) whose configuration cannot be used
stays up instead, *on standby*: its status page answers (to those the hub lets in, as always) with the error and
nothing else, ``trio_culler_config_error`` is 1 at the page's ``metrics``, no pass runs, and the error is logged
at once and again every pass interval until the service is stopped (the hub starts it again; with the fix, it
culls). Everywhere else (a standalone culler, ``--once``, ``--show-config`` and the like, a service without
``url``) the command line exits 2 with the one line, as before: there the exit is the loudest signal.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ._clients import make_ssl_context
from ._config import Config
from ._errors import ConfigError
from ._history import History
from ._options import OPTIONS, load_config_file, parse_args
from ._options._argv import _normalise

__all__ = ["interval_in_force", "run_standby", "salvage", "standby_applies", "standby_config"]

log = logging.getLogger("trio_culler")

#: Options that ask for one answer and an exit: an error there is the operator's to read at once.
_ONE_SHOT = frozenset(
    {"once", "explain", "explain-server", "show-config", "help", "version", "generate-config", "demo"}
)


def standby_applies(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether a configuration error keeps this process up: a managed service with a ``url``, not asked for a
    one-shot answer (read loosely from ``argv``, which may be what failed to parse)."""
    if not environ.get("JUPYTERHUB_SERVICE_URL"):
        return False
    names = {_normalise(token.lstrip("-").partition("=")[0]) for token in argv if token.startswith("-")}
    return names.isdisjoint(_ONE_SHOT)


def salvage(argv: Sequence[str]) -> dict[str, Any]:
    """What the configuration says, as far as it can be read: the config file if it loads, then each option of
    ``argv`` that reads on its own (``dest -> value``, as :func:`._options.parse_args` gives them)."""
    values: dict[str, Any] = {}
    try:
        path = parse_args(argv).values.get("config_file", OPTIONS["config"].default)
    except ConfigError:
        path = OPTIONS["config"].default
    with contextlib.suppress(ConfigError):
        values.update(load_config_file(path, required=False))
    for token in argv:
        try:
            values.update(parse_args([token]).values)
        except ConfigError:
            continue
    return values


def interval_in_force(values: Mapping[str, Any]) -> float:
    """The seconds between passes that ``values`` (from :func:`salvage`) ask for, else the default: how often
    the error is logged again."""
    defaults = Config(api_token="")
    try:
        return attrs.evolve(
            defaults,
            timeout=float(values.get("timeout", defaults.timeout)),
            cull_every=float(values.get("cull_every", defaults.cull_every)),
        ).interval
    except (ConfigError, TypeError, ValueError):
        return defaults.interval


def standby_config(environ: Mapping[str, str], config: Config | None = None) -> Config:
    """What the page needs to log admins in through the hub (the hub's API URL and the service's token, TLS):
    ``config`` when it was read, else the variables the hub gave the service; TLS as far as it can be set up."""
    if config is None:
        try:
            # With internal_ssl the hub gives its services https URLs and their TLS files.
            internal_ssl = environ.get("JUPYTERHUB_API_URL", "").startswith("https://") and bool(
                environ.get("JUPYTERHUB_SSL_CERTFILE")
            )
            config = Config.from_environment(environ, ssl_enabled=internal_ssl)
        except ConfigError:
            config = _hub_alone(environ)
    try:
        make_ssl_context(config)
    except ConfigError:
        config = attrs.evolve(config, ssl_enabled=False)
    return config


def _hub_alone(environ: Mapping[str, str]) -> Config:
    """The hub's API URL and the token, when the rest of the hub's variables cannot be used. The token is the
    page's OAuth client secret: it goes to the URL the hub gave, never to the default one in its place (on a
    host whose users have shells, anyone's process may listen there); without a usable URL, it goes nowhere and
    nobody can log in (the error is logged all the same)."""
    token = environ.get("JUPYTERHUB_API_TOKEN", "")
    url = environ.get("JUPYTERHUB_API_URL")
    if not url:
        return Config(api_token=token)  # where a culler without the variable sends it too
    try:
        return Config(api_token=token, url=url)
    except ConfigError:
        return Config(api_token="")


async def run_standby(
    message: str,
    *,
    interval: float,
    serve_page: Any,
    history: History,
) -> int:
    """Serve the page with ``message`` (``serve_page`` is :func:`~.web.serve_status_page` with its settings
    bound), log the error every ``interval`` seconds, run nothing else; 2 once a signal ends it."""
    history.config_error(message)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(partial(serve_page, history=history))
            except OSError as error:
                log.error("Status page: cannot listen: %s", error.strerror or error, extra={"event": "startup_error"})
                return 2
            nursery.start_soon(_repeat, message, interval)
            received = signal.Signals(await anext(signals)).name
            log.info("Received %s: exiting (the configuration error stands)", received)
            nursery.cancel_scope.cancel()
    return 2


async def _repeat(message: str, interval: float) -> None:
    while True:
        log.error(
            "Configuration error: %s. No pass runs until it is fixed and the culler restarted (the status page "
            "says so too); check a fix with --show-config",
            message.rstrip("."),
            extra={"event": "config_error"},
        )
        await trio.sleep(interval)
