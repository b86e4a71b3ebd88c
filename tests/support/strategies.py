"""Hypothesis strategies for the culler's models and policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import strategies as st

from trio_culler import Policy, Server, User
from trio_culler._inspect import Kernel, ServerActivity, Terminal
from trio_culler._rules import Rule

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

durations = st.integers(min_value=0, max_value=30 * 24 * 3600).map(lambda s: timedelta(seconds=s))
optional_durations = st.none() | durations
# Includes timestamps slightly in the future: clocks out of step happen.
timestamps = st.integers(min_value=-3600, max_value=30 * 24 * 3600).map(lambda s: NOW - timedelta(seconds=s))
optional_timestamps = st.none() | timestamps
server_names = st.sampled_from(["", "", "lab", "gpu", "a b", "ü#?"])


@st.composite
def servers(draw: st.DrawFn, name: st.SearchStrategy[str] = server_names) -> Server:
    return Server(
        name=draw(name),
        last_activity=draw(optional_timestamps),
        started=draw(optional_timestamps),
        pending=draw(st.none() | st.sampled_from(["spawn", "stop", "check"])),
        ready=draw(st.none() | st.booleans()),
        url=draw(st.none() | st.just("/user/x/")),
    )


@st.composite
def users(draw: st.DrawFn) -> User:
    named = draw(st.lists(servers(), max_size=3))
    return User(
        name=draw(st.text(min_size=1, max_size=12)),
        admin=draw(st.none() | st.booleans()),
        created=draw(optional_timestamps),
        last_activity=draw(optional_timestamps),
        servers={server.name: server for server in named},
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    return Policy(
        timeout=draw(durations),
        max_age=draw(st.none() | durations.filter(lambda d: d > timedelta(0))),
        cull_users=draw(st.booleans()),
        cull_admin_users=draw(st.booleans()),
        cull_default_servers=draw(st.booleans()),
        cull_named_servers=draw(st.booleans()),
        remove_named_servers=draw(st.booleans()),
    )


# Rules: small alphabets, so that rules and users meet often enough for matching to be exercised.
rule_user_names = st.sampled_from(["alice", "bob", "vip-1", "vip-2", "svc-backup", "carol"])
rule_groups = st.sampled_from(["overnight", "gpu-team", "staff"])
profiles = st.sampled_from(["gpu", "cpu", "small"])
user_globs = st.sampled_from(["vip-*", "svc-backup", "*", "?ob", "[ab]*", "carol"])
server_globs = st.sampled_from(["", "*", "lab", "gpu", "scratch-*", "?*"])
seconds = st.integers(min_value=0, max_value=30 * 24 * 3600).map(float)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    keys = draw(st.sets(st.sampled_from(["users", "groups", "servers", "admin", "user_options"]), min_size=1))
    return Rule(
        users=tuple(draw(st.lists(user_globs, min_size=1, max_size=2))) if "users" in keys else None,
        groups=tuple(draw(st.lists(rule_groups, min_size=1, max_size=2))) if "groups" in keys else None,
        servers=tuple(draw(st.lists(server_globs, min_size=1, max_size=2))) if "servers" in keys else None,
        admin=draw(st.booleans()) if "admin" in keys else None,
        user_options={"profile": draw(profiles)} if "user_options" in keys else None,
        timeout=draw(st.none() | seconds),
        max_age=draw(st.none() | seconds),
        cull=draw(st.none() | st.booleans()),
        remove=draw(st.none() | st.booleans()),
        cull_users=draw(st.none() | st.booleans()),
    )


@st.composite
def rule_servers(draw: st.DrawFn) -> Server:
    server = draw(servers(name=st.sampled_from(["", "lab", "gpu", "scratch-1"])))
    options = draw(st.just({}) | st.builds(lambda p: {"profile": p}, profiles))
    return attrs.evolve(server, user_options=options)


@st.composite
def rule_users(draw: st.DrawFn) -> User:
    named = draw(st.lists(rule_servers(), max_size=3))
    return User(
        name=draw(rule_user_names),
        admin=draw(st.booleans()),
        created=draw(optional_timestamps),
        last_activity=draw(optional_timestamps),
        servers={server.name: server for server in named},
        groups=tuple(draw(st.lists(rule_groups, max_size=2, unique=True))),
    )


kernel_states = st.sampled_from(["idle", "busy", "starting", "dead", "restarting"])


@st.composite
def kernels(draw: st.DrawFn) -> Kernel:
    return Kernel(
        id=draw(st.text(min_size=1, max_size=8)),
        execution_state=draw(kernel_states),
        last_activity=draw(optional_timestamps),
    )


@st.composite
def activities(draw: st.DrawFn) -> ServerActivity:
    """What an inspected server may say: any mix of kernels (busy or not, timestamps or not) and terminals."""
    terminals = draw(
        st.lists(st.builds(Terminal, name=st.text(max_size=4), last_activity=optional_timestamps), max_size=3)
    )
    return ServerActivity(tuple(draw(st.lists(kernels(), max_size=4))), tuple(terminals))


@st.composite
def kernel_policies(draw: st.DrawFn) -> Policy:
    """Policies with the --inspect-kernels settings drawn too."""
    policy = draw(policies())
    return attrs.evolve(
        policy,
        max_busy=draw(st.none() | durations.filter(lambda d: d > timedelta(0))),
        kernel_activity_only=draw(st.booleans()),
    )
