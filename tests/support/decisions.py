"""Building blocks of the concrete decision cases: a one-hour policy to vary, a ready server idle and aged as a
case needs, at the strategies' fixed ``NOW``, and the README's rules table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from trio_culler import Policy, Server

from .strategies import NOW

H = timedelta(hours=1)
M = timedelta(minutes=1)

#: The original's defaults with a one-hour timeout: every server and admin may be culled, users are not.
BASE_POLICY = Policy(
    timeout=H,
    max_age=None,
    cull_users=False,
    cull_admin_users=True,
    cull_default_servers=True,
    cull_named_servers=True,
    remove_named_servers=False,
)


def policy(**changes: Any) -> Policy:
    """``BASE_POLICY`` with ``changes``."""
    return attrs.evolve(BASE_POLICY, **changes)


def ready(name: str = "", *, idle: timedelta = 2 * H, age: timedelta = 3 * H) -> Server:
    """A ready server called ``name`` (``""``: the default one), last active ``idle`` ago, started ``age`` ago."""
    return Server(name=name, last_activity=NOW - idle, started=NOW - age, ready=True, url="/user/u/")


#: The README's example table (its "Rules" section), which the rules and --explain tests read in every form it can take.
README_EXAMPLE: list[dict[str, Any]] = [
    {"users": ["vip-*", "svc-backup"], "cull": False},
    {"groups": ["overnight"], "timeout": 86400},
    {"user_options": {"profile": "gpu"}, "timeout": 900, "max_age": 14400},
    {"servers": ["scratch-*"], "timeout": 600, "remove": True},
]
