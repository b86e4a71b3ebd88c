"""Properties of the pure decision functions, and the original's rules on concrete cases."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_culler import Action, Policy, Server, User, decide_server, decide_user
from trio_culler._decide import format_duration

from .support.decisions import H, policy, ready
from .support.strategies import NOW, policies, server_names, servers, users


@given(servers(), policies(), st.none() | st.booleans())
def test_pending_or_not_ready_servers_are_never_culled(server: Server, p: Policy, verdict: bool | None) -> None:
    assume(server.pending or not server.is_ready)
    assert decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict).action is Action.KEEP


@given(servers(), policies(), st.integers(min_value=1, max_value=10**6))
def test_lowering_the_timeout_never_spares_what_a_higher_one_culls(server: Server, p: Policy, less: int) -> None:
    assume(p.timeout.total_seconds() >= less)
    lower = attrs.evolve(p, timeout=p.timeout - timedelta(seconds=less))
    if decide_server(server, policy=p, now=NOW).acts:
        assert decide_server(server, policy=lower, now=NOW).acts


@given(
    policies(),
    server_names,
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
)
def test_max_age_culls_regardless_of_activity(p: Policy, name: str, max_age: int, extra: int, idle: int) -> None:
    p = attrs.evolve(p, max_age=timedelta(seconds=max_age))
    idle_for = timedelta(seconds=min(idle, max_age + extra))
    server = ready(name, idle=idle_for, age=timedelta(seconds=max_age + extra))
    decision = decide_server(server, policy=p, now=NOW)
    assert decision.acts
    assert decision.code in ("max_age", "idle")


@given(servers(), policies())
def test_a_culled_server_is_removed_only_when_named_and_asked(server: Server, p: Policy) -> None:
    decision = decide_server(server, policy=p, now=NOW)
    if decision.action is Action.REMOVE:
        assert server.name
        assert p.remove_named_servers
    if decision.acts and server.name and p.remove_named_servers:
        assert decision.action is Action.REMOVE


@given(servers(), policies())
def test_disabled_kinds_are_culled_only_for_age(server: Server, p: Policy) -> None:
    enabled = p.cull_named_servers if server.name else p.cull_default_servers
    decision = decide_server(server, policy=p, now=NOW)
    if decision.acts and not enabled:
        assert decision.code == "max_age"


@given(servers(), policies(), st.booleans())
def test_the_arbiter_decides_idleness_but_not_age(server: Server, p: Policy, verdict: bool) -> None:
    decision = decide_server(server, policy=p, now=NOW, arbiter_says_cull=verdict)
    if decision.code == "idle":
        assert verdict
    if not verdict and decision.acts:
        assert decision.code == "max_age"


@given(users(), policies(), st.integers(min_value=1, max_value=5))
def test_a_user_with_a_live_server_is_never_deleted(user: User, p: Policy, left: int) -> None:
    assert decide_user(user, policy=p, now=NOW, servers_left=left).action is Action.KEEP


@given(users(), policies())
def test_admins_are_spared_when_asked(user: User, p: Policy) -> None:
    assume(user.admin is not False)
    spared = attrs.evolve(p, cull_admin_users=False)
    assert decide_user(user, policy=spared, now=NOW, servers_left=0).action is Action.KEEP


@given(users(), policies())
def test_users_are_deleted_only_with_cull_users(user: User, p: Policy) -> None:
    off = attrs.evolve(p, cull_users=False)
    assert decide_user(user, policy=off, now=NOW, servers_left=0).action is Action.KEEP


@given(users(), policies())
def test_user_deletion_needs_idleness_or_age(user: User, p: Policy) -> None:
    decision = decide_user(user, policy=p, now=NOW, servers_left=0)
    if decision.action is Action.DELETE_USER:
        assert decision.inactive is not None or decision.age is not None
        idle = decision.inactive is not None and decision.inactive >= p.timeout
        old = p.max_age is not None and decision.age is not None and decision.age >= p.max_age
        assert idle or old


def test_idle_default_server_is_stopped_with_its_idle_time_as_reason() -> None:
    decision = decide_server(ready(idle=timedelta(hours=1, minutes=2, seconds=3)), policy=policy(), now=NOW)
    assert decision.action is Action.STOP
    assert decision.reason == "inactive for 01:02:03"


def test_active_server_is_kept() -> None:
    assert decide_server(ready(idle=timedelta(minutes=5)), policy=policy(), now=NOW).action is Action.KEEP


def test_timeout_is_inclusive_as_in_the_original() -> None:
    assert decide_server(ready(idle=H), policy=policy(), now=NOW).acts


def test_a_user_idle_for_exactly_the_timeout_is_deleted() -> None:
    # The original's rule for users is `inactive >= timeout`, as for servers: the boundary belongs to culling.
    p = policy(cull_users=True)
    at_limit = User(name="u", admin=False, created=NOW - 3 * H, last_activity=NOW - H)
    decision = decide_user(at_limit, policy=p, now=NOW, servers_left=0)
    assert decision.action is Action.DELETE_USER
    assert decision.code == "idle"
    just_under = attrs.evolve(at_limit, last_activity=NOW - H + timedelta(microseconds=1))
    assert decide_user(just_under, policy=p, now=NOW, servers_left=0).action is Action.KEEP
    # Never active: its creation stands in, with the same boundary.
    never = User(name="u", admin=False, created=NOW - H, last_activity=None)
    assert decide_user(never, policy=p, now=NOW, servers_left=0).action is Action.DELETE_USER


def test_missing_last_activity_falls_back_to_started() -> None:
    server = Server(name="", last_activity=None, started=NOW - 2 * H, ready=True)
    decision = decide_server(server, policy=policy(), now=NOW)
    assert decision.acts
    assert decision.inactive == 2 * H


def test_no_timestamps_at_all_is_never_culled() -> None:
    server = Server(name="", last_activity=None, started=None, ready=True)
    assert decide_server(server, policy=policy(max_age=H), now=NOW).action is Action.KEEP


def test_max_age_reason_names_the_age() -> None:
    decision = decide_server(ready(idle=timedelta(0), age=10 * H), policy=policy(max_age=H), now=NOW)
    assert decision.action is Action.STOP
    assert decision.reason == "age 10:00:00, inactive for 00:00:00"


def test_named_server_removed_with_remove_named_servers() -> None:
    assert decide_server(ready("lab"), policy=policy(remove_named_servers=True), now=NOW).action is Action.REMOVE
    assert decide_server(ready(""), policy=policy(remove_named_servers=True), now=NOW).action is Action.STOP


@pytest.mark.parametrize(
    ("name", "default", "named", "culled"), [("", False, True, False), ("lab", True, False, False)]
)
def test_kind_toggles(name: str, default: bool, named: bool, culled: bool) -> None:
    p = policy(cull_default_servers=default, cull_named_servers=named)
    assert decide_server(ready(name), policy=p, now=NOW).acts is culled


def test_future_activity_counts_as_now() -> None:
    decision = decide_server(ready(idle=-H), policy=policy(timeout=timedelta(0)), now=NOW)
    assert decision.inactive == timedelta(0)


def test_user_created_stands_in_for_activity() -> None:
    user = User(name="u", admin=False, created=NOW - 2 * H, last_activity=None)
    assert decide_user(user, policy=policy(cull_users=True), now=NOW, servers_left=0).action is Action.DELETE_USER


def test_unknown_admin_flag_is_treated_as_admin_when_admins_are_spared() -> None:
    user = User(name="u", admin=None, created=NOW - 2 * H, last_activity=NOW - 2 * H)
    p = policy(cull_users=True, cull_admin_users=False)
    assert decide_user(user, policy=p, now=NOW, servers_left=0).action is Action.KEEP
    assert decide_user(attrs.evolve(user, admin=False), policy=p, now=NOW, servers_left=0).acts


def test_admin_spared_even_past_max_age() -> None:
    # The original deletes such an admin via max-age; sparing admins means sparing them.
    user = User(name="root", admin=True, created=NOW - 100 * H, last_activity=NOW)
    p = policy(cull_users=True, cull_admin_users=False, max_age=H)
    assert decide_user(user, policy=p, now=NOW, servers_left=0).action is Action.KEEP


@pytest.mark.parametrize(
    ("delta", "text"), [(None, "unknown"), (timedelta(0), "00:00:00"), (timedelta(days=2, seconds=61), "48:01:01")]
)
def test_format_duration(delta: timedelta | None, text: str) -> None:
    assert format_duration(delta) == text


@given(users(), policies())
def test_a_user_whose_servers_are_not_visible_is_never_deleted(user: User, p: Policy) -> None:
    hidden = attrs.evolve(user, servers={}, servers_visible=False)
    assert decide_user(hidden, policy=p, now=NOW, servers_left=0).action is Action.KEEP


@given(servers(), policies(), st.none() | st.booleans())
def test_hidden_activity_is_never_culled_for_idleness(server: Server, p: Policy, verdict: bool | None) -> None:
    hidden = attrs.evolve(server, last_activity=None, activity_visible=False)
    decision = decide_server(hidden, policy=p, now=NOW, arbiter_says_cull=verdict)
    assert decision.code != "idle"
