"""A loopback HTTP listener that records every request it receives (h11 reads them) and answers as told.

It stands for whatever the culler talks to (a hub, a proxy with users' servers behind it, a webhook): tests
assert on what really arrived over a socket, headers and bodies included, not on what the client meant to send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import h11
import trio


@attrs.frozen
class Seen:
    """One request as it arrived."""

    method: str
    #: The raw request target (path and query, still percent-encoded).
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    @property
    def authorization(self) -> list[str]:
        return self.header("authorization")


@attrs.frozen
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    body: bytes = b"[]"


Respond = Callable[[Seen], Awaitable[Answer]]


async def _always_empty_list(_seen: Seen) -> Answer:
    return Answer()


@attrs.define
class Recorder:
    #: ``http://127.0.0.1:<port>``, no trailing slash.
    url: str
    seen: list[Seen] = attrs.Factory(list)
    respond: Respond = _always_empty_list

    def under(self, prefix: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.target.startswith(prefix)]


async def _serve(recorder: Recorder, stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    try:
        while True:
            head: h11.Request | None = None
            body = bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert head is not None
            seen = Seen(
                head.method.decode(),
                head.target.decode(),
                tuple((key.decode().lower(), value.decode()) for key, value in head.headers),
                bytes(body),
            )
            recorder.seen.append(seen)
            answer = await recorder.respond(seen)
            headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
            data = connection.send(h11.Response(status_code=answer.status, headers=headers))
            data += connection.send(h11.Data(data=answer.body)) if answer.body else b""
            data += connection.send(h11.EndOfMessage())
            await stream.send_all(data)
            connection.start_next_cycle()
    except (trio.BrokenResourceError, h11.ProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_recorder(respond: Respond = _always_empty_list) -> AsyncIterator[Recorder]:
    async with trio.open_nursery() as nursery:
        recorder = Recorder("", respond=respond)
        listeners = await nursery.start(partial(trio.serve_tcp, partial(_serve, recorder), 0, host="127.0.0.1"))
        recorder.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield recorder
        nursery.cancel_scope.cancel()
