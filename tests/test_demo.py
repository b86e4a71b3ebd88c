"""``trio-culler --demo``: the README's first command, on a machine with no hub."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import attrs

from trio_culler import Config
from trio_culler._demo import expected_culls
from trio_culler.testing import FakeHub, FakeServer


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
    check = re.search(
        r"^Check: expected (\d+) servers culled \((\d+) idle past --timeout\) and 0 users deleted\.$", out, re.M
    )
    assert check, out
    assert check.group(1) == check.group(2)
    assert int(check.group(1)) > 0
    assert "Check: the culler did exactly that." in out
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
    assert re.search(r"Dry run: (\d+) servers would have been culled \(expected \1\); none was stopped", dry.stdout)
    assert "stop: " not in dry.stdout, "a dry run sends no DELETE"


def expected_servers(out: str) -> int:
    found = re.search(r"^Check: expected (\d+) servers culled", out, re.M)
    assert found, out
    return int(found.group(1))


def test_demo_with_max_age_or_a_kind_switched_off_checks_what_those_flags_cull() -> None:
    # Both exited 1 before ("18 active servers stopped"), although the culler did what it was told.
    plain = expected_servers(demo().stdout)
    old = demo("--max-age=3600")
    assert old.returncode == 0, old.stdout + old.stderr
    found = re.search(r"\((\d+) idle past --timeout, (\d+) more past --max-age\)", old.stdout)
    assert found, old.stdout
    assert int(found.group(1)) == plain
    assert int(found.group(2)) > 0
    assert "Check: the culler did exactly that." in old.stdout
    no_named = demo("--cull-named-servers=false", "--cull-users", "--cull-admin-users=false")
    assert no_named.returncode == 0, no_named.stdout + no_named.stderr
    assert 0 < expected_servers(no_named.stdout) < plain
    assert "Check: the culler did exactly that." in no_named.stdout


def test_the_expectation_is_worked_out_from_the_simulation() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    hub = FakeHub(clock=lambda: now)
    h = timedelta(hours=1)

    def server(name: str, *, idle: timedelta, age: timedelta) -> FakeServer:
        return FakeServer(name, started=now - age, last_activity=now - idle)

    hub.add_user(
        "idle", created=now - 48 * h, last_activity=now - 2 * h, servers={"": server("", idle=2 * h, age=3 * h)}
    )
    hub.add_user("active", created=now - 48 * h, last_activity=now, servers={"": server("", idle=0 * h, age=3 * h)})
    hub.add_user("old", created=now - 48 * h, last_activity=now, servers={"": server("", idle=0 * h, age=30 * h)})
    hub.add_user(
        "named",
        created=now - 48 * h,
        last_activity=now - 2 * h,
        servers={"": server("", idle=2 * h, age=3 * h), "lab": server("lab", idle=2 * h, age=3 * h)},
    )
    hub.add_user(
        "boss",
        admin=True,
        created=now - 48 * h,
        last_activity=now - 2 * h,
        servers={"": server("", idle=2 * h, age=3 * h)},
    )
    config = Config(api_token="x", timeout=3600)
    plain = expected_culls(hub, config, now)
    assert plain.servers == {("idle", ""), ("named", ""), ("named", "lab"), ("boss", "")}
    assert plain.users == frozenset()
    strict = attrs.evolve(config, max_age=24 * 3600, cull_named_servers=False, cull_users=True, cull_admin_users=False)
    expected = expected_culls(hub, strict, now)
    assert expected.servers == {("idle", ""), ("old", ""), ("named", ""), ("boss", "")}
    assert (expected.idle, expected.too_old) == (3, 1)
    # "named" keeps its lab server, so it stays; the admin is spared; "old" is recent but older than max-age.
    assert expected.users == {"idle", "old"}
