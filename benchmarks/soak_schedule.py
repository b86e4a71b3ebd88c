"""The fault schedule of a soak run: which fault, when, with which parameters; drawn from the run's seed, so that
a run can be repeated. ``soak_faults.FaultRunner`` carries it out."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from soak_settings import SoakSettings

__all__ = ["PlannedFault", "plan_faults"]


@dataclass(frozen=True)
class PlannedFault:
    #: Seconds after the run's start.
    at: float
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def plan_faults(settings: SoakSettings, rng: random.Random) -> list[PlannedFault]:
    """Each fault kind of ``settings.faults`` as often as its period allows (at least once), in a shuffled order,
    spread evenly over the run between warm-up and the tail that lets the last fault's effects be judged."""
    first = min(settings.warmup, settings.duration / 6)
    last = settings.duration - settings.fault_tail
    span = max(last - first, 1.0)
    kinds: list[str] = []
    for kind in settings.faults:
        count = max(1, int(span // settings.fault_periods[kind]))
        kinds += [kind] * count
    rng.shuffle(kinds)
    slot = span / max(len(kinds), 1)
    plan = []
    hostile = list(settings.hostile_kinds)
    for index, kind in enumerate(kinds):
        at = first + slot * index + rng.uniform(0, slot / 4)
        params: dict[str, Any] = {}
        if kind == "hub_restart":
            params = {"downtime": round(rng.uniform(3, max(5.0, min(40.0, slot / 3))), 1)}
        elif kind == "proxy_restart":
            params = {"downtime": round(rng.uniform(0.5, max(1.0, min(8.0, slot / 6))), 1)}
        elif kind == "hub_503":
            params = {
                "seconds": round(rng.uniform(5, max(6.0, min(30.0, slot / 3))), 1),
                "probability": rng.choice([0.5, 0.8, 1.0]),
                "retry_after": rng.choice([None, 1, 2]),
            }
        elif kind == "hang":
            params = {"seconds": round(rng.uniform(max(10.0, settings.timeout / 3), max(15.0, settings.timeout)), 1)}
        elif kind == "hostile":
            # A short run gets every kind at once; a long one a few at a time, in turn.
            take = len(hostile) if settings.duration < 3600 else 2
            params = {"kinds": [hostile[(index * take + i) % len(hostile)] for i in range(min(take, len(hostile)))]}
        elif kind == "race":
            params = {"targets": 2}
        plan.append(PlannedFault(round(at, 1), kind, params))
    return plan
