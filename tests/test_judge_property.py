"""``--explain`` says what the pass does: for drawn hubs, policies, rules, kernel answers and hooks, the verdict
``--explain`` prints for each server (its decision and its cull time) is what a real pass against the same
FakeHub does with that server (stops it by that code, or keeps it with that forecast), and each hook is asked as
often by one as by the other, at most once per server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
import httpx
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trio_culler import Config
from trio_culler._explain import Explanation, explain
from trio_culler._hub import open_hub_client
from trio_culler._rules import Rule
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, FakeTerminal

from .support import strategies
from .support.passes import cull
from .support.strategies import NOW

URL = "http://127.0.0.1:8081/hub/api"
PUBLIC = "http://127.0.0.1:8081"
TOKEN = "property-token"
USERS = ("alice", "bob", "vip-1")

# Now and then in the future (clocks out of step); mostly within a few timeouts of now, where limits turn.
seconds_ago = st.one_of(st.integers(-600, 3600), st.integers(3600, 12 * 3600)).map(lambda s: NOW - timedelta(seconds=s))
limits = st.sampled_from([0, 600, 3600, 7200])


@attrs.frozen
class DrawnServer:
    server: FakeServer
    #: How the server answers api/kernels: None (as jupyter_server does) or a failure's name.
    failure: str | None


@st.composite
def drawn_servers(draw: st.DrawFn, name: str) -> DrawnServer:
    kernel = st.builds(
        FakeKernel,
        id=st.sampled_from(["k1", "k2", "k3"]),
        execution_state=st.sampled_from(["idle", "busy", "busy", "starting"]),
        last_activity=st.none() | seconds_ago,
    )
    # Now and then not a jupyter_server at all (no api/kernels: 404).
    kernels = None if draw(st.integers(0, 9)) == 0 else draw(st.lists(kernel, max_size=3))
    terminals = draw(st.lists(st.builds(FakeTerminal, name=st.just("1"), last_activity=st.none() | seconds_ago)))
    server = FakeServer(
        name,
        started=draw(st.none() | seconds_ago),
        last_activity=draw(st.none() | seconds_ago),
        pending=draw(st.sampled_from([*[None] * 8, "spawn", "stop"])),
        ready=draw(st.sampled_from([*[True] * 8, False])),
        kernels=kernels,
        terminals=terminals,
    )
    failure = draw(st.sampled_from([*[None] * 9, "403", "garbage", "500", "503", "424", "404", "refused", "hangs"]))
    return DrawnServer(server, failure)


@st.composite
def hubs(draw: st.DrawFn) -> dict[str, tuple[dict[str, Any], list[DrawnServer]]]:
    users = {}
    for name in draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True)):
        servers = [draw(drawn_servers(server)) for server in draw(st.sets(st.sampled_from(["", "lab"])))]
        options = {"admin": draw(st.booleans()), "created": draw(seconds_ago), "last_activity": draw(seconds_ago)}
        users[name] = (options, servers)
    return users


class Hook:
    """A cull_arbiter_hook of a drawn kind, counting its calls per server."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: Counter[str] = Counter()

    def answer(self, inactive: timedelta, limit: float, server: dict[str, Any]) -> object:
        self.calls[server["full_name"]] += 1
        if self.kind == "raises":
            raise RuntimeError("the hook's own bug")
        if self.kind == "garbage":
            return "yes"
        if self.kind == "keeps":
            return False
        if self.kind == "culls":
            return True
        return inactive.total_seconds() >= limit

    def make(self) -> Callable[..., Any]:
        if self.kind.startswith("async "):
            inner = Hook(self.kind.removeprefix("async "))
            inner.calls = self.calls

            async def hook(inactive: timedelta, inactive_limit: float, server: dict[str, Any]) -> object:
                await trio.sleep(0.01)
                return inner.answer(inactive, inactive_limit, server)

            return hook
        return lambda inactive, inactive_limit, server: self.answer(inactive, inactive_limit, server)


@st.composite
def configs(draw: st.DrawFn) -> tuple[Config, str | None]:
    inspect = draw(st.sampled_from([True, True, False]))
    hook_kind = draw(
        st.sampled_from([None, "threshold", "keeps", "culls", "raises", "garbage", "async threshold", "async raises"])
    )
    rules: list[Rule] = draw(st.lists(strategies.rules(), max_size=3))
    config = Config(
        api_token=TOKEN,
        url=URL,
        timeout=draw(limits),
        max_age=draw(st.sampled_from([0, 3600, 6 * 3600])),
        cull_users=draw(st.booleans()),
        cull_admin_users=draw(st.booleans()),
        cull_default_servers=draw(st.sampled_from([True, True, True, False])),
        cull_named_servers=draw(st.sampled_from([True, True, True, False])),
        remove_named_servers=draw(st.booleans()),
        inspect_kernels=inspect,
        kernel_activity_only=inspect and draw(st.booleans()),
        max_busy=draw(st.sampled_from([0, 1800, 7200])) if inspect else 0,
        public_url=draw(st.sampled_from([PUBLIC, PUBLIC, None])) if inspect else None,
        rules=rules,
        request_timeout=5,
        max_retries=1,
    )
    return config, hook_kind


def build_hub(drawn: dict[str, tuple[dict[str, Any], list[DrawnServer]]]) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    failures: dict[str, str] = {}
    for name, (options, servers) in drawn.items():
        hub.add_user(name, servers={s.server.name: attrs.evolve(s.server) for s in servers}, **options)
        for s in servers:
            if s.failure is not None:
                failures[f"/user/{name}/{s.server.name + '/' if s.server.name else ''}api/"] = s.failure

    async def fault(request: httpx.Request) -> httpx.Response | None:
        failure = next((f for prefix, f in failures.items() if request.url.path.startswith(prefix)), None)
        if failure is None:
            return None
        if failure == "hangs":
            await trio.sleep_forever()
        if failure == "refused":
            error = httpx.ConnectError("cannot connect")
            error.__cause__ = ConnectionRefusedError(111, "Connection refused")
            raise error
        if failure == "garbage":
            return httpx.Response(200, content=b"<html>")
        return httpx.Response(int(failure))

    hub.fault = fault
    return hub


async def explain_then_cull(
    drawn: dict[str, tuple[dict[str, Any], list[DrawnServer]]], config: Config, hook_kind: str | None
) -> None:
    explained_hook = Hook(hook_kind) if hook_kind else None
    hub = build_hub(drawn)
    explanations: dict[str, Explanation] = {}
    if explained_hook is not None:
        config = attrs.evolve(config, cull_arbiter_hook=explained_hook.make())
    async with hub.running(), open_hub_client(config, transport=hub.transport()) as client:
        for name in drawn:
            explanation = await explain(client, config, name, NOW)
            assert isinstance(explanation, Explanation), explanation
            explanations[name] = explanation
    assert hub.statistics().stop_requests == {}, "--explain acts on nothing"

    passed_hook = Hook(hook_kind) if hook_kind else None
    if passed_hook is not None:
        config = attrs.evolve(config, cull_arbiter_hook=passed_hook.make())
    report = await cull(hub, config)
    stops = hub.statistics().stop_requests
    culls = {(c.user, c.server): c for c in report.culls}
    upcoming = {(f.user, f.server): f for f in report.upcoming}
    errors = Counter((e.subject, e.kind) for e in report.errors)

    for name, explanation in explanations.items():
        for server in explanation.servers:
            key, verdict = (name, server.name), server.verdict
            label = f"{name}/{server.name}" if server.name else name
            decision = verdict.decision
            event(f"code {decision.code}")
            if verdict.inspection is not None:
                event(f"inspection failed: {verdict.inspection.kind}")
            assert stops.get(key, 0) == (1 if decision.acts else 0), (key, decision, report.culls)
            if decision.acts:
                assert culls[key].rule == decision.code, (key, decision, culls[key])
                assert key not in upcoming
                continue
            due = verdict.due
            if due is not None and NOW < due.at <= NOW + timedelta(hours=1):
                forecast = upcoming[key]
                assert (forecast.cull_at, forecast.limit) == (due.at, due.code), (key, verdict, forecast)
            else:
                assert key not in upcoming, (key, verdict, upcoming.get(key))
            failed_kind = {"hook_failed": "hook", "inspection_failed": "inspection"}.get(decision.code)
            if failed_kind is not None:
                assert errors[label, failed_kind] == 1, (key, decision, report.errors)
        deleted = name in hub.statistics().users_deleted
        assert deleted == explanation.user_decision.acts, (name, explanation.user_decision, report)
    if explained_hook is not None and passed_hook is not None:
        assert explained_hook.calls == passed_hook.calls
        assert all(count == 1 for count in passed_hook.calls.values()), "one question per server"


@settings(max_examples=200, deadline=None)
@given(hubs(), configs())
def test_explain_is_what_the_pass_does(
    drawn: dict[str, tuple[dict[str, Any], list[DrawnServer]]], config_and_hook: tuple[Config, str | None]
) -> None:
    config, hook_kind = config_and_hook
    trio.run(explain_then_cull, drawn, config, hook_kind, clock=trio.testing.MockClock(autojump_threshold=0))
