"""Trying again: the one backoff (first step, cap, jitter) and the one loop that waits and retries.

Every loop in the culler that tries something again goes through :func:`retry`: each request to the hub (inside
the HTTP engine), the probe at the start of a pass, the start-up wait for the hub, and the ``--warn-url`` POST.
What differs between them is data (a :class:`Backoff`, how many retries, which failures are worth another
attempt, what a failure asks for itself), never the loop::

    attempt --ok--> result
       |
       failure --not retryable, or no retry left--> raised as itself
       |
       wait = what the failure asked for (Retry-After, capped) or the backoff's step
       before_wait(failure, wait, attempt)   <- log lines and statistics see the true wait
       sleep(wait), then the next attempt

The loop never holds anything across its wait (the HTTP engine's limiter token is taken inside each attempt),
and the wait is a plain trio sleep unless the caller passes one that a stop can cut short.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import attrs
import trio

__all__ = ["Backoff", "retry"]

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

_RANDOM: Final = random.Random()


@attrs.frozen
class Backoff:
    """The wait before each retry: ``first``, doubling with each failure, at most ``cap``.

    With ``jitter`` a wait is drawn from the upper half of that step ("equal jitter"): it spreads the retries of
    many workers that failed together while keeping each wait at least half the step. Without it the wait is
    exact, so a log line can announce it. A wait the other side asked for (an HTTP ``Retry-After``) replaces the
    step, capped at ``asked_cap``: a server must not be able to park a worker for an hour.
    """

    first: float
    cap: float
    jitter: bool = False
    asked_cap: float = math.inf

    def wait(self, failures: int, *, asked: float | None = None) -> float:
        """The wait after the ``failures``-th failure in a row (0 for the first)."""
        if asked is not None:
            return min(asked, self.asked_cap)
        ceiling = min(self.cap, self.first * 2**failures)
        if not self.jitter:
            return float(ceiling)
        return _RANDOM.uniform(ceiling / 2, ceiling)


def _always(_error: Exception) -> bool:
    return True


def _nothing_asked(_error: Exception) -> float | None:
    return None


def _say_nothing(_error: Exception, _wait: float, _retry: int) -> None:
    return None


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    failure: type[E],
    backoff: Backoff,
    retries: int | None,
    retryable: Callable[[E], bool] = _always,
    asked: Callable[[E], float | None] = _nothing_asked,
    before_wait: Callable[[E, float, int], None] = _say_nothing,
    sleep: Callable[[float], Awaitable[None]] = trio.sleep,
) -> T:
    """``await attempt()`` until it returns, retrying after a ``failure`` that is ``retryable``.

    ``retries``: how many attempts after the first (None: until one succeeds). ``asked``: the wait a failure
    asks for itself (Retry-After), else None for the backoff's step. ``before_wait(error, wait, retry)`` is
    called with the true wait before each one, ``retry`` counting from 1. ``sleep`` waits (a caller that must
    stop early passes one that returns sooner; the next attempt is then its business). The last failure, or one
    that is not retryable, is raised as itself.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except failure as error:
            if (retries is not None and failures >= retries) or not retryable(error):
                raise
            wait = backoff.wait(failures, asked=asked(error))
            failures += 1
            before_wait(error, wait, failures)
        await sleep(wait)
