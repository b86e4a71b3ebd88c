"""How the warnings' events leave the culler: to ``c.IdleCuller.warn_hook`` and ``--warn-url`` (the operator's
side), to the warned servers themselves (the notice API), and to the state file; each by tasks of its own.

::

    Notifier --events (bounded queue)-------> DELIVERY_TASKS x  hook (thread or coroutine), then POST (retried)
             --server deliveries (bounded)--> NOTICE_TASKS x    PUT notice / DELETE notice (the server's own token)
             --changed (an event)-----------> one writer        the state file, in a thread, at most once a second

Each delivery has :data:`DELIVERY_TIMEOUT` seconds, hook and POST together; what fails is counted on the notifier
and logged, never raised: a failing, slow or hanging hook, webhook or server costs its delivery task only, and
the cull goes ahead at the time announced.

The hook keeps the signature of the first release, ``hook(user=..., server=..., cull_at=...)``, and hears the
warnings, as it did. A hook that names a parameter ``event`` hears every event (``warning``, ``cancelled``,
``culled``) and gets the event's fields too, by name: ``event``, ``id``, ``reason``, ``detail``, ``kept_at``,
``warned_at`` (each only if it takes it, or takes ``**kwargs``). A hook written for warnings alone, ``**kwargs``
or not, is never surprised by a cancellation.

The POST goes through an ``httpx.AsyncClient`` of its own (``_clients.http_client``): no credential, no
redirects, the system's trust store; the webhook is often outside the hub's trust boundary. Only the status of
its answer is used, and at most :data:`MAX_WEBHOOK_ANSWER` bytes of it are read.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, Protocol

import attrs
import httpx
import trio

from ._clients import http_client
from ._config import Config, WarnHook
from ._cull_events import CullEvent
from ._errors import AnswerTooLarge
from ._http import read_whole
from ._models import Server
from ._notice import Notice, NoticeClient, NoticeFailed
from ._redact import shown_url
from ._retry import Backoff, retry
from ._transport import MAX_BODY_EXTENSION
from ._warnings_state import write_state_file

__all__ = [
    "DELIVERY_TASKS",
    "DELIVERY_TIMEOUT",
    "MAX_QUEUED",
    "MAX_WEBHOOK_ANSWER",
    "NOTICE_TASKS",
    "POST_ATTEMPTS",
    "ServerDelivery",
    "deliver_to_operator",
    "deliver_to_servers",
    "hook_hears_events",
    "open_webhook_client",
    "write_state_when_changed",
]

log = logging.getLogger("trio_culler")

#: Events waiting for delivery at most, in each queue; past that an event is dropped (and counted as failed).
MAX_QUEUED = 1000
#: Concurrent deliveries to the hook and webhook: a slow webhook must not hold back the events behind it.
DELIVERY_TASKS = 4
#: Concurrent deliveries to servers (each request also holds a token of the hub client's limiter).
NOTICE_TASKS = 8
#: Total seconds one event's delivery may take, hook and POST (with its retries) together.
DELIVERY_TIMEOUT = 30.0
#: Attempts at the POST, and the pause after the n-th failed one.
POST_ATTEMPTS = 3
POST_BACKOFF = 1.0
#: Most bytes of the webhook's answer read (only its status is used).
MAX_WEBHOOK_ANSWER = 64 * 1024
_CAPPED = {MAX_BODY_EXTENSION: MAX_WEBHOOK_ANSWER}
#: Seconds between two writes of the state file at least (the events of a pass come in bursts).
STATE_WRITE_INTERVAL = 1.0

#: What the log says when an event could not be delivered, by event.
_FAILED = {
    "warning": "Could not warn the user of server %s: %s",
    "cancelled": "Could not tell that the warning of server %s was cancelled: %s",
    "culled": "Could not tell that server %s was culled: %s",
}
#: The keywords an event-aware hook may take, beside user, server and cull_at.
_EVENT_KEYWORDS = ("event", "id", "reason", "detail", "kept_at", "warned_at")


class Notifier(Protocol):
    """What the delivery tasks count on (``_notify.Notifier``)."""

    sent: int
    failed: int
    delivering: int

    def notice_delivered(self) -> None: ...

    def notice_failed(self, failure: NoticeFailed, user: str, server: str, started: datetime | None) -> None: ...


class StateSource(Protocol):
    """What the state file's writer reads (``_warning_book.WarningBook``): an event set at each change, and the
    document to write."""

    changed: trio.Event

    def document(self) -> dict[str, Any]: ...


@attrs.frozen
class ServerDelivery:
    """A notice to PUT on a server, or one to withdraw (DELETE ``notice_id``)."""

    kind: Literal["put", "delete"]
    user: str
    server: Server
    notice: Notice | None = None
    notice_id: str | None = None


def _parameters(hook: WarnHook | None) -> tuple[frozenset[str], bool]:
    """The parameter names ``hook`` takes, and whether it takes ``**kwargs``."""
    if hook is None:
        return frozenset(), False
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):
        return frozenset(), False
    names = frozenset(p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD)
    return names, any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def hook_hears_events(hook: WarnHook | None) -> bool:
    """Whether ``hook`` hears every event: it names a parameter ``event`` (see the module docstring)."""
    names, _any = _parameters(hook)
    return "event" in names


# -- the operator's side: the hook and the webhook ---------------------------------------------------------------


@asynccontextmanager
async def open_webhook_client(
    config: Config, transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[httpx.AsyncClient | None]:
    if config.warn_url is None:
        yield None
        return
    # A client of its own, made as every client of the culler's (no redirects: one could move the payload
    # somewhere else), with the system's trust store rather than the hub's TLS settings, and no credential: the
    # webhook is often outside the hub's trust boundary.
    async with http_client(config, timeout=10.0, transport=transport, connections=DELIVERY_TASKS) as client:
        yield client


async def deliver_to_operator(
    notifier: Notifier,
    config: Config,
    client: httpx.AsyncClient | None,
    receive: trio.MemoryReceiveChannel[CullEvent],
) -> None:
    hears_all = hook_hears_events(config.warn_hook)
    async with receive:
        async for event in receive:
            notifier.delivering += 1
            try:
                with trio.fail_after(DELIVERY_TIMEOUT):
                    if config.warn_hook is not None and (event.event == "warning" or hears_all):
                        await _call_hook(config.warn_hook, event)
                    if client is not None and config.warn_url is not None:
                        await _post(client, config.warn_url, event)
            except Exception as error:
                notifier.failed += 1
                reason = "timed out" if isinstance(error, trio.TooSlowError) else f"{type(error).__name__}: {error}"
                log.error(
                    _FAILED[event.event],
                    event.label,
                    reason,
                    extra={"user": event.user, "server": event.server, "event": f"{event.event}_failed"},
                )
            else:
                notifier.sent += 1
            finally:
                notifier.delivering -= 1


async def _call_hook(hook: WarnHook, event: CullEvent) -> None:
    kwargs: dict[str, Any] = {"user": event.user_model, "server": event.server_model, "cull_at": event.cull_at}
    names, takes_any = _parameters(hook)
    if "event" in names:
        # Each keyword is the event's attribute of the same name.
        kwargs.update({key: getattr(event, key) for key in _EVENT_KEYWORDS if takes_any or key in names})
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None)):  # noqa: B004
        result: object = hook(**kwargs)
    else:
        # A sync hook may block (an SMTP call, say): it runs in a thread so the passes' event loop never waits
        # on it; a thread that overruns the deadline is abandoned, not joined.
        result = await trio.to_thread.run_sync(lambda: hook(**kwargs), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        await result


class _PostFailed(Exception):
    def __init__(self, problem: str, *, final: bool) -> None:
        super().__init__(problem)
        self.final = final


async def _post(client: httpx.AsyncClient, url: str, event: CullEvent) -> None:
    payload = event.payload()

    async def attempt() -> None:
        try:
            # Only the status is used; the body is read within a small cap (the default transport reads answers
            # whole, so the cap must be its too): a receiver answering gigabytes must not have them read into
            # memory. An answer over the cap would be over it again: the delivery fails, not retried.
            request = client.build_request("POST", url, json=payload, extensions=_CAPPED)
            response = await read_whole(await client.send(request, stream=True), MAX_WEBHOOK_ANSWER)
            status = response.status_code
        except AnswerTooLarge as error:
            raise _PostFailed(str(error), final=True) from None
        except httpx.HTTPError as error:
            raise _PostFailed(f"{type(error).__name__}: {error}".rstrip(": "), final=False) from None
        if 200 <= status < 300:
            return
        # A 4xx says the request itself is wrong: the same POST would be refused again (timeouts and rate
        # limits aside).
        raise _PostFailed(f"HTTP {status}", final=400 <= status < 500 and status not in (408, 429))

    try:
        await retry(
            attempt,
            failure=_PostFailed,
            backoff=Backoff(first=POST_BACKOFF, cap=math.inf),
            retries=POST_ATTEMPTS - 1,
            retryable=lambda failed: not failed.final,
        )
    except _PostFailed as failed:
        if failed.final:
            raise RuntimeError(f"{shown_url(url)} answered {failed}") from None
        raise RuntimeError(f"{shown_url(url)}: {failed} after {POST_ATTEMPTS} attempts") from None


# -- the servers' side: the notice API ------------------------------------------------------------------------


async def deliver_to_servers(
    notifier: Notifier, client: NoticeClient, receive: trio.MemoryReceiveChannel[ServerDelivery]
) -> None:
    async with receive:
        async for delivery in receive:
            notifier.delivering += 1
            try:
                with trio.fail_after(DELIVERY_TIMEOUT):
                    if delivery.kind == "put":
                        assert delivery.notice is not None
                        await client.put(delivery.user, delivery.server, delivery.notice)
                    else:
                        assert delivery.notice_id is not None
                        await client.withdraw(delivery.user, delivery.server, delivery.notice_id)
            except NoticeFailed as failed:
                notifier.notice_failed(failed, delivery.user, delivery.server.name, delivery.server.started)
            except trio.TooSlowError:
                failure = NoticeFailed("timeout", f"no answer within {DELIVERY_TIMEOUT:g} s")
                notifier.notice_failed(failure, delivery.user, delivery.server.name, delivery.server.started)
            else:
                notifier.notice_delivered()
            finally:
                notifier.delivering -= 1


# -- the state file ------------------------------------------------------------------------------------------


async def write_state_when_changed(book: StateSource, path: str, scope: trio.CancelScope) -> None:
    """Write the state file soon after each change (at most once every :data:`STATE_WRITE_INTERVAL` seconds)
    until ``scope`` is cancelled, then once more. A write that fails is logged once (and once more when
    writing works again); the warnings go on in memory."""
    failing = False
    try:
        with scope:
            while True:
                await book.changed.wait()
                book.changed = trio.Event()
                failing = await _write(book, path, failing)
                await trio.sleep(STATE_WRITE_INTERVAL)
    finally:
        # Whatever stops the culler (this scope, or the nursery's deadline around it): the last write is the one
        # a restart reads. It takes what the file system takes (milliseconds); nothing else is left to do.
        with trio.CancelScope(shield=True):
            await _write(book, path, failing)


async def _write(book: StateSource, path: str, failing: bool) -> bool:
    document = book.document()
    try:
        # Never abandoned: a write left running would rename its older document over the last one.
        await trio.to_thread.run_sync(write_state_file, path, document)
    except OSError as error:
        if not failing:
            log.warning(
                "Cannot write the warnings' state to %s (%s): a restart would forget who was warned",
                path,
                error.strerror or error,
                extra={"event": "state_file"},
            )
        return True
    if failing:
        log.info("The warnings' state is written to %s again", path, extra={"event": "state_file"})
    return False
