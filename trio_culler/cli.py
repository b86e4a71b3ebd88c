"""``trio-culler`` / ``python -m trio_culler``: argv and environment in, a running culler out.

This is the only module that reads argv and the environment, installs signal handlers, or decides exit
statuses: 0 on success and after SIGTERM/SIGINT, 1 when ``--once`` recorded errors or could not reach the hub,
2 for bad input (one line on stderr that names the option, never a traceback). A managed service with a ``url``
does not exit for bad input, which would stop its hub from starting: it waits on standby with the error on its
status page (``_standby``), and exits 2 only when stopped.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio_util import run_and_cancelling

from ._config import Config
from ._errors import ConfigError, first_leaf
from ._history import History
from ._hub import check_client_settings
from ._logging import configure_logging
from ._options import OPTIONS, load_config_file, load_rules_file, parse_args, render_default_config, render_help
from ._options._values import LEGACY_LOG_FORMAT
from ._progress import draw_progress_bar
from ._redact import make_redactor, url_secrets
from ._report import PassRecorder, PassReport
from ._service import Culler, Drain, ProbeListener, Reporter, run_pass
from ._standby import interval_in_force, run_standby, salvage, standby_applies, standby_config
from ._version import __version__

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .web import StatusPageSettings

__all__ = ["Settings", "hub_public_url", "main", "read_settings"]

log = logging.getLogger("trio_culler")
PROGRAM = "trio-culler"
_CONFIG_FIELDS = frozenset(field.name for field in attrs.fields(Config))


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the command line decided: the culler's Config plus how this process runs it."""

    config: Config
    log_level: int = logging.INFO
    log_format: str = "text"
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    status_page: bool = True
    status_bind: str | None = None
    status_history: int = 100
    grace_period: float = 5.0
    once: bool = False
    progress_bar: bool = True
    demo: bool = False
    show_config: bool = False
    generate_config: bool = False
    help: bool = False
    version: bool = False
    #: ``--explain USER``: print how that user would be decided, act on nothing, exit.
    explain: str | None = None
    explain_server: str | None = None
    #: What the config file set that the culler does not use, logged once logging is set up.
    notes: tuple[str, ...] = ()

    def public_dict(self) -> dict[str, Any]:
        values = self.config.public_dict()
        values.update(
            log_level=logging.getLevelName(self.log_level),
            log_format=self.log_format,
            metrics_port=self.metrics_port,
            metrics_address=self.metrics_address,
            grace_period=self.grace_period,
            once=self.once,
            status_page=self.status_page,
            status_bind=self.status_bind,
            status_history=self.status_history,
        )
        return values


def read_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """argv + environment (+ config file) -> Settings; raises ConfigError naming what is wrong."""
    cli = parse_args(argv).values
    config_path = cli.get("config_file", OPTIONS["config"].default)
    notes: list[str] = []
    from_file = load_config_file(config_path, required="config_file" in cli, notes=notes)
    for key, value in from_file.items():
        if key not in cli:
            _check_config_field(config_path, key, value)
    values = {**from_file, **cli}
    if values.pop("debug", False):
        values["log_level"] = logging.DEBUG
    rules_file = values.pop("rules_file", None)
    if rules_file is not None:
        if "rules" in values:
            raise ConfigError("rules come from c.IdleCuller.rules or from --rules-file, not from both")
        values["rules"] = load_rules_file(rules_file)
    if values.get("once") and values.get("warn_before"):
        raise ConfigError(
            "--warn-before needs the long-running culler, which remembers whom it warned; not with --once"
        )
    if "explain_server" in values and "explain" not in values:
        raise ConfigError("--explain-server needs --explain=USER")
    if values.get("log_format") == LEGACY_LOG_FORMAT:
        del values["log_format"]  # a 2.0 logging format string: the culler keeps its own (see _values)
    values["notes"] = tuple(notes)
    config_values = {key: values.pop(key) for key in list(values) if key in _CONFIG_FIELDS}
    values.pop("config_file", None)
    if "public_url" not in config_values:
        config_values["public_url"] = hub_public_url(environ)
    config = Config.from_environment(environ, **config_values)
    return Settings(config=config, **values)


def hub_public_url(environ: Mapping[str, str]) -> str | None:
    """The hub's public URL (``c.JupyterHub.public_url``), from what a hub gives its managed services.

    ``JUPYTERHUB_PUBLIC_HUB_URL`` is the hub's own pages (``https://hub.example.org/hub/``): the public URL is
    its parent. ``JUPYTERHUB_PUBLIC_URL`` is, for a service with a ``url``, that service's own address
    (``https://hub.example.org/services/idle-culler/``), so it stands for the hub's only where no hub set it
    (an operator's, for a standalone culler)."""
    hub_pages = environ.get("JUPYTERHUB_PUBLIC_HUB_URL", "")
    if hub_pages:
        trimmed = hub_pages.rstrip("/")
        return trimmed.removesuffix("/hub") + "/" if trimmed.endswith("/hub") else hub_pages
    if environ.get("JUPYTERHUB_SERVICE_URL"):
        return None
    return environ.get("JUPYTERHUB_PUBLIC_URL") or None


def _check_config_field(path: str, key: str, value: Any) -> None:
    """Run Config's own check on a value from the config file now, so its error names the file and the key,
    not the command-line spelling (``--url must be ...``) that Config's validators use."""
    field = attrs.fields_dict(Config).get(key)
    if field is None or field.validator is None:
        return
    try:
        field.validator(None, field, value)
    except ConfigError as error:
        detail = str(error).removeprefix(f"--{key.replace('_', '-')}").lstrip(": ")
        raise ConfigError(f"{path}: c.IdleCuller.{key}: {detail}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; exits with the status described in the module docstring."""
    # Everything imported so far lives as long as the process: keep it out of the collector's full passes,
    # which a pass reading 100,000 users would otherwise trigger again and again over the same objects.
    gc.freeze()
    try:
        status = run(sys.argv[1:] if argv is None else argv, os.environ)
        sys.stdout.flush()
    except BrokenPipeError:
        # `trio-culler --show-config | head`: the reader has what it wanted. Python's own recipe: point stdout
        # at /dev/null so that the flush at exit does not raise again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    sys.exit(status)


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    redact = make_redactor([environ.get("JUPYTERHUB_API_TOKEN", "")])
    try:
        settings = read_settings(argv, environ)
    except ConfigError as error:
        # A config file may quote anything in its own errors, the token included.
        message = redact(str(error))
        if standby_applies(argv, environ):
            return _standby(message, argv, environ, None)
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 2
    if settings.help:
        print(render_help(PROGRAM), end="")
        return 0
    if settings.version:
        print(f"{PROGRAM} {__version__}")
        return 0
    if settings.generate_config:
        print(render_default_config(), end="")
        return 0
    if settings.show_config:
        print(json.dumps(settings.public_dict(), indent=2, sort_keys=True))
        return 0
    configure_logging(
        level=settings.log_level,
        json_format=settings.log_format == "json",
        secrets=[settings.config.api_token, environ.get("JUPYTERHUB_API_TOKEN", ""), *url_secrets(settings.config.url)],
    )
    if settings.demo:
        from ._demo import run_demo

        _log_notes(settings)
        return trio.run(partial(run_demo, settings.config, log_level=settings.log_level))
    if not settings.config.api_token:
        # Logging is set up by now, so this goes out in the chosen format (a JSON pipeline must parse it too).
        log.error(
            "JUPYTERHUB_API_TOKEN is not set: a hub sets it for a managed service; "
            "a standalone culler needs a service token from the hub's config",
            extra={"event": "startup_error"},
        )
        return 2
    try:
        check_client_settings(settings.config)
    except ConfigError as error:
        return _bad_input(str(error), argv, environ, settings)
    if settings.explain is not None:
        from ._explain import run_explain

        return trio.run(
            lambda: run_explain(
                settings.config,
                settings.explain or "",
                server=settings.explain_server,
                json_format=settings.log_format == "json",
            )
        )
    reporters: list[Reporter] = []
    probe_listeners: list[ProbeListener] = []
    try:
        status_page = _status_page(settings, environ)
    except ConfigError as error:
        return _bad_input(str(error), argv, environ, settings)
    metrics = None
    if settings.metrics_port or status_page is not None:
        # prometheus-client is loaded only when metrics are served: on their own port, at the status page, or both
        # (one registry for both).
        from ._metrics import Metrics

        metrics = Metrics(interval=settings.config.interval)
        reporters.append(metrics.observe)
        probe_listeners.append(metrics.observe_probe)
    if settings.metrics_port:
        assert metrics is not None
        try:
            port = metrics.serve(settings.metrics_port, settings.metrics_address)
        except socket.gaierror as error:
            message = f"--metrics-address={settings.metrics_address}: not an address of this machine ({error.strerror})"
            return _bad_input(message, argv, environ, settings)
        except OSError as error:
            # The port is taken, or the address is not one this machine has (EADDRNOTAVAIL).
            option = "--metrics-address" if error.errno == errno.EADDRNOTAVAIL else "--metrics-port"
            value = settings.metrics_address if option == "--metrics-address" else settings.metrics_port
            return _bad_input(f"{option}={value}: {error.strerror or error}", argv, environ, settings)
        log.info("Serving Prometheus metrics on http://%s:%d/metrics", settings.metrics_address, port)
    # Logged only now: a run that ends with status 2 prints its one line and nothing else.
    _log_notes(settings)
    try:
        if settings.once:
            return trio.run(_run_once, settings, reporters)
        registry = metrics.registry if metrics is not None else None
        return trio.run(_run_service, settings, reporters, probe_listeners, status_page, registry)
    except KeyboardInterrupt:  # pragma: no cover - only before the signal receiver is installed
        return 0
    except BaseExceptionGroup as group:
        # check_client_settings() catches what is known to fail late; this keeps any other bad-input error
        # one line and status 2 instead of a traceback (a plain `except`, since `except*` cannot return).
        config_errors, rest = group.split(ConfigError)
        if config_errors is None or rest is not None:
            raise
        log.error("%s", first_leaf(config_errors), extra={"event": "startup_error"})
        return 2
    except ConfigError as error:
        log.error("%s", error, extra={"event": "startup_error"})
        return 2


def _bad_input(message: str, argv: Sequence[str], environ: Mapping[str, str], settings: Settings) -> int:
    """A configuration error found once logging is set up: one line and status 2, or the standby."""
    if standby_applies(argv, environ):
        return _standby(message, argv, environ, settings)
    log.error("%s", message, extra={"event": "startup_error"})
    return 2


def _standby(message: str, argv: Sequence[str], environ: Mapping[str, str], settings: Settings | None) -> int:
    """Keep a managed service with a url up with its configuration error (see ``_standby``); the status when
    it ends."""
    from ._metrics import Metrics
    from .web import StatusPageSettings, serve_status_page

    if settings is None:
        values = salvage(argv)
        configure_logging(
            level=logging.INFO,
            json_format=values.get("log_format") == "json",
            secrets=[environ.get("JUPYTERHUB_API_TOKEN", "")],
        )
        interval = interval_in_force(values)
    else:
        interval = settings.config.interval
    try:
        page = StatusPageSettings.from_environment(environ, bind=None if settings is None else settings.status_bind)
    except ConfigError as error:
        # Nowhere to show it: the one line, and the exit, after all.
        log.error("%s; and the status page cannot serve it: %s", message, error, extra={"event": "startup_error"})
        return 2
    assert page is not None  # standby_applies: the hub gave a url
    config = standby_config(environ, None if settings is None else settings.config)
    metrics = Metrics(interval=interval)
    metrics.observe_config_error()
    log.warning(
        "trio-culler %s: the configuration cannot be used; serving the error on the status page, running no pass",
        __version__,
        extra={"event": "standby"},
    )
    # No hub client is opened for users' views: the configuration it would be made from is the broken one.
    serve_page = partial(serve_status_page, page, config, metrics=metrics.registry, read_users=False)
    history = History({}, size=1)
    try:
        return trio.run(partial(run_standby, message, interval=interval, serve_page=serve_page, history=history))
    except KeyboardInterrupt:  # pragma: no cover - only before the signal receiver is installed
        return 2


def _log_notes(settings: Settings) -> None:
    for note in settings.notes:
        log.warning("%s", note, extra={"event": "config_note"})


async def _watch_signals(
    signals: AsyncIterator[int], drain: Callable[[], None], stop_now: Callable[[], None], grace: float
) -> None:
    """The first SIGTERM/SIGINT drains (requests in flight get ``grace`` seconds); a second one stops at once."""
    name = signal.Signals(await anext(signals)).name
    log.info("Received %s: finishing requests in flight (up to %g s), then exiting", name, grace)
    drain()
    name = signal.Signals(await anext(signals)).name
    log.warning("Received %s again: exiting now", name)
    stop_now()


def _status_page(settings: Settings, environ: Mapping[str, str]) -> StatusPage | None:
    """What the status page needs, or None when it is not served: off, ``--once``, or nowhere to listen
    (a managed service without ``url``; the hub sets JUPYTERHUB_SERVICE_URL only for one with)."""
    if not settings.status_page or settings.once or settings.demo:
        return None
    if settings.status_bind is None and not environ.get("JUPYTERHUB_SERVICE_URL"):
        return None
    if settings.status_history < 1:
        raise ConfigError("--status-history must be at least 1")
    # Imported only now: a culler without a page never loads hypercorn, Starlette or Jinja2.
    from .web import StatusPageSettings

    page = StatusPageSettings.from_environment(environ, bind=settings.status_bind)
    assert page is not None
    history = History(settings.public_dict(), size=settings.status_history, interval=settings.config.interval)
    return StatusPage(page, history)


@attrs.frozen
class StatusPage:
    settings: StatusPageSettings
    history: History


async def _run_service(
    settings: Settings,
    reporters: list[Reporter],
    probe_listeners: list[ProbeListener],
    status_page: StatusPage | None = None,
    metrics: CollectorRegistry | None = None,
) -> int:
    if status_page is not None:
        reporters = [*reporters, status_page.history.observe]
    culler = Culler(settings.config, reporters=reporters, probe_listeners=probe_listeners)
    _log_start(settings)
    grace = settings.grace_period
    # The receiver is open before the culler starts, so that no signal falls into a gap as KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if status_page is not None:
                # Before the culler waits for the hub: a hub at start-up waits for this port, and exits if it
                # stays closed (see web/_server.py).
                from .web import serve_status_page

                try:
                    await nursery.start(
                        partial(
                            serve_status_page,
                            status_page.settings,
                            settings.config,
                            status_page.history,
                            metrics=metrics,
                        )
                    )
                except OSError as error:
                    where = f"{status_page.settings.bind_host}:{status_page.settings.bind_port}"
                    log.error("Status page: cannot listen on %s: %s", where, error.strerror or error)
                    return 2
            watcher = run_and_cancelling(
                _watch_signals, signals, partial(culler.stop, grace), partial(culler.stop, 0), grace
            )
            async with watcher:
                await culler.serve()
            # The status page lives as long as the culler.
            nursery.cancel_scope.cancel()
    log.info("Stopped")
    return 0


async def _run_once(settings: Settings, reporters: list[Reporter]) -> int:
    _log_start(settings)
    drain = Drain()
    grace = settings.grace_period
    recorder = PassRecorder(started=datetime.now(UTC), started_at=trio.current_time(), dry_run=settings.config.dry_run)
    report: PassReport | None = None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as helpers:
            await helpers.enter_async_context(
                run_and_cancelling(_watch_signals, signals, partial(drain.stop, grace), partial(drain.stop, 0), grace)
            )
            if settings.progress_bar and sys.stderr.isatty():
                await helpers.enter_async_context(run_and_cancelling(draw_progress_bar, recorder, sys.stderr))
            with drain.scope:
                report = await run_pass(
                    settings.config,
                    draining=drain.draining,
                    recorder=recorder,
                    now=recorder.started,
                    reporters=reporters,
                )
    if report is None:
        log.warning("Pass cancelled before it finished")
        return 0
    if report.interrupted:
        return 0 if report.aborted is None and report.error_count == 0 else 1
    return 0 if report.ok else 1


def _log_start(settings: Settings) -> None:
    config = settings.config
    log.info(
        "trio-culler %s: hub %s, timeout %gs, every %gs, max-age %gs, concurrency %d%s%s",
        __version__,
        config.url,
        config.timeout,
        config.interval,
        config.max_age,
        config.concurrency,
        ", culling users" if config.cull_users else "",
        ", DRY RUN: nothing will be stopped" if config.dry_run else "",
    )
