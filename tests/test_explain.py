"""``--explain``: the pure explanation, the README's example, and the CLI against the simulated hub."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from trio_culler import Action, Config, Server, User
from trio_culler._explain import explain_user, run_explain
from trio_culler._rules import MissingFieldError
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

from .test_engine import NOW, TOKEN, config
from .test_rules import ISSUE_EXAMPLE

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
    explanation = explain_user(alice(), config(timeout=3600, rules=ISSUE_EXAMPLE), NOW)
    assert explanation.render() == match.group(1)


def test_explanation_fields() -> None:
    cfg = config(timeout=3600, rules=ISSUE_EXAMPLE, warn_before=300, warn_url="http://127.0.0.1:9/")
    explanation = explain_user(alice(), cfg, NOW)
    [server] = explanation.servers
    assert server.matched.index == 2
    assert server.decision.action is Action.STOP
    assert server.cull_at == NOW - 30 * M
    assert server.warn_at == NOW - 35 * M
    data = explanation.as_dict()
    assert data["servers"][0]["signals"] == {"hub": {"last_activity": "2026-11-25T11:15:00Z", "idle_seconds": 2700}}
    assert data["servers"][0]["limits"]["timeout_seconds"] == 900
    assert data["servers"][0]["rule"]["rule"] == ISSUE_EXAMPLE[2]
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
    text = explain_user(user, config(timeout=60, rules=ISSUE_EXAMPLE), NOW).render()
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
    from datetime import UTC, datetime

    from trio_culler.testing import FakeKernel

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
