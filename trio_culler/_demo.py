"""``trio-culler --demo``: a whole pass of the real engine, over real loopback HTTP, against a simulated hub.

For a machine with no hub at hand: it serves a FakeHub on 127.0.0.1 with a few thousand users, some idle,
runs one pass with the options given on the command line (timeout, concurrency, page size, --cull-users,
--dry-run, ...), prints what it culled and why, and checks the result against what the simulation knows:
every idle server stopped, no active one touched. Exit status 0 when that holds.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from ._report import PassReport
from ._service import run_pass
from .testing import FakeHub, open_fake_hub

if TYPE_CHECKING:
    from .cli import Settings

__all__ = ["DEMO_USERS", "run_demo"]

DEMO_USERS = 3000
DEMO_IDLE_FRACTION = 0.3
DEMO_SEED = 2026
#: How long a stop takes at the simulated hub: a few milliseconds, like a local spawner.
DEMO_STOP_LATENCY = 0.005


async def run_demo(settings: Settings) -> int:
    now = datetime.now(UTC)
    token = secrets.token_hex(16)
    timeout = timedelta(seconds=settings.config.timeout)
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
        f"{len(population.idle)} idle for longer than the {settings.config.timeout:g} s timeout"
    )
    quieted = []
    if settings.log_level > logging.DEBUG:
        # One line per cull would be thousands of lines: the demo prints a digest of them below instead.
        for handler in logging.getLogger().handlers:
            quieted.append((handler, handler.level))
            handler.setLevel(logging.WARNING)
    try:
        async with hub.running(), open_fake_hub(hub) as api_url:
            print(f"Serving it at {api_url}; running one pass of the real culler against it...")
            config = attrs.evolve(settings.config, url=api_url, api_token=token)
            report = await run_pass(config, now=now, reporters=[_print_culls])
            await hub.wait_stops_done()
    finally:
        for handler, level in quieted:
            handler.setLevel(level)
    stats = hub.statistics()
    stopped = set(stats.stop_requests)
    missed = population.idle - stopped
    wrongly = stopped & population.active
    twice = [pair for pair, count in stats.stop_requests.items() if count > 1]
    print(
        f"Hub saw {sum(stats.requests_by_kind.values())} requests "
        f"({', '.join(f'{k}: {v}' for k, v in stats.requests_by_kind.items() if v)}), "
        f"at most {stats.max_in_flight} in flight (concurrency {settings.config.concurrency})"
    )
    if settings.config.dry_run:
        print(f"Dry run: {sum(report.servers_culled.values())} servers would have been culled; none was stopped.")
        return 0 if not stopped else 1
    print(
        f"Check: {len(population.idle) - len(missed)}/{len(population.idle)} idle servers stopped, "
        f"{len(wrongly)} active servers stopped, {len(twice)} stopped twice"
    )
    return 0 if not missed and not wrongly and not twice and report.ok else 1


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
