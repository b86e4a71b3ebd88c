#!/usr/bin/env python3
"""Benchmark trio-culler against the original jupyterhub-idle-culler 2.0.0 on the same scenarios.

For every scenario and culler a fresh ``fakehub.py`` process is started on 127.0.0.1 with a population
generated from a fixed seed, and the culler runs as a subprocess with the same flags::

    --url=http://127.0.0.1:PORT/hub/api --timeout=600 --concurrency=10 --cull-every=86400 [--api-page-size=N]

(trio-culler also gets ``--once``). Measured:

- pass wall time: hub side, from the culler's first request to the hub's last response of the pass
  (the same for both cullers; the original never exits, so the end of its pass is detected from the
  hub: every idle server stopped, or no request for ``--quiet-seconds``; then it gets SIGTERM);
- culler CPU (user+sys) and peak RSS from ``os.wait4`` rusage of the culler process (``ru_maxrss``;
  see ``peak_rss`` for why the harness keeps itself small), cross-checked with sampled ``VmHWM``;
- time to first DELETE (hub side, from the first request), requests by kind, most requests in
  flight, and correctness (every idle server stopped, nothing active stopped, nothing stopped twice).

The fake hub's own capacity is measured first with ``loadgen.py``. Output: ``RESULTS.md``,
``results.json`` and ``results.png`` beside this file (``--out-dir`` to change). ``run.sh`` does the
set-up (the original's venv, matplotlib) and then runs this script.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
LOGS = WORK / "logs"
ORIGINAL_PY = WORK / "venv-original" / "bin" / "python"
TOKEN = "bench-token"
CONCURRENCY = 10
CULL_TIMEOUT = 600
SEED = 20240601
MB = 1024 * 1024

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    users: int
    idle_fraction: float
    group: str  # "n" (against N), "latency" (against stop latency) or "other"
    stop_latency: float = 0.0
    slow_stop_timeout: float = 10.0
    api_page_size: int | None = None  # --api-page-size; None: the hub default page (50)
    page_default: int = 50
    page_max: int = 200
    named_fraction: float = 0.0
    odd_name_fraction: float = 0.0
    extra_flags: tuple[str, ...] = ()
    note: str = ""
    #: Runs per culler at least (``--repeat`` may ask for more); the median is reported.
    repeat: int = 1

    @property
    def page_limit(self) -> int:
        return min(self.api_page_size or self.page_default, self.page_max)

    def hub_args(self) -> list[str]:
        return [
            f"--users={self.users}",
            f"--idle-fraction={self.idle_fraction}",
            f"--seed={SEED}",
            f"--stop-latency={self.stop_latency}",
            f"--slow-stop-timeout={self.slow_stop_timeout}",
            f"--page-default={self.page_default}",
            f"--page-max={self.page_max}",
            f"--named-fraction={self.named_fraction}",
            f"--odd-name-fraction={self.odd_name_fraction}",
            f"--token={TOKEN}",
        ]

    def culler_flags(self, port: int) -> list[str]:
        flags = [
            f"--url=http://127.0.0.1:{port}/hub/api",
            f"--timeout={CULL_TIMEOUT}",
            f"--concurrency={CONCURRENCY}",
            "--cull-every=86400",
        ]
        if self.api_page_size:
            flags.append(f"--api-page-size={self.api_page_size}")
        return flags + list(self.extra_flags)

    def time_limit(self) -> float:
        """Generous bound for one run: the original stops one server after another."""
        idle = self.users * self.idle_fraction * (1 + self.named_fraction)
        return min(3600.0, 120.0 + 2.5 * idle * self.stop_latency + self.users / 200.0)


def scenarios(quick: bool) -> list[Scenario]:
    s500 = 200 if quick else 2000
    return [
        # The CPU and memory targets rest on n1k and n100k, and the original's CPU at 100k varies by a third from
        # run to run on this shared machine: three runs each, in alternating order, medians reported.
        Scenario(
            "n1k", "N = 1,000 users, 20% idle, page 200, instant stops", 1000, 0.2, "n", api_page_size=200, repeat=3
        ),
        Scenario("n10k", "N = 10,000 users, 20% idle, page 200, instant stops", 10_000, 0.2, "n", api_page_size=200),
        Scenario(
            "n100k",
            "N = 100,000 users, 20% idle, page 200, instant stops",
            100_000,
            0.2,
            "n",
            api_page_size=200,
            repeat=3,
        ),
        Scenario("stop0", "2,000 users, 1,000 idle, instant stops, hub default page (50)", 2000, 0.5, "latency"),
        Scenario("stop50", "2,000 users, 1,000 idle, 50 ms stops, hub default page (50)", 2000, 0.5, "latency", 0.05),
        Scenario(
            "stop500",
            f"{s500:,} users, {s500 // 2:,} idle, 500 ms stops, hub default page (50)",
            s500,
            0.5,
            "latency",
            0.5,
            note="shrunk by --quick from 2,000 users / 1,000 idle" if quick else "",
        ),
        Scenario(
            "smallpage", "1,000 users, everyone idle, page 10, instant stops", 1000, 1.0, "other", api_page_size=10
        ),
        Scenario(
            "slow202",
            "40 users, 20 idle, stops take 2 s > slow_stop_timeout 0.5 s (hub answers 202)",
            40,
            0.5,
            "other",
            stop_latency=2.0,
            slow_stop_timeout=0.5,
        ),
        Scenario(
            "names",
            "300 users, 50% idle, half also have a named server, 30% odd names (@ + # ? ; % space ü), "
            "--remove-named-servers=true",
            300,
            0.5,
            "other",
            named_fraction=0.5,
            odd_name_fraction=0.3,
            extra_flags=("--remove-named-servers=true",),
        ),
    ]


@dataclass(frozen=True)
class Culler:
    key: str
    label: str
    argv: tuple[str, ...]
    one_shot: bool
    env: tuple[tuple[str, str], ...] = ()


def original_culler(python: Path) -> Culler:
    return Culler("original", "jupyterhub-idle-culler 2.0.0", (str(python), "-m", "jupyterhub_idle_culler"), False)


def trio_culler() -> Culler:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return Culler("trio", "trio-culler", (sys.executable, "-m", "trio_culler"), True, (("PYTHONPATH", pythonpath),))


# ---------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------
def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (e.g. VmHWM, VmRSS); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") and not k.startswith("JUPYTERHUB_")
    }
    env["JUPYTERHUB_API_TOKEN"] = TOKEN
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(dict(extra))
    return env


class FakeHub:
    """A fakehub.py process and a keep-alive connection to its /_bench endpoints."""

    def __init__(self, args: list[str], log: Path, lifetime: float) -> None:
        cmd = [sys.executable, str(HERE / "fakehub.py"), "--port=0", f"--max-lifetime={lifetime:.0f}", *args]
        WORK.mkdir(parents=True, exist_ok=True)
        self.log = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, cwd=WORK)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=300):
                self.close()
                raise RuntimeError(f"fakehub did not report its port: {shlex.join(cmd)}")
        line = self.proc.stdout.readline().decode().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"fakehub failed to start (see {log})")
        self.port = int(line)
        self.conn: http.client.HTTPConnection | None = None

    def stats(self, detail: bool = False) -> Json:
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request("GET", "/_bench/stats" + ("?detail=1" if detail else ""))
                data: Json = json.loads(self.conn.getresponse().read())
                return data
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) or 0.0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


# Linux keeps a process's RSS high-water mark across exec, and a child created by fork or vfork starts
# from its parent's: ru_maxrss of a culler spawned straight from this harness would read at least the
# harness's own RSS. So a minimal launcher (python -S, ~9 MB) posix_spawns the culler and exits at once,
# and the harness, a child subreaper, adopts the culler and reaps it with os.wait4.
LAUNCHER = """
import os, sys
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
acts = [(os.POSIX_SPAWN_OPEN, 1, sys.argv[1], flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
print(os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=acts), flush=True)
"""
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def spawn_detached(cmd: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``cmd`` (stdout+stderr to ``log``) through the launcher; return its pid, now our child."""
    exe = cmd[0] if os.path.isabs(cmd[0]) else shutil.which(cmd[0]) or cmd[0]
    out = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, str(log), exe, *cmd[1:]],
        capture_output=True,
        env=env,
        cwd=WORK,
        timeout=60,
        check=True,
    )
    return int(out.stdout)


def reap(pid: int, grace: float) -> tuple[int, Any]:
    """SIGTERM, then SIGKILL after ``grace`` seconds; return (wait status, rusage)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            return status, ru
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    _, status, ru = os.wait4(pid, 0)
    return status, ru


def hub_pass_over(st: Json, quiet_s: float) -> str | None:
    """Why the pass is over, seen from the hub, or None while it goes on."""
    if st["first_request"] is None or st["in_flight"] or st["pending_stops"]:
        return None
    quiet = st["now"][0] - st["last_response"][0]
    if st["correctness"]["idle_remaining"] == 0 and quiet >= 0.5:
        return "every idle server stopped"
    if quiet >= quiet_s:
        return f"no request for {quiet_s:g} s"
    return None


# ---------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------
def run_one(sc: Scenario, culler: Culler, opts: argparse.Namespace, rep: int) -> Json:
    LOGS.mkdir(parents=True, exist_ok=True)
    tag = f"{sc.name}-{culler.key}-{rep}"
    limit = sc.time_limit()
    hub = FakeHub(sc.hub_args(), LOGS / f"{tag}.hub.log", lifetime=limit + 120)
    try:
        pop = hub.stats(detail=True)["population"]
        cmd = [*culler.argv, *sc.culler_flags(hub.port)]
        if culler.one_shot:
            cmd.append("--once")
        hub_cpu0 = hub.cpu_s()
        t_spawn = time.monotonic()
        pid = spawn_detached(cmd, child_env(culler.env), LOGS / f"{tag}.culler.log")
        try:
            status, ru, end_reason, t_end, vmhwm_kb = watch(pid, hub, culler, opts, t_spawn + limit, limit)
        except BaseException:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                reap(pid, 2)
            raise
        exit_code = os.waitstatus_to_exitcode(status)
        st = hub.stats(detail=True)
        hub_cpu = hub.cpu_s() - hub_cpu0
    finally:
        hub.close()
    return summarize(sc, culler, st, pop, ru, exit_code, end_reason, t_spawn, t_end, vmhwm_kb, hub_cpu, tag)


def watch(
    pid: int, hub: FakeHub, culler: Culler, opts: argparse.Namespace, deadline: float, limit: float
) -> tuple[int, Any, str, float, int]:
    """Wait for the end of the pass; return (wait status, rusage, why it ended, end time, VmHWM kB)."""
    vmhwm_kb = 0
    end_reason = ""
    status: int | None = None
    ru: Any = None
    done_at: float | None = None
    while True:
        time.sleep(0.1)
        done, wstatus, wru = os.wait4(pid, os.WNOHANG)
        if done:
            status, ru, end_reason = wstatus, wru, "exited"
            break
        vmhwm_kb = max(vmhwm_kb, proc_status_kb(pid, "VmHWM") or 0)
        st = hub.stats()
        over = hub_pass_over(st, opts.quiet_seconds)
        if time.monotonic() > deadline:
            end_reason = f"time limit {limit:.0f} s reached"
            break
        if over is None:
            done_at = None
            continue
        if not culler.one_shot:
            end_reason = over
            break
        # a one-shot culler should exit by itself right after its pass
        done_at = done_at or time.monotonic()
        if time.monotonic() - done_at > 30:
            end_reason = "pass over but the process did not exit within 30 s"
            break
    t_end = time.monotonic()
    if status is None:
        vmhwm_kb = max(vmhwm_kb, proc_status_kb(pid, "VmHWM") or 0)
        status, ru = reap(pid, 10)
    assert ru is not None
    return status, ru, end_reason, t_end, vmhwm_kb


def summarize(
    sc: Scenario,
    culler: Culler,
    st: Json,
    pop: Json,
    ru: Any,
    exit_code: int,
    end_reason: str,
    t_spawn: float,
    t_end: float,
    vmhwm_kb: int,
    hub_cpu: float,
    tag: str,
) -> Json:
    first = st["first_request"][0] if st["first_request"] else None
    last = st["last_response"][0] if st["last_response"] else None
    fd = st["first_delete"][0] if st["first_delete"] else None
    pass_s = (last - first) if first is not None and last is not None else None
    maxrss_kb = int(ru.ru_maxrss)
    peak_kb = max(maxrss_kb, vmhwm_kb)
    req = st["requests"]
    c = st["correctness"]
    expected_pages = math.ceil(pop["active_users"] / sc.page_limit) if pop["active_users"] else 1
    return (
        {
            "scenario": sc.name,
            "culler": culler.key,
            "tag": tag,
            "exit_code": exit_code,
            "end_reason": end_reason,
            "pass_s": pass_s,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "cpu_user_s": ru.ru_utime,
            "cpu_sys_s": ru.ru_stime,
            "peak_rss_mb": peak_kb / 1024,
            "ru_maxrss_mb": maxrss_kb / 1024,
            "vmhwm_sampled_mb": vmhwm_kb / 1024,
            "first_delete_s": (fd - first) if fd is not None and first is not None else None,
            "startup_s": (first - t_spawn) if first is not None else None,
            "process_wall_s": t_end - t_spawn,
            "requests": req,
            "statuses": st["statuses"],
            "expected_pages": expected_pages,
            "max_in_flight": st["max_in_flight"],
            "connections": st["connections"] - 1,  # minus the harness's own stats connection
            "list_service_s": st["list_service_s"],
            "hub_cpu_s": hub_cpu,
            "hub_busy": (hub_cpu / pass_s) if pass_s else None,
            "idle_servers": c["idle_total"],
            "idle_stopped": c["idle_stop_started"],
            "idle_missed": c["idle_remaining"],
            "active_stopped": c["active_stopped"],
            "redundant_deletes": c["redundant_deletes"],
            "stopped_twice": c["servers_stopped_more_than_once"],
            "idle_missed_sample": st.get("detail", {}).get("idle_remaining_sample", [])[:10],
            "active_stopped_sample": st.get("detail", {}).get("active_stopped_sample", [])[:10],
            "correct": c["idle_remaining"] == 0
            and c["active_stopped"] == 0
            and c["servers_stopped_more_than_once"] == 0,
            "population": pop,
        }
        | request_counts(req, expected_pages, c["idle_total"], c["redundant_deletes"])
    )


def request_counts(req: dict[str, int], expected_pages: int, idle: int, redundant: int) -> Json:
    """What a run's requests were, by kind, and whether they were what the pass needs (see the targets' note)."""
    deletes = sum(v for k, v in req.items() if k.startswith("delete"))
    pages = req.get("list", 0)
    # "token_owner" is trio-culler's scope check (GET /user), part of its probe like "version". "get_user" is its
    # re-read of a user whose listing is older than 2 s when a worker reaches it (the restart race: a server
    # restarted since the listing must not be culled on the old one's idleness): work by design, counted apart.
    rereads = req.get("get_user", 0)
    expected_kinds = ("version", "token_owner", "list", "get_user")
    other = sum(v for k, v in req.items() if k not in expected_kinds and not k.startswith("delete"))
    return {
        "version_requests": req.get("version", 0),
        "page_requests": pages,
        "delete_requests": deletes,
        "other_requests": other,
        "reread_requests": rereads,
        "requests_as_expected": (
            req.get("version", 0) == 1
            and req.get("token_owner", 0) <= 1
            and pages <= expected_pages + 1
            and deletes == idle
            and redundant == 0
            and other == 0
            # A listing goes stale only while stops queue behind slow ones: a few users, never most of them.
            and rereads <= max(1, deletes // 100)
        ),
    }


NUMERIC = (
    "pass_s",
    "cpu_s",
    "cpu_user_s",
    "cpu_sys_s",
    "peak_rss_mb",
    "ru_maxrss_mb",
    "vmhwm_sampled_mb",
    "first_delete_s",
    "startup_s",
    "process_wall_s",
    "list_service_s",
    "hub_cpu_s",
    "hub_busy",
)


def aggregate(runs: list[Json]) -> Json:
    """Median of the numeric metrics over repeats; everything else from the slowest run."""
    if len(runs) == 1:
        return dict(runs[0], repeats=1)
    out = dict(max(runs, key=lambda r: r["pass_s"] or 0.0))
    for key in NUMERIC:
        vals = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(vals) if vals else None
    out["correct"] = all(r["correct"] for r in runs)
    out["requests_as_expected"] = all(r["requests_as_expected"] for r in runs)
    out["max_in_flight"] = max(r["max_in_flight"] for r in runs)
    out["repeats"] = len(runs)
    out["pass_s_all"] = [r["pass_s"] for r in runs]
    return out


# ---------------------------------------------------------------------------------------------------------
# Capacity of the fake hub
# ---------------------------------------------------------------------------------------------------------
def measure_capacity(users: int = 20_000) -> Json:
    hub = FakeHub(
        [f"--users={users}", "--idle-fraction=0.2", f"--seed={SEED}", f"--token={TOKEN}"],
        LOGS / "capacity.hub.log",
        300,
    )
    try:
        cmd = [
            sys.executable,
            str(HERE / "loadgen.py"),
            f"--port={hub.port}",
            f"--hub-pid={hub.proc.pid}",
            f"--users={users}",
            f"--token={TOKEN}",
            f"--concurrency={CONCURRENCY}",
            "--duration=3",
            "--max-requests=50000",
        ]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=120, cwd=WORK)
        result: Json = json.loads(out.stdout)
        return result
    finally:
        hub.close()


# ---------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------
def trio_available() -> tuple[bool, str]:
    c = trio_culler()
    try:
        out = subprocess.run(
            [*c.argv, "--version"], capture_output=True, timeout=60, env=child_env(c.env), cwd=WORK, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, repr(exc)
    text = (out.stdout + out.stderr).decode(errors="replace").strip()
    return out.returncode == 0, text.splitlines()[-1] if text else f"exit {out.returncode}"


def original_version(python: Path) -> str:
    code = (
        "import importlib.metadata as m, importlib.util as u\n"
        "v = [f'{p}=={m.version(p)}' for p in ('jupyterhub-idle-culler', 'tornado')]\n"
        "v.append('pycurl ' + ('present' if u.find_spec('pycurl') else 'absent (simple HTTP client)'))\n"
        "print(', '.join(v))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, timeout=60, check=False)
    return out.stdout.decode().strip() or out.stderr.decode().strip()


def machine() -> Json:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = (proc_meminfo_kb("MemTotal") or 0) / 1024 / 1024
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def proc_meminfo_kb(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------
# Targets and report
# ---------------------------------------------------------------------------------------------------------
def val(r: Json | None, key: str) -> float | None:
    """A numeric metric of a run, or None when the run or the metric is missing."""
    if r is None or r.get(key) is None:
        return None
    return float(r[key])


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def bound_s(sc: Scenario, r: Json) -> float:
    """idle servers x stop time / concurrency + the listing (hub-side service time of the pages)."""
    return float(r["idle_servers"] * sc.stop_latency / CONCURRENCY + r["list_service_s"])


def evaluate_targets(scs: list[Scenario], res: dict[str, dict[str, Json]]) -> list[Json]:
    """The targets trio-culler is held to; ``ok`` is None when a run needed for it is missing."""
    targets: list[Json] = []

    def add(scope: str, what: str, value: float | None, limit: float, shown: str | None = None) -> None:
        if shown is None:
            shown = "n/a" if value is None else fmt_x(value)
        ok = None if value is None else value <= limit
        targets.append({"scope": scope, "target": what, "value": value, "limit": limit, "shown": shown, "ok": ok})

    by = {s.name: s for s in scs}
    for name in ("stop50", "stop500"):
        if name not in res:
            continue
        o, t = res[name].get("original"), res[name].get("trio")
        add(name, "pass time <= 0.12x the original", ratio(val(t, "pass_s"), val(o, "pass_s")), 0.12)
        if t is not None:
            b = bound_s(by[name], t)
            add(name, f"pass time <= 1.2x the bound ({b:.2f} s)", ratio(t["pass_s"], b), 1.2)
    if "n100k" in res:
        o, t = res["n100k"].get("original"), res["n100k"].get("trio")
        # 0.30x, not lower: the HTTP is h11's under httpx rather than a hand-written client's, a deliberate
        # trade of CPU for not owning an HTTP parser.
        add("n100k", "culler CPU <= 0.30x", ratio(val(t, "cpu_s"), val(o, "cpu_s")), 0.30)
        add("n100k", "peak RSS <= 0.2x", ratio(val(t, "peak_rss_mb"), val(o, "peak_rss_mb")), 0.2)
        add("n100k", "time to first DELETE <= 0.05x", ratio(val(t, "first_delete_s"), val(o, "first_delete_s")), 0.05)
    if "n100k" in res and "n1k" in res:
        t100, t1 = res["n100k"].get("trio"), res["n1k"].get("trio")
        r = ratio(val(t100, "peak_rss_mb"), val(t1, "peak_rss_mb"))
        add("n1k, n100k", "peak RSS at 100k <= 1.3x that at 1k (trio-culler itself)", r, 1.3)
    for sc in scs:
        t = res.get(sc.name, {}).get("trio")
        if t is None:
            continue
        shown = (
            f"{t['version_requests']} / {t['page_requests']} (expected {t['expected_pages']}) / "
            f"{t['delete_requests']} (idle {t['idle_servers']}) / {t['other_requests']} / "
            f"{t.get('reread_requests', 0)}; "
            f"in flight {t['max_in_flight']}; stopped {t['idle_stopped']}/{t['idle_servers']} idle, "
            f"{t['active_stopped']} active"
        )
        bad = (not t["requests_as_expected"]) + (t["max_in_flight"] > CONCURRENCY) + (not t["correct"])
        add(
            sc.name,
            "requests, in flight, correctness (*)",
            float(bad),
            0,
            shown,
        )
    return targets


def scenario_from(d: Json) -> Scenario:
    return Scenario(**dict(d, extra_flags=tuple(d["extra_flags"])))


def fmt(v: Any, spec: str = "{:.2f}") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return spec.format(v)
    return str(v)


def fmt_x(r: float) -> str:
    """A ratio: three decimals (so that 1.303x never reads as 1.3x), three significant digits below 0.1."""
    return f"{r:.3f}x" if r >= 0.1 else f"{r:.3g}x"


def yes_no(r: Json | None, key: str) -> str:
    return "–" if r is None else "yes" if r[key] else "NO"


def fmt_ratio(a: float | None, b: float | None) -> str:
    r = ratio(a, b)
    return "–" if r is None else fmt_x(r)


def render(doc: Json) -> str:
    scs = [scenario_from(s) for s in doc["scenarios"]]
    res: dict[str, dict[str, Json]] = doc["results"]
    labels = doc["cullers"]
    lines: list[str] = []
    w = lines.append
    w("# trio-culler benchmarks\n")
    w(f"Generated by `benchmarks/run.py` on {doc['finished']} ({'QUICK run' if doc['quick'] else 'full run'}).\n")
    w("## How to reproduce\n")
    w("```sh")
    w("pip install -e .          # trio-culler into the current interpreter (the project's set-up)")
    w(f"bash benchmarks/run.sh{' --quick' if doc['quick'] else ''}   # = {doc['command']}")
    w("```\n")
    w(
        "`run.sh` creates `benchmarks/.work/venv-original` with `pip install jupyterhub-idle-culler==2.0.0` "
        "(tornado's simple HTTP client: pycurl is not a dependency and is not installed) and installs "
        "matplotlib if missing. `--quick` shrinks the 500 ms scenario to 200 users / 100 idle; the full "
        "run takes about 15 minutes. Logs of every process: `benchmarks/.work/logs/`.\n"
    )
    m = doc["machine"]
    w("## Machine\n")
    w(f"- {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}; Python {m['python']}")
    w(
        f"- load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m.get('loadavg_end', (0, 0, 0)))} (a noisy shared machine: expect ±20%)"
    )
    for key, label in labels.items():
        w(f"- {label}: `{doc['versions'].get(key, '?')}`")
    if not doc.get("trio_available", True):
        w(
            f"- **trio-culler was not runnable** (`python -m trio_culler --version`: {doc.get('trio_error')}); "
            "original only."
        )
    w("")
    w("## Method\n")
    quiet = doc["quiet_seconds"]
    w(
        f"Each scenario starts a fresh `fakehub.py` (seed {SEED}) per culler; both cullers get the same flags "
        f"`--url=http://127.0.0.1:PORT/hub/api --timeout={CULL_TIMEOUT} --concurrency={CONCURRENCY} "
        "--cull-every=86400 [--api-page-size=N]`, trio-culler also `--once`.\n\n"
        "- **Pass time** is measured at the hub for both: first request to last response. The original never "
        f"exits: its pass is over when every idle server is stopped (or after {quiet:g} s without a request); "
        "it then gets SIGTERM.\n"
        "- **CPU** (user+sys) and **peak RSS** come from `os.wait4` rusage of the culler process (peak RSS "
        "cross-checked with sampled `VmHWM`); both include interpreter start-up and imports.\n"
        "- **First DELETE** is hub-side, from the first request. Requests and most-in-flight are counted by "
        "the hub, from request parsed to response written.\n"
        "- **Correct** = every idle server stopped, nothing active stopped, nothing stopped twice.\n"
        "- **Bound** = idle servers x stop time / concurrency + listing, where listing is the hub-side service "
        "time of all page requests of that run.\n"
        "- **Runs**: scenarios run once per culler, except those the CPU and memory targets rest on (n1k, n100k), "
        "which run three times in alternating order; their figures are medians, and every run is listed under "
        "its scenario.\n"
        "- **Per request**: `python benchmarks/request_cost.py` measures the CPU one DELETE costs through the "
        "hub client over trio-culler's default transport (httpx over h11 on trio) and over httpx's default "
        "transport (httpcore).\n"
        "- **Profile**: `python benchmarks/profile.py` splits the CPU of a 100,000-user pass by part of the hot path "
        "(start-up, JSON, structuring, decisions, logging, the rest): see [PROFILE.md](PROFILE.md).\n"
    )
    # targets
    if doc["targets"]:
        w("## Targets (trio-culler, ratios to the original)\n")
        w("| scope | target | measured | result |")
        w("|---|---|---|---|")
        for t in doc["targets"]:
            ok = "n/a" if t["ok"] is None else ("PASS" if t["ok"] else "**FAIL**")
            w(f"| {t['scope']} | {t['target']} | {t['shown']} | {ok} |")
        w(
            f"\n(*) requests: probe / pages / DELETEs / other / re-reads; pass when there is exactly 1 version "
            f"probe (and at most 1 GET /user, trio-culler's scope check), at most one page more than one listing "
            f"needs, exactly one DELETE per idle server, nothing else but re-reads (GET /users/{{name}} of a user "
            f"whose listing is older than 2 s when its stop is due: the restart race) for at most 1% of the "
            f"DELETEs; at most --concurrency ({CONCURRENCY}) requests in flight; every idle server stopped and no "
            f"active one.\n"
        )
    # summary
    if doc.get("request_cost"):
        cost = doc["request_cost"]["us_cpu_per_delete"]
        w("## CPU per request\n")
        w(
            "`python benchmarks/request_cost.py` (median of 3, 5,000 DELETEs each, `--concurrency=10`): "
            "the CPU one DELETE costs through the hub client, client process only.\n"
        )
        w("| transport | µs CPU per DELETE | ratio |")
        w("|---|---|---|")
        names = {"h11": "default: httpx over h11 on trio (`_transport.py`)", "httpx": "httpx's default (httpcore)"}
        for key, us in cost.items():
            w(f"| {names.get(key, key)} | {us:.0f} | {us / cost['h11']:.2f}x |")
        w("")
    w("## Summary\n")
    w(
        "| scenario | pass s (orig / trio) | ratio | CPU s (orig / trio) | ratio | peak RSS MB (orig / trio) | ratio "
        "| first DELETE s (orig / trio) | ratio | correct (orig / trio) |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for sc in scs:
        o, t = res.get(sc.name, {}).get("original"), res.get(sc.name, {}).get("trio")

        def pair(key: str, o: Json | None = o, t: Json | None = t) -> str:
            return f"{fmt(o and o[key])} / {fmt(t and t[key])}"

        def rat(key: str, o: Json | None = o, t: Json | None = t) -> str:
            return fmt_ratio(val(t, key), val(o, key))

        corr = f"{yes_no(o, 'correct')} / {yes_no(t, 'correct')}"
        w(
            f"| {sc.name} | {pair('pass_s')} | {rat('pass_s')} | {pair('cpu_s')} | {rat('cpu_s')} | "
            f"{pair('peak_rss_mb')} | {rat('peak_rss_mb')} | {pair('first_delete_s')} | {rat('first_delete_s')} "
            f"| {corr} |"
        )
    w("")
    # per scenario
    w("## Scenarios\n")
    for sc in scs:
        runs = res.get(sc.name, {})
        w(f"### {sc.name}: {sc.title}\n")
        if sc.note:
            w(f"*{sc.note}.*\n")
        keys: list[str] = [k for k in ("original", "trio") if k in runs]
        w("| metric | " + " | ".join(labels[k] for k in keys) + (" | trio / original |" if len(keys) == 2 else " |"))
        w("|---|" + "---|" * len(keys) + ("---|" if len(keys) == 2 else ""))

        def row(
            label: str,
            key: str,
            spec: str = "{:.2f}",
            ratio_too: bool = True,
            keys: list[str] = keys,
            runs: dict[str, Json] = runs,
        ) -> None:
            cells = [fmt(runs[k][key], spec) for k in keys]
            extra = ""
            if len(keys) == 2:
                extra = " " + (fmt_ratio(runs["trio"][key], runs["original"][key]) if ratio_too else "") + " |"
            w(f"| {label} | " + " | ".join(cells) + " |" + extra)

        row("pass wall time, s (hub side)", "pass_s")
        row("culler CPU user+sys, s", "cpu_s")
        row("peak RSS, MB", "peak_rss_mb", "{:.1f}")
        row("time to first DELETE, s", "first_delete_s", "{:.3f}")
        row("start-up (spawn to first request), s", "startup_s", ratio_too=False)
        if any(runs[k].get("repeats", 1) > 1 for k in keys):
            each = {k: [r for r in doc["runs"] if r["scenario"] == sc.name and r["culler"] == k] for k in keys}
            for label, key, spec in (
                ("pass, s", "pass_s", "{:.2f}"),
                ("CPU, s", "cpu_s", "{:.2f}"),
                ("peak RSS, MB", "peak_rss_mb", "{:.1f}"),
            ):
                cells = [", ".join(fmt(r[key], spec) for r in each[k]) for k in keys]
                w(f"| each run: {label} | " + " | ".join(cells) + " |" + (" |" if len(keys) == 2 else ""))
        cells = [
            f"{runs[k]['version_requests']} / {runs[k]['page_requests']} / {runs[k]['delete_requests']} / "
            f"{runs[k]['other_requests']} / {runs[k].get('reread_requests', 0)}"
            for k in keys
        ]
        tail = " |" + (" |" if len(keys) == 2 else "")
        w("| requests: probe / pages / DELETE / other / re-reads | " + " | ".join(cells) + tail)
        exp_pages = runs[keys[0]]["expected_pages"] if keys else 0
        idle = runs[keys[0]]["idle_servers"] if keys else 0
        w(
            f"| expected: 1 / {exp_pages} (+1) / {idle} / 0 | "
            + " | ".join("yes" if runs[k]["requests_as_expected"] else "no" for k in keys)
            + " |"
            + (" |" if len(keys) == 2 else "")
        )
        row("most requests in flight", "max_in_flight", "{:.0f}", ratio_too=False)
        row("TCP connections", "connections", "{:.0f}", ratio_too=False)
        cells = [f"{runs[k]['idle_stopped']} / {runs[k]['idle_servers']}" for k in keys]
        w("| idle servers stopped | " + " | ".join(cells) + " |" + (" |" if len(keys) == 2 else ""))
        row("active servers stopped", "active_stopped", "{:.0f}", ratio_too=False)
        row("redundant DELETEs / stopped twice", "redundant_deletes", "{:.0f}", ratio_too=False)
        row("hub CPU busy during the pass", "hub_busy", "{:.0%}", ratio_too=False)
        if sc.stop_latency and "trio" in runs:
            w(
                f"\nBound for trio-culler: {runs['trio']['idle_servers']} x {sc.stop_latency:g} s / {CONCURRENCY} + "
                f"listing {runs['trio']['list_service_s']:.2f} s = {bound_s(sc, runs['trio']):.2f} s."
            )
        for k in keys:
            r = runs[k]
            if r["idle_missed"]:
                w(
                    f"\n{labels[k]} left {r['idle_missed']} idle servers running, "
                    f"e.g. {', '.join(r['idle_missed_sample'][:5])}."
                )
            if r["end_reason"] not in ("exited", "every idle server stopped") or (r["exit_code"] not in (0, -15)):
                w(f"\n{labels[k]}: end of run: {r['end_reason']}; exit code {r['exit_code']}.")
        w("")
    # capacity
    cap = doc.get("capacity")
    if cap:
        w("## The fake hub's own capacity\n")
        w(
            f"`loadgen.py`, {cap['concurrency']} concurrent clients, {cap['users']:,} users, each phase at most 3 s. "
            "The hub is one single-threaded process; capacity = requests/s divided by the hub's CPU share.\n"
        )
        w("| phase | requests | req/s | hub CPU busy | hub CPU per request | est. capacity req/s | p50 / p99 ms |")
        w("|---|---|---|---|---|---|---|")
        for p in cap["phases"]:
            w(
                f"| {p['phase']} | {p['requests']} | {p['rps']:.0f} | {p['hub_busy']:.0%} | "
                f"{fmt(p['hub_cpu_ms_per_request'], '{:.3f}')} ms | {fmt(p['hub_capacity_rps'], '{:.0f}')} | "
                f"{p['latency_ms_p50']:.2f} / {p['latency_ms_p99']:.2f} |"
            )
        w(
            "\n`pages` are 200-user pages (about 140 kB each, served from cached JSON); `*_close` opens a new "
            "connection per request, as tornado's simple client does. The `hub CPU busy` row of each scenario shows "
            "how far the cullers were from these limits.\n"
        )
    if doc.get("observations"):
        w("## Observations\n")
        for o in doc["observations"]:
            w(f"- {o}")
        w("")
    w("![pass time and peak RSS](results.png)\n")
    return "\n".join(lines)


def observations(res: dict[str, dict[str, Json]]) -> list[str]:
    out: list[str] = []
    sp = res.get("smallpage", {}).get("original")
    if sp is not None:
        if sp["idle_missed"]:
            out.append(
                f"smallpage: the original missed {sp['idle_missed']} of {sp['idle_servers']} idle servers "
                "(offsets shift under it as servers stop)."
            )
        else:
            out.append(
                "smallpage: the original stopped every idle server. It does not stream: `fetch_paginated` collects "
                "every page first and only creates (unstarted) `handle_user` coroutines, which it then awaits one "
                "after another, so no stop completes while it is paging and offsets never shift under it. It pays "
                "for that with memory and a late first DELETE instead."
            )
    serial = [
        f"{name} ({r['max_in_flight']})"
        for name in ("stop50", "stop500", "slow202")
        if (r := res.get(name, {}).get("original")) is not None and r["max_in_flight"] <= 1
    ]
    if serial:
        out.append(
            "The original never had more than one request in flight despite --concurrency=10 "
            f"(most in flight: {', '.join(serial)}): it awaits each user's coroutine in turn, so its semaphore "
            "never has a second taker and a pass costs the sum of all stop times."
        )
    o = res.get("smallpage", {}).get("trio")
    if o is not None and o["idle_missed"]:
        out.append(f"smallpage: trio-culler missed {o['idle_missed']} idle servers.")
    o = res.get("n100k", {}).get("original")
    if o is not None and o["first_delete_s"] is not None and o["pass_s"]:
        out.append(
            f"n100k: the original's first DELETE came {o['first_delete_s']:.1f} s after its first request "
            f"({o['first_delete_s'] / o['pass_s']:.0%} of the pass), after all {o['page_requests']} pages."
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------------------
def plot(doc: Json, path: Path) -> None:
    """2 x 2 panels: pass time and peak RSS against N, and against stop latency; both cullers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res: dict[str, dict[str, Json]] = doc["results"]
    scs = {s["name"]: s for s in doc["scenarios"]}
    colors = {"original": "tab:red", "trio": "tab:blue"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    n_names = [n for n in ("n1k", "n10k", "n100k") if n in res]
    lat_names = [n for n in ("stop0", "stop50", "stop500") if n in res]
    # stop latencies are plotted as categories (0, 50, 500 ms): a linear axis crams 0 and 50 together
    lat_ticks = [
        f"{1000 * scs[n]['stop_latency']:g} ms\n({next(iter(res[n].values()))['idle_servers']} idle)" for n in lat_names
    ]
    panels = (("pass_s", "pass wall time, s", "Pass time"), ("peak_rss_mb", "peak RSS, MB", "Peak RSS"))
    for row, (metric, ylabel, title) in enumerate(panels):
        ax_n, ax_l = axes[row]
        for key, label in doc["cullers"].items():
            pts = [(scs[n]["users"], res[n][key][metric]) for n in n_names if key in res[n]]
            if pts:
                ax_n.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[key], label=label)
                for x, y in pts:
                    ax_n.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(6, -4), fontsize=8)
            lpts = [(i, res[n][key][metric]) for i, n in enumerate(lat_names) if key in res[n]]
            if lpts:
                ax_l.plot([p[0] for p in lpts], [p[1] for p in lpts], "o-", color=colors[key], label=label)
                for x, y in lpts:
                    ax_l.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(6, -4), fontsize=8)
        if metric == "pass_s":
            bpts = [
                (i, bound_s(scenario_from(scs[n]), res[n]["trio"])) for i, n in enumerate(lat_names) if "trio" in res[n]
            ]
            if bpts:
                ax_l.plot(
                    [b[0] for b in bpts],
                    [b[1] for b in bpts],
                    "--",
                    color="tab:gray",
                    label=f"bound: idle x stop / {CONCURRENCY} + listing",
                )
            ax_n.set_yscale("log")
            ax_l.set_yscale("log")
        else:
            ax_n.set_ylim(bottom=0)
            ax_l.set_ylim(bottom=0)
        ax_n.set_xscale("log")
        ax_n.set_xlabel("users (N); 20% idle, page 200, instant stops")
        ax_l.set_xticks(range(len(lat_names)), lat_ticks)
        ax_l.set_xlim(-0.3, len(lat_names) - 0.5)
        ax_l.set_xlabel("stop latency; 50% idle, hub default page (50), --concurrency=10")
        for ax, against in ((ax_n, "N"), (ax_l, "stop latency")):
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title} against {against}", fontsize=11)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    sub = "trio-culler vs jupyterhub-idle-culler 2.0.0, " + ("quick run" if doc["quick"] else "full run")
    if doc["quick"]:
        sub += " (--quick: the 500 ms point has 200 users, 100 idle)"
    fig.suptitle(sub)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="shrink the 500 ms scenario to 200 users (a few minutes)")
    p.add_argument("--only", default="", help="comma list of scenario names")
    p.add_argument("--cullers", default="original,trio", help="comma list from: original, trio")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario and culler (median reported)")
    p.add_argument("--quiet-seconds", type=float, default=3.0, help="idle time that ends the original's pass")
    p.add_argument("--skip-capacity", action="store_true")
    p.add_argument(
        "--skip-request-cost", action="store_true", help="do not run request_cost.py (CPU per DELETE by transport)"
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--out-dir", type=Path, default=HERE)
    p.add_argument("--original-python", type=Path, default=ORIGINAL_PY)
    p.add_argument(
        "--render-only", action="store_true", help="rewrite RESULTS.md and results.png from results.json, run nothing"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.render_only:
        saved: Json = json.loads((opts.out_dir / "results.json").read_text())
        write_outputs(saved, [scenario_from(s) for s in saved["scenarios"]], opts, final=True, stamp=False)
        return 0
    become_subreaper()
    WORK.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    scs = scenarios(opts.quick)
    if opts.only:
        wanted = set(opts.only.split(","))
        unknown = wanted - {s.name for s in scs}
        if unknown:
            print(f"unknown scenarios: {sorted(unknown)}", file=sys.stderr)
            return 2
        scs = [s for s in scs if s.name in wanted]
    keys = [k.strip() for k in opts.cullers.split(",") if k.strip()]
    cullers: list[Culler] = []
    versions: dict[str, str] = {}
    doc: Json = {
        "quick": opts.quick,
        "command": shlex.join(
            [Path(sys.executable).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quiet_seconds": opts.quiet_seconds,
        "machine": machine(),
        "scenarios": [asdict(s) for s in scs],
        "results": {},
        "runs": [],
        "targets": [],
        "trio_available": True,
    }
    if "original" in keys:
        if not opts.original_python.exists():
            print(f"{opts.original_python} missing: run benchmarks/run.sh (it creates the venv)", file=sys.stderr)
            return 2
        cullers.append(original_culler(opts.original_python))
        versions["original"] = original_version(opts.original_python)
    if "trio" in keys:
        ok, text = trio_available()
        if ok:
            cullers.append(trio_culler())
            versions["trio"] = text
        else:
            doc["trio_available"] = False
            doc["trio_error"] = text
            print(f"trio-culler not runnable ({text}); continuing with the original only", file=sys.stderr)
    doc["versions"] = versions
    doc["cullers"] = {c.key: c.label for c in cullers}
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    if not opts.skip_capacity:
        print("measuring the fake hub's capacity ...", file=sys.stderr)
        doc["capacity"] = measure_capacity()
    for sc in scs:
        per: dict[str, list[Json]] = {c.key: [] for c in cullers}
        for rep in range(max(opts.repeat, sc.repeat)):
            order = cullers if rep % 2 == 0 else list(reversed(cullers))
            for c in order:
                print(f"[{time.strftime('%H:%M:%S')}] {sc.name} / {c.key} (run {rep + 1})", file=sys.stderr, flush=True)
                r = run_one(sc, c, opts, rep)
                print(
                    f"    pass {fmt(r['pass_s'])} s, CPU {r['cpu_s']:.2f} s, RSS {r['peak_rss_mb']:.1f} MB, "
                    f"first DELETE {fmt(r['first_delete_s'], '{:.3f}')} s, requests {r['requests']}, "
                    f"in flight {r['max_in_flight']}, idle stopped {r['idle_stopped']}/{r['idle_servers']}, "
                    f"active stopped {r['active_stopped']}, end: {r['end_reason']}",
                    file=sys.stderr,
                    flush=True,
                )
                per[c.key].append(r)
                doc["runs"].append(r)
        doc["results"][sc.name] = {k: aggregate(v) for k, v in per.items() if v}
        write_outputs(doc, scs, opts, final=False)
    if "trio" in keys and doc["trio_available"] and not opts.skip_request_cost:
        print(f"[{time.strftime('%H:%M:%S')}] request_cost.py (CPU per DELETE by transport)", file=sys.stderr)
        doc["request_cost"] = request_cost()
    doc["machine"]["loadavg_end"] = os.getloadavg()
    write_outputs(doc, scs, opts, final=True)
    print(f"wrote {opts.out_dir / 'RESULTS.md'}", file=sys.stderr)
    # The targets are this benchmark's assertions: a missed one fails the command (status 1), after the
    # results are written.
    missed = [f"{t['scope']}: {t['target']} ({t['shown']})" for t in doc["targets"] if t["ok"] is False]
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


def request_cost() -> Json:
    """``request_cost.py --json``: µs of CPU per DELETE through the hub client, by transport (median of 3)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "request_cost.py"), "--json", "--repeat=3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    found: Json = json.loads(out.stdout)
    return found


HAND_WRITTEN = "<!-- Everything below this line is written by hand"


def write_outputs(doc: Json, scs: list[Scenario], opts: argparse.Namespace, final: bool, stamp: bool = True) -> None:
    if stamp:
        doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    for run in [*doc["runs"], *(r for per in doc["results"].values() for r in per.values())]:
        # Judged by today's rules, also when only rendered again from a saved run.
        run.update(
            request_counts(run["requests"], run["expected_pages"], run["idle_servers"], run["redundant_deletes"])
        )
    doc["targets"] = evaluate_targets(scs, doc["results"])
    doc["observations"] = observations(doc["results"])
    (opts.out_dir / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    results = opts.out_dir / "RESULTS.md"
    # What is written by hand below HAND_WRITTEN (figures measured with other scripts) is kept.
    previous = results.read_text() if results.exists() else ""
    kept = previous[previous.index(HAND_WRITTEN) :] if HAND_WRITTEN in previous else ""
    results.write_text(render(json.loads(json.dumps(doc, default=str))) + ("\n" + kept if kept else ""))
    if final and not opts.no_plot:
        plot(doc, opts.out_dir / "results.png")


if __name__ == "__main__":
    sys.exit(main())
