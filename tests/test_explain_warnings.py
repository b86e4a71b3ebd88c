"""``--explain`` with warnings: when a server's user was warned (the state file), under which id, the cull time
announced, and whether its user asked to keep it (the server's own state, read with a token of that user's)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import trio
import trio.testing

from trio_culler import Config
from trio_culler._explain import run_explain
from trio_culler.testing import FakeHub

from .support.faults import NOW
from .test_notices import config, idle, make_hub
from .test_notify import Clock, Receiver, culler

M = timedelta(minutes=1)


async def explain(hub: FakeHub, cfg: Config, user: str, now: datetime) -> tuple[int, str, Any]:
    """``--explain=user`` at ``now``, as text and as JSON."""
    text, data = io.StringIO(), io.StringIO()
    status = await run_explain(cfg, user, out=text, transport=hub.transport(), now=now)
    await run_explain(cfg, user, out=data, json_format=True, transport=hub.transport(), now=now)
    return status, text.getvalue(), json.loads(data.getvalue())


async def test_explain_shows_the_warning_and_the_keep_as_a_pass_takes_them(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    hub = make_hub(ann=idle(50), bob=idle(50), cat=idle(20))
    receiver = Receiver()
    clock = Clock()
    cfg = config(state_file=str(tmp_path / "state.json"))
    async with culler(hub, cfg, receiver, clock) as run:
        await run(NOW)
    ids = {post["user"]: post["id"] for post in receiver.posts}
    clock.now = NOW + 8 * M
    hub.keep("bob")
    async with hub.running():
        status, text, data = await explain(hub, cfg, "ann", NOW + 10 * M)
        assert status == 0
        assert f"    warned:   at 2026-11-25T12:00:00Z (warning {ids['ann']}), cull at 2026-11-25T12:15:00Z\n" in text
        assert "    now:      stop: inactive for 01:00:00" in text
        assert "    held:     until 2026-11-25T12:15:00Z, the time announced\n" in text
        assert "    keep:     not asked for\n" in text
        [server] = data["servers"]
        assert server["warning"] == {
            "id": ids["ann"],
            "warned_at": "2026-11-25T12:00:00Z",
            "cull_at": "2026-11-25T12:15:00Z",
            "reason": "idle",
            "keep": None,
            "keep_failure": None,
            "kept_at": None,
        }

        status, text, data = await explain(hub, cfg, "bob", NOW + 10 * M)
        assert "    keep:     asked for at 2026-11-25T12:08:00Z, after the warning: it counts as use\n" in text
        assert "    now:      keep: active: inactive for 00:02:00" in text, "what its cull will find"
        assert "    culled:   at 2026-11-25T13:08:00Z (idle, in 00:58:00) if nothing changes\n" in text
        [server] = data["servers"]
        assert server["warning"]["keep"] == {"requested_at": "2026-11-25T12:08:00Z", "counts": True}
        assert server["warning"]["kept_at"] == "2026-11-25T12:08:00Z"

        # Not warned yet: when it will be, and the earliest it can then be culled.
        status, text, data = await explain(hub, cfg, "cat", NOW + 10 * M)
        assert "    warned:   not yet; at 2026-11-25T12:20:00Z at the earliest\n" in text
        [server] = data["servers"]
        assert (server["warning"], server["warn_at"], server["culled_from"]) == (
            None,
            "2026-11-25T12:20:00Z",
            "2026-11-25T12:40:00Z",
        )
    # Asked with each server's own token, never the culler's.
    assert set(hub.statistics().server_credentials) == {"own"}


async def test_explain_says_when_a_server_has_no_notice_api(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    hub = make_hub(ann=idle(50, notices=False))
    cfg = config(state_file=str(tmp_path / "state.json"))
    async with culler(hub, cfg, Receiver()) as run:
        await run(NOW)
    async with hub.running():
        _status, text, _data = await explain(hub, cfg, "ann", NOW + 15 * M)
    assert "    keep:     cannot be asked for (the server does not run trio-culler-notice)\n" in text
    assert "    now:      stop: inactive for 01:05:00" in text
