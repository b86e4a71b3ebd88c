"""The README's embedding example runs as written, against a simulated hub on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = "readme-example-token-0123456789"


def embedding_example(index: int = 0) -> str:
    """The ``index``-th Python block of the README's embedding section."""
    section = README.read_text().split("## Embedding in a trio application", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) > index
    return str(blocks[index])


def hub_with_one_idle_server() -> FakeHub:
    hub = FakeHub(token=TOKEN)
    old, fresh = datetime.now(UTC) - timedelta(hours=3), datetime.now(UTC)
    hub.add_user("idle", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    hub.add_user("busy", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    return hub


async def run_example(code: str, tmp_path: Path, hub: FakeHub, **env: str) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "embed.py"
    script.write_text(code)
    async with open_fake_hub(hub) as api_url:
        environ = {**os.environ, "JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_API_URL": api_url, **env}
        with trio.fail_after(60):
            result = await trio.run_process(
                [sys.executable, str(script)], env=environ, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 0, result.stderr.decode()
    return result


async def test_the_embedding_example_culls_and_exits(tmp_path: Path) -> None:
    hub = hub_with_one_idle_server()
    result = await run_example(embedding_example(), tmp_path, hub)
    assert result.stdout.decode().startswith("Pass done")
    assert set(hub.statistics().stop_requests) == {("idle", "")}


async def test_the_status_page_example_serves_and_shows_the_pass(tmp_path: Path) -> None:
    hub = hub_with_one_idle_server()
    env = {"JUPYTERHUB_SERVICE_NAME": "culler", "JUPYTERHUB_CLIENT_ID": "service-culler"}
    result = await run_example(embedding_example(1), tmp_path, hub, **env)
    lines = result.stdout.decode().splitlines()
    assert re.fullmatch(r"status page at http://127\.0\.0\.1:\d+/", lines[0]), lines
    assert lines[1] == "1 culled, shown on the page"
    assert set(hub.statistics().stop_requests) == {("idle", "")}
