"""The README's embedding example runs as written, against a simulated hub on loopback."""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = "readme-example-token-0123456789"


def embedding_example() -> str:
    section = README.read_text().split("## Embedding in a trio application", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


async def test_the_embedding_example_culls_and_exits(tmp_path: Path) -> None:
    hub = FakeHub(token=TOKEN)
    old, fresh = datetime.now(UTC) - timedelta(hours=3), datetime.now(UTC)
    hub.add_user("idle", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    hub.add_user("busy", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    script = tmp_path / "embed.py"
    script.write_text(embedding_example())
    async with open_fake_hub(hub) as api_url:
        env = {**os.environ, "JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_API_URL": api_url}
        with trio.fail_after(60):
            result = await trio.run_process(
                [sys.executable, str(script)], env=env, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("Pass done")
    assert set(hub.statistics().stop_requests) == {("idle", "")}
