"""Rules through a whole pass against the simulated hub: who is culled, a hidden field ends the pass before
anything is culled, and cull_arbiter_hook gets the matched rule's limit (and the user, when it takes it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio
import trio.testing

from trio_culler._history import History
from trio_culler.testing import FakeHub, FakeServer

from .support.faults import NOW, TOKEN, rewrite_pages
from .support.faults import make_config as config
from .support.passes import cull

H = timedelta(hours=1)
GROUPS = {"nora": ["overnight"], "olga": ["overnight", "staff"]}
OPTIONS = {"gus": {"profile": "gpu"}}


def hub_with(*names: str, idle: timedelta = 2 * H, named: tuple[str, ...] = ()) -> FakeHub:
    """Users with a default server idle for ``idle``; those in ``named`` also have an idle server of that name."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in names:
        servers = {"": FakeServer("", started=NOW - idle - H, last_activity=NOW - idle)}
        for server in named:
            servers[server] = FakeServer(server, started=NOW - idle - H, last_activity=NOW - idle)
        hub.add_user(name, created=NOW - 48 * H, last_activity=NOW - idle, servers=servers)
    return hub


def with_groups_and_options(hub: FakeHub, *, hide_groups: bool = False) -> None:
    """What the fake hub does not model: groups and user_options, edited into every page."""

    def edit(body: Any) -> None:
        items = body["items"] if isinstance(body, dict) else body
        for model in items:
            if hide_groups:
                model.pop("groups", None)
            else:
                model["groups"] = GROUPS.get(model["name"], [])
            for server in model["servers"].values():
                server["user_options"] = OPTIONS.get(model["name"], {})

    rewrite_pages(hub, edit)


def stopped(hub: FakeHub) -> set[tuple[str, str]]:
    return set(hub.statistics().stop_requests)


async def test_a_group_rule_culls_its_members_only(autojump_clock: trio.testing.MockClock) -> None:
    hub = hub_with("nora", "olga", "bob", idle=2 * H)
    with_groups_and_options(hub)
    cfg = config(timeout=86400, rules=[{"groups": ["overnight"], "timeout": 3600}])
    report = await cull(hub, cfg)
    assert report.ok
    assert stopped(hub) == {("nora", ""), ("olga", "")}


async def test_a_name_exemption_beats_a_later_group_rule(autojump_clock: trio.testing.MockClock) -> None:
    hub = hub_with("nora", "olga", "bob", idle=2 * H)
    with_groups_and_options(hub)
    cfg = config(
        timeout=86400,
        rules=[{"users": ["ol*"], "cull": False}, {"groups": ["overnight"], "timeout": 60}],
    )
    await cull(hub, cfg)
    assert stopped(hub) == {("nora", "")}


async def test_a_profile_rule_and_a_server_rule(autojump_clock: trio.testing.MockClock) -> None:
    hub = hub_with("gus", "bob", "sam", idle=2 * H, named=("scratch-1", "lab"))
    with_groups_and_options(hub)
    cfg = config(
        timeout=86400,
        rules=[
            {"user_options": {"profile": "gpu"}, "timeout": 900},
            {"servers": ["scratch-*"], "timeout": 600, "remove": True},
        ],
    )
    await cull(hub, cfg)
    # gus's servers all carry the gpu profile; the others' scratch servers are removed, their rest is kept.
    assert stopped(hub) == {
        ("gus", ""),
        ("gus", "scratch-1"),
        ("gus", "lab"),
        ("bob", "scratch-1"),
        ("sam", "scratch-1"),
    }
    assert "scratch-1" not in hub.users["bob"].stopped_named  # removed, not only stopped
    assert "lab" in hub.users["gus"].stopped_named


async def test_hidden_groups_end_the_pass_naming_the_scope_and_cull_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = hub_with("nora", "olga", "bob", idle=200 * H)
    with_groups_and_options(hub, hide_groups=True)
    cfg = config(timeout=3600, rules=[{"groups": ["overnight"], "cull": False}])
    report = await cull(hub, cfg)
    assert stopped(hub) == set()
    assert report.aborted is not None
    assert "read:users:groups" in report.aborted
    assert report.error_count == 1
    assert report.errors_by_kind == {"scope": 1}


async def test_a_rule_can_turn_on_user_deletion_for_what_it_matches(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in ("temp-1", "temp-2", "alice"):
        hub.add_user(name, created=NOW - 48 * H, last_activity=NOW - 10 * H)
    await cull(hub, config(timeout=3600, rules=[{"users": ["temp-*"], "cull_users": True}]))
    assert sorted(hub.statistics().users_deleted) == ["temp-1", "temp-2"]


async def test_an_exempt_user_is_never_deleted(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in ("svc-backup", "alice"):
        hub.add_user(name, created=NOW - 48 * H, last_activity=NOW - 10 * H)
    await cull(hub, config(timeout=3600, cull_users=True, rules=[{"users": ["svc-*"], "cull": False}]))
    assert hub.statistics().users_deleted == ("alice",)


async def test_the_arbiter_gets_the_rule_limit_and_the_user(autojump_clock: trio.testing.MockClock) -> None:
    hub = hub_with("gus", "bob", idle=2 * H)
    with_groups_and_options(hub)
    calls: list[tuple[str, Any, str]] = []

    async def four(inactive: timedelta, inactive_limit: float, server: dict[str, Any], user: dict[str, Any]) -> bool:
        calls.append((user["name"], inactive_limit, server["name"]))
        return bool(user["name"] == "gus")

    cfg = config(timeout=86400, cull_arbiter_hook=four, rules=[{"user_options": {"profile": "gpu"}, "timeout": 900}])
    await cull(hub, cfg)
    assert sorted(calls) == [("bob", 86400, ""), ("gus", 900, "")]
    assert all(type(limit) is int for _, limit, _ in calls)
    assert stopped(hub) == {("gus", "")}


async def test_a_three_argument_arbiter_keeps_working(autojump_clock: trio.testing.MockClock) -> None:
    hub = hub_with("gus", "bob", idle=2 * H)
    with_groups_and_options(hub)
    limits: dict[str, float] = {}

    def three(inactive: timedelta, inactive_limit: float, server: dict[str, Any]) -> bool:
        limits[server["url"]] = inactive_limit
        return inactive >= timedelta(seconds=inactive_limit)

    cfg = config(timeout=86400, cull_arbiter_hook=three, rules=[{"user_options": {"profile": "gpu"}, "timeout": 900}])
    await cull(hub, cfg)
    assert limits == {"/user/gus/": 900, "/user/bob/": 86400}
    assert stopped(hub) == {("gus", "")}


async def test_the_status_snapshot_names_the_rule_of_each_cull_and_forecast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = hub_with("nora", "bob", idle=2 * H)
    hub.add_user(
        "gus", created=NOW - 48 * H, servers={"": FakeServer("", started=NOW - 3 * H, last_activity=NOW - 2 * H)}
    )
    with_groups_and_options(hub)
    cfg = config(
        timeout=86400,
        rules=[{"groups": ["overnight"], "timeout": 3600}, {"user_options": {"profile": "gpu"}, "timeout": 9000}],
    )
    report = await cull(hub, cfg)
    history = History(cfg.public_dict())
    history.observe(report)
    document = history.snapshot.to_json()
    [culled] = document["culls"]
    assert culled["user"] == "nora"
    assert culled["matched_rule"] == "rules[0] (groups=overnight -> timeout=3600)"
    # gus (gpu profile) is due in 30 minutes by the second rule; bob is due in a day by the global timeout.
    [soonest] = document["upcoming"]["soonest"]
    assert soonest["user"] == "gus"
    assert soonest["rule"] == 'rules[1] (user_options={"profile":"gpu"} -> timeout=9000)'
    assert soonest["limit_seconds"] == 9000
