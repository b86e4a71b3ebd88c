"""A pace for the status page, so that readers cannot take the passes' time.

The page and the passes share one trio thread, and trio is fair: a reader that asks again the moment it has an
answer (50 of them, measured with ``benchmarks/status_load.py --interval=0``) took four fifths of the thread and
made a 100,000-user pass 4.5 times longer. So at most ``rate`` requests a second reach the app, in bursts of at
most ``burst``; the others wait their turn (a waiting request costs nothing), and one that would wait longer
than ``max_delay`` is answered 503 at once. A page costs about 1.7 ms of the culler's CPU on this project's
2-core test machine, 1.6 ms of which hypercorn spends on any request, a bare ASGI app's included (measured
with 50 keep-alive clients; the body is rendered once per pass and a session cookie's signature is checked
once): the default 60 a second holds any number of readers, hostile ones included, to about a tenth of the
thread, and leaves 50 dashboards refreshing every second unhindered.

The schedule is the generic cell rate algorithm: each request moves a theoretical arrival time ``1 / rate``
further; a request may start once that time is within ``burst / rate`` of now.
"""

from __future__ import annotations

import trio
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Pacer"]


class Pacer:
    def __init__(self, app: ASGIApp, *, rate: float = 60.0, burst: int = 30, max_delay: float = 5.0) -> None:
        self.app = app
        self._interval = 1.0 / rate
        self._burst = burst * self._interval
        self._max_delay = max_delay
        self._arrival = 0.0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = trio.current_time()
        arrival = max(self._arrival, now) + self._interval
        delay = arrival - now - self._burst
        if delay > self._max_delay:
            self.refused += 1
            await _busy(send)
            return
        self._arrival = arrival  # the slot is taken before the wait, so requests keep their order
        if delay > 0:
            await trio.sleep(delay)
        await self.app(scope, receive, send)


async def _busy(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"retry-after", b"5"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"503 Service Unavailable: too many requests, try again.\n"})
