"""A pace for the status page, so that readers cannot take the passes' time, nor strangers an admin's.

The page and the passes share one trio thread, and trio is fair: a reader that asks again the moment it has an
answer (50 of them, ``benchmarks/status_load.py --interval=0``) took four fifths of the thread and made a
100,000-user pass 4.5 times longer. Requests are therefore admitted on budgets (``benchmarks/STATUS.md`` has
what a request costs), and not on one for everyone, which let one anonymous client give a logged-in admin 503s:

- **anonymous** requests (no session or token the page already verified: first visits, logins, forged
  cookies, unknown tokens) share one budget, :data:`ANONYMOUS`;
- each **verified** session cookie and each verified hub token has a budget of its own, :data:`EACH_VERIFIED`,
  so no session spends another's;
- and all verified requests together stay within :data:`VERIFIED`, so the total the page can take from the
  passes is ``ANONYMOUS.rate + VERIFIED.rate`` requests a second, however many sessions there are.

A request waits for its turn (a waiting request costs nothing) and starts once every budget it draws on allows;
one that would wait longer than ``max_delay`` is answered 503 without reaching the app, after ``max_delay``
all the same: a refusal still costs hypercorn its parsing (about as much as a page), and a client that asks
again as soon as it is answered would otherwise be refused as fast as hypercorn can parse, on the passes'
thread. Held, it gets one refusal per ``max_delay`` per connection. At most ``held`` refusals are held at once
(each holds a connection open); beyond, they are answered at once.

Which budget is the caller's ``classify(scope)``: a key for a verified session or token, None for anonymous.
It must be cheap and must never trust what it cannot check at once: a dict lookup of what the app verified.

Each budget is the generic cell rate algorithm: a theoretical arrival time (``tat``) moves ``1 / rate`` further
with each request admitted; a request may start once ``tat`` is within ``burst / rate`` of now. A budget that
has not been used for ``burst / rate`` seconds is full again, so the per-key ``tat`` are kept only until then
(in an :class:`~.._expiring.ExpiringMap` of at most ``keys`` entries; keys come only from what the app
verified, and a key forgotten early only gets a fresh budget, which :data:`VERIFIED` still caps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from .._expiring import ExpiringMap

__all__ = ["ANONYMOUS", "EACH_VERIFIED", "VERIFIED", "Budget", "Pacer", "PacerStatistics", "admit"]


@attrs.frozen
class Budget:
    """``rate`` requests a second, in bursts of at most ``burst``."""

    rate: float
    burst: int

    def earliest(self, tat: float, now: float) -> float:
        """When one more request may start, given this budget's theoretical arrival time."""
        return max(tat, now) + (1 - self.burst) / self.rate

    def after(self, tat: float, start: float) -> float:
        """The theoretical arrival time once a request started at ``start``."""
        return max(tat, start) + 1 / self.rate

    def most_in(self, seconds: float) -> int:
        """The most requests this budget admits within any ``seconds``: what a memory filled at most once
        per admitted request must hold so that nothing younger than ``seconds`` is ever evicted."""
        return int(self.rate * seconds) + self.burst + 1


#: Everyone the page does not know yet, together.
ANONYMOUS = Budget(rate=20, burst=20)
#: All verified sessions and tokens together.
VERIFIED = Budget(rate=60, burst=30)
#: Each verified session (or hub token): a dashboard refreshing every second, a few open tabs, a scraper.
EACH_VERIFIED = Budget(rate=10, burst=20)
#: Refusals held at once (about 19 KiB of memory each, the connection's).
HELD = 1024


def admit(now: float, tats: Sequence[float], budgets: Sequence[Budget], max_delay: float) -> list[float] | None:
    """When a request drawing on ``budgets`` (with their ``tats``) may start: ``[start, *new_tats]``, or None
    when that is more than ``max_delay`` away (then no budget is spent)."""
    start = max([now, *(budget.earliest(tat, now) for budget, tat in zip(budgets, tats, strict=True))])
    if start - now > max_delay:
        return None
    return [start, *(budget.after(tat, start) for budget, tat in zip(budgets, tats, strict=True))]


@attrs.frozen
class PacerStatistics:
    refused_anonymous: int
    refused_verified: int
    #: Verified sessions and tokens whose budget is not full (their memory).
    keys_tracked: int


_BUSY = b"503 Service Unavailable: too many requests, try again.\n"


class Pacer:
    def __init__(
        self,
        app: ASGIApp,
        *,
        classify: Callable[[Scope], str | None] | None = None,
        anonymous: Budget = ANONYMOUS,
        verified: Budget = VERIFIED,
        each_verified: Budget = EACH_VERIFIED,
        max_delay: float = 5.0,
        keys: int = 2048,
        held: int = HELD,
    ) -> None:
        self.app = app
        self._classify = classify
        self._anonymous = anonymous
        self._verified = verified
        self._each = each_verified
        self._max_delay = max_delay
        self._anonymous_tat = 0.0
        self._verified_tat = 0.0
        self._key_tats: ExpiringMap[str, float] = ExpiringMap(size=keys, lifetime=0.0, clock=trio.current_time)
        self._refused_anonymous = 0
        self._refused_verified = 0
        self._held_at_most = held
        self._held = 0

    def statistics(self) -> PacerStatistics:
        return PacerStatistics(
            refused_anonymous=self._refused_anonymous,
            refused_verified=self._refused_verified,
            keys_tracked=len(self._key_tats),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self._classify(scope) if self._classify is not None else None
        now = trio.current_time()
        if key is None:
            admitted = admit(now, [self._anonymous_tat], [self._anonymous], self._max_delay)
            if admitted is None:
                self._refused_anonymous += 1
                await self._refuse(send)
                return
            start, self._anonymous_tat = admitted
        else:
            key_tat = self._key_tats.get(key) or 0.0
            admitted = admit(now, [key_tat, self._verified_tat], [self._each, self._verified], self._max_delay)
            if admitted is None:
                self._refused_verified += 1
                await self._refuse(send)
                return
            start, key_tat, self._verified_tat = admitted
            # Kept until the budget is full again; after that a fresh one is the same.
            self._key_tats.put(key, key_tat, until=key_tat)
        # The slots are taken before the wait, so requests keep their order.
        if start > now:
            await trio.sleep_until(start)
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send) -> None:
        if self._held < self._held_at_most:
            self._held += 1
            try:
                await trio.sleep(self._max_delay)
            finally:
                self._held -= 1
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_BUSY)).encode()),
                    (b"retry-after", b"5"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BUSY})
