"""One pass of the real engine against a simulated hub, as the engine, kernel, fault and scope tests run it."""

from __future__ import annotations

from datetime import datetime

from trio_culler import Config, PassReport, run_pass
from trio_culler.testing import FakeHub

from .strategies import NOW


async def cull(hub: FakeHub, cfg: Config, *, now: datetime = NOW) -> PassReport:
    """Run one pass of ``cfg`` at ``now`` against ``hub`` (serving for just that pass), and return its report
    once every stop it asked for has finished."""
    async with hub.running():
        report = await run_pass(cfg, transport=hub.transport(), now=now)
        await hub.wait_stops_done()
    return report
