"""500 idle servers in one pass, on a hub of its own (this module gets a fresh hub).

JupyterHub's user list is paged by offset and is not a snapshot: each stopped server leaves the
``state=ready`` set and shifts every later user down by one, so a culler that pages forward while it
stops servers skips about half of them.  One ``--once`` pass at ``--api-page-size=50`` must cull all
500, and must not touch the 20 active servers spread among them (one on nearly every page).
"""

from __future__ import annotations

from typing import Any

import pytest

from .hubtools import HubAPI, HubProcess, list_users, sleep_until_idle, start_servers, wait_until

pytestmark = pytest.mark.integration

IDLE = 500
ACTIVE = 20
# Longer than the other tests' timeout: stopping 500 servers takes the hub several seconds, and the active
# servers' activity must stay younger than this even if the culler measured idleness per user, late in the
# pass, rather than once at its start as it does.
BULK_TIMEOUT = 10


def _names() -> tuple[list[str], set[str]]:
    """Users in creation order (= the hub's listing order), with an active one every 26th."""
    names: list[str] = []
    active: set[str] = set()
    idle_count = 0
    for position in range(IDLE + ACTIVE):
        if position % 26 == 13:
            name = f"bulk-active-{len(active):02d}"
            active.add(name)
        else:
            name = f"bulk-{idle_count:04d}"
            idle_count += 1
        names.append(name)
    assert idle_count == IDLE
    assert len(active) == ACTIVE
    return names, active


def test_500_idle_servers_are_all_culled_in_one_pass(api: HubAPI, hub: HubProcess) -> None:
    names, active = _names()
    api.create_users(names)
    # No per-test cleanup: deleting 520 users one by one takes longer than the test, and this module's hub
    # (module-scoped fixture, this module's only test) is thrown away with everything on it.
    api.created.clear()
    ready_at = start_servers(hub, [(name, "") for name in names], concurrency=16)
    assert len(list_users(hub, state="ready")) == IDLE + ACTIVE
    sleep_until_idle(ready_at, BULK_TIMEOUT)
    for name in sorted(active):
        api.post_activity(name, [""], user=False)
    started_before = {str(model["name"]): model["servers"][""]["started"] for model in list_users(hub, state="ready")}

    run = api.run_culler(f"--timeout={BULK_TIMEOUT}", "--api-page-size=50")

    # A stop the hub did not finish within its slow_stop_timeout (202) was still culled: let it finish.
    def settled() -> dict[str, dict[str, Any]] | None:
        models = {str(model["name"]): model for model in list_users(hub, state="active")}
        stopping = [m for m in models.values() if m["servers"].get("", {}).get("pending") == "stop"]
        return None if stopping else models

    still_active = wait_until(settled, timeout=60, what="pending stops to finish")
    # One pass: nothing idle is left, and every active server is still the same one.
    missed = sorted(set(still_active) - active)
    assert missed == [], f"{len(missed)} idle servers survived the pass, e.g. {missed[:10]}\n{run.describe()}"
    assert set(still_active) == active, f"active servers culled: {sorted(active - set(still_active))}\n{run.describe()}"
    for name in active:
        server = still_active[name]["servers"][""]
        assert server["ready"], name
        assert server["started"] == started_before[name], f"{name} was restarted"
    # No user is deleted without --cull-users.
    assert len(list_users(hub)) == IDLE + ACTIVE
    assert run.returncode == 0, run.describe()
