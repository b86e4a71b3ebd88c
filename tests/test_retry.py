"""_retry: the one backoff and the one retry loop that every retrying caller uses (their own behaviour, log lines
with the true wait included, is pinned where they are tested: test_no_silence, test_notify, test_hub_client)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trio_culler._retry import Backoff, retry


class Flaky(Exception):
    def __init__(self, *, final: bool = False, asked: float | None = None) -> None:
        super().__init__("flaky")
        self.final = final
        self.asked = asked


def test_the_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.5, cap=15.0)
    assert [backoff.wait(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 15, 15]


def test_a_wait_asked_for_replaces_the_step_within_its_cap() -> None:
    assert Backoff(first=0.5, cap=15.0, asked_cap=60.0).wait(0, asked=30) == 30
    assert Backoff(first=0.5, cap=15.0, asked_cap=60.0).wait(4, asked=3600) == 60
    assert Backoff(first=0.5, cap=15.0).wait(0, asked=3600) == 3600  # no cap: the caller's own fixed wait


def test_jitter_draws_from_the_upper_half_of_each_step() -> None:
    backoff = Backoff(first=1.0, cap=8.0, jitter=True)
    for failures, ceiling in [(0, 1.0), (2, 4.0), (9, 8.0)]:
        waits = {backoff.wait(failures) for _ in range(200)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(waits) > 100, "random, not one fixed value"


async def test_retry_waits_as_announced_and_raises_the_last_failure(autojump_clock: trio.abc.Clock) -> None:
    attempts: list[float] = []
    announced: list[tuple[float, int]] = []

    async def attempt() -> None:
        attempts.append(trio.current_time())
        raise Flaky

    start = trio.current_time()
    with pytest.raises(Flaky):
        await retry(
            attempt,
            failure=Flaky,
            backoff=Backoff(first=1.0, cap=3.0),
            retries=3,
            before_wait=lambda _error, wait, number: announced.append((wait, number)),
        )
    assert [t - start for t in attempts] == [0, 1, 3, 6]
    assert announced == [(1, 1), (2, 2), (3, 3)]


async def test_a_failure_that_is_not_retryable_is_raised_at_once(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(final=calls == 2)

    with pytest.raises(Flaky) as raised:
        await retry(attempt, failure=Flaky, backoff=Backoff(first=1, cap=1), retries=5, retryable=lambda e: not e.final)
    assert raised.value.final
    assert calls == 2


async def test_other_exceptions_are_not_retried(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retry(attempt, failure=Flaky, backoff=Backoff(first=1, cap=1), retries=5)
    assert calls == 1


async def test_without_a_limit_it_goes_on_until_success_and_honours_what_is_asked(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 50:
            raise Flaky(asked=7.0 if calls == 1 else None)
        return "done"

    start = trio.current_time()
    result = await retry(
        attempt, failure=Flaky, backoff=Backoff(first=1, cap=2), retries=None, asked=lambda error: error.asked
    )
    assert result == "done"
    assert calls == 50
    assert trio.current_time() - start == 7 + 2 * 48  # the asked 7 s, then the second step (2 s) on, capped


async def test_the_sleep_is_the_callers(autojump_clock: trio.abc.Clock) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def attempt() -> None:
        raise Flaky

    with pytest.raises(Flaky):
        await retry(attempt, failure=Flaky, backoff=Backoff(first=2, cap=math.inf), retries=2, sleep=sleep)
    assert slept == [2, 4]
