"""Many users at once, deterministically from a seed: the fake hub's load for benchmarks and soak tests."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from ._state import FakeServer

__all__ = ["Hub", "Population", "populate"]


class Hub(Protocol):
    """What users are added to (a ``FakeHub``, whose ``populate`` method this module's function is)."""

    def add_user(
        self, name: str, *, admin: bool, created: datetime, last_activity: datetime, servers: Mapping[str, FakeServer]
    ) -> object: ...


@attrs.frozen
class Population:
    """What :meth:`FakeHub.populate` created; pairs are ``(user name, server name)``."""

    users: tuple[str, ...]
    idle: frozenset[tuple[str, str]]  # inactive for at least ``idle_for``
    active: frozenset[tuple[str, str]]  # active within ``active_for``
    idle_users: frozenset[str]  # users all of whose servers are idle
    admins: frozenset[str]


def populate(
    hub: Hub,
    n_users: int,
    *,
    idle_fraction: float,
    seed: int,
    now: datetime,
    idle_for: timedelta = timedelta(hours=2),
    active_for: timedelta = timedelta(minutes=1),
    named_fraction: float = 0.0,
    admin_fraction: float = 0.0,
    name_prefix: str = "user",
) -> Population:
    """Add ``n_users`` users with a ready default server each, deterministically from ``seed``
    (``FakeHub.populate``: ``hub.populate(n_users, ...)``).

    ``round(named_fraction * n_users)`` of them also get a ready server named ``"named"``;
    ``round(idle_fraction * servers)`` of all the servers are idle (last activity between
    ``idle_for`` and ``2 * idle_for`` before ``now``), the others active (within ``active_for``).
    A culler whose timeout lies in ``(active_for, idle_for]`` must stop exactly ``idle``.
    """
    for fraction in (idle_fraction, named_fraction, admin_fraction):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fractions must be within [0, 1], got {fraction}")
    rng = random.Random(seed)
    width = len(str(max(n_users - 1, 0)))
    names = [f"{name_prefix}-{i:0{width}d}" for i in range(n_users)]  # name order == id order
    with_named = set(rng.sample(names, round(named_fraction * n_users)))
    admins = frozenset(rng.sample(names, round(admin_fraction * n_users)))
    slots = [(n, s) for n in names for s in ("", "named") if s == "" or n in with_named]
    idle = frozenset(rng.sample(slots, round(idle_fraction * len(slots))))
    idle_users = set()
    for name in names:
        servers: dict[str, FakeServer] = {}
        starts, lasts = [], []
        server_names = ("", "named") if name in with_named else ("",)
        for server_name in server_names:
            is_idle = (name, server_name) in idle
            quiet = idle_for * (1 + rng.random()) if is_idle else active_for * rng.random()
            lasts.append(now - quiet)
            starts.append(lasts[-1] - timedelta(seconds=rng.uniform(0, 3600)))
            servers[server_name] = FakeServer(server_name, started=starts[-1], last_activity=lasts[-1])
        if all((name, server_name) in idle for server_name in server_names):
            idle_users.add(name)
        hub.add_user(
            name,
            admin=name in admins,
            created=min(starts) - timedelta(days=1),
            last_activity=max(lasts),
            servers=servers,
        )
    return Population(
        users=tuple(names),
        idle=idle,
        active=frozenset(slots) - idle,
        idle_users=frozenset(idle_users),
        admins=admins,
    )
