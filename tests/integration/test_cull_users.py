"""``--cull-users`` against a real JupyterHub: who is deleted, who is spared, and the slow-stop (202) case.

A user is deleted only when all of its servers were culled (or it had none) and the user itself is idle:
its ``last_activity`` (or, never active, its ``created``) is older than ``--timeout``.
"""

from __future__ import annotations

import time

import pytest

from .hubtools import (
    IDLE_TIMEOUT,
    SLOW_STOP_SECONDS,
    SLOW_STOP_TIMEOUT,
    HubAPI,
    HubProcess,
    sleep_until_idle,
    start_servers,
)

pytestmark = pytest.mark.integration

TIMEOUT_ARG = f"--timeout={IDLE_TIMEOUT}"


def test_cull_users_deletes_idle_users_and_spares_admins_and_active_ones(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["cu-idle", "cu-idle-named", "cu-active", "cu-mixed", "cu-noserver", "cu-noserver-recent"])
    api.create_users(["cu-admin", "cu-admin-noserver"], admin=True)
    ready_at = start_servers(
        hub,
        [
            ("cu-idle", ""),
            ("cu-idle-named", "nb"),
            ("cu-active", ""),
            ("cu-mixed", ""),
            ("cu-mixed", "busy"),
            ("cu-admin", ""),
        ],
    )
    sleep_until_idle(ready_at, IDLE_TIMEOUT)
    # Server activity only: these users' own last_activity stays old, so what keeps them is their server.
    api.post_activity("cu-active", [""], user=False)
    api.post_activity("cu-mixed", ["busy"], user=False)
    # A user with no server, but recent activity of its own (e.g. it just logged in).
    api.post_activity("cu-noserver-recent")

    run = api.run_culler(TIMEOUT_ARG, "--cull-users", "--cull-admin-users=false")
    assert run.returncode == 0, run.describe()

    # Deleted: every server culled (or none at all) and idle.
    assert not api.user_exists("cu-idle"), run.describe()
    assert not api.user_exists("cu-idle-named"), run.describe()
    assert not api.user_exists("cu-noserver"), run.describe()
    # An admin's idle server is culled, but the admin is kept.
    assert api.server_state("cu-admin") == "stopped", run.describe()
    assert api.user_exists("cu-admin-noserver")
    # A server still running keeps its user; the idle one beside it is culled.
    assert api.server_state("cu-active") == "running"
    assert api.server_state("cu-mixed", "busy") == "running"
    assert api.server_state("cu-mixed", "") == "stopped"
    assert api.user_exists("cu-noserver-recent")


def test_cull_users_deletes_idle_admins_by_default(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["cua-admin", "cua-admin-noserver"], admin=True)
    ready_at = start_servers(hub, [("cua-admin", "")])
    sleep_until_idle(ready_at, IDLE_TIMEOUT)

    run = api.run_culler(TIMEOUT_ARG, "--cull-users")
    assert run.returncode == 0, run.describe()

    assert not api.user_exists("cua-admin"), run.describe()
    assert not api.user_exists("cua-admin-noserver"), run.describe()


def test_slow_stop_keeps_the_user_for_this_pass(api: HubAPI, hub: HubProcess) -> None:
    """The hub answers 202 when a stop outlasts its slow_stop_timeout: the server is on its way down, and
    the hub refuses (400) to delete a user whose server is still stopping, so the culler must keep the user
    and report no error."""
    api.create_users(["slow-cu", "cus-control"])
    ready_at = start_servers(hub, [("slow-cu", ""), ("cus-control", "")])
    sleep_until_idle(ready_at, IDLE_TIMEOUT)

    run = api.run_culler(TIMEOUT_ARG, "--cull-users")
    stopped_at = time.monotonic()
    assert run.returncode == 0, run.describe()
    # The DELETE really waited for the hub's slow_stop_timeout, so the hub did answer 202.
    assert run.duration >= SLOW_STOP_TIMEOUT, run.describe()

    assert api.user_exists("slow-cu"), run.describe()
    assert not api.user_exists("cus-control"), run.describe()
    # The stop completes by itself, and the server ends stopped, not running again.
    assert api.server_state("slow-cu") in ("pending", "stopped")
    assert api.wait_not_running("slow-cu", timeout=SLOW_STOP_SECONDS + 20) == "stopped"
    assert time.monotonic() - stopped_at < SLOW_STOP_SECONDS + 20
    assert api.user_exists("slow-cu")
