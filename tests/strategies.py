"""Hypothesis strategies for the culler's models and policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from trio_culler import Policy, Server, User

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
