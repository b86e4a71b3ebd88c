"""Server culling against a real JupyterHub: which servers one ``--once`` pass stops, removes or keeps.

Each test starts its servers, waits until they are older than the culler's ``--timeout``, gives fresh
activity to the ones that must count as active, runs the culler, then asks the hub what happened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import trio

from trio_culler import Config, run_pass

from .hubtools import (
    IDLE_TIMEOUT,
    HubAPI,
    HubProcess,
    seconds_until_idle,
    sleep_until_idle,
    start_servers,
    start_servers_concurrently,
)

pytestmark = pytest.mark.integration

TIMEOUT_ARG = f"--timeout={IDLE_TIMEOUT}"


def _make_idle_then_activate(
    api: HubAPI, hub: HubProcess, servers: Sequence[tuple[str, str]], active: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Start ``servers``, let them all become idle, then post activity for ``active`` (server only: the
    user's own timestamp stays old, so only the server's activity can save it).  Returns each server's
    ``started`` timestamp, to prove later that a kept server was not stopped and restarted."""
    ready_at = start_servers(hub, servers)
    sleep_until_idle(ready_at, IDLE_TIMEOUT)
    for name, server in active:
        api.post_activity(name, [server], user=False)
    started = {}
    for name, server in servers:
        model = api.get_user(name)
        assert model is not None
        started[(name, server)] = model["servers"][server]["started"]
    return started


def _assert_untouched(api: HubAPI, started: dict[tuple[str, str], str], keys: Sequence[tuple[str, str]]) -> None:
    for name, server in keys:
        model = api.get_user(name)
        assert model is not None, f"{name} was deleted"
        srv = model["servers"].get(server)
        assert srv is not None, f"{name}/{server} was removed"
        assert srv["ready"], f"{name}/{server} is not running: {srv}"
        assert srv["started"] == started[(name, server)], f"{name}/{server} was restarted"


def test_idle_default_servers_are_culled_and_active_ones_kept(api: HubAPI, hub: HubProcess) -> None:
    idle_fake = ["ic-idle-1", "ic-idle-2", "ic-idle-3"]
    active_fake = ["ic-active-1", "ic-active-2"]
    # Real jupyter_server processes: they really start, and really shut down when culled.
    idle_real = ["real-ic-idle-1", "real-ic-idle-2"]
    active_real = ["real-ic-active"]
    api.create_users(idle_fake + active_fake + idle_real + active_real)
    servers = [(n, "") for n in idle_fake + active_fake + idle_real + active_real]
    active = [(n, "") for n in active_fake + active_real]
    started = _make_idle_then_activate(api, hub, servers, active)

    run = api.run_culler(TIMEOUT_ARG)
    assert run.returncode == 0, run.describe()

    for name in idle_fake:
        assert api.server_state(name) == "stopped", run.describe()
    # A real server may outlast the hub's slow_stop_timeout (202): then it is on its way down.
    for name in idle_real:
        assert api.server_state(name) in ("stopped", "pending"), run.describe()
        assert api.wait_not_running(name) == "stopped"
    _assert_untouched(api, started, active)
    # No user is deleted without --cull-users.
    for name in idle_fake + idle_real:
        assert api.user_exists(name)


def test_named_servers_are_stopped_but_kept_without_remove(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["nk-user", "nk-other"])
    servers = [("nk-user", "idle-1"), ("nk-user", "idle-2"), ("nk-user", "busy"), ("nk-other", "idle-1")]
    started = _make_idle_then_activate(api, hub, servers, [("nk-user", "busy")])

    run = api.run_culler(TIMEOUT_ARG)
    assert run.returncode == 0, run.describe()

    for name, server in [("nk-user", "idle-1"), ("nk-user", "idle-2"), ("nk-other", "idle-1")]:
        # "stopped" (not "absent"): the hub still lists the named server, ready to start again.
        assert api.server_state(name, server) == "stopped", run.describe()
    _assert_untouched(api, started, [("nk-user", "busy")])


def test_named_servers_are_removed_with_remove_named_servers(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["nr-user", "nr-default"])
    servers = [("nr-user", "idle-1"), ("nr-user", "busy"), ("nr-user", ""), ("nr-default", "")]
    started = _make_idle_then_activate(api, hub, servers, [("nr-user", "busy")])

    run = api.run_culler(TIMEOUT_ARG, "--remove-named-servers")
    # Exit 0 also proves the culler did not ask the hub to remove a default server (a 400 error).
    assert run.returncode == 0, run.describe()

    assert api.server_state("nr-user", "idle-1") == "absent", run.describe()
    # Default servers cannot be removed, only stopped.
    assert api.server_state("nr-user", "") == "stopped"
    assert api.server_state("nr-default", "") == "stopped"
    _assert_untouched(api, started, [("nr-user", "busy")])


def test_cull_named_servers_false_leaves_named_servers_alone(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["cnf-user"])
    servers = [("cnf-user", ""), ("cnf-user", "idle-1")]
    started = _make_idle_then_activate(api, hub, servers, [])

    run = api.run_culler(TIMEOUT_ARG, "--cull-named-servers=false", "--remove-named-servers")
    assert run.returncode == 0, run.describe()

    assert api.server_state("cnf-user", "") == "stopped", run.describe()
    _assert_untouched(api, started, [("cnf-user", "idle-1")])


def test_cull_default_servers_false_leaves_default_servers_alone(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["cdf-user", "cdf-other"])
    servers = [("cdf-user", ""), ("cdf-user", "idle-1"), ("cdf-other", "")]
    started = _make_idle_then_activate(api, hub, servers, [])

    run = api.run_culler(TIMEOUT_ARG, "--cull-default-servers=false")
    assert run.returncode == 0, run.describe()

    assert api.server_state("cdf-user", "idle-1") == "stopped", run.describe()
    _assert_untouched(api, started, [("cdf-user", ""), ("cdf-other", "")])


def test_max_age_culls_active_servers_that_are_too_old(api: HubAPI, hub: HubProcess) -> None:
    max_age = 5
    api.create_users(["ma-old", "ma-young"])
    ready_at = start_servers(hub, [("ma-old", "")])
    sleep_until_idle(ready_at, max_age)
    # Started now, so younger than max-age when the culler looks.
    start_servers(hub, [("ma-young", "")])
    young = api.get_user("ma-young")
    assert young is not None
    api.post_activity("ma-old", [""])
    api.post_activity("ma-young", [""])

    # A timeout no server reaches: only max-age can cull here.
    run = api.run_culler("--timeout=3600", f"--max-age={max_age}")
    assert run.returncode == 0, run.describe()

    assert api.server_state("ma-old") == "stopped", run.describe()
    _assert_untouched(api, {("ma-young", ""): young["servers"][""]["started"]}, [("ma-young", "")])


def test_dry_run_changes_nothing(api: HubAPI, hub: HubProcess) -> None:
    api.create_users(["dr-user", "dr-noserver"])
    api.create_user("dr-admin", admin=True)
    servers = [("dr-user", ""), ("dr-user", "idle-1"), ("dr-admin", "")]
    started = _make_idle_then_activate(api, hub, servers, [])

    # Every destructive option on: a dry run must still send no DELETE.
    run = api.run_culler(TIMEOUT_ARG, "--dry-run", "--cull-users", "--remove-named-servers")
    assert run.returncode == 0, run.describe()

    _assert_untouched(api, started, servers)
    assert api.user_exists("dr-noserver")


async def test_library_run_pass_against_the_real_hub(api: HubAPI, hub: HubProcess) -> None:
    """``run_pass`` embedded in a trio program does what the CLI does.

    The hub set-up calls are blocking HTTP on purpose: nothing else runs in this trio run meanwhile.
    """
    api.create_users(["lib-idle", "lib-active", "lib-gone"])
    await start_servers_concurrently(hub, [("lib-idle", ""), ("lib-active", "")])
    await trio.sleep(seconds_until_idle(time.monotonic(), IDLE_TIMEOUT))
    api.post_activity("lib-active", [""], user=False)

    config = Config(api_token=hub.culler_token, url=hub.api_url, timeout=IDLE_TIMEOUT, cull_users=True)
    report = await run_pass(config)

    assert report.ok, report
    assert report.servers_stopped == 1
    assert report.users_deleted == 2
    assert not api.user_exists("lib-idle")
    assert not api.user_exists("lib-gone"), "idle user with no server"
    assert api.server_state("lib-active") == "running"
