"""The --once progress bar: drawn on a terminal, absent otherwise."""

from __future__ import annotations

import os
import pty
import re
import sys
from datetime import UTC, datetime, timedelta

import trio

from trio_culler._progress import render_progress_bar
from trio_culler._report import PassRecorder
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

TOKEN = "progress-test-token"


def recorder(seen: int, total: int | None, culled: int) -> PassRecorder:
    rec = PassRecorder(started=datetime.now(UTC), started_at=0.0, dry_run=False)
    rec.users_seen, rec.listing_total = seen, total
    rec.servers_culled["idle"] = culled
    return rec


def test_bar_fills_with_users_seen_of_the_hubs_total() -> None:
    assert render_progress_bar(recorder(0, 100, 0), width=10) == (
        "[----------] 0/100 users, 0 servers culled, 0 users deleted"
    )
    assert render_progress_bar(recorder(50, 100, 7), width=10).startswith("[#####-----] 50/100 users, 7 servers")
    assert render_progress_bar(recorder(100, 100, 7), width=10).startswith("[##########]")
    # Users seen may exceed the first total when servers start during the pass: the bar stays full.
    assert render_progress_bar(recorder(130, 100, 0), width=10).startswith("[##########] 130/100")
    assert render_progress_bar(recorder(3, None, 0), width=4).startswith("[----] 3 users")
    assert render_progress_bar(recorder(1, None, 1), width=4) == "[----] 1 user, 1 server culled, 0 users deleted"


def _hub() -> FakeHub:
    hub = FakeHub(token=TOKEN, stop_latency=0.01)
    old = datetime.now(UTC) - timedelta(hours=3)
    for i in range(300):
        hub.add_user(f"u{i}", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    return hub


async def _run_cli(api_url: str, *, tty: bool) -> str:
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "trio_culler", f"--url={api_url}", "--once", "--log-level=WARNING"]
    if not tty:
        result = await trio.run_process(argv, env=env, capture_stderr=True, check=False)
        assert result.returncode == 0
        return result.stderr.decode()
    main, terminal = pty.openpty()
    try:
        process = await trio.run_process(argv, env=env, stderr=terminal, check=False)
        assert process.returncode == 0
        os.set_blocking(main, False)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(main)
        os.close(terminal)


async def test_once_draws_a_bar_on_a_terminal_only() -> None:
    hub = _hub()
    async with open_fake_hub(hub) as api_url:
        on_terminal = await _run_cli(api_url, tty=True)
    assert re.search(r"\[#{30}\] 300/300 users, 300 servers culled", on_terminal), on_terminal[-500:]
    assert "\r" in on_terminal
    hub = _hub()
    async with open_fake_hub(hub) as api_url:
        in_a_pipe = await _run_cli(api_url, tty=False)
    assert "#" not in in_a_pipe
    assert "\r" not in in_a_pipe
