#!/usr/bin/env python3
"""Hours, not seconds: trio-culler against a real JupyterHub with churn, restarts, faults and an oracle.

A real JupyterHub (with configurable-http-proxy, both on 127.0.0.1) with a few hundred users on a light spawner and
a handful of real single-user servers (jupyter_server, ipykernel); a driver that starts, uses, leaves and stops
their servers on a seeded random schedule, and runs kernels busy; faults on the same schedule (the hub restarted
on its database, the proxy restarted, bursts of 503, the restart race provoked, a server hung, hostile answers);
the culler with its status page, rules, warnings, kernel inspection and metrics, never restarted; and an oracle
that knows who was active when, printed as the run goes and written as JSON at the end, with a plot. Exits 1 when
an invariant breaks (see soak_oracle.py), 2 when the harness itself fails. benchmarks/SOAK.md has the details.

    python benchmarks/soak.py                         # two hours, 300 users, the figures of SOAK.md
    python benchmarks/soak.py --duration 180 --timeout 30 --users 30 --real-servers 2   # the test's 3 minutes
    python benchmarks/soak.py --judge benchmarks/.work/soak/timeline.json              # judge a run again
    python benchmarks/soak.py --judge WORK/timeline.json --hub-log WORK/hub.log  # a culler without `started`
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
from soak_apps import Front, LightServer, Served, WebhookReceiver
from soak_driver import Driver, HubGate
from soak_faults import FaultRunner, Harness
from soak_monitor import LogTailer, Sampler, StatusProber, login_and_open_page
from soak_oracle import Verdict, judge, render
from soak_procs import Credentials, Culler, Hub, Ports, Proxy, end_leftovers, machine
from soak_redate import probe_starts, redate_passes
from soak_schedule import PlannedFault, plan_faults
from soak_settings import (
    FAULT_PERIODS,
    FEATURES,
    HOSTILE_KINDS,
    SoakSettings,
    culler_argv,
    culler_scopes,
    rules_toml,
)
from soak_timeline import Fault, Params, Timeline

SERVICE = "culler"
PAGE_PATH = f"/services/{SERVICE}/"
#: A config file for the culler that breaks the first invariant on purpose (``--break-on-purpose``): the arbiter
#: hook says "cull" for every server, used or not. The warnings go too: a warned server is held until the time its
#: warning announced (its due time by the timeout, which the users' activity keeps moving), which would hide the hook.
BREAK_CONFIG = "c.IdleCuller.cull_arbiter_hook = lambda inactive, inactive_limit, server: True\n"


def parse_args(argv: list[str]) -> tuple[SoakSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="soak.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = SoakSettings()
    parser.add_argument("--duration", type=float, default=default.duration, help="seconds of soak (default: 7200)")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--users", type=int, default=default.users, help="users on the light spawner")
    parser.add_argument("--real-servers", type=int, default=default.real_servers, help="users with jupyter_server")
    parser.add_argument("--timeout", type=float, default=default.timeout, help="the culler's --timeout")
    parser.add_argument("--cull-every", type=float, help="the culler's --cull-every (default: timeout / 8)")
    parser.add_argument("--warn-before", type=float, help="the culler's --warn-before (default: 3/8 of the timeout)")
    parser.add_argument(
        "--activity-interval", type=int, help="the hub's last_activity_interval (default: timeout / 12, whole seconds)"
    )
    parser.add_argument("--faults", default=",".join(FAULT_PERIODS), help="fault kinds to inject (comma-separated)")
    parser.add_argument("--hostile-kinds", default=",".join(HOSTILE_KINDS), help="hostile answers (comma-separated)")
    parser.add_argument("--hostile-bytes", type=int, default=default.hostile_bytes, help="size of the huge body")
    parser.add_argument("--hostile-items", type=int, default=default.hostile_items, help="items of the long list")
    parser.add_argument("--hostile-depth", type=int, default=default.hostile_depth, help="depth of the nested one")
    parser.add_argument("--drip-seconds", type=float, default=default.drip_seconds, help="length of the slow drip")
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=default.max_rss_growth_mib,
        help="MiB, fitted over the run after warm-up",
    )
    parser.add_argument("--max-fd-growth", type=float, default=default.max_fd_growth, help="fitted, after warm-up")
    parser.add_argument("--max-task-growth", type=float, default=default.max_task_growth, help="fitted, after warm-up")
    # Every feature has landed in the culler (which now refuses --inspect-kernels without `tokens`): all are on
    # unless named otherwise; --features= (empty) is the culler of before them, for comparison runs.
    parser.add_argument(
        "--features",
        default=",".join(FEATURES),
        help=f"culler features switched on (default: all): {', '.join(FEATURES)}",
    )
    parser.add_argument("--culler-arg", action="append", default=[], help="an extra argument for the culler")
    parser.add_argument(
        "--break-on-purpose",
        action="store_true",
        help="give the culler a hook that culls every server, and no warnings (the soak must fail)",
    )
    parser.add_argument("--work-dir", type=Path, default=default.work_dir, help="logs and the timeline")
    parser.add_argument("--out-dir", type=Path, default=default.out_dir, help="where soak.json and soak.png go")
    parser.add_argument("--name", default="soak", help="file name of the results (NAME.json, NAME.png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--report-every", type=float, help="seconds between verdicts printed (default: 60)")
    parser.add_argument(
        "--judge", type=Path, help="judge a saved timeline.json again (results into --out-dir), and exit"
    )
    parser.add_argument(
        "--hub-log",
        type=Path,
        help="with --judge: date the passes from the culler's probes in this hub.log (for a culler whose JSON pass "
        "line did not name its start; see soak_redate.py)",
    )
    args = parser.parse_args(argv)
    timeout = args.timeout
    features = frozenset(f for f in args.features.split(",") if f)
    unknown = features - set(FEATURES)
    if unknown:
        parser.error(f"unknown features: {', '.join(sorted(unknown))}")
    faults = tuple(f for f in args.faults.split(",") if f)
    if set(faults) - set(FAULT_PERIODS):
        parser.error(f"unknown faults: {', '.join(sorted(set(faults) - set(FAULT_PERIODS)))}")
    kinds = tuple(k for k in args.hostile_kinds.split(",") if k)
    if set(kinds) - set(HOSTILE_KINDS):
        parser.error(f"unknown hostile kinds: {', '.join(sorted(set(kinds) - set(HOSTILE_KINDS)))}")
    settings = SoakSettings(
        duration=args.duration,
        seed=args.seed,
        users=args.users,
        real_servers=args.real_servers,
        timeout=timeout,
        cull_every=args.cull_every if args.cull_every is not None else timeout / 8,
        warn_before=args.warn_before if args.warn_before is not None else timeout * 3 / 8,
        activity_interval=args.activity_interval or max(1, round(timeout / 12)),
        faults=faults,
        hostile_kinds=kinds,
        hostile_bytes=args.hostile_bytes,
        hostile_items=args.hostile_items,
        hostile_depth=args.hostile_depth,
        drip_seconds=args.drip_seconds,
        features=features,
        culler_args=tuple(args.culler_arg),
        work_dir=args.work_dir,
        out_dir=args.out_dir,
        plot=not args.no_plot,
        report_every=args.report_every or (60.0 if args.duration >= 600 else 30.0),
        max_rss_growth_mib=args.max_rss_growth,
        max_fd_growth=args.max_fd_growth,
        max_task_growth=args.max_task_growth,
    )
    return settings, args


def params_of(settings: SoakSettings, long_users: list[str]) -> Params:
    return Params(
        timeout=settings.timeout,
        cull_every=settings.cull_every,
        activity_interval=settings.activity_interval,
        warn_before=settings.warn_before,
        long_timeout=settings.long_timeout,
        long_users=tuple(long_users),
        exempt_users=tuple(settings.exempt_users()),
        late_slack=settings.late_slack,
        warmup=settings.warmup,
        max_rss_growth_mib=settings.max_rss_growth_mib,
        max_fd_growth=settings.max_fd_growth,
        max_task_growth=settings.max_task_growth,
        features=tuple(sorted(settings.features)),
    )


def say(text: str) -> None:
    print(text, flush=True)


class Soak:
    def __init__(self, settings: SoakSettings, *, name: str, break_on_purpose: bool) -> None:
        self.settings = settings
        self.name = name
        self.break_on_purpose = break_on_purpose
        self.workdir = settings.work_dir
        self.ports = Ports.allocate()
        self.credentials = Credentials()
        rng = random.Random(settings.seed)
        long_users = sorted(rng.sample(settings.light_users(), round(settings.long_share * settings.users)))
        now = time.time()
        self.timeline = Timeline(params=params_of(settings, long_users), started=now, ended=now, hub_up_at=now)
        self.plan: list[PlannedFault] = plan_faults(settings, random.Random(settings.seed + 1))
        self.reported: dict[str, int] = {}

    # -- the run ------------------------------------------------------------------------------------------------

    async def run(self) -> Verdict:
        settings = self.settings
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        say(
            f"soak: {settings.duration:g} s, {settings.users} light users + {settings.real_servers} real servers, "
            f"timeout {settings.timeout:g} s, every {settings.cull_every:g} s, warn {settings.warn_before:g} s "
            f"before, hub activity interval {settings.activity_interval:g} s; logs in {self.workdir}"
        )
        say("faults planned: " + ", ".join(f"{p.kind} at {p.at:.0f} s" for p in self.plan))
        timeline = self.timeline
        light = LightServer(
            timeline,
            culler_token=self.credentials.culler,
            notices="notices" in settings.features,
            hostile_bytes=settings.hostile_bytes,
            hostile_items=settings.hostile_items,
            hostile_depth=settings.hostile_depth,
            drip_seconds=settings.drip_seconds,
        )
        webhook = WebhookReceiver(timeline)
        front = Front(self.ports.hub_url, timeline, random.Random(settings.seed + 2))
        gate = HubGate()
        proxy = Proxy(self.ports, self.credentials, self.workdir)
        culler_service = {
            "name": SERVICE,
            "url": f"http://127.0.0.1:{self.ports.page}",
            "api_token": self.credentials.culler,
            "oauth_no_confirm": True,
        }
        services: list[dict[str, Any]] = [
            culler_service,
            {"name": "soak-driver", "api_token": self.credentials.driver, "admin": True},
            {"name": "soak-monitor", "api_token": self.credentials.monitor},
        ]
        roles = [
            {"name": "soak-culler", "scopes": culler_scopes(settings), "services": [SERVICE]},
            {"name": "soak-monitor", "scopes": [f"access:services!service={SERVICE}"], "services": ["soak-monitor"]},
        ]
        hub = Hub(
            self.ports,
            self.credentials,
            self.workdir,
            services=services,
            roles=roles,
            activity_interval=settings.activity_interval,
        )
        driver = Driver(
            settings,
            timeline,
            hub_url=self.ports.hub_url,
            proxy_url=self.ports.proxy_url,
            token=self.credentials.driver,
            gate=gate,
            light=light,
        )
        front.listeners.append(driver.on_delete)
        light.notice_listeners.append(driver.on_notice)
        culler: Culler | None = None
        try:
            async with trio.open_nursery() as nursery:
                await Served(light, self.ports.light, "light").start(nursery)
                await Served(webhook, self.ports.webhook, "webhook").start(nursery)
                front_served = Served(front, self.ports.front, "front")
                await proxy.start()
                say("proxy up; learning the environment a hub gives a managed service ...")
                env = await hub.capture_service_env(culler_service)
                # The one change: the culler's every request to the hub crosses the front (see soak_procs).
                env["JUPYTERHUB_API_URL"] = f"{self.ports.front_url}/hub/api"
                await hub.start()
                timeline.hub_up_at = time.time()
                front.open_client()
                await front_served.start(nursery)
                await driver.setup()
                culler = self._culler(env)
                pid = await culler.start()
                timeline.culler_pids.append(pid)
                await self._wait_for_page(culler)
                timeline.started = time.time()
                say(f"hub up, users created, culler started (pid {pid}), its page answers: the soak begins")
                harness = Harness(
                    settings, timeline, hub, proxy, front, front_served, light, driver, gate, nursery, self._announce
                )
                runner = FaultRunner(harness, self.plan, timeline.started, random.Random(settings.seed + 3))
                tailer = LogTailer(culler.log, timeline)
                sampler = Sampler(timeline, pid, f"http://127.0.0.1:{self.ports.metrics}/metrics", driver.running)
                prober = StatusProber(
                    timeline, f"{self.ports.proxy_url}{PAGE_PATH}api/status", self.credentials.monitor
                )
                async with trio.open_nursery() as tailing:
                    tailing.start_soon(self._tail, tailer)
                    async with trio.open_nursery() as watchers:
                        watchers.start_soon(sampler.run, settings.sample_every)
                        watchers.start_soon(prober.run, settings.status_every)
                        watchers.start_soon(self._oauth, gate)
                        watchers.start_soon(self._report)
                        async with trio.open_nursery() as drivers:
                            drivers.start_soon(driver.run)
                            drivers.start_soon(runner.run)
                            await self._until_the_end(runner)
                            runner.stopping = True
                            with trio.move_on_after(max(600.0, settings.drip_seconds * 3)):
                                await runner.done.wait()
                            drivers.cancel_scope.cancel()
                        timeline.ended = time.time()
                        watchers.cancel_scope.cancel()
                    say("the soak ends: stopping the culler (SIGTERM) ...")
                    timeline.culler_exit = await culler.stop()
                    tailing.cancel_scope.cancel()
                tailer.poll()
                await self._stop_everything(driver, hub, proxy)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if culler is not None and culler.process is not None and culler.process.returncode is None:
                    await culler.stop()
                await hub.stop()
                await proxy.stop()
                await driver.aclose()
                ended = end_leftovers(self.credentials.run)
                if ended:
                    say(f"ended {len(ended)} leftover process(es) of this run")
        return self._finish()

    def _culler(self, env: dict[str, str]) -> Culler:
        settings = self.settings
        rules = self.workdir / "rules.toml"
        rules.write_text(rules_toml(settings))
        argv = culler_argv(
            settings,
            api_url=f"{self.ports.front_url}/hub/api",
            warn_url=f"http://127.0.0.1:{self.ports.webhook}/warn",
            metrics_port=self.ports.metrics,
            rules=rules,
        )
        if self.break_on_purpose:
            broken = self.workdir / "break_culler_config.py"
            broken.write_text(BREAK_CONFIG)
            argv = [arg for arg in argv if not arg.startswith(("--warn-before=", "--warn-url="))]
            argv.append(f"--config={broken}")
        (self.workdir / "culler-argv.json").write_text(json.dumps(argv, indent=1))
        # The names only: the values hold the culler's token.
        (self.workdir / "culler-env-names.json").write_text(json.dumps(sorted(env), indent=1))
        return Culler(argv, env, self.workdir)

    async def _wait_for_page(self, culler: Culler) -> None:
        """Until the culler's page answers through the proxy (it listens before the culler waits for the hub)."""
        url = f"{self.ports.proxy_url}{PAGE_PATH}api/status"
        headers = {"Authorization": f"token {self.credentials.monitor}"}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False, headers=headers) as client:
            with trio.fail_after(120):
                while True:
                    if culler.process is not None and culler.process.returncode is not None:
                        raise RuntimeError(f"the culler exited with {culler.process.returncode}: see {culler.log}")
                    try:
                        if (await client.get(url)).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.5)

    async def _until_the_end(self, runner: FaultRunner) -> None:
        """The planned duration; longer (up to half as much again) while planned faults have not all run, and
        while the last one's effects are within a timeout and a pass."""
        settings = self.settings
        end = self.timeline.started + settings.duration
        await trio.sleep(max(0.0, end - time.time()))
        latest = self.timeline.started + 1.5 * settings.duration
        while time.time() < latest:
            ran = len(self.timeline.faults)
            if ran >= len(self.plan) and (
                not self.timeline.faults
                or time.time() > self.timeline.faults[-1].end + settings.timeout + 2 * settings.cull_every
            ):
                return
            await trio.sleep(1.0)

    async def _tail(self, tailer: LogTailer) -> None:
        while True:
            tailer.poll()
            await trio.sleep(0.5)

    async def _oauth(self, gate: HubGate) -> None:
        """The page through the hub's login and OAuth, now and then (not while the hub is down on purpose)."""
        await trio.sleep(min(20.0, self.settings.duration / 10))
        while True:
            await gate.wait()
            probe = await login_and_open_page(self.ports.proxy_url, PAGE_PATH, "soak-admin", self.credentials.password)
            self.timeline.status.append(probe)
            if not probe.ok:
                say(f"  status page through OAuth failed: {probe.detail[:200]}")
            await trio.sleep(min(self.settings.oauth_every, self.settings.duration / 3))

    def _announce(self, fault: Fault) -> None:
        offset = fault.start - self.timeline.started
        targets = f" on {', '.join(fault.targets)}" if fault.targets else ""
        detail = {k: v for k, v in fault.detail.items() if not k.endswith("_at")}
        say(f"  fault {fault.kind}{targets} at {offset:.0f} s for {fault.end - fault.start:.1f} s {detail}")

    async def _report(self) -> None:
        while True:
            await trio.sleep(self.settings.report_every)
            snapshot = self._snapshot()
            verdict = await trio.to_thread.run_sync(functools.partial(judge, snapshot, final=False))
            say(render(verdict, elapsed=time.time() - self.timeline.started))
            self._print_new(verdict)

    def _snapshot(self) -> Timeline:
        """A copy of the timeline as it is now, for a judgment in another thread while the run goes on."""
        snapshot = copy.copy(self.timeline)
        for name, value in vars(self.timeline).items():
            if isinstance(value, list):
                setattr(snapshot, name, list(value))
        snapshot.ended = time.time()
        return snapshot

    def _print_new(self, verdict: Verdict) -> None:
        found = {**{f"violation {k}": v for k, v in verdict.violations.items()}, "restart race": verdict.races}
        found["unexplained ERROR"] = verdict.errors["unexplained_lines"]
        for label, items in found.items():
            for item in items[self.reported.get(label, 0) :]:
                say(f"  NEW {label}: {_brief(item, self.timeline.started)}")
            self.reported[label] = max(self.reported.get(label, 0), len(items))

    async def _stop_everything(self, driver: Driver, hub: Hub, proxy: Proxy) -> None:
        """Stop every server that runs (real ones have processes), then the hub and the proxy."""
        with trio.move_on_after(120):
            async with trio.open_nursery() as nursery:
                for sim in driver.sims.values():
                    if sim.kind == "real" and sim.state in ("running", "starting"):
                        nursery.start_soon(sim.stop, "end")
        await hub.stop()
        await proxy.stop()

    # -- the end ------------------------------------------------------------------------------------------------

    def _finish(self) -> Verdict:
        settings = self.settings
        timeline = self.timeline
        timeline.meta = {
            "settings": {
                k: (sorted(v) if isinstance(v, frozenset) else str(v) if isinstance(v, Path) else v)
                for k, v in vars(settings).items()
            },
            "planned_faults": [vars(p) for p in self.plan],
            "break_on_purpose": self.break_on_purpose,
            "machine": machine(),
        }
        timeline.save(self.workdir / "timeline.json")
        say(f"timeline: {self.workdir / 'timeline.json'}")
        return conclude(timeline, settings.out_dir, self.name, plot=settings.plot)


def conclude(timeline: Timeline, out_dir: Path, name: str, *, plot: bool) -> Verdict:
    """Judge ``timeline``, print the verdict, write ``NAME.json`` (and ``NAME.png``) into ``out_dir``."""
    planned = [str(p["kind"]) for p in timeline.meta.get("planned_faults", [])]
    verdict = judge(timeline, planned_faults=planned)
    say("")
    say(render(verdict, elapsed=timeline.ended - timeline.started))
    say("")
    for invariant in verdict.invariants:
        mark = "ok  " if invariant.ok else "FAIL"
        note = f" ({invariant.note})" if invariant.note else ""
        say(f"  {mark} {invariant.name}: {invariant.value} (limit {invariant.limit}){note}")
    results = {
        "verdict": verdict.to_json(),
        "settings": timeline.meta.get("settings"),
        "planned_faults": timeline.meta.get("planned_faults"),
        "faults": [vars(f) for f in timeline.faults],
        "run": {
            "started": timeline.started,
            "ended": timeline.ended,
            "seconds": timeline.ended - timeline.started,
            "culler_pids": timeline.culler_pids,
            "culler_exit": timeline.culler_exit,
            "break_on_purpose": timeline.meta.get("break_on_purpose"),
            "machine": timeline.meta.get("machine"),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    say(f"\nresults: {path}")
    if plot:
        try:
            from soak_plot import plot as draw
        except ImportError as error:
            say(f"no plot: {error} (pip install matplotlib)")
        else:
            draw(timeline, verdict, out_dir / f"{name}.png")
            say(f"plot: {out_dir / f'{name}.png'}")
    say("VERDICT: " + ("every invariant holds" if verdict.ok else f"{len(verdict.broken)} invariant(s) broken"))
    return verdict


def _brief(item: dict[str, Any], started: float) -> str:
    parts = []
    for key, value in item.items():
        if isinstance(value, float) and value > 1e9:
            value = f"{value - started:.1f}s"
        elif isinstance(value, float):
            value = f"{value:.1f}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)[:400]


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.judge is not None:
        # Judged again with today's oracle; written where --out-dir and --name say.
        timeline = Timeline.load(args.judge)
        if args.hub_log is not None:
            with args.hub_log.open(encoding="utf-8", errors="replace") as hub_log:
                probes = probe_starts(hub_log, SERVICE)
            timeline.passes, moved = redate_passes(timeline.passes, probes)
            say(f"passes dated from the hub's log: {moved} of {len(timeline.passes)} moved back to their probe")
        verdict = conclude(timeline, settings.out_dir, args.name, plot=settings.plot)
        return 0 if verdict.ok else 1
    soak = Soak(settings, name=args.name, break_on_purpose=args.break_on_purpose)
    try:
        verdict = trio.run(soak.run)
    except KeyboardInterrupt:
        say("interrupted")
        return 2
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
