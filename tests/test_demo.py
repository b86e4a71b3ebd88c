"""``trio-culler --demo``: the README's first command, on a machine with no hub."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def demo(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_culler", "--demo", *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},  # no token, no hub URL: the demo needs neither
    )


def test_demo_culls_exactly_the_idle_servers_and_says_why() -> None:
    result = demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    served = re.search(r"Serving it at (http://127\.0\.0\.1:\d+/hub/api)", out)
    assert served, out
    check = re.search(r"Check: (\d+)/(\d+) idle servers stopped, 0 active servers stopped, 0 stopped twice", out)
    assert check, out
    assert check.group(1) == check.group(2)
    assert int(check.group(1)) > 0
    assert re.search(r"^  server user-\d+(/named)?: inactive for \d\d:\d\d:\d\d$", out, re.M), out
    assert "at most 10 in flight" in out


def test_demo_honours_the_culling_flags() -> None:
    result = demo("--cull-users", "--concurrency=3", "--api-page-size=25")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "at most 3 in flight" in result.stdout
    assert re.search(r"^  user user-\d+ deleted: inactive for", result.stdout, re.M), result.stdout
    assert re.search(r"list: 1\d\d,", result.stdout), "page size 25: over a hundred pages"
    dry = demo("--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Dry run:" in dry.stdout
    assert "stop: " not in dry.stdout, "a dry run sends no DELETE"
