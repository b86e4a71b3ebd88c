"""Start, drive and stop a real JupyterHub for the integration tests.

Everything here talks to the hub the way an operator or the culler would: through its REST API with
a token.  Nothing reads or writes the hub's database; idle vs. active is made with real time and the
activity API (timestamps only move forward, so a server is idle once it is older than the culler's
``--timeout`` and nobody posted activity for it since).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import pytest
import trio

from ..support.processes import child_env
from ..support.processes import run_culler as run_culler_cli

HERE = Path(__file__).resolve().parent
HUB_CONFIG = HERE / "jupyterhub_config.py"
REPO_ROOT = HERE.parent.parent

# The hub waits this long for a stop before answering 202 (tornado setting slow_stop_timeout) ...
SLOW_STOP_TIMEOUT = 4.0
# ... and "slow*" users take this long to stop, so their DELETE is answered 202.
SLOW_STOP_SECONDS = 7.0

# The culler's --timeout in most tests: servers are started, left alone until they are older than this,
# then the ones meant to be active get fresh activity and the culler runs at once.  It must comfortably
# exceed the culler's start-up time (the gap between that activity and the pass measuring idleness).
IDLE_TIMEOUT = 3
IDLE_MARGIN = 0.5

# Generous bounds for a loaded 2-core CI machine; every wait polls and returns as soon as it can.
HUB_START_TIMEOUT = 90.0
SERVER_START_TIMEOUT = 90.0
# A real single-user server with a busy kernel takes the spawner's interrupt, then terminate, timeouts to stop.
SERVER_STOP_TIMEOUT = 90.0
CULLER_TIMEOUT = 300.0

ServerState = Literal["running", "pending", "stopped", "absent"]
Json = dict[str, Any]
T = TypeVar("T")


def missing_tools() -> str | None:
    """Why the integration tests cannot run here, or None when they can."""
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed (pip install -e .[test])"
    if shutil.which("configurable-http-proxy") is None:
        return (
            "configurable-http-proxy is not on PATH (bash scripts/install-integration-deps.sh, "
            "or npm install -g configurable-http-proxy)"
        )
    return None


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1, all held open together so the kernel cannot hand out one twice."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]


def quote_segment(name: str) -> str:
    """Percent-encode one URL path segment with nothing left safe (``#``, ``?``, ``%``, ``/`` ...)."""
    return quote(name, safe="")


def iso_now() -> str:
    """The current time as ISO 8601 UTC in the hub's own format (``Z`` suffix)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy (and returns that), or fail after ``timeout``
    seconds. ``what`` may be a function, called when it fails: a log read then shows what happened while
    waiting, not what had happened before."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {said}")
        time.sleep(interval)


@dataclass
class HubProcess:
    """A running JupyterHub subprocess and what the tests need to reach it."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    hub_url: str
    proxy_url: str
    admin_token: str
    culler_token: str
    log_path: Path
    chp_pid: int | None = None

    @property
    def api_url(self) -> str:
        # The hub's own port, as deployments give the culler (--url=http://localhost:8081/hub/api).
        return f"{self.hub_url}/hub/api"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no hub log)"
        return "\n".join(text.splitlines()[-lines:])


def start_hub(workdir: Path, extra_config: str = "", extra_env: dict[str, str] | None = None) -> HubProcess:
    """Start JupyterHub (which starts chp) on 127.0.0.1 in ``workdir`` and wait until its API serves.

    ``extra_config`` is Python appended to ``jupyterhub_config.py`` for this hub only (``c`` and ``env`` are in
    scope), so a test module that needs other roles, services or settings starts its own hub without touching
    the shared file; ``extra_env`` adds variables to the hub's environment.
    """
    chp = shutil.which("configurable-http-proxy")
    assert chp is not None, "checked by missing_tools()"
    workdir.mkdir(parents=True, exist_ok=True)
    hub_port, proxy_port, proxy_api_port = free_ports(3)
    admin_token = secrets.token_hex(32)
    culler_token = secrets.token_hex(32)
    env = dict(os.environ)
    # Do not let a developer's or CI's own hub settings leak into this hub or its servers.
    for key in list(env):
        if key.startswith(("JUPYTERHUB_", "CONFIGPROXY_")):
            del env[key]
    env.update(
        {
            "TRIO_CULLER_IT_DIR": str(workdir),
            "TRIO_CULLER_IT_HUB_PORT": str(hub_port),
            "TRIO_CULLER_IT_PROXY_PORT": str(proxy_port),
            "TRIO_CULLER_IT_PROXY_API_PORT": str(proxy_api_port),
            "TRIO_CULLER_IT_ADMIN_TOKEN": admin_token,
            "TRIO_CULLER_IT_CULLER_TOKEN": culler_token,
            "TRIO_CULLER_IT_CHP": chp,
            "TRIO_CULLER_IT_SLOW_STOP_TIMEOUT": str(SLOW_STOP_TIMEOUT),
            "TRIO_CULLER_IT_SLOW_STOP_SECONDS": str(SLOW_STOP_SECONDS),
        }
    )
    env.update(extra_env or {})
    if extra_config:
        extra_path = workdir / "extra_config.py"
        extra_path.write_text(extra_config)
        env["TRIO_CULLER_IT_EXTRA_CONFIG"] = str(extra_path)
    log_path = workdir / "jupyterhub.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
            cwd=workdir,
            env=env,
            # No terminal: jupyter_server asks "Shutdown? (y/n)" on SIGINT only when stdin is a tty.
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group (hub + real single-user servers), so teardown can kill it whole.
            start_new_session=True,
        )
    hub = HubProcess(
        proc=proc,
        workdir=workdir,
        hub_url=f"http://127.0.0.1:{hub_port}",
        proxy_url=f"http://127.0.0.1:{proxy_port}",
        admin_token=admin_token,
        culler_token=culler_token,
        log_path=log_path,
    )
    _live_hubs.append(hub)
    try:
        _wait_for_api(hub)
        # chp is started (and its pid file written) before the hub's API listens.
        hub.chp_pid = _read_pid(workdir / "jupyterhub-proxy.pid")
    except BaseException:
        stop_hub(hub)
        raise
    return hub


# Hubs not yet stopped.  Fixtures stop theirs; this is the safety net for a test run that ends without
# running its fixture teardown (a second Ctrl-C, an internal error), so no hub outlives pytest.
_live_hubs: list[HubProcess] = []


@atexit.register
def _stop_leftover_hubs() -> None:
    for hub in list(_live_hubs):
        stop_hub(hub, graceful_timeout=5.0)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_for_api(hub: HubProcess) -> None:
    deadline = time.monotonic() + HUB_START_TIMEOUT
    headers = {"Authorization": f"token {hub.admin_token}"}
    with httpx.Client(timeout=5.0) as client:
        while True:
            if hub.proc.poll() is not None:
                raise RuntimeError(f"JupyterHub exited with {hub.proc.returncode} while starting:\n{hub.log_tail()}")
            try:
                # GET /hub/api/ needs no token: the hub's web server is up.  Then a token-checked
                # request: right after start the hub can answer 403 while it is still loading roles.
                if (
                    client.get(f"{hub.api_url}/").status_code == 200
                    and client.get(f"{hub.api_url}/users", params={"limit": 1}, headers=headers).status_code == 200
                ):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterHub did not answer in {HUB_START_TIMEOUT}s:\n{hub.log_tail()}")
            time.sleep(0.2)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _is_chp(pid: int) -> bool:
    """Whether ``pid`` is still our proxy (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"configurable-http-proxy" in cmdline


def stop_hub(hub: HubProcess, graceful_timeout: float = 20.0) -> None:
    """Stop the hub and everything it started; safe to call more than once.

    SIGTERM to the hub alone first, so it runs its own cleanup (stops the single-user servers, stops
    chp).  Then SIGKILL to whatever is left of its process group (hub, real single-user servers), and
    to chp, which the hub starts in a session of its own.
    """
    with contextlib.suppress(ValueError):
        _live_hubs.remove(hub)
    pgid = hub.proc.pid  # start_new_session made the hub its group's leader
    if hub.proc.poll() is None:
        hub.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            hub.proc.wait(timeout=graceful_timeout)
    _signal_group(pgid, signal.SIGKILL)
    hub.proc.wait()
    chp_killed = False
    if hub.chp_pid is not None and _is_chp(hub.chp_pid):
        chp_killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(hub.chp_pid, signal.SIGKILL)
    # The group's members were children of the hub; once orphaned, init reaps them.  Wait for that so a
    # test that checks for leftovers does not race the reaper. A killed chp is waited for until it is a zombie
    # or gone: its command line empties while it is still exiting (a window a loaded machine makes long).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (group_members(pgid) or (chp_killed and _running(hub.chp_pid))):
        time.sleep(0.1)


def _running(pid: int | None) -> bool:
    """Whether ``pid`` is a process that has not exited yet (neither gone nor a zombie)."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class CullerRun:
    """One finished ``python -m trio_culler --once`` run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    def describe(self) -> str:
        return (
            f"culler {' '.join(self.args)} exited {self.returncode} after {self.duration:.1f}s\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


@dataclass
class HubAPI:
    """An admin-token client for one hub, which remembers every user it created so it can clean up."""

    hub: HubProcess
    created: list[str] = field(default_factory=list)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.hub.api_url,
            headers={"Authorization": f"token {self.hub.admin_token}"},
            timeout=60.0,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HubAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- raw requests -------------------------------------------------------------------------

    def _check(self, response: httpx.Response, *ok: int) -> httpx.Response:
        if response.status_code not in ok:
            raise AssertionError(
                f"{response.request.method} {response.request.url} -> {response.status_code} "
                f"{response.text[:500]}\nhub log:\n{self.hub.log_tail(30)}"
            )
        return response

    @staticmethod
    def user_path(name: str) -> str:
        return f"/users/{quote_segment(name)}"

    @classmethod
    def server_path(cls, name: str, server: str = "") -> str:
        if server:
            return f"{cls.user_path(name)}/servers/{quote_segment(server)}"
        return f"{cls.user_path(name)}/server"

    # --- users ----------------------------------------------------------------------------------

    def create_users(self, names: Sequence[str], *, admin: bool = False) -> list[str]:
        """Create users in one request; returns the names as the hub stored them (lowercased)."""
        body: Json = {"usernames": list(names)}
        if admin:
            body["admin"] = True
        response = self._check(self.client.post("/users", json=body), 201)
        stored = [str(model["name"]) for model in response.json()]
        self.created.extend(stored)
        return stored

    def create_user(self, name: str, *, admin: bool = False) -> str:
        return self.create_users([name], admin=admin)[0]

    def try_create_user(self, name: str) -> httpx.Response:
        """POST a single user and return the raw answer (to learn which names the hub accepts)."""
        response = self.client.post("/users", json={"usernames": [name]})
        if response.status_code == 201:
            self.created.extend(str(model["name"]) for model in response.json())
        return response

    def get_user(self, name: str) -> Json | None:
        """The user's model with stopped servers too, or None when the user does not exist."""
        response = self.client.get(self.user_path(name), params={"include_stopped_servers": "1"})
        if response.status_code == 404:
            return None
        self._check(response, 200)
        model: Json = response.json()
        return model

    def user_exists(self, name: str) -> bool:
        return self.get_user(name) is not None

    def all_user_names(self) -> set[str]:
        return {str(model["name"]) for model in list_users(self.hub)}

    # --- servers --------------------------------------------------------------------------------

    def server_state(self, name: str, server: str = "") -> ServerState:
        """What the hub says about one server: running, pending (start/stop), stopped (kept), absent."""
        model = self.get_user(name)
        if model is None or server not in model.get("servers", {}):
            return "absent"
        srv = model["servers"][server]
        if srv.get("pending"):
            return "pending"
        if srv.get("ready"):
            return "running"
        return "stopped"

    def wait_not_running(
        self, name: str, server: str = "", *, timeout: float = SERVER_STOP_TIMEOUT, context: str = ""
    ) -> ServerState:
        """Wait until a server is stopped or gone (e.g. after a 202); returns which.  ``context`` (a culler
        run's output) is added to the message when it times out."""

        def stopped() -> ServerState | None:
            state = self.server_state(name, server)
            return state if state in ("stopped", "absent") else None

        what = f"server {name!r}/{server!r} to stop"
        if context:
            what += f"\n{context}"
        return wait_until(stopped, timeout=timeout, what=what)

    def stop_server(self, name: str, server: str = "", *, remove: bool = False) -> int:
        body = {"remove": True} if remove else None
        response = self.client.request("DELETE", self.server_path(name, server), json=body)
        return self._check(response, 202, 204, 404).status_code

    def post_activity(
        self,
        name: str,
        servers: Iterable[str] = (),
        *,
        user: bool = True,
        when: str | None = None,
    ) -> None:
        """Report activity now (or at ``when``) for the user and/or some of its servers.

        This is the request a single-user server makes; the hub only ever moves timestamps forward.
        """
        stamp = when or iso_now()
        body: Json = {}
        if user:
            body["last_activity"] = stamp
        server_names = list(servers)
        if server_names:
            body["servers"] = {s: {"last_activity": stamp} for s in server_names}
        self._check(self.client.post(f"{self.user_path(name)}/activity", json=body), 200, 204)

    # --- cleanup ---------------------------------------------------------------------------------

    def delete_user(self, name: str, *, timeout: float = 30.0) -> None:
        """Stop all of a user's servers, then delete the user; tolerate a user already gone."""
        model = self.get_user(name)
        if model is None:
            return
        for server, srv in model.get("servers", {}).items():
            if srv.get("ready") or srv.get("pending"):
                self.stop_server(name, server)
        deadline = time.monotonic() + timeout
        while True:
            response = self.client.delete(self.user_path(name))
            if response.status_code in (204, 404):
                return
            # 400 while a stop is still pending (slow users); anything else is a real problem.
            if response.status_code != 400 or time.monotonic() > deadline:
                self._check(response, 204, 404)
            time.sleep(0.3)

    def cleanup(self) -> None:
        """Delete every user this client created, so the next test starts from an empty hub."""
        for name in dict.fromkeys(self.created):
            self.delete_user(name)
        self.created.clear()

    # --- the culler -------------------------------------------------------------------------------

    def run_culler(self, *args: str, timeout: float = CULLER_TIMEOUT) -> CullerRun:
        """Run one pass of the culler CLI as a deployment would (``--once`` added), with the culler's
        own token: the scopes of culler-role, nothing more."""
        return run_culler(self.hub, *args, timeout=timeout)


def run_culler(
    hub: HubProcess, *args: str, token: str | None = None, once: bool = True, timeout: float = CULLER_TIMEOUT
) -> CullerRun:
    """Run the culler CLI against ``hub`` to its end (one pass: ``--once`` added unless ``once`` is false, as
    for ``--explain``), with the culler's token or ``token``."""
    argv = [f"--url={hub.api_url}", *args, *(["--once"] if once else [])]
    started = time.monotonic()
    # The culler loads ./idle_culler_config.py if present; run where there is none.
    done = run_culler_cli(*argv, token=token or hub.culler_token, cwd=hub.workdir, timeout=timeout)
    return CullerRun(
        args=argv,
        returncode=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        duration=time.monotonic() - started,
    )


@contextlib.contextmanager
def culler_process(token: str, *args: str, log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A long-running culler (``python -m trio_culler *args``) with ``token``, its output in ``log_path``; killed
    on exit if the test has not ended it."""
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trio_culler", *args],
            env=child_env(token),
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def module_hub(name: str, *, extra_config: str = "", extra_env: dict[str, str] | None = None) -> Any:
    """A module-scoped ``hub`` fixture for a test module that needs a hub of its own (``start_hub``'s
    ``extra_config`` and ``extra_env``): ``hub = module_hub("rules-hub", extra_config=...)``."""

    @pytest.fixture(scope="module")
    def hub(hub_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
        process = start_hub(tmp_path_factory.mktemp(name), extra_config=extra_config, extra_env=extra_env)
        try:
            yield process
        finally:
            stop_hub(process)

    return hub


def seconds_until_idle(ready_at: float, timeout: float) -> float:
    """How long to wait until servers that were all ready at ``ready_at`` (a ``time.monotonic()``
    reading) are idle for longer than ``timeout``.  Their last_activity was set when their spawn began,
    before ``ready_at``; the margin covers the hub's and this machine's clock granularity."""
    return max(0.0, ready_at + timeout + IDLE_MARGIN - time.monotonic())


def sleep_until_idle(ready_at: float, timeout: float) -> None:
    time.sleep(seconds_until_idle(ready_at, timeout))


# --- starting servers, concurrently (trio + httpx.AsyncClient) --------------------------------------


async def start_servers_concurrently(
    hub: HubProcess, servers: Sequence[tuple[str, str]], *, concurrency: int = 16
) -> None:
    """Start every ``(user, server_name)`` in ``servers`` (``""`` is the default server), at most
    ``concurrency`` at a time, and wait until each one is ready.

    Concurrent because the hub's POST blocks until the server is up (up to its slow_spawn_timeout): one
    real single-user server takes seconds, and hundreds of fake ones add up.
    """
    limiter = trio.CapacityLimiter(concurrency)
    async with httpx.AsyncClient(
        base_url=hub.api_url,
        headers={"Authorization": f"token {hub.admin_token}"},
        timeout=SERVER_START_TIMEOUT,
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:

        async def start_one(name: str, server: str) -> None:
            async with limiter:
                response = await client.post(HubAPI.server_path(name, server), json={})
                if response.status_code not in (201, 202):
                    raise AssertionError(
                        f"start {name!r}/{server!r}: {response.status_code} {response.text[:300]}\n"
                        f"hub log:\n{hub.log_tail(30)}"
                    )
            # 202: still spawning after slow_spawn_timeout; poll (without holding the limiter) until ready.
            delay = 0.1
            with trio.fail_after(SERVER_START_TIMEOUT):
                while response.status_code == 202:
                    await trio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    model = (await client.get(HubAPI.user_path(name))).json()
                    srv = model.get("servers", {}).get(server, {})
                    if srv.get("ready"):
                        break
                    if not srv:
                        raise AssertionError(f"server {name!r}/{server!r} failed to start:\n{hub.log_tail(30)}")

        async with trio.open_nursery() as nursery:
            for name, server in servers:
                nursery.start_soon(start_one, name, server)


def start_servers(hub: HubProcess, servers: Sequence[tuple[str, str]], *, concurrency: int = 16) -> float:
    """Synchronous wrapper for :func:`start_servers_concurrently` (the sync tests are not in a trio
    run, so they can open one); returns ``time.monotonic()`` when the last server was ready."""
    trio.run(functools.partial(start_servers_concurrently, hub, servers, concurrency=concurrency))
    return time.monotonic()


def list_users(hub: HubProcess, **params: str) -> list[Json]:
    """Every user on the hub (paginated, with the admin token), optionally filtered (``state=ready``)."""
    items: list[Json] = []
    offset = 0
    with httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"token {hub.admin_token}"}, timeout=60.0
    ) as client:
        while True:
            response = client.get(
                "/users",
                params={**params, "offset": str(offset), "limit": "200"},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            response.raise_for_status()
            page = response.json()
            items.extend(page["items"])
            nxt = page["_pagination"]["next"]
            if not nxt:
                return items
            offset = int(nxt["offset"])
