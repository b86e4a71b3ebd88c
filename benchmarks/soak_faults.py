"""Faults on a seeded schedule, one at a time, each written down with its start and end (:class:`Fault`).

- ``hub_restart``: the hub stopped (SIGTERM) and started again on the same database after a pause; the front
  closes its port first and opens it last, so that the culler meets a refused connection, as from a hub that is
  down. The proxy, its routes and the single-user servers stay up (``cleanup_servers = False``).
- ``proxy_restart``: configurable-http-proxy stopped and started again; it comes back empty, and the fault ends when
  the hub has added the routes back (at its next activity poll).
- ``hub_503``: for a while, a share of the culler's requests are answered 503 by the front (sometimes with
  ``Retry-After``).
- ``race``: the restart race, provoked: the front answers the culler's DELETE of a few idle servers 503 with
  ``Retry-After``, the driver restarts each such server meanwhile, then the front lets the retried DELETE through.
  A culler that does not look again culls the new server.
- ``hang``: a real single-user server's process stopped (SIGSTOP) for a while, then continued.
- ``hostile``: a few idle light servers answer the culler's ``api/kernels`` with hostile bodies (one kind each).

Faults that target servers pick idle ones whose cull is due soonest, so that the culler meets the fault.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from soak_apps import Burst, Front, LightServer, RaceTrap, Served
from soak_driver import Driver, HubGate, ServerSim
from soak_procs import Hub, Proxy
from soak_schedule import PlannedFault
from soak_settings import SoakSettings
from soak_timeline import Fault, Timeline

__all__ = ["FaultRunner", "Harness"]


@dataclass
class Harness:
    """What the faults act on."""

    settings: SoakSettings
    timeline: Timeline
    hub: Hub
    proxy: Proxy
    front: Front
    front_served: Served
    light: LightServer
    driver: Driver
    gate: HubGate
    nursery: trio.Nursery
    #: Called with each fault as it ends (printed as the run goes).
    announce: Callable[[Fault], None] = lambda fault: None


class FaultRunner:
    def __init__(self, harness: Harness, plan: list[PlannedFault], started: float, rng: random.Random) -> None:
        self.h = harness
        self.plan = plan
        self.started = started
        self.rng = rng
        self.stopping = False
        self.done = trio.Event()
        self.current: str | None = None

    async def run(self) -> None:
        try:
            for planned in self.plan:
                await trio.sleep(max(0.0, self.started + planned.at - time.time()))
                if self.stopping:
                    break
                self.current = planned.kind
                fault = await self._run_one(planned)
                self.current = None
                self.h.timeline.faults.append(fault)
                self.h.announce(fault)
        finally:
            self.done.set()

    async def _run_one(self, planned: PlannedFault) -> Fault:
        actions: dict[str, Callable[..., Awaitable[Fault]]] = {
            "hub_restart": self.hub_restart,
            "proxy_restart": self.proxy_restart,
            "hub_503": self.hub_503,
            "race": self.race,
            "hang": self.hang,
            "hostile": self.hostile,
        }
        # A fault is never cancelled half-way (a hub left down would ruin the end of the run): the stop of the
        # run waits for it.
        with trio.CancelScope(shield=True):
            fault = await actions[planned.kind](**planned.params)
        return fault

    # -- the hub and the proxy ---------------------------------------------------------------------------------

    async def hub_restart(self, downtime: float) -> Fault:
        h = self.h
        start = time.time()
        await h.front_served.stop()
        h.gate.down()
        down_at = time.time()
        await h.hub.stop()
        await trio.sleep(downtime)
        await h.hub.start()
        up_at = time.time()
        old = h.front.client
        h.front.open_client()
        if old is not None:
            await old.aclose()
        await h.front_served.start(h.nursery)
        h.gate.up()
        detail = {"down_at": down_at, "up_at": up_at, "downtime": downtime}
        return Fault("hub_restart", start, time.time(), detail=detail)

    async def proxy_restart(self, downtime: float) -> Fault:
        h = self.h
        start = time.time()
        await h.proxy.stop()
        await trio.sleep(downtime)
        await h.proxy.start()
        restarted = time.time()
        routes_back = await self._wait_for_routes()
        return Fault(
            "proxy_restart",
            start,
            time.time(),
            detail={"downtime": downtime, "restarted_at": restarted, "routes_restored": routes_back},
        )

    async def _wait_for_routes(self) -> bool:
        """Until the hub has added back its own route, the status page's and (most of) the servers'."""
        limit = 3 * self.h.settings.activity_interval + 60
        with trio.move_on_after(limit):
            while True:
                routes = await self.h.proxy.routes() or {}
                users = sum(1 for path in routes if path.startswith("/user/"))
                if "/" in routes and "/services/culler" in routes and users >= 0.9 * self.h.driver.running():
                    return True
                await trio.sleep(0.5)
        return False

    async def hub_503(self, seconds: float, probability: float, retry_after: int | None) -> Fault:
        start = time.time()
        self.h.front.burst = Burst(probability, retry_after)
        try:
            await trio.sleep(seconds)
        finally:
            self.h.front.burst = None
        detail = {"seconds": seconds, "probability": probability, "retry_after": retry_after}
        return Fault("hub_503", start, time.time(), detail=detail)

    # -- faults aimed at servers -------------------------------------------------------------------------------

    def _idle_light(self, count: int) -> list[ServerSim]:
        """Idle light servers (not exempt, not held by another fault) whose cull is due soonest from now on."""
        now = time.time()
        candidates = [
            sim
            for sim in self.h.driver.sims.values()
            if sim.kind == "light" and sim.state == "running" and sim.idle and not sim.paused and sim.due > now + 2
        ]
        return sorted(candidates, key=lambda sim: sim.due)[:count]

    async def _pick(self, count: int) -> list[ServerSim]:
        """Wait (up to one timeout) for idle servers to aim at."""
        with trio.move_on_after(self.h.settings.timeout):
            while True:
                found = self._idle_light(count)
                if found:
                    return found
                await trio.sleep(2.0)
        return []

    async def race(self, targets: int) -> Fault:
        h = self.h
        start = time.time()
        sims = await self._pick(targets)
        if not sims:
            return Fault("race", start, time.time(), detail={"skipped": "no idle server due soon"})
        send, receive = trio.open_memory_channel[str](len(sims) + 1)
        trap = RaceTrap({sim.key for sim in sims}, retry_after=3, caught=send)
        for sim in sims:
            sim.pause()
        h.front.trap = trap
        restarted: list[str] = []
        wait = max((sim.due for sim in sims), default=start) - time.time() + 3 * h.settings.cull_every + 30
        try:
            with trio.move_on_after(wait):
                async for key in receive:
                    # The culler's DELETE is held (503, Retry-After: 3): restart the server under it.
                    await h.driver.sims[key].restart()
                    restarted.append(key)
                    trap.released.add(key)
                    if len(trap.released) == len(sims):
                        break
            # Give the released DELETEs their retry.
            with trio.move_on_after(6 * trap.retry_after):
                await trap.all_forwarded.wait()
        finally:
            h.front.trap = None
            for sim in sims:
                sim.unpause()
        detail = {"restarted": restarted, "forwarded": sorted(trap.forwarded)}
        return Fault("race", start, time.time(), targets=tuple(sorted(trap.keys)), detail=detail)

    async def hang(self, seconds: float) -> Fault:
        h = self.h
        start = time.time()
        candidates: list[ServerSim] = []
        # Real servers come and go (culled, then started again by their users) and run busy cells of up to 2.5
        # timeouts, which a hang must not cut: wait for one idle and running, up to two timeouts (one was not
        # always enough with the test's two real servers).
        with trio.move_on_after(2 * h.settings.timeout):
            while True:
                now = time.time()
                candidates = [
                    sim
                    for sim in h.driver.sims.values()
                    if sim.kind == "real" and sim.state == "running" and sim.busy_until < now and not sim.paused
                ]
                if candidates:
                    break
                await trio.sleep(2.0)
        if not candidates:
            return Fault("hang", start, time.time(), detail={"skipped": "no real server running"})
        sim = self.rng.choice(sorted(candidates, key=lambda s: s.key))
        model = await h.driver.api.server_model(sim.user, sim.server) or {}
        pid = (model.get("state") or {}).get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return Fault("hang", start, time.time(), targets=(sim.key,), detail={"skipped": "no pid"})
        sim.pause()
        try:
            os.kill(pid, signal.SIGSTOP)
            await trio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            sim.unpause()
        return Fault("hang", start, time.time(), targets=(sim.key,), detail={"pid": pid, "seconds": seconds})

    async def hostile(self, kinds: list[str]) -> Fault:
        h = self.h
        start = time.time()
        sims = await self._pick(len(kinds))
        if not sims:
            return Fault("hostile", start, time.time(), detail={"skipped": "no idle server due soon"})
        chosen = dict(zip((sim.key for sim in sims), kinds, strict=False))
        for sim in sims:
            sim.pause()
        h.light.hostile.update(chosen)
        served: dict[str, int] = {}
        wait = max((sim.due for sim in sims), default=start) - time.time()
        wait += 3 * h.settings.cull_every + h.settings.drip_seconds + 30
        try:
            with trio.move_on_after(wait):
                while True:
                    served = {
                        key: sum(
                            1 for i in h.timeline.inspections if i.key == key and i.answer == kind and i.time >= start
                        )
                        for key, kind in chosen.items()
                    }
                    # Over when each answer was read to its end (a drip holds its pass that long) or abandoned; or,
                    # for a server never asked, when it is gone.
                    settled = all(
                        h.light.hostile_finished.get(key, 0.0) >= start if served[key] else h.driver.sims[key].is_gone
                        for key in chosen
                    )
                    if settled:
                        break
                    await trio.sleep(1.0)
        finally:
            for key in chosen:
                h.light.hostile.pop(key, None)
            for sim in sims:
                sim.unpause()
        detail = {"kinds": chosen, "served": served}
        return Fault("hostile", start, time.time(), targets=tuple(sorted(chosen)), detail=detail)
