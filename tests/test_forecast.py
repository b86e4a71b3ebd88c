"""What comes next: when a kept server would be culled, and the bounded list of the soonest, from a real pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_culler import Config, Policy, run_pass
from trio_culler._codes import DecisionCode
from trio_culler._decide import decide_server
from trio_culler._forecast import Due, Upcoming, cull_time
from trio_culler._history import History
from trio_culler._inspect import Kernel, ServerActivity
from trio_culler._models import Server
from trio_culler.testing import FakeHub, FakeServer

from .support import strategies
from .support.passes import cull

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = Config(api_token="t", timeout=600, max_age=7200).policy


def server(name: str = "", *, idle: float | None = 0, age: float = 60, **kw: object) -> Server:
    return Server(
        name=name,
        last_activity=None if idle is None else NOW - timedelta(seconds=idle),
        started=NOW - timedelta(seconds=age),
        ready=True,
        **kw,  # type: ignore[arg-type]
    )


def test_idle_server_is_due_timeout_after_its_last_activity() -> None:
    when = cull_time(server(idle=100, age=200), policy=POLICY)
    assert when == Due(NOW + timedelta(seconds=500), DecisionCode.IDLE, timedelta(seconds=600))


def test_no_activity_yet_counts_from_the_start() -> None:
    when = cull_time(server(idle=None, age=100), policy=POLICY)
    assert when is not None
    assert when.at == NOW + timedelta(seconds=500)


def test_max_age_comes_first_when_it_is_sooner() -> None:
    when = cull_time(server(idle=0, age=7000), policy=POLICY)
    assert when == Due(NOW + timedelta(seconds=200), DecisionCode.MAX_AGE, timedelta(seconds=7200))


def test_never_for_pending_not_ready_or_a_disabled_kind_without_max_age() -> None:
    assert cull_time(server(pending="spawn"), policy=POLICY) is None
    assert cull_time(attrs.evolve(server(), ready=False), policy=POLICY) is None
    no_named = Config(api_token="t", cull_named_servers=False).policy
    assert cull_time(server("gpu"), policy=no_named) is None
    # Without read:users:activity the idle time is unknown: only max-age can be foreseen.
    hidden = attrs.evolve(server(age=100), activity_visible=False)
    assert cull_time(hidden, policy=POLICY) == Due(
        NOW + timedelta(seconds=7100), DecisionCode.MAX_AGE, timedelta(seconds=7200)
    )


def test_a_hook_makes_idleness_unforeseeable() -> None:
    assert cull_time(server(idle=100), policy=POLICY, idle_foreseeable=False) == Due(
        NOW + timedelta(seconds=7140), DecisionCode.MAX_AGE, timedelta(seconds=7200)
    )


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3)), max_size=60), st.integers(1, 10))
def test_upcoming_keeps_exactly_the_soonest_within_the_hour(items: list[tuple[int, int]], size: int) -> None:
    policy = Config(api_token="t", timeout=3600).policy
    upcoming = Upcoming(NOW, size)
    listed_twice = Upcoming(NOW, size)
    expected = []
    for index, (idle, servers) in enumerate(items):
        user_servers = {}
        for number in range(servers):
            name = f"s{number}" if number else ""
            user_servers[name] = server(name, idle=idle + number, age=20_000)
            at = NOW + timedelta(seconds=3600 - idle - number)
            if NOW < at <= NOW + timedelta(hours=1):
                expected.append((at, f"u{index}", name))
        for name, model in user_servers.items():
            due = cull_time(model, policy=policy)

            upcoming.add(f"u{index}", name, due)
            listed_twice.add(f"u{index}", name, due)
            listed_twice.add(f"u{index}", name, due)
    assert upcoming.total_due == len(expected)
    # A user the hub lists twice in one pass is kept once (it may be counted twice: counting it once would
    # take a set of every name due, which grows with the hub).
    assert listed_twice.soonest() == upcoming.soonest()
    kept = [(f.cull_at, f.user, f.server) for f in upcoming.soonest()]
    assert [k[0] for k in kept] == sorted(k[0] for k in kept)
    assert len(kept) == min(size, len(expected))
    assert [k[0] for k in kept] == sorted(e[0] for e in expected)[: len(kept)]
    assert len(set(kept)) == len(kept)


def test_upcoming_counts_everything_due_and_keeps_a_bounded_few() -> None:
    upcoming = Upcoming(NOW, 5)
    for index in range(1000):
        upcoming.add(f"u{index}", "", cull_time(server(idle=index % 500, age=100), policy=POLICY))
    # Every server is due within the hour (timeout 600 s), 1000 in all; 5 are kept, the soonest.
    assert upcoming.due == {"idle": 1000}
    soonest = upcoming.soonest()
    assert len(soonest) == 5
    assert [f.cull_at for f in soonest] == [NOW + timedelta(seconds=s) for s in (101, 101, 102, 102, 103)]


async def test_a_pass_records_its_culls_and_what_comes_next() -> None:
    hub = FakeHub(token="tok", clock=lambda: NOW)
    hub.add_user("idle", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(hours=2))})
    hub.add_user("soon", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(seconds=3000))})
    hub.add_user("later", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(seconds=10))})
    hub.add_user("<b>x</b>", servers={"gpu": FakeServer("gpu", NOW - timedelta(hours=3), NOW - timedelta(hours=9))})
    cfg = Config(api_token="tok", url="http://127.0.0.1:8081/hub/api", timeout=3600, remove_named_servers=True)
    async with hub.running():
        report = await run_pass(cfg, transport=hub.transport(), now=NOW)
    assert sorted((c.user, c.server, c.action, c.rule, c.outcome) for c in report.culls) == [
        ("<b>x</b>", "gpu", "remove", "idle", "stopped"),
        ("idle", "", "stop", "idle", "stopped"),
    ]
    assert all(c.reason.startswith("inactive for ") for c in report.culls)
    # "soon" is due 600 s from now; "later" in 3590 s: both within the hour, soonest first.
    assert [(f.user, f.cull_at) for f in report.upcoming] == [
        ("soon", NOW + timedelta(seconds=600)),
        ("later", NOW + timedelta(seconds=3590)),
    ]
    assert report.upcoming_due == {"idle": 2}
    history = History({"timeout": 3600}, size=3)
    history.observe(report)
    assert history.snapshot.upcoming_total == 2


# --- servers whose kernels were read (--inspect-kernels) ----------------------------------------------------

KAO = attrs.evolve(POLICY, kernel_activity_only=True, max_age=None)


def kernel(state: str, since: float) -> Kernel:
    return Kernel(id="k", execution_state=state, last_activity=NOW - timedelta(seconds=since))


def test_kernel_activity_only_forecasts_from_the_kernels_clock() -> None:
    # The hub saw a tab poll 10 s ago; the kernel last ran 500 s ago: culled 100 s from now, not 590.
    when = cull_time(server(idle=10, age=9000), policy=KAO, activity=ServerActivity((kernel("idle", 500),)))
    assert when == Due(NOW + timedelta(seconds=100), DecisionCode.KERNELS_IDLE, timedelta(seconds=600))
    # No kernel and no terminal: from the server's start, as the decision measures it.
    assert cull_time(server(idle=10, age=550), policy=KAO, activity=ServerActivity()) == Due(
        NOW + timedelta(seconds=50), DecisionCode.KERNELS_IDLE, timedelta(seconds=600)
    )


def test_a_busy_kernel_forecasts_the_end_of_its_protection_or_nothing() -> None:
    busy = ServerActivity((kernel("busy", 3000),))  # a cell started 50 minutes ago
    no_max_busy = attrs.evolve(POLICY, max_age=None)
    assert cull_time(server(idle=9000, age=9000), policy=no_max_busy, activity=busy) is None
    max_busy = attrs.evolve(no_max_busy, max_busy=timedelta(hours=1))
    # The forecast names the code the decision will have then: busy_expired (until the codes' table, the
    # forecast said max_busy).
    assert cull_time(server(idle=9000, age=9000), policy=max_busy, activity=busy) == Due(
        NOW + timedelta(seconds=600), DecisionCode.BUSY_EXPIRED, timedelta(hours=1)
    )
    # --max-age still comes first when it is sooner.
    assert cull_time(
        server(idle=9000, age=7000), policy=attrs.evolve(max_busy, max_age=timedelta(seconds=7200)), activity=busy
    ) == Due(NOW + timedelta(seconds=200), DecisionCode.MAX_AGE, timedelta(seconds=7200))


# Mostly servers that can be culled at all (ready, nothing pending): the others are forecast None at once.
# ... with or without the hub showing their activity (a token without read:users:activity sees none).
cullable_servers = st.builds(
    lambda server, visible: attrs.evolve(server, pending=None, ready=True, activity_visible=visible),
    strategies.servers(),
    st.booleans(),
)


@settings(max_examples=400)
@given(cullable_servers | strategies.servers(), strategies.kernel_policies(), st.none() | strategies.activities())
def test_the_forecast_is_when_the_decision_turns(
    server: Server, policy: Policy, activity: ServerActivity | None
) -> None:
    """If nothing changes (the same models, the same kernels), a server forecast for ``t`` is kept before ``t``
    and culled at ``t``, by the limit the forecast names; one with no forecast is never culled."""
    when = cull_time(server, policy=policy, activity=activity)
    if when is None:
        later = decide_server(server, policy=policy, now=NOW + timedelta(days=3650), activity=activity)
        assert not later.acts, later
        return
    at = when.at
    decided = decide_server(server, policy=policy, now=at, activity=activity)
    assert decided.acts, (when, decided)
    # The forecast names the code the decision will have at that time. (Past due is this pass's cull, not a
    # forecast: when several limits are long reached, which one the decision names is its own order's business.)
    assert decided.code is when.code or at <= NOW, (when, decided)
    # (A zero timeout culls at once whatever the clocks say: a timestamp in the future counts as idle 0 s.)
    if at > NOW and policy.timeout > timedelta(0):
        just_before = decide_server(server, policy=policy, now=at - timedelta(seconds=1), activity=activity)
        assert not just_before.acts, (when, just_before)


async def test_a_server_idle_for_exactly_the_timeout_is_culled_in_this_pass_and_not_forecast() -> None:
    hub = FakeHub(token="tok", clock=lambda: NOW)
    hub.add_user("exact", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(seconds=3600))})
    hub.add_user("second", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(seconds=3599))})
    cfg = Config(api_token="tok", url="http://127.0.0.1:8081/hub/api", timeout=3600)
    report = await cull(hub, cfg, now=NOW)
    assert [(c.user, c.rule, c.outcome) for c in report.culls] == [("exact", "idle", "stopped")]
    # Due now is this pass's cull, not a forecast; one second later is the next pass's.
    assert [(f.user, f.cull_at) for f in report.upcoming] == [("second", NOW + timedelta(seconds=1))]
    assert report.upcoming_due == {"idle": 1}
