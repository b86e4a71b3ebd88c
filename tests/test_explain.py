"""``--explain``: the pure explanation, the README's example, and the CLI against the simulated hub."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from trio_culler import Action, Config, Server, User, run_pass
from trio_culler._explain import explain_user, run_explain
from trio_culler._rules import MissingFieldError
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, open_fake_hub

from .support.decisions import README_EXAMPLE
from .support.faults import NOW, TOKEN
from .support.faults import make_config as config

M = timedelta(minutes=1)
README = Path(__file__).resolve().parent.parent / "README.md"


def alice() -> User:
    server = Server(
        name="",
        ready=True,
        url="/user/alice/",
        started=NOW - 120 * M,
        last_activity=NOW - 45 * M,
        user_options={"profile": "gpu"},
    )
    return User(name="alice", admin=False, groups=(), servers={"": server}, created=NOW - 1000 * M)


def test_the_readme_example_is_what_explain_prints() -> None:
    section = README.read_text(encoding="utf-8").split("## Explaining a decision", 1)[1]
    match = re.search(r"```\n(User alice.*?)```", section, re.S)
    assert match is not None
    explanation = explain_user(alice(), config(timeout=3600, rules=README_EXAMPLE), NOW)
    assert explanation.render() == match.group(1)


def test_explanation_fields() -> None:
    cfg = config(timeout=3600, rules=README_EXAMPLE, warn_before=300, warn_url="http://127.0.0.1:9/")
    explanation = explain_user(alice(), cfg, NOW)
    [server] = explanation.servers
    assert server.matched.index == 2
    assert server.decision.action is Action.STOP
    assert server.cull_at == NOW - 30 * M
    # Due since 11:30 and never warned: a pass warns its user now, and culls it --warn-before later.
    assert server.warn_at == NOW
    assert server.culled_from == NOW + 5 * M
    data = explanation.as_dict()
    assert data["servers"][0]["signals"] == {"hub": {"last_activity": "2026-11-25T11:15:00Z", "idle_seconds": 2700}}
    assert data["servers"][0]["limits"]["timeout_seconds"] == 900
    assert data["servers"][0]["rule"]["rule"] == README_EXAMPLE[2]
    assert data["user_decision"]["action"] == "keep"
    json.dumps(data)  # JSON-ready throughout


def test_an_exempt_user_is_explained_as_never_culled() -> None:
    user = User(
        name="vip-1",
        admin=False,
        groups=(),
        servers={
            "": Server(
                name="", ready=True, url="/u/", started=NOW - 10_000 * M, last_activity=NOW - 9000 * M, user_options={}
            )
        },
    )
    text = explain_user(user, config(timeout=60, rules=README_EXAMPLE), NOW).render()
    assert "rules[0] (users=vip-*,svc-backup -> cull=false)" in text
    assert "exempt: never culled" in text
    assert "culled:   never" in text
    assert "user:     keep: exempt by a rule" in text


def test_explain_refuses_a_hidden_field() -> None:
    user = User(name="u", admin=False, groups=None)
    with pytest.raises(MissingFieldError):
        explain_user(user, config(rules=[{"groups": ["g"]}]), NOW)


def test_explain_server_filters_but_every_server_keeps_the_user() -> None:
    busy = Server(name="lab", ready=True, url="/u/lab/", started=NOW - 100 * M, last_activity=NOW)
    idle = Server(name="", ready=True, url="/u/", started=NOW - 100 * M, last_activity=NOW - 90 * M)
    user = User(
        name="u", admin=False, created=NOW - 1000 * M, last_activity=NOW - 90 * M, servers={"": idle, "lab": busy}
    )
    explanation = explain_user(user, config(timeout=3600, cull_users=True), NOW, server="")
    assert [s.name for s in explanation.servers] == [""]
    assert explanation.user_decision.code == "servers_left"


async def test_run_explain_against_the_simulated_hub() -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    old = NOW - 300 * M
    hub.add_user("idle", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    async with open_fake_hub(hub) as api_url:
        cfg = Config(api_token=TOKEN, url=api_url, timeout=600)
        out = io.StringIO()
        assert await run_explain(cfg, "idle", out=out, json_format=True) == 0
        data = json.loads(out.getvalue())
        assert data["user"] == "idle"
        assert data["servers"][0]["decision"]["action"] == "stop"
        assert data["servers"][0]["rule"] is None
        out = io.StringIO()
        assert await run_explain(cfg, "nobody", out=out, json_format=True) == 1
        assert "no user 'nobody'" in json.loads(out.getvalue())["error"]
        out = io.StringIO()
        assert await run_explain(cfg, "idle", server="lab", out=out, json_format=True) == 1
        assert "no running server 'lab'" in json.loads(out.getvalue())["error"]
    # Explained, never acted on.
    assert hub.statistics().stop_requests == {}


async def test_explain_reads_the_kernels_with_inspect_kernels() -> None:
    now = datetime.now(UTC)
    old = now - 300 * M
    hub = FakeHub(token=TOKEN)
    busy = [FakeKernel("k", "busy", now - 70 * M)]
    hub.add_user("computing", created=old, last_activity=old, servers={"": FakeServer("", old, old, kernels=busy)})
    hub.add_user("rstudio", created=old, last_activity=old, servers={"": FakeServer("", old, old, kernels=None)})
    async with open_fake_hub(hub) as api_url:
        public = api_url.removesuffix("/hub/api")
        cfg = Config(api_token=TOKEN, url=api_url, timeout=600, inspect_kernels=True, public_url=public)
        out = io.StringIO()
        assert await run_explain(cfg, "computing", out=out, json_format=True) == 0
        data = json.loads(out.getvalue())["servers"][0]
        assert data["decision"]["action"] == "keep"
        assert data["decision"]["reason"].startswith("kernel busy for 01:10:")
        assert data["signals"]["kernels"]["busy"] is True
        assert data["signals"]["kernels"]["kernels"] == 1
        assert data["signals"]["hub"]["idle_seconds"] >= 300 * 60
        out = io.StringIO()
        assert await run_explain(cfg, "computing", out=out) == 0
        assert "by the kernels" in out.getvalue()
        out = io.StringIO()
        assert await run_explain(cfg, "rstudio", out=out, json_format=True) == 0
        data = json.loads(out.getvalue())["servers"][0]
        assert data["decision"]["action"] == "stop", "not inspectable: decided from the hub's data"
        assert data["signals"]["kernels"]["inspection_failure"] == "not_found"
    assert hub.statistics().stop_requests == {}


# --- --explain judges as the pass does: the hook, the kernels' clock, failures -------------------------------


def kernels_hub(now: datetime, *, hub_idle: timedelta, kernel: FakeKernel) -> FakeHub:
    hub = FakeHub(token=TOKEN)
    started = now - 300 * M
    hub.add_user("u", created=started, servers={"": FakeServer("", started, now - hub_idle, kernels=[kernel])})
    return hub


async def explain_json(cfg: Config, user: str = "u") -> dict[str, Any]:
    out = io.StringIO()
    assert await run_explain(cfg, user, out=out, json_format=True) == 0, out.getvalue()
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


async def test_explain_follows_kernel_activity_only_as_the_pass_does() -> None:
    """A tab polled 30 s ago, the kernel idle for 50 minutes: with --kernel-activity-only the pass keeps the
    server until the kernel has been idle an hour, and asks the hook about the kernel's 50 minutes."""
    now = datetime.now(UTC)
    kernel_at = now - 50 * M
    hub = kernels_hub(now, hub_idle=timedelta(seconds=30), kernel=FakeKernel("k", "idle", kernel_at))
    async with open_fake_hub(hub) as api_url:
        public = api_url.removesuffix("/hub/api")
        cfg = Config(
            api_token=TOKEN,
            url=api_url,
            timeout=3600,
            inspect_kernels=True,
            kernel_activity_only=True,
            public_url=public,
        )
        server = (await explain_json(cfg))["servers"][0]
        assert server["decision"]["rule"] == "kernels_active"
        # The kernels' clock, not the hub's (which would say 11:59:30 + 1 h).
        assert server["cull_at"] == (kernel_at + 60 * M).isoformat().replace("+00:00", "Z")
        assert server["cull_rule"] == "kernels_idle"

        asked: list[float] = []

        def hook(inactive: timedelta, inactive_limit: int, server: dict[str, Any], user: dict[str, Any]) -> bool:
            asked.append(inactive.total_seconds())
            return False

        with_hook = attrs.evolve(cfg, cull_arbiter_hook=hook)
        await explain_json(with_hook)
        report = await run_pass(with_hook)
    assert report.ok
    assert len(asked) == 2, "once by --explain, once by the pass"
    assert all(abs(seconds - 50 * 60) < 60 for seconds in asked), asked


async def test_a_hook_that_raises_keeps_the_server_in_explain_as_in_the_pass() -> None:
    now = datetime.now(UTC)
    old = now - 300 * M
    hub = FakeHub(token=TOKEN)
    hub.add_user("idle", created=old, last_activity=old, servers={"": FakeServer("", old, old)})

    def hook(inactive: timedelta, inactive_limit: int, server: dict[str, Any]) -> bool:
        raise RuntimeError("the hook's own bug")

    async with open_fake_hub(hub) as api_url:
        cfg = Config(api_token=TOKEN, url=api_url, timeout=600, cull_arbiter_hook=hook)
        decision = (await explain_json(cfg, "idle"))["servers"][0]["decision"]
        assert decision["action"] == "keep"
        assert decision["rule"] == "hook_failed"
        assert "RuntimeError: the hook's own bug" in decision["reason"]
        out = io.StringIO()
        assert await run_explain(cfg, "idle", out=out) == 0
        assert "culled:   never, unless something changes" in out.getvalue()
        report = await run_pass(cfg)
    assert hub.statistics().stop_requests == {}
    assert report.errors_by_kind == {"hook": 1}


async def test_a_busy_kernel_is_never_shown_beside_a_cull_it_prevents() -> None:
    now = datetime.now(UTC)
    busy_since = now - 100 * M
    hub = kernels_hub(now, hub_idle=100 * M, kernel=FakeKernel("k", "busy", busy_since))
    async with open_fake_hub(hub) as api_url:
        public = api_url.removesuffix("/hub/api")
        cfg = Config(api_token=TOKEN, url=api_url, timeout=3600, inspect_kernels=True, public_url=public)
        out = io.StringIO()
        assert await run_explain(cfg, "u", out=out) == 0
        text = out.getvalue()
        assert "now:      keep: kernel busy for 01:40:" in text
        assert "culled:   never, unless something changes" in text
        # With --max-busy the protection ends, and that is the cull time shown.
        out = io.StringIO()
        assert await run_explain(attrs.evolve(cfg, max_busy=3 * 3600), "u", out=out) == 0
        expected = (busy_since + 180 * M).isoformat().replace("+00:00", "Z")
        assert f"culled:   at {expected} (busy_expired, in " in out.getvalue()


def test_max_age_off_is_none_not_unknown() -> None:
    text = explain_user(alice(), config(timeout=3600), NOW).render()
    assert "limits:   timeout 01:00:00, max-age none\n" in text
    assert explain_user(alice(), config(timeout=3600), NOW).as_dict()["servers"][0]["limits"]["max_age_seconds"] is None


async def test_a_user_the_token_cannot_see_is_not_said_to_be_missing() -> None:
    """The hub answers 404 for a user that does not exist and for one the token may not read: only a token that
    may read every user's name can tell them apart."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, scopes=["read:users!user=alice", "read:servers!user=alice"])

    async def hidden(request: httpx.Request) -> httpx.Response | None:
        # JupyterHub's answer to a token that may not read bob: 404, as for no such user.
        if request.url.path.endswith("/users/bob"):
            return httpx.Response(404, json={"status": 404, "message": "No such user"})
        return None

    hub.fault = hidden
    async with open_fake_hub(hub) as api_url:
        cfg = Config(api_token=TOKEN, url=api_url, timeout=600)
        out = io.StringIO()
        assert await run_explain(cfg, "bob", out=out, json_format=True) == 1
        assert json.loads(out.getvalue())["error"] == "the token cannot see user 'bob' (or there is no such user)"
    full = FakeHub(token=TOKEN, clock=lambda: NOW)
    async with open_fake_hub(full) as api_url:
        out = io.StringIO()
        assert await run_explain(attrs.evolve(cfg, url=api_url), "bob", out=out, json_format=True) == 1
        assert json.loads(out.getvalue())["error"] == "the hub has no user 'bob'"
