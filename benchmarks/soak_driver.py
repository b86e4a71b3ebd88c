"""The users of a soak run: each server's life on a seeded random schedule, as the hub and the proxy see it.

A server is started by its user, used (a request through the proxy every few seconds, answered by the server:
the proxy records it, the hub folds it into ``last_activity``), then left: some users log out (they stop it
themselves), most let it go idle, some come back just before or after it would be culled (the cases that test
the culler's reading of the hub's data), a few restart it right around that time. Users of a real server also
run a silent cell (``time.sleep``) that keeps a kernel busy for longer than the timeout. Every request that
counts as activity is written down (:class:`~soak_timeline.Activity`), with its send and answer times; so is every
start, stop and busy cell. The culler's stops are learnt from the front (a DELETE it forwarded), and from the hub
(a server it no longer lists).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import trio
import websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from soak_apps import LightServer
from soak_settings import SoakSettings
from soak_timeline import (
    Activity,
    Busy,
    DriverStart,
    DriverStop,
    HubDelete,
    Timeline,
    Vanished,
    server_key,
)

__all__ = ["Driver", "HubApi", "HubGate", "ServerSim"]

#: What the hub answers to a stop when it stopped (or is stopping) a running server.
_STOPPED = (200, 202, 204)
#: The longest a real server may take to start or stop on a loaded machine.
_SLOW = 180.0


class HubGate:
    """Whether the hub is up: the fault runner closes it for a restart, and hub requests wait for it."""

    def __init__(self) -> None:
        self._up = trio.Event()
        self._up.set()

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def down(self) -> None:
        if self._up.is_set():
            self._up = trio.Event()

    def up(self) -> None:
        self._up.set()

    async def wait(self) -> None:
        await self._up.wait()


def _server_path(user: str, server: str) -> str:
    base = f"/users/{quote(user, safe='')}"
    return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"


class HubApi:
    """The driver's own hand on the hub (an admin service token), straight to the hub, never through the front."""

    def __init__(self, hub_url: str, token: str, gate: HubGate) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"{hub_url}/hub/api",
            headers={"Authorization": f"token {token}"},
            timeout=httpx.Timeout(_SLOW),
            limits=httpx.Limits(max_connections=16),
            trust_env=False,
        )
        self.gate = gate
        self.limiter = trio.CapacityLimiter(6)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried (after the hub is back) while the hub cannot be reached."""
        while True:
            await self.gate.wait()
            try:
                async with self.limiter:
                    return await self.client.request(method, path, **kwargs)
            except httpx.HTTPError:
                await trio.sleep(1.0)

    async def create_users(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), 100):
            batch = list(names[start : start + 100])
            response = await self.request("POST", "/users", json={"usernames": batch})
            if response.status_code not in (201, 409):
                raise RuntimeError(f"creating users: {response.status_code} {response.text[:300]}")

    async def add_group(self, name: str, users: Sequence[str]) -> None:
        response = await self.request("POST", f"/groups/{quote(name, safe='')}")
        if response.status_code not in (201, 409):
            raise RuntimeError(f"creating group {name}: {response.status_code} {response.text[:300]}")
        if users:
            response = await self.request("POST", f"/groups/{quote(name, safe='')}/users", json={"users": list(users)})
            if response.status_code != 200:
                raise RuntimeError(f"filling group {name}: {response.status_code} {response.text[:300]}")

    async def server_model(self, user: str, server: str) -> dict[str, Any] | None:
        response = await self.request("GET", f"/users/{quote(user, safe='')}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"GET user {user}: {response.status_code}", request=response.request, response=response
            )
        model: dict[str, Any] | None = response.json().get("servers", {}).get(server)
        return model

    async def active_servers(self) -> set[str]:
        """Keys of every server the hub lists as active (ready or pending)."""
        keys: set[str] = set()
        offset = 0
        while True:
            response = await self.request(
                "GET",
                "/users",
                params={"state": "active", "offset": str(offset), "limit": "200"},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            response.raise_for_status()
            page = response.json()
            for user in page["items"]:
                keys.update(server_key(user["name"], name) for name in user.get("servers", {}))
            following = page["_pagination"]["next"]
            if not following:
                return keys
            offset = int(following["offset"])


@dataclass(frozen=True)
class Habits:
    """How the simulated users behave, scaled to the culler's timeout ``T``."""

    ping_every: float
    active_mean: float
    off_mean: float
    logout_share: float = 0.15
    return_share: float = 0.35
    restart_share: float = 0.05
    busy_share: float = 0.5
    #: With the notice API (the ``notices`` feature): users who click "Keep running" on a notice.
    keep_share: float = 0.3

    @classmethod
    def for_timeout(cls, timeout: float) -> Habits:
        return cls(ping_every=min(10.0, max(2.0, timeout / 12)), active_mean=0.75 * timeout, off_mean=0.5 * timeout)


class ServerSim:
    """One server's life (see the module docstring). Faults may pause it: a paused server is left alone."""

    def __init__(self, driver: Driver, user: str, server: str, kind: str, rng: random.Random) -> None:
        self.driver = driver
        self.user = user
        self.server = server
        self.kind = kind  # light, real or exempt
        self.key = server_key(user, server)
        self.rng = rng
        self.state = "off"  # off, starting, running, stopping
        self.idle = False
        self.paused = False
        self._unpaused = trio.Event()
        self._unpaused.set()
        # Which run of the server this is, and which run the culler (or the hub) stopped: a restart by the
        # driver starts a new run that is not gone, and every waiter goes on waiting for that one.
        self.generation = 0
        self._gone_generation = -1
        self._wakeup = trio.Event()
        self.instance_requested = 0.0
        self.last_answered = 0.0
        self.busy_until = 0.0
        self.kernel_id: str | None = None

    @property
    def timeout(self) -> float:
        limit = self.driver.timeline.params.timeout_for(self.key)
        return math.inf if limit is None else limit

    @property
    def due(self) -> float:
        """When the culler should cull it if nothing else happens (by what the driver did)."""
        return max(self.last_answered, self.busy_until) + self.timeout

    @property
    def is_gone(self) -> bool:
        return self._gone_generation == self.generation

    def mark_gone(self) -> None:
        self._gone_generation = self.generation
        self._wakeup.set()
        self._wakeup = trio.Event()

    async def wait_gone(self) -> None:
        while not self.is_gone:
            await self._wakeup.wait()

    def pause(self) -> None:
        self.paused = True
        self._unpaused = trio.Event()

    def unpause(self) -> None:
        self.paused = False
        self._unpaused.set()

    async def life(self) -> None:
        habits = self.driver.habits
        await trio.sleep(self.rng.uniform(0, self.driver.settings.timeout / 2))
        while True:
            await self.start()
            if self.kind == "exempt":
                await self.wait_gone()  # never, unless the culler breaks its rule
            else:
                await self._use(habits)
            await self.wait_stopped()
            await trio.sleep(self.rng.expovariate(1 / habits.off_mean))

    async def _use(self, habits: Habits) -> None:
        """Use the server until it is stopped (by its user, or by the culler)."""
        while not self.is_gone:
            self.idle = False
            if self.kind == "real" and self.rng.random() < habits.busy_share:
                await self.busy_cell()
            else:
                active = min(4 * self.driver.settings.timeout, self.rng.expovariate(1 / habits.active_mean))
                await self._ping_until(time.time() + active, habits.ping_every)
            if self.is_gone:
                return
            self.idle = True
            draw = self.rng.random()
            if draw < habits.logout_share:
                await self._when_unpaused()
                if not self.is_gone:
                    await self.stop("logout")
                return
            if draw < habits.logout_share + habits.restart_share:
                # Restart it right around the time it becomes a cull candidate: the race every hub-level culler has.
                await self._idle_until(self.due + self.rng.uniform(-2.0, 2.0 + self.driver.settings.cull_every))
                if not self.is_gone:
                    await self.restart()
                continue
            if draw < habits.logout_share + habits.restart_share + habits.return_share:
                interval = self.driver.settings.activity_interval
                back = self.due + self.rng.uniform(-(2 * interval + 0.15 * self.timeout), 0.1 * self.timeout)
                await self._idle_until(back)
                continue
            await self.wait_gone()
            return

    async def _when_unpaused(self) -> None:
        async with trio.open_nursery() as nursery:

            async def gone() -> None:
                await self.wait_gone()
                nursery.cancel_scope.cancel()

            nursery.start_soon(gone)
            await self._unpaused.wait()
            nursery.cancel_scope.cancel()

    async def _idle_until(self, until: float) -> None:
        """Leave the server alone until ``until`` (and while a fault holds it), or until it is stopped."""
        with trio.move_on_after(max(0.0, until - time.time())):
            await self.wait_gone()
        if self.paused:
            await self._when_unpaused()

    async def _ping_until(self, until: float, every: float) -> None:
        while time.time() < until and not self.is_gone:
            if not self.paused:
                await self.driver.touch(self, "api/status")
            with trio.move_on_after(self.rng.uniform(0.7 * every, 1.3 * every)):
                await self.wait_gone()

    # -- the hub's side --------------------------------------------------------------------------------------

    async def start(self) -> None:
        api = self.driver.api
        self.state = "starting"
        path = _server_path(self.user, self.server)
        while True:
            requested = time.time()
            response = await api.request("POST", path, json={})
            ready: float | None = None
            if response.status_code == 201:
                ready = time.time()
            elif response.status_code == 202:
                ready = await self._wait_ready()
            elif response.status_code == 400:
                # Already running (a start retried across a restart of the hub), still spawning, or still
                # stopping from before (a stop answered 202): look before trying again.
                model = await api.server_model(self.user, self.server)
                if model is not None and model.get("ready"):
                    ready = time.time()
                elif model is not None and model.get("pending") == "spawn":
                    ready = await self._wait_ready()
                else:
                    await self.wait_stopped()
            if ready is not None:
                break
            await trio.sleep(2.0)
        self.driver.timeline.starts.append(DriverStart(self.key, requested, ready))
        self.instance_requested = requested
        self.last_answered = ready
        self.busy_until = 0.0
        self.kernel_id = None
        self.generation += 1
        self.state = "running"

    async def _wait_ready(self) -> float | None:
        with trio.move_on_after(_SLOW):
            while True:
                model = await self.driver.api.server_model(self.user, self.server)
                if model is None:
                    return None
                if model.get("ready"):
                    return time.time()
                await trio.sleep(0.5)
        return None

    async def stop(self, why: str) -> None:
        requested = time.time()
        self.state = "stopping"
        response = await self.driver.api.request("DELETE", _server_path(self.user, self.server))
        if response.status_code in _STOPPED:
            self.driver.timeline.stops.append(DriverStop(self.key, requested, why))
        await self.wait_stopped()

    async def restart(self) -> None:
        await self.stop("restart")
        await self.start()

    async def wait_stopped(self) -> None:
        self.state = "stopping"
        with trio.move_on_after(_SLOW):
            while True:
                model = await self.driver.api.server_model(self.user, self.server)
                if model is None or not (model.get("ready") or model.get("pending")):
                    break
                await trio.sleep(1.0)
        self.state = "off"

    # -- kernels (real servers) --------------------------------------------------------------------------------

    async def busy_cell(self) -> None:
        """Start a kernel if there is none, then run a silent cell that keeps it busy for a while."""
        kernels = self.driver.kernels
        if self.kernel_id is None:
            self.kernel_id = await kernels.start(self)
            if self.kernel_id is None:
                return
        # Longer than the timeout: the hub's data shows the server idle while its kernel still works, and only the
        # culler's inspection can tell.
        seconds = self.rng.uniform(1.2, 2.5) * self.driver.settings.timeout
        started = await kernels.run_sleep(self, self.kernel_id, seconds)
        if started is None:
            self.kernel_id = None  # the kernel or its server is gone; a new one next time
            return
        sent, busy_at = started
        self.busy_until = sent + seconds
        self.driver.timeline.busy.append(Busy(self.key, busy_at, self.busy_until))
        with trio.move_on_after(max(0.0, self.busy_until - time.time())):
            await self.wait_gone()


class Kernels:
    """Kernels started and run as a browser does: jupyter_server's REST API, then the kernel's websocket, all
    through the proxy with the driver's token (websocket-client, in a thread)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def start(self, sim: ServerSim) -> str | None:
        response = await self.driver.touch(sim, "api/kernels", method="POST", json={"name": "python3"})
        if response is None or response.status_code != 201:
            return None
        kernel_id = str(response.json()["id"])
        done = await self._exchange(sim, kernel_id, "kernel_info_request", {}, ("kernel_info_reply", None))
        return kernel_id if done is not None else None

    async def run_sleep(self, sim: ServerSim, kernel_id: str, seconds: float) -> tuple[float, float] | None:
        code = f"import time; time.sleep({seconds:.1f})"
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        return await self._exchange(sim, kernel_id, "execute_request", content, ("status", "busy"))

    async def _exchange(
        self, sim: ServerSim, kernel_id: str, msg_type: str, content: dict[str, Any], until: tuple[str, str | None]
    ) -> tuple[float, float] | None:
        """Send one message on the kernel's websocket and wait for its answer of type ``until``; (sent, answered)
        or None when the server did not answer."""
        proxy = self.driver.proxy_url.replace("http://", "ws://")
        url = f"{proxy}/user/{quote(sim.user, safe='')}/api/kernels/{kernel_id}/channels"
        token = self.driver.token

        def exchange() -> tuple[float, float] | None:
            sent = time.time()
            try:
                ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=30)
            except (OSError, websocket.WebSocketException):
                return None
            try:
                message = Session(username=sim.user).msg(msg_type, content)
                message["channel"] = "shell"
                ws.send(json.dumps(message, default=json_default))
                msg_id = message["header"]["msg_id"]
                reply_type, state = until
                while True:
                    reply = json.loads(ws.recv())
                    if reply.get("msg_type") != reply_type or reply.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    if state is None or reply["content"].get("execution_state") == state:
                        return sent, time.time()
            except (OSError, ValueError, websocket.WebSocketException):
                return None
            finally:
                ws.close()

        result = await trio.to_thread.run_sync(exchange, abandon_on_cancel=True)
        if result is not None:
            # The websocket's traffic went through the proxy: activity, as the proxy records it.
            self.driver.timeline.activities.append(Activity(sim.key, result[0], result[1], "kernel"))
            sim.last_answered = max(sim.last_answered, result[1])
        return result


class Driver:
    def __init__(
        self,
        settings: SoakSettings,
        timeline: Timeline,
        *,
        hub_url: str,
        proxy_url: str,
        token: str,
        gate: HubGate,
        light: LightServer,
    ) -> None:
        self.settings = settings
        self.timeline = timeline
        self.proxy_url = proxy_url
        self.token = token
        self.gate = gate
        self.light = light
        self.api = HubApi(hub_url, token, gate)
        self.proxy = httpx.AsyncClient(
            base_url=proxy_url, timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=32), trust_env=False
        )
        self.habits = Habits.for_timeout(settings.timeout)
        self.kernels = Kernels(self)
        rng = random.Random(settings.seed)
        named = set(rng.sample(settings.light_users(), round(settings.named_share * settings.users)))
        self.sims: dict[str, ServerSim] = {}
        for user in settings.light_users():
            self._add(user, "", "light")
            if user in named:
                self._add(user, "extra", "light")
        for user in settings.real_users():
            self._add(user, "", "real")
        for user in settings.exempt_users():
            self._add(user, "", "exempt")
        self.unexplained_vanished = 0
        self._nursery: trio.Nursery | None = None

    def _add(self, user: str, server: str, kind: str) -> None:
        sim = ServerSim(self, user, server, kind, random.Random(f"{self.settings.seed}:{user}/{server}"))
        self.sims[sim.key] = sim

    def running(self) -> int:
        return sum(1 for sim in self.sims.values() if sim.state == "running")

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.proxy.aclose()

    def on_delete(self, delete: HubDelete) -> None:
        """The front forwarded a DELETE of the culler's: the server it names is being stopped."""
        sim = self.sims.get(delete.key)
        if sim is None or delete.injected or delete.status not in _STOPPED:
            return
        if sim.state == "running" and delete.sent >= sim.instance_requested:
            sim.mark_gone()

    async def touch(
        self, sim: ServerSim, path: str, *, method: str = "GET", json: Any = None, kind: str = "ping"
    ) -> httpx.Response | None:
        """A request through the proxy to ``sim``'s server; written down as activity when the server answered
        with a success (the proxy records only those)."""
        prefix = f"/user/{quote(sim.user, safe='')}/" + (f"{quote(sim.server, safe='')}/" if sim.server else "")
        headers = {"Authorization": f"token {self.token}"} if sim.kind == "real" else {}
        sent = time.time()
        try:
            response = await self.proxy.request(method, prefix + path, headers=headers, json=json)
        except httpx.HTTPError:
            return None
        answered = time.time()
        by_server = response.headers.get("x-soak-light") == "1" or (
            sim.kind == "real" and response.headers.get("content-type", "").startswith("application/json")
        )
        if response.status_code < 300 and by_server:
            self.timeline.activities.append(Activity(sim.key, sent, answered, kind))
            sim.last_answered = max(sim.last_answered, answered)
        return response

    async def setup(self) -> None:
        """Users and the group of the rule with a longer timeout."""
        settings = self.settings
        users = [*settings.light_users(), *settings.real_users(), *settings.exempt_users()]
        await self.api.create_users(users)
        await self.api.add_group("long", list(self.timeline.params.long_users))

    def on_notice(self, key: str, notice: dict[str, Any]) -> None:
        """The culler delivered a notice to a light server: some users see it and keep their server."""
        sim = self.sims.get(key)
        if sim is None or self._nursery is None or sim.rng.random() >= self.habits.keep_share:
            return
        self._nursery.start_soon(self._keep, sim, notice.get("id"), sim.generation)

    async def _keep(self, sim: ServerSim, notice_id: object, generation: int) -> None:
        await trio.sleep(sim.rng.uniform(1.0, max(1.5, self.settings.warn_before / 2)))
        if sim.state == "running" and sim.generation == generation and not sim.is_gone:
            await self.touch(sim, "api/trio-culler/v1/keep", method="POST", json={"notice_id": notice_id}, kind="keep")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sim in self.sims.values():
                nursery.start_soon(sim.life)
            nursery.start_soon(self.reconcile)

    async def reconcile(self) -> None:
        """Every so often, the hub's list of active servers against the driver's: a server that is gone without
        any stop the driver or the front saw has *vanished* (written down, and its user moves on)."""
        while True:
            await trio.sleep(max(10.0, self.settings.timeout / 4))
            try:
                active = await self.api.active_servers()
            except httpx.HTTPError:
                continue
            now = time.time()
            for sim in list(self.sims.values()):
                if sim.state != "running" or sim.is_gone or now - sim.instance_requested < 30:
                    continue
                if sim.key in active:
                    continue
                # The list is paged by offset, and offsets shift while servers stop: ask about this one alone.
                try:
                    model = await self.api.server_model(sim.user, sim.server)
                except httpx.HTTPError:
                    continue
                if model is not None and (model.get("ready") or model.get("pending")):
                    continue
                if sim.state == "running" and not sim.is_gone:
                    self.unexplained_vanished += 1
                    self.timeline.vanished.append(Vanished(sim.key, time.time()))
                    sim.mark_gone()
