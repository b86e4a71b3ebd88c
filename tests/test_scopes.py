"""What the token may do: the pure scope checks, and a pass that refuses to run on a token that lacks a scope."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_culler import Config, PassReport
from trio_culler._scopes import (
    FIELDS,
    NEEDS,
    MissingScopes,
    grants,
    missing_fields,
    missing_scopes,
    needed_scopes,
    parse_scopes,
    risky_scopes,
)
from trio_culler._service import Culler
from trio_culler.testing import FakeHub, Population
from trio_culler.testing._permissions import FULL_SCOPES

from .support.passes import cull

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "scopes-test-token"
URL = "http://127.0.0.1:8081/hub/api"
BASE = ("list:users", "read:servers", "read:users:activity", "delete:servers")
README = Path(__file__).resolve().parent.parent / "README.md"


def config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=URL, timeout=600), **changes)


def make_hub(n: int = 40, **options: Any) -> tuple[FakeHub, Population]:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, **options)
    return hub, hub.populate(n, idle_fraction=0.5, seed=3, now=NOW, named_fraction=0.2)


# -- the pure checks -------------------------------------------------------------------------------------


def test_the_documented_scopes_are_enough_and_each_is_needed() -> None:
    assert missing_scopes(BASE, config()) == ()
    for scope in BASE:
        (missing,) = missing_scopes(set(BASE) - {scope}, config())
        assert (missing.scope, missing.feature) == (scope, "culling")


def test_cull_users_needs_delete_and_read_users_which_admin_users_grants() -> None:
    cull_users = config(cull_users=True)
    assert [m.scope for m in missing_scopes(BASE, cull_users)] == ["delete:users", "read:users"]
    assert [m.scope for m in missing_scopes((*BASE, "delete:users"), cull_users)] == ["read:users"]
    assert missing_scopes((*BASE, "admin:users"), cull_users) == ()
    assert missing_scopes((*BASE, "delete:users", "read:users"), cull_users) == ()
    assert all(m.feature == "--cull-users" for m in missing_scopes(BASE, cull_users))


def test_implication_follows_the_hubs_hierarchy() -> None:
    granted = grants(["admin:users", "admin:servers"])
    for implied in ("delete:users", "users", "read:users", "list:users", "read:users:activity", "read:users:name"):
        assert "" in granted[implied], implied
    for implied in ("servers", "read:servers", "delete:servers"):
        assert "" in granted[implied], implied
    # A token of JupyterHub's admin role (admin:users + admin:servers) can do everything the culler does.
    assert missing_scopes(["admin:users", "admin:servers"], config(cull_users=True)) == ()
    # Implication never goes upwards.
    assert "admin:users" not in grants(["delete:users", "read:users"])


def test_filters_are_kept_and_must_cover_the_listing() -> None:
    assert grants(["admin:users!group=a"])["delete:users"] == frozenset({"group=a"})
    # A filtered read:servers beside an unfiltered listing: the culler would see most users' servers as absent.
    held = ["list:users", "read:users:activity", "delete:servers", "read:servers!user=alice"]
    (missing,) = missing_scopes(held, config())
    assert (missing.scope, missing.held_for) == ("read:servers", ("user=alice",))
    assert "held only for user=alice" in str(describe(held))
    # A culler for one group: everything it lists, it may read and stop.
    one_group = [f"{scope}!group=students" for scope in BASE]
    assert missing_scopes(one_group, config()) == ()
    # ... but not when one scope covers another group only.
    other = [*(f"{s}!group=students" for s in BASE if s != "delete:servers"), "delete:servers!group=staff"]
    assert [m.scope for m in missing_scopes(other, config())] == ["delete:servers"]


def describe(held: list[str], cfg: Config | None = None) -> str:
    return str(MissingScopes(missing_scopes(held, cfg or config())))


def test_scopes_filtered_to_several_groups_name_the_group_a_scope_is_missing_for() -> None:
    # The culler lists groups a and b, and may read the servers of group a alone: b's would look serverless.
    held = ["list:users!group=a", "list:users!group=b", "read:servers!group=a"]
    held += [f"{scope}!group={group}" for scope in ("read:users:activity", "delete:servers") for group in "ab"]
    (missing,) = missing_scopes(held, config())
    assert (missing.scope, missing.held_for, missing.lacking_for) == ("read:servers", ("group=a",), ("group=b",))
    assert "read:servers (culling: to see users' servers and their activity; held only for group=a, not for " in (
        describe(held)
    )
    assert describe(held).count("group=b") == 1
    assert missing_scopes([*held, "read:servers!group=b"], config()) == ()
    # Held for neither: nothing held, both groups lacking.
    (missing,) = missing_scopes([scope for scope in held if not scope.startswith("read:servers")], config())
    assert (missing.held_for, missing.lacking_for) == ((), ("group=a", "group=b"))


def test_a_rule_that_culls_users_needs_delete_users_under_a_global_no() -> None:
    rule = config(cull_users=False, rules=[{"users": ["guest-*"], "cull_users": True}])
    assert "delete:users" not in {need.scope for need in needed_scopes(config(cull_users=False))}
    assert [m.scope for m in missing_scopes(BASE, rule)] == ["delete:users", "read:users"]
    assert "delete:users (--cull-users: to delete idle users)" in describe(list(BASE), rule)
    assert missing_scopes((*BASE, "admin:users"), rule) == ()


async def test_the_self_check_names_delete_users_for_a_rule_that_culls_users(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, _population = make_hub(scopes=(*BASE, "read:users"))
    report = await cull(hub, config(cull_users=False, rules=[{"users": ["user-*"], "cull_users": True}]))
    assert report.aborted is not None
    assert "lacks delete:users (--cull-users: to delete idle users)" in report.aborted
    assert hub.statistics().requests_by_kind["list"] == 0
    assert hub.statistics().stop_requests == {}


@pytest.mark.parametrize("value", [None, "list:users", [1, 2], ["list:users", None], {"list:users": 1}, [""]])
def test_a_scopes_value_that_does_not_parse_means_the_hub_did_not_say(value: object) -> None:
    assert parse_scopes(value) is None


def test_missing_fields_name_the_scope_and_feature() -> None:
    assert [m.scope for m in missing_fields({"servers"}, config())] == ["read:servers"]
    assert [m.scope for m in missing_fields({"last_activity"}, config())] == ["read:users:activity"]
    # `created` and `admin` matter only to the features that read them.
    assert missing_fields({"created", "admin"}, config()) == ()
    assert [m.scope for m in missing_fields({"created"}, config(cull_users=True))] == ["read:users"]
    assert [m.scope for m in missing_fields({"admin"}, config(cull_users=True, cull_admin_users=False))] == [
        "read:users:name"
    ]


def test_the_readme_table_is_the_codes_table() -> None:
    readme = README.read_text(encoding="utf-8")
    # The scope table's own section ("Running it"): the README has other tables of three columns (the codes').
    text = readme.split("\n## Running it", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z]+(?::[a-z:]+)?)` \| ([^|]+?) \| ([^|]+?) \|$", text, flags=re.MULTILINE)
    table = {(scope, feature.strip("`"), why) for scope, feature, why in rows}
    assert table == {(need.scope, need.feature, need.why) for need in NEEDS}, "README's table and _scopes.NEEDS differ"
    for field in FIELDS:
        assert field.scope in {need.scope for need in NEEDS} | {"read:users:name"}


# -- a pass against a hub that says what the token may do --------------------------------------------------


@pytest.mark.parametrize("removed", BASE)
async def test_each_scope_removed_in_turn_stops_the_pass_and_names_it(
    autojump_clock: trio.testing.MockClock, removed: str
) -> None:
    hub, _population = make_hub(scopes=set(BASE) - {removed})
    report = await cull(hub, config())
    assert report.aborted is not None
    assert report.summary().startswith(f"Pass not run: the culler's token lacks {removed} (culling: to ")
    assert report.errors_by_kind == {"scope": 1}
    assert not report.ok
    assert hub.statistics().requests_by_kind["list"] == 0, "not a page read: the pass would lie"
    assert hub.statistics().stop_requests == {}


async def test_cull_users_without_admin_users_names_both_scopes(autojump_clock: trio.testing.MockClock) -> None:
    for scopes in (BASE, (*BASE, "delete:users")):
        hub, _population = make_hub(scopes=scopes)
        report = await cull(hub, config(cull_users=True))
        assert report.aborted is not None
        assert "read:users (--cull-users: to read when a user was created)" in report.aborted
        assert ("delete:users (--cull-users: to delete idle users)" in report.aborted) == ("delete:users" not in scopes)
        assert hub.statistics().users_deleted == ()


async def test_with_every_scope_the_pass_runs(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(scopes=(*BASE, "admin:users"))
    report = await cull(hub, config(cull_users=True))
    assert report.ok, report.summary()
    assert set(hub.statistics().stops_completed) == population.idle
    assert report.hub_up


# -- a hub that cannot say: the user models tell -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "cfg", "named"),
    [
        (("list:users",), {}, "read:servers"),
        (("list:users", "read:servers", "delete:servers"), {}, "read:users:activity"),
        ((*BASE, "delete:users"), {"cull_users": True}, "read:users"),
    ],
    ids=["list-only", "no-activity", "no-created"],
)
async def test_without_scopes_a_model_missing_a_field_is_a_missing_scope(
    autojump_clock: trio.testing.MockClock, scopes: tuple[str, ...], cfg: dict[str, Any], named: str
) -> None:
    hub, _population = make_hub(scopes=scopes, reports_scopes=False)
    report = await cull(hub, config(**cfg))
    assert report.aborted is not None, report.summary()
    assert f"lacks {named} (" in report.aborted
    assert report.errors_by_kind == {"scope": 1}
    assert hub.statistics().stop_requests == {}, "nothing is decided on a model the token sees too little of"
    assert hub.statistics().users_deleted == ()


async def test_without_scopes_but_with_complete_models_the_pass_runs(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(reports_scopes=False)
    report = await cull(hub, config(cull_users=True))
    assert report.ok, report.summary()
    assert set(hub.statistics().stops_completed) == population.idle


# -- a long-running culler --------------------------------------------------------------------------------


async def test_a_fixed_role_is_picked_up_at_the_next_pass(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)  # serve() measures idleness from the wall clock
    hub = FakeHub(token=TOKEN, clock=lambda: now, scopes=("list:users", "read:servers", "read:users:activity"))
    population = hub.populate(20, idle_fraction=0.5, seed=4, now=now)
    reports: list[PassReport] = []
    culler = Culler(config(cull_every=60), transport=hub.transport(), reporters=[reports.append])
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        await trio.sleep(70)  # passes at 0 and 60
        hub.scopes = frozenset(FULL_SCOPES)  # the operator fixes the role
        await trio.sleep(60)
        culler.stop(grace=0)
    refused, refused_again, fixed = reports[:3]
    for report in (refused, refused_again):
        assert report.aborted is not None
        assert "delete:servers (culling: to stop servers)" in report.aborted
    assert fixed.ok
    assert set(hub.statistics().stops_completed) == population.idle
    lines = [r for r in caplog.records if r.levelno == logging.ERROR and "lacks delete:servers" in r.getMessage()]
    assert len(lines) == 2, "one ERROR line per refused pass"
    assert hub.statistics().requests_by_kind["whoami"] == 3, "one probe per pass, the first at start-up"
    assert hub.statistics().requests_by_kind["version"] == 3


async def test_rules_on_groups_need_read_users_groups_before_the_pass(autojump_clock: trio.testing.MockClock) -> None:
    cfg = config(rules=[{"groups": ["overnight"], "timeout": 86400}])
    assert [need.scope for need in needed_scopes(cfg) if need.feature == "rules on groups"] == ["read:users:groups"]
    hub, _population = make_hub(scopes=BASE)
    report = await cull(hub, cfg)
    assert report.aborted is not None
    assert "lacks read:users:groups (rules on groups: to read users' groups)" in report.aborted
    assert hub.statistics().requests_by_kind["list"] == 0
    hub, _population = make_hub(scopes=(*BASE, "read:users:groups"))
    assert (await cull(hub, cfg)).ok


INSPECT = {"inspect_kernels": True, "public_url": "http://127.0.0.1:8000"}


def test_inspect_kernels_needs_tokens_and_never_access_servers() -> None:
    from trio_culler._hub import HubInfo
    from trio_culler._probe import Probe, check_scopes

    cfg = config(**INSPECT)
    assert [(need.scope, need.feature) for need in needed_scopes(cfg) if need.feature == "--inspect-kernels"] == [
        ("tokens", "--inspect-kernels")
    ]
    # access:servers is no substitute: the culler never shows its own token to a server.
    for held in (BASE, (*BASE, "access:servers")):
        refused = check_scopes(Probe(HubInfo("5.2.1", (5, 2, 1)), frozenset(held)), cfg)
        assert refused is not None
        assert [item.scope for item in refused.missing] == ["tokens"]
    assert check_scopes(Probe(HubInfo("5.2.1", (5, 2, 1)), frozenset({*BASE, "tokens"})), cfg) is None
    # Filtered like the other scopes: a culler for one group mints for that group.
    one_group = [f"{scope}!group=students" for scope in (*BASE, "tokens")]
    assert missing_scopes(one_group, cfg) == ()
    (missing,) = missing_scopes([*BASE, "tokens!group=students"], cfg)
    assert (missing.scope, missing.held_for) == ("tokens", ("group=students",))
    two_groups = [f"{scope}!group={group}" for scope in BASE for group in ("a", "b")] + ["tokens!group=a"]
    (missing,) = missing_scopes(two_groups, cfg)
    assert (missing.scope, missing.held_for, missing.lacking_for) == ("tokens", ("group=a",), ("group=b",))


def test_access_servers_on_a_cullers_role_is_named_as_a_risk() -> None:
    assert risky_scopes(BASE) == ()
    ((scope, why),) = risky_scopes([*BASE, "access:servers"])
    assert scope == "access:servers"
    assert "any other user" in why
    assert [scope for scope, _why in risky_scopes(["access:servers!group=a", "shares"])] == [
        "access:servers",
        "access:servers!group=a",
    ], "filtered or implied (shares grants access:servers), each is named"


@pytest.mark.parametrize("extra", [(), ("access:servers",)], ids=["without", "with-access-servers"])
async def test_inspect_kernels_without_tokens_does_not_run_the_pass(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, extra: tuple[str, ...]
) -> None:
    hub, _population = make_hub(scopes=(*BASE, *extra))
    report = await cull(hub, config(**INSPECT))
    assert report.aborted is not None
    assert report.summary() == (
        "Pass not run: the culler's token lacks tokens (--inspect-kernels: to mint each server's own token to ask "
        "it about its kernels). Add the missing scopes to the culler's role; the culler checks again before "
        "every pass"
    )
    assert report.errors_by_kind == {"scope": 1}
    stats = hub.statistics()
    assert stats.requests_by_kind["list"] == 0
    assert stats.stop_requests == {}
    assert stats.requests_by_kind["kernels"] == 0
    assert stats.requests_by_kind["mint"] == 0
