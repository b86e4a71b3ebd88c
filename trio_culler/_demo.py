"""``trio-culler --demo``: a whole pass of the real engine, over real loopback HTTP, against a simulated hub.

For a machine with no hub at hand: it serves a FakeHub on 127.0.0.1 with a few thousand users, some idle,
runs one pass with the options given on the command line (timeout, concurrency, page size, --cull-users,
--max-age, --cull-named-servers=false, --dry-run, ...), prints what it culled and why, and checks the result
against what those options should cull, worked out beforehand from the simulation's own timestamps by the
README's rules (not by the engine's functions, which it checks): exit status 0 when the culler did exactly that.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import attrs

from ._config import Config
from ._report import PassReport
from ._service import run_pass
from .testing import FakeHub, open_fake_hub

__all__ = ["DEMO_USERS", "Expected", "expected_culls", "run_demo"]

T = TypeVar("T")

DEMO_USERS = 3000
DEMO_IDLE_FRACTION = 0.3
DEMO_SEED = 2026
#: How long a stop takes at the simulated hub: a few milliseconds, like a local spawner.
DEMO_STOP_LATENCY = 0.005


async def run_demo(config: Config, *, log_level: int = logging.INFO) -> int:
    """Run the demonstration with the options in ``config`` (its URL and token are replaced by the simulated
    hub's); below DEBUG (``log_level``) the per-cull lines give way to a digest. Returns the exit status."""
    now = datetime.now(UTC)
    token = secrets.token_hex(16)
    timeout = timedelta(seconds=config.timeout)
    hub = FakeHub(token=token, stop_latency=DEMO_STOP_LATENCY)
    population = hub.populate(
        DEMO_USERS,
        idle_fraction=DEMO_IDLE_FRACTION,
        seed=DEMO_SEED,
        now=now,
        # Idle servers are well past the timeout, active ones well within it, whatever --timeout says.
        idle_for=max(timeout * 1.5, timedelta(seconds=2)),
        active_for=min(timeout / 10, timedelta(minutes=1)),
        named_fraction=0.1,
        admin_fraction=0.02,
    )
    print(
        f"Simulated hub: {len(population.users)} users, {len(population.idle) + len(population.active)} servers, "
        f"{len(population.idle)} idle for longer than the {config.timeout:g} s timeout"
    )
    # Worked out before the pass, from the simulation's own data: what these options should cull.
    expected = expected_culls(hub, config, now)
    quieted = []
    if log_level > logging.DEBUG:
        # One line per cull would be thousands of lines: the demo prints a digest of them below instead.
        for handler in logging.getLogger().handlers:
            quieted.append((handler, handler.level))
            handler.setLevel(logging.WARNING)
    try:
        async with hub.running(), open_fake_hub(hub) as api_url:
            print(f"Serving it at {api_url}; running one pass of the real culler against it...")
            simulated = attrs.evolve(config, url=api_url, api_token=token)
            report = await run_pass(simulated, now=now, reporters=[_print_culls])
            await hub.wait_stops_done()
    finally:
        for handler, level in quieted:
            handler.setLevel(level)
    stats = hub.statistics()
    stopped = set(stats.stop_requests)
    twice = [pair for pair, count in stats.stop_requests.items() if count > 1]
    print(
        f"Hub saw {sum(stats.requests_by_kind.values())} requests "
        f"({', '.join(f'{k}: {v}' for k, v in stats.requests_by_kind.items() if v)}), "
        f"at most {stats.max_in_flight} in flight (concurrency {config.concurrency})"
    )
    culled = sum(report.servers_culled.values())
    if config.dry_run:
        print(f"Dry run: {culled} servers would have been culled (expected {len(expected.servers)}); none was stopped.")
        as_expected = expected.judged_elsewhere or culled == len(expected.servers)
        return 0 if not stopped and as_expected and report.ok else 1
    deleted = set(stats.users_deleted)
    problems = []
    if not expected.judged_elsewhere:
        problems += [
            _differences("servers", expected.servers, stopped, _server_label),
            _differences("users deleted", expected.users, deleted, str),
        ]
    if twice:
        problems.append(f"{len(twice)} servers stopped twice")
    if not report.ok:
        problems.append("the pass reported errors")
    print(f"Check: expected {expected.describe()}.")
    found = [problem for problem in problems if problem]
    print("Check: the culler did exactly that." if not found else "Check FAILED: " + "; ".join(found))
    return 0 if not found else 1


def _print_culls(report: PassReport) -> None:
    """The demo's pass reporter: the summary, the culls by rule, and a sample of them with their reasons."""
    print(report.summary())
    by_rule = [f"{count} servers {rule}" for rule, count in sorted(report.servers_culled.items())]
    print("Culled, by rule: " + ", ".join([*by_rule, f"{report.users_culled} users"]))
    print("A sample of what was culled, and why:")
    servers = [cull for cull in report.culls if cull.server is not None]
    users = [cull for cull in report.culls if cull.server is None]
    for cull in servers[:6]:
        print(f"  server {cull.user}{'/' + cull.server if cull.server else ''}: {cull.reason}")
    for cull in users[:3]:
        print(f"  user {cull.user} deleted: {cull.reason}")


def _server_label(pair: tuple[str, str]) -> str:
    user, server = pair
    return f"{user}/{server}" if server else user


def _differences(what: str, expected: AbstractSet[T], done: AbstractSet[T], label: Callable[[T], str]) -> str:
    missed, extra = expected - done, done - expected
    parts = []
    if missed:
        parts.append(f"{len(missed)} {what} expected but not culled (e.g. {min(map(label, missed))})")
    if extra:
        parts.append(f"{len(extra)} {what} culled that should not have been (e.g. {min(map(label, extra))})")
    return ", ".join(parts)


@attrs.frozen
class Expected:
    """What the options should cull in the simulated hub, worked out from the simulation's own timestamps by
    the rules as the README states them, not by the engine's decision functions (which it checks)."""

    servers: frozenset[tuple[str, str]]
    users: frozenset[str]
    idle: int
    too_old: int
    #: A cull_arbiter_hook or rules decide too: the expectation is the options' alone, and is not enforced.
    judged_elsewhere: bool

    def describe(self) -> str:
        rules = [f"{self.idle} idle past --timeout"]
        if self.too_old:
            rules.append(f"{self.too_old} more past --max-age")
        text = f"{len(self.servers)} servers culled ({', '.join(rules)}) and {len(self.users)} users deleted"
        if self.judged_elsewhere:
            text += " by the options alone (a cull_arbiter_hook or rules decide too: only errors are checked)"
        return text


def expected_culls(hub: FakeHub, config: Config, now: datetime) -> Expected:
    timeout = timedelta(seconds=config.timeout)
    max_age = timedelta(seconds=config.max_age) if config.max_age else None
    servers: set[tuple[str, str]] = set()
    users: set[str] = set()
    idle = too_old = 0
    for user in hub.users.values():
        mine = set()
        for name, server in user.servers.items():
            # populate() sets both timestamps
            assert server.started is not None
            assert server.last_activity is not None
            enabled = config.cull_named_servers if name else config.cull_default_servers
            if enabled and now - server.last_activity >= timeout:
                idle += 1
                mine.add(name)
            elif max_age is not None and now - server.started >= max_age:
                too_old += 1
                mine.add(name)
        servers |= {(user.name, name) for name in mine}
        if not config.cull_users or mine != set(user.servers):
            continue  # a user is deleted only once none of its servers is left running
        if user.admin and not config.cull_admin_users:
            continue
        assert user.created is not None
        last = user.last_activity or user.created
        if now - last >= timeout or (max_age is not None and now - user.created >= max_age):
            users.add(user.name)
    judged_elsewhere = config.cull_arbiter_hook is not None or bool(config.rule_table)
    return Expected(frozenset(servers), frozenset(users), idle, too_old, judged_elsewhere)
