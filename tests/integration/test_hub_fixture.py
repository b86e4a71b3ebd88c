"""The test hub itself: it starts, obeys the admin token, runs fake and real servers, answers 202 for
slow stops, gives the culler exactly its role, and leaves no process behind.  These run without the
culler, so a broken fixture is told apart from a broken culler."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .hubtools import (
    SLOW_STOP_SECONDS,
    HubAPI,
    HubProcess,
    group_members,
    start_hub,
    start_servers,
    stop_hub,
    wait_until,
)

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_hub_runs_fake_named_and_real_servers(api: HubAPI, hub: HubProcess) -> None:
    assert api.create_users(["Fx-Fake", "real-fx"]) == ["fx-fake", "real-fx"], "the hub lowercases names"
    start_servers(hub, [("fx-fake", ""), ("fx-fake", "nb-1"), ("real-fx", "")])

    fake = api.get_user("fx-fake")
    assert fake is not None
    assert fake["servers"][""]["ready"]
    assert fake["servers"]["nb-1"]["ready"]

    # The real server is a live jupyter_server process in the hub's process group, reachable through chp.
    real = api.get_user("real-fx")
    assert real is not None
    pid = int(real["servers"][""]["state"]["pid"])
    assert _pid_alive(pid)
    assert os.getpgid(pid) == hub.proc.pid
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{hub.proxy_url}/user/real-fx/api")
    assert answer.status_code == 200
    assert "version" in answer.json()

    # Stopping works for each kind; a named server is kept until removed.
    assert api.stop_server("real-fx") in (202, 204)
    assert api.wait_not_running("real-fx") == "stopped"
    wait_until(lambda: not _pid_alive(pid), timeout=30, what="the single-user server process to exit")
    assert api.stop_server("fx-fake", "nb-1") == 204
    assert api.server_state("fx-fake", "nb-1") == "stopped"
    assert api.stop_server("fx-fake", "nb-1", remove=True) == 204
    assert api.server_state("fx-fake", "nb-1") == "absent"
    assert api.server_state("fx-fake") == "running"


def test_slow_user_stop_is_answered_202(api: HubAPI, hub: HubProcess) -> None:
    api.create_user("slow-fx")
    start_servers(hub, [("slow-fx", "")])
    started = time.monotonic()
    assert api.stop_server("slow-fx") == 202
    assert api.server_state("slow-fx") == "pending"
    # The hub finishes the stop by itself after the spawner's sleep.
    api.wait_not_running("slow-fx", timeout=SLOW_STOP_SECONDS + 20)
    assert time.monotonic() - started >= SLOW_STOP_SECONDS - 1


def test_activity_moves_timestamps_forward_only(api: HubAPI, hub: HubProcess) -> None:
    """The tests make servers active through this API; check it behaves as they assume."""
    api.create_user("act-fx")
    start_servers(hub, [("act-fx", "")])
    before = api.get_user("act-fx")
    assert before is not None
    api.post_activity("act-fx", [""], user=False, when="2001-01-01T00:00:00Z")
    after_old = api.get_user("act-fx")
    assert after_old is not None
    assert after_old["servers"][""]["last_activity"] == before["servers"][""]["last_activity"]
    api.post_activity("act-fx", [""], user=False)
    after_new = api.get_user("act-fx")
    assert after_new is not None
    assert after_new["servers"][""]["last_activity"] > before["servers"][""]["last_activity"]
    # user=False left the user's own timestamp alone.
    assert after_new["last_activity"] == before["last_activity"]


def test_culler_token_has_only_the_culler_role(api: HubAPI, hub: HubProcess) -> None:
    api.create_user("scope-fx")
    with httpx.Client(base_url=hub.api_url, headers={"Authorization": f"token {hub.culler_token}"}) as culler:
        me = culler.get("/user").json()
        assert me["kind"] == "service"
        assert me["name"] == "culler"
        assert culler.get("/users").status_code == 200
        # Not an admin: it may not start servers or create groups (admin:users does allow user creation).
        assert culler.post("/users/scope-fx/server", json={}).status_code == 403
        assert culler.post("/groups/scope-fx-group").status_code == 403


@pytest.mark.usefixtures("hub_tools")
def test_teardown_leaves_no_process_even_after_the_hub_crashed(tmp_path: Path) -> None:
    """A hub killed with SIGKILL leaves chp and its single-user servers behind; stop_hub reaps them."""
    hub = start_hub(tmp_path / "crashing-hub")
    try:
        with HubAPI(hub) as api:
            api.create_user("real-crash")
            start_servers(hub, [("real-crash", "")])
            model = api.get_user("real-crash")
            assert model is not None
            server_pid = int(model["servers"][""]["state"]["pid"])
        chp_pid = hub.chp_pid
        assert chp_pid is not None
        assert _pid_alive(chp_pid)
        assert _pid_alive(server_pid)
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait()
        # Orphans now, until stop_hub reaps them.
        assert _pid_alive(chp_pid)
        assert _pid_alive(server_pid)
    finally:
        stop_hub(hub)
    assert not _pid_alive(chp_pid)
    assert not _pid_alive(server_pid)
    assert group_members(hub.proc.pid) == []


@pytest.mark.usefixtures("hub_tools")
def test_extra_config_and_env_reach_only_that_hub(tmp_path: Path) -> None:
    """A test module that needs another role or service starts its own hub with ``extra_config``."""
    extra = (
        'c.JupyterHub.services.append({"name": "extra-service", "api_token": env["TRIO_CULLER_IT_EXTRA_TOKEN"]})\n'
        'c.JupyterHub.load_roles.append({"name": "extra-role", "scopes": ["list:users"], '
        '"services": ["extra-service"]})\n'
    )
    token = "e" * 64
    hub = start_hub(tmp_path / "extra-hub", extra_config=extra, extra_env={"TRIO_CULLER_IT_EXTRA_TOKEN": token})
    try:
        with httpx.Client(base_url=hub.api_url, headers={"Authorization": f"token {token}"}) as extra_client:
            me = extra_client.get("/user").json()
            assert me["name"] == "extra-service"
            assert "list:users" in me["scopes"]
            assert "delete:servers" not in me["scopes"]
    finally:
        stop_hub(hub)
