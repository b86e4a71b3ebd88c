"""The processes of a soak run: configurable-http-proxy, JupyterHub, the culler; and the clean-up of anything
they leave behind.

How the culler runs, and why. The soak is specified with the culler as a hub-managed service, and for every fault, a
restart of the hub included, to be survived *without a restart of the culler*. A managed service is stopped by its
hub when the hub stops (and started again by the next one): the two cannot both hold. So the culler is registered
with the hub as a service with a ``url`` and an ``api_token`` but no ``command`` (its status page is proxied and
takes part in the hub's OAuth like a managed one's), and the soak starts it itself with *exactly* the environment a
hub gives a managed service: it learns that environment from the hub, by running the hub once with the culler's
service managed, its command a stand-in (``soak_catch_env.py``) that writes down what it was given. The one variable
the soak then changes is ``JUPYTERHUB_API_URL``, pointed at the fault-injecting front, so that every request the
culler makes to the hub (the status page's OAuth and token checks included) crosses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

__all__ = ["Credentials", "Culler", "Hub", "Ports", "Proxy", "end_leftovers", "free_ports"]

HERE = Path(__file__).resolve().parent
HUB_CONFIG = HERE / "soak_hub_config.py"
CATCHER = HERE / "soak_catch_env.py"
HUB_START_TIMEOUT = 120.0


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1, held open together so that the kernel hands out none twice."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]


@dataclass(frozen=True)
class Ports:
    hub: int
    proxy: int
    proxy_api: int
    page: int
    metrics: int
    light: int
    webhook: int
    front: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*free_ports(8))

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy}"

    @property
    def proxy_api_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_api}"

    @property
    def front_url(self) -> str:
        return f"http://127.0.0.1:{self.front}"


@dataclass(frozen=True)
class Credentials:
    """This run's secrets; none is ever printed."""

    culler: str = field(default_factory=lambda: secrets.token_hex(32))
    driver: str = field(default_factory=lambda: secrets.token_hex(32))
    monitor: str = field(default_factory=lambda: secrets.token_hex(32))
    proxy: str = field(default_factory=lambda: secrets.token_hex(32))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    run: str = field(default_factory=lambda: secrets.token_hex(8))


async def _open(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> trio.Process:
    with log.open("ab") as out:
        return await trio.lowlevel.open_process(
            list(argv),
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A session of its own: no signal meant for the harness reaches it, and it is stopped by pid.
            start_new_session=True,
        )


async def _stop(process: trio.Process, grace: float) -> int:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            return await process.wait()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    return await process.wait()


async def _wait_for(what: str, check: Any, within: float, process: trio.Process | None = None) -> None:
    with trio.move_on_after(within):
        while True:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"{what}: the process exited with {process.returncode}")
            try:
                if await check():
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.25)
    raise RuntimeError(f"{what}: not ready after {within:g} s")


class Proxy:
    """configurable-http-proxy, started and restarted by the soak (the hub only adds and removes routes)."""

    def __init__(self, ports: Ports, credentials: Credentials, workdir: Path) -> None:
        self.ports = ports
        self.credentials = credentials
        self.workdir = workdir
        self.process: trio.Process | None = None

    async def start(self) -> None:
        chp = shutil.which("configurable-http-proxy")
        if chp is None:
            raise RuntimeError("configurable-http-proxy is not on PATH (bash scripts/install-integration-deps.sh)")
        argv = [
            chp,
            "--ip=127.0.0.1",
            f"--port={self.ports.proxy}",
            "--api-ip=127.0.0.1",
            f"--api-port={self.ports.proxy_api}",
            f"--error-target={self.ports.hub_url}/hub/error",
            "--log-level=warn",
        ]
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.credentials.proxy}
        self.process = await _open(argv, env=env, cwd=self.workdir, log=self.workdir / "proxy.log")
        await _wait_for("the proxy", self._answers, 30.0, self.process)

    async def _answers(self) -> bool:
        return (await self.routes()) is not None

    async def routes(self) -> dict[str, Any] | None:
        """The proxy's routing table, or None when it does not answer."""
        headers = {"Authorization": f"token {self.credentials.proxy}"}
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                response = await client.get(f"{self.ports.proxy_api_url}/api/routes", headers=headers)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        table: dict[str, Any] = response.json()
        return table

    async def stop(self) -> None:
        if self.process is not None:
            await _stop(self.process, 10.0)


class Hub:
    """JupyterHub with the soak's configuration; started, stopped and started again on one database."""

    def __init__(
        self,
        ports: Ports,
        credentials: Credentials,
        workdir: Path,
        *,
        services: list[dict[str, Any]],
        roles: list[dict[str, Any]],
        activity_interval: float,
    ) -> None:
        self.ports = ports
        self.credentials = credentials
        self.workdir = workdir
        self.services = services
        self.roles = roles
        self.activity_interval = activity_interval
        self.process: trio.Process | None = None
        self.starts = 0

    def _env(self, services: list[dict[str, Any]]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "CONFIGPROXY_"))}
        env.update(
            {
                "SOAK_DIR": str(self.workdir),
                "SOAK_HUB_PORT": str(self.ports.hub),
                "SOAK_PROXY_PORT": str(self.ports.proxy),
                "SOAK_PROXY_API_PORT": str(self.ports.proxy_api),
                "SOAK_ACTIVITY_INTERVAL": str(self.activity_interval),
                "SOAK_LIGHT_URL": f"http://127.0.0.1:{self.ports.light}",
                "SOAK_RUN": self.credentials.run,
                "SOAK_PASSWORD": self.credentials.password,
                "SOAK_SERVICES": json.dumps(services),
                "SOAK_ROLES": json.dumps(self.roles),
                "CONFIGPROXY_AUTH_TOKEN": self.credentials.proxy,
            }
        )
        return env

    async def start(self, services: list[dict[str, Any]] | None = None) -> None:
        argv = [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)]
        env = self._env(self.services if services is None else services)
        self.process = await _open(argv, env=env, cwd=self.workdir, log=self.workdir / "hub.log")
        self.starts += 1
        await _wait_for("JupyterHub", self._answers, HUB_START_TIMEOUT, self.process)

    async def _answers(self) -> bool:
        headers = {"Authorization": f"token {self.credentials.driver}"}
        async with httpx.AsyncClient(base_url=f"{self.ports.hub_url}/hub/api", timeout=10.0, trust_env=False) as c:
            # Right after start the hub may answer 403 while it loads roles: a token-checked request says it is up.
            return (await c.get("/")).status_code == 200 and (
                await c.get("/users", params={"limit": "1"}, headers=headers)
            ).status_code == 200

    async def stop(self) -> None:
        if self.process is not None:
            await _stop(self.process, 30.0)

    async def capture_service_env(self, service: dict[str, Any]) -> dict[str, str]:
        """Start the hub with ``service`` managed, its command the stand-in that writes down its environment;
        return that environment and stop the hub (which stops the stand-in)."""
        path = self.workdir / "managed-service-env.json"
        path.unlink(missing_ok=True)
        managed = {**service, "command": [sys.executable, str(CATCHER), str(path)]}
        services = [managed if s["name"] == service["name"] else s for s in self.services]
        await self.start(services)
        with trio.fail_after(60):
            # Another process writes it: nothing to wait on but the file system.
            while not path.exists():  # noqa: ASYNC110
                await trio.sleep(0.1)
        captured = json.loads(path.read_text())
        await self.stop()
        _end_pid(int(captured["pid"]), CATCHER.name)
        path.unlink()
        env: dict[str, str] = captured["env"]
        return env


class Culler:
    """The culler, run by the soak (see the module's docstring), its JSON log in ``log``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.argv = [sys.executable, "-m", "trio_culler", *argv]
        self.env = dict(env)
        self.workdir = workdir
        self.log = workdir / "culler.log"
        self.process: trio.Process | None = None

    async def start(self) -> int:
        cwd = self.workdir / "culler"
        cwd.mkdir(exist_ok=True)
        self.log.unlink(missing_ok=True)
        self.process = await _open(self.argv, env=self.env, cwd=cwd, log=self.log)
        return self.process.pid

    async def stop(self) -> int | None:
        """SIGTERM, as a hub stops a service; the exit status (None if it never started)."""
        if self.process is None:
            return None
        return await _stop(self.process, 30.0)


def _end_pid(pid: int, marker: str) -> None:
    """SIGKILL ``pid`` if it still runs ``marker`` (a pid may have been reused since)."""
    try:
        if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def end_leftovers(run: str) -> list[int]:
    """SIGKILL every process of this run that is still alive (single-user servers, their kernels): those whose
    environment holds ``SOAK_RUN=<run>``. Returns their pids."""
    needle = f"SOAK_RUN={run}".encode()
    ended = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                ended.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return ended


def process_usage(pid: int) -> tuple[float, int] | None:
    """(RSS in MiB, open file descriptors) of ``pid``, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, fds
    return None


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
