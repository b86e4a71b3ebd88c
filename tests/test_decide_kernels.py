"""Properties of the kernel-signal rules (``--inspect-kernels``), and concrete cases with their log reasons."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_culler import Action, Policy, Server, decide_server
from trio_culler._decide import effective_idle_time
from trio_culler._forecast import cull_time
from trio_culler._inspect import Kernel, ServerActivity, Terminal

from .support.decisions import H, M, policy, ready
from .support.strategies import NOW, activities, durations, kernel_policies, optional_timestamps, servers, timestamps


def busy(since: timedelta) -> ServerActivity:
    return ServerActivity((Kernel("k1", "busy", NOW - since), Kernel("k2", "idle", NOW - 3 * H)))


def idle_kernels(since: timedelta) -> ServerActivity:
    return ServerActivity((Kernel("k1", "idle", NOW - since),))


# -- properties ---------------------------------------------------------------------------------------------


@given(servers(), kernel_policies(), activities(), st.none() | st.booleans())
def test_pending_or_not_ready_servers_are_never_culled_whatever_the_kernels(
    server: Server, p: Policy, activity: ServerActivity, verdict: bool | None
) -> None:
    assume(server.pending or not server.is_ready)
    decision = decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict, activity=activity)
    assert decision.action is Action.KEEP


@given(servers(), kernel_policies(), activities(), st.none() | st.booleans())
def test_without_kernel_activity_only_an_inspection_only_spares(
    server: Server, p: Policy, activity: ServerActivity, verdict: bool | None
) -> None:
    """Measured from the hub, an inspection can spare a server the hub's data would cull, never the reverse."""
    p = attrs.evolve(p, kernel_activity_only=False)
    if decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict, activity=activity).acts:
        assert decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict).acts


@given(servers(), kernel_policies(), activities())
def test_a_busy_kernel_within_max_busy_is_culled_by_max_age_only(
    server: Server, p: Policy, activity: ServerActivity
) -> None:
    assume(activity.busy)
    since = activity.busy_since
    assume(p.max_busy is None or since is None or NOW - since < p.max_busy)
    decision = decide_server(server, policy=p, now=NOW, activity=activity)
    if decision.acts:
        assert decision.code == "max_age"
        assert p.max_age is not None


@given(
    kernel_policies(),
    activities(),
    st.none() | st.booleans(),
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=0, max_value=10**6),
    durations,
)
def test_max_age_still_culls_every_server(
    p: Policy, activity: ServerActivity, verdict: bool | None, max_age: int, extra: int, idle: timedelta
) -> None:
    p = attrs.evolve(p, max_age=timedelta(seconds=max_age))
    server = ready(idle=idle, age=timedelta(seconds=max_age + extra))
    assert decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict, activity=activity).acts


@given(servers(), kernel_policies(), activities(), optional_timestamps)
def test_with_kernel_activity_only_the_hubs_activity_does_not_count(
    server: Server, p: Policy, activity: ServerActivity, hub_activity: Any
) -> None:
    """Browser polling moves the hub's last_activity; with --kernel-activity-only that changes nothing."""
    p = attrs.evolve(p, kernel_activity_only=True)
    polled = attrs.evolve(server, last_activity=hub_activity)
    first = decide_server(server, policy=p, now=NOW, activity=activity)
    second = decide_server(polled, policy=p, now=NOW, activity=activity)
    assert (first.action, first.code) == (second.action, second.code)


@given(kernel_policies(), activities(), timestamps, durations)
def test_kernel_idle_time_is_measured_from_the_newest_kernel_or_terminal(
    p: Policy, activity: ServerActivity, started: Any, hub_idle: timedelta
) -> None:
    p = attrs.evolve(p, kernel_activity_only=True)
    server = Server(last_activity=NOW - hub_idle, started=started, ready=True, url="/user/u/")
    inactive, age = effective_idle_time(server, NOW, policy=p, activity=activity)
    newest = activity.last_activity
    if newest is None:
        assert inactive == age
    else:
        assert inactive == max(NOW - newest, timedelta(0))
        stamps = [k.last_activity for k in activity.kernels] + [t.last_activity for t in activity.terminals]
        for stamp in stamps:
            assert stamp is None or inactive <= max(NOW - stamp, timedelta(0))


@given(servers(), kernel_policies(), activities(), st.integers(min_value=1, max_value=10**6))
def test_a_longer_max_busy_never_culls_what_a_shorter_one_spares(
    server: Server, p: Policy, activity: ServerActivity, more: int
) -> None:
    assume(p.max_busy is not None)
    assert p.max_busy is not None
    longer = attrs.evolve(p, max_busy=p.max_busy + timedelta(seconds=more))
    if decide_server(server, policy=longer, now=NOW, activity=activity).acts:
        assert decide_server(server, policy=p, now=NOW, activity=activity).acts


@given(servers(), kernel_policies(), activities())
def test_a_decision_names_the_signal_that_made_it(server: Server, p: Policy, activity: ServerActivity) -> None:
    decision = decide_server(server, policy=p, now=NOW, activity=activity)
    if decision.code in ("kernel_busy", "busy_expired"):
        assert decision.signal == "kernel_busy"
        assert decision.reason.startswith("kernel busy for ")
    if decision.code in ("kernels_idle", "kernels_active"):
        assert decision.signal == "kernel_activity"
        assert "kernels idle for" in decision.reason
        assert "hub activity" in decision.reason


# -- concrete cases -----------------------------------------------------------------------------------------


def test_a_long_silent_cell_spares_an_idle_looking_server() -> None:
    server = ready(idle=70 * M)  # the hub froze at the start of the cell
    assert decide_server(server, policy=policy(), now=NOW).action is Action.STOP
    decision = decide_server(server, policy=policy(), now=NOW, activity=busy(70 * M))
    assert decision.action is Action.KEEP
    assert decision.reason == "kernel busy for 01:10:00"
    assert decision.signal == "kernel_busy"


def test_max_busy_bounds_the_protection_of_a_busy_kernel() -> None:
    p = policy(max_busy=2 * H)
    server = ready(idle=3 * H, age=4 * H)
    assert decide_server(server, policy=p, now=NOW, activity=busy(90 * M)).action is Action.KEEP
    decision = decide_server(server, policy=p, now=NOW, activity=busy(3 * H))
    assert decision.action is Action.STOP
    assert decision.code == "busy_expired"
    assert decision.reason == "kernel busy for 03:00:00, over max-busy 02:00:00, inactive for 03:00:00"


def test_max_age_culls_a_busy_server() -> None:
    decision = decide_server(ready(age=5 * H), policy=policy(max_age=4 * H), now=NOW, activity=busy(10 * M))
    assert (decision.action, decision.code) == (Action.STOP, "max_age")
    assert decision.busy == 10 * M


def test_idle_kernels_and_no_kernels_are_culled_as_the_hub_says() -> None:
    server = ready(idle=2 * H)
    for activity in (idle_kernels(2 * H), ServerActivity()):
        decision = decide_server(server, policy=policy(), now=NOW, activity=activity)
        assert decision.action is Action.STOP
        assert decision.reason == "inactive for 02:00:00, no kernel busy"
        assert decision.signal == "hub"


def test_kernel_activity_only_culls_a_server_kept_fresh_by_a_browser_tab() -> None:
    server = ready(idle=30 * timedelta(seconds=1), age=5 * H)
    p = policy(kernel_activity_only=True)
    assert decide_server(server, policy=p, now=NOW).action is Action.KEEP  # not inspected: the hub's data
    decision = decide_server(server, policy=p, now=NOW, activity=idle_kernels(2 * H))
    assert decision.action is Action.STOP
    assert decision.reason == "kernels idle for 02:00:00, hub activity 00:00:30"
    assert decision.signal == "kernel_activity"


def test_kernel_activity_only_keeps_a_server_with_recent_kernel_or_terminal_activity() -> None:
    server = ready(idle=30 * timedelta(seconds=1), age=5 * H)
    p = policy(kernel_activity_only=True)
    terminal = ServerActivity((Kernel("k", "idle", NOW - 3 * H),), (Terminal("1", NOW - 5 * M),))
    decision = decide_server(server, policy=p, now=NOW, activity=terminal)
    assert (decision.action, decision.code) == (Action.KEEP, "kernels_active")
    assert decision.reason == "active: kernels idle for 00:05:00, hub activity 00:00:30, age 05:00:00"


def test_kernel_activity_only_measures_a_server_without_kernels_from_its_start() -> None:
    p = policy(kernel_activity_only=True)
    # Someone editing files without a kernel: the documented trade-off, idle from the server's start.
    assert decide_server(ready(idle=0 * M, age=2 * H), policy=p, now=NOW, activity=ServerActivity()).acts
    assert not decide_server(ready(idle=0 * M, age=30 * M), policy=p, now=NOW, activity=ServerActivity()).acts


def test_a_busy_kernel_without_a_timestamp_protects_its_server() -> None:
    activity = ServerActivity((Kernel("k", "busy", None),))
    decision = decide_server(ready(), policy=policy(max_busy=M), now=NOW, activity=activity)
    assert (decision.action, decision.reason) == (Action.KEEP, "kernel busy for unknown")


@pytest.mark.parametrize("state", ["idle", "starting", "dead", "restarting", "BUSY"])
def test_only_busy_means_busy(state: str) -> None:
    activity = ServerActivity((Kernel("k", state, NOW - 5 * M),))
    assert decide_server(ready(), policy=policy(), now=NOW, activity=activity).acts


def test_the_arbiter_still_judges_idleness_of_an_inspected_server_but_not_a_busy_kernel() -> None:
    server = ready(idle=2 * H)
    assert not decide_server(server, policy=policy(), now=NOW, arbiter_says_cull=False, activity=idle_kernels(H)).acts
    assert not decide_server(server, policy=policy(), now=NOW, arbiter_says_cull=True, activity=busy(H)).acts


def test_a_kernel_busy_for_exactly_max_busy_is_culled_and_forecast_for_that_instant() -> None:
    p = policy(max_busy=2 * H)
    server = ready(idle=3 * H, age=4 * H)  # idle by the hub's clock; only the busy kernel protects it
    decision = decide_server(server, policy=p, now=NOW, activity=busy(2 * H))
    assert (decision.action, decision.rule) == (Action.STOP, "busy_expired")
    # A second earlier the kernel had been busy a second less: still protected.
    second = timedelta(seconds=1)
    earlier = decide_server(server, policy=p, now=NOW - second, activity=busy(2 * H))
    assert (earlier.action, earlier.rule) == (Action.KEEP, "kernel_busy")
    # The forecast names that very instant, by the limit that sets it.
    assert cull_time(server, policy=p, activity=busy(2 * H)) == (NOW, "busy_expired", 2 * H)


def test_of_two_busy_kernels_the_one_that_started_last_protects_the_server() -> None:
    p = policy(max_busy=2 * H)
    server = ready(idle=4 * H, age=5 * H)
    two = ServerActivity((Kernel("k1", "busy", NOW - 3 * H), Kernel("k2", "busy", NOW - 30 * M)))
    decision = decide_server(server, policy=p, now=NOW, activity=two)
    assert (decision.action, decision.rule, decision.busy) == (Action.KEEP, "kernel_busy", 30 * M)
    assert cull_time(server, policy=p, activity=two) == (NOW + 90 * M, "busy_expired", 2 * H)
