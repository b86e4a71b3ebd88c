"""Group names in rules that the hub does not have: said at start and at every pass while they are unknown, and by
``--explain``; a token that may not list groups is said once, and stops nothing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config
from trio_culler._explain import run_explain
from trio_culler._groups import MAX_GROUPS, read_group_names
from trio_culler._hub import PAGINATION_MEDIA_TYPE, open_hub_client
from trio_culler._rules import GROUPS_UNCHECKED, group_check_lines, structure_rules, unknown_groups
from trio_culler._service import Culler
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

from .support.faults import NOW, TOKEN, URL

RULES = [{"groups": ["overnigth"], "timeout": 86400}, {"groups": ["gpu", "overnigth"], "cull": False}]
TYPO = (
    "the rules name a group the hub does not have: 'overnigth' (rules[0], rules[1]); no user can match a rule "
    "through it, so the users meant for it fall to the next rule that matches them, or the global options"
)


def config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=URL, timeout=3600, rules=RULES), **changes)


class Groups:
    """``GET /groups`` as JupyterHub answers it (paginated, ``list:groups``), which FakeHub does not model; and
    every user's ``groups``, which it leaves empty."""

    def __init__(self, hub: FakeHub, names: list[str], *, allowed: bool = True, page: int = 2) -> None:
        self.names = names
        self.allowed = allowed
        self.page = page
        self.requests: list[httpx.Request] = []
        self.hub = hub
        hub.fault = self

    async def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/hub/api/groups"):
            return None
        self.requests.append(request)
        if not self.allowed:
            return httpx.Response(403, json={"status": 403, "message": "requires any of [list:groups]"})
        offset = int(request.url.params.get("offset", 0))
        limit = min(int(request.url.params.get("limit", 200)), self.page)
        items = [{"kind": "group", "name": name, "users": []} for name in self.names[offset : offset + limit]]
        following = offset + limit < len(self.names)
        pagination = {
            "offset": offset,
            "limit": limit,
            "total": len(self.names),
            "next": {"offset": offset + limit, "limit": limit, "url": "..."} if following else None,
        }
        if request.headers.get("accept") != PAGINATION_MEDIA_TYPE:
            return httpx.Response(200, json=items)
        return httpx.Response(200, json={"items": items, "_pagination": pagination})


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("trio_culler")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


# --- the pure part, shared with --explain -----------------------------------------------------------------------


def test_unknown_groups_name_each_once_with_their_rules() -> None:
    rules = structure_rules([*RULES, {"users": ["x"], "cull": False}, {"groups": ["a", "b"], "timeout": 60}])
    assert unknown_groups(rules, {"gpu", "a"}) == {"overnigth": (0, 1), "b": (3,)}
    assert unknown_groups(rules, {"gpu", "a", "b", "overnigth"}) == {}


def test_the_lines_for_an_unknown_group_for_none_and_for_a_token_that_may_not_list() -> None:
    rules = structure_rules(RULES)
    assert group_check_lines(rules, {"gpu"}) == [TYPO]
    assert group_check_lines(rules, {"gpu", "overnigth"}) == []
    assert group_check_lines(rules, None) == [GROUPS_UNCHECKED]
    assert group_check_lines(structure_rules([{"users": ["x"], "cull": False}]), None) == []
    two = group_check_lines(structure_rules([{"groups": ["a", "b"], "timeout": 60}]), set())
    assert two == [
        "the rules name groups the hub does not have: 'a' (rules[0]); 'b' (rules[0]); no user can match a rule "
        "through them, so the users meant for them fall to the next rule that matches them, or the global options"
    ]


# --- reading the hub's groups -----------------------------------------------------------------------------------


async def test_every_page_of_groups_is_read(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    groups = Groups(hub, [f"g{i}" for i in range(7)], page=3)
    async with hub.running(), open_hub_client(config(), transport=hub.transport()) as client:
        names = await read_group_names(client)
    assert names == frozenset(f"g{i}" for i in range(7))
    assert [r.url.params["offset"] for r in groups.requests] == ["0", "3", "6"]
    assert MAX_GROUPS >= 10_000


# --- a culler says it at start and at each pass -----------------------------------------------------------------


async def test_an_unknown_group_is_said_at_start_and_at_every_pass_while_unknown(
    autojump_clock: trio.testing.MockClock, warnings: list[str]
) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(3, idle_fraction=0.0, seed=1, now=NOW)
    groups = Groups(hub, ["gpu", "students", "staff"])
    culler = Culler(config(cull_every=600), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        first = await culler.run_pass_now()
        assert warnings == [f"Rules: {TYPO}"], "at start, before the first pass's summary"
        await culler.run_pass_now()
        assert warnings == [f"Rules: {TYPO}"] * 2
        groups.names.append("overnigth")
        last = await culler.run_pass_now()
        culler.stop(grace=0)
    assert warnings == [f"Rules: {TYPO}"] * 2, "not once the hub has the group"
    assert first.outcome == last.outcome == "ran"


async def test_a_token_that_may_not_list_groups_is_said_once_and_stops_nothing(
    autojump_clock: trio.testing.MockClock, warnings: list[str]
) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(2, idle_fraction=1.0, seed=1, now=NOW)
    Groups(hub, ["gpu"], allowed=False)
    culler = Culler(config(cull_every=600), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        reports = [await culler.run_pass_now() for _ in range(3)]
        culler.stop(grace=0)
    assert warnings == [f"Rules: {GROUPS_UNCHECKED}"]
    assert [report.outcome for report in reports] == ["ran"] * 3
    assert reports[0].servers_culled == {"idle": 2}


async def test_rules_without_groups_ask_the_hub_nothing(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(2, idle_fraction=0.0, seed=1, now=NOW)
    groups = Groups(hub, [])
    culler = Culler(config(rules=[{"users": ["user-0"], "cull": False}]), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        await culler.run_pass_now()
        culler.stop(grace=0)
    assert groups.requests == []


# --- --explain says it too ---------------------------------------------------------------------------------------


async def test_explain_names_the_unknown_group() -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("ann", created=NOW, servers={"": FakeServer("", NOW, NOW)})
    Groups(hub, ["gpu"])
    async with open_fake_hub(hub) as api_url:
        cfg = config(url=api_url)
        text, document = io.StringIO(), io.StringIO()
        assert await run_explain(cfg, "ann", out=text) == 0
        assert await run_explain(cfg, "ann", out=document, json_format=True) == 0
    assert text.getvalue().endswith(f"  note:     {TYPO}\n")
    assert json.loads(document.getvalue())["notes"] == [TYPO]
