"""The single-user extension (trio-culler-notice/) under a real JupyterHub: a real ``jupyterhub-singleuser``
(jupyter_server) with the extension installed, below ``/user/<name>/``, reached through the proxy with tokens the
hub mints, as the culler reaches it. The extension's own tests (trio-culler-notice/tests) cover its API in
detail, on plain jupyter_server and jupyter lab; this is the JupyterHub half.

scripts/test.sh installs the extension into the test venv before it runs these; elsewhere they are skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .hubtools import SERVER_START_TIMEOUT, HubAPI, HubProcess, module_hub, start_servers, wait_until

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("trio_culler_notice") is None,
    reason="trio-culler-notice is not installed here (bash scripts/notice-extension.sh installs it)",
)

#: How often the single-user servers report their activity to the hub (seconds): deployments use minutes.
ACTIVITY_INTERVAL = 1
# The shared hub config turns the servers' own reports off (the other tests post activity themselves).
EXTRA_CONFIG = f"""
c.IntegrationSpawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "{ACTIVITY_INTERVAL}"}}
"""
USER = "real-notice"
OTHER = "real-other"
API = "api/trio-culler/v1"

hub = module_hub("hub-notice", extra_config=EXTRA_CONFIG)


def mint_token(api: HubAPI, user: str, scopes: list[str]) -> str:
    """A token for ``user`` with these scopes, minted by the hub as the culler has it minted."""
    response = api.client.post(f"/users/{user}/tokens", json={"scopes": scopes, "expires_in": 600, "note": "test"})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def running(hub: HubProcess) -> Iterator[HubAPI]:
    """USER's default server running (a real jupyterhub-singleuser), and OTHER, a user without one."""
    with HubAPI(hub) as api:
        api.create_users([USER, OTHER])
        start_servers(hub, [(USER, "")])
        try:
            yield api
        finally:
            api.cleanup()


def proxy(hub: HubProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{hub.proxy_url}/user/{USER}/{API}/",
        headers={"Authorization": f"token {token}"},
        timeout=SERVER_START_TIMEOUT,
        trust_env=False,
    )


def notice(notice_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": notice_id,
        "warned_at": now.isoformat(),
        "cull_at": (now + timedelta(minutes=15)).isoformat(),
        "idle_since": (now - timedelta(minutes=45)).isoformat(),
        "reason": "idle",
        "limit": "timeout",
        "limit_seconds": 3600,
        "rule": None,
        "activity": "running code",
        "keepable": True,
    }


def hub_activity(api: HubAPI) -> datetime:
    """The server's last_activity as the hub records it."""
    model = api.get_user(USER)
    assert model is not None
    stamp = model["servers"][""]["last_activity"]
    return datetime.fromisoformat(stamp)


def test_a_server_scoped_token_reaches_the_notice_through_the_proxy(hub: HubProcess, running: HubAPI) -> None:
    token = mint_token(running, USER, [f"access:servers!server={USER}/"])
    with proxy(hub, token) as client:
        put = client.put("notice", json=notice("under-the-hub"))
        assert put.status_code == 200, put.text
        state = client.get("notice").json()
        assert state["notice"]["id"] == "under-the-hub"
        assert client.delete("notice", params={"id": "under-the-hub"}).status_code == 204
        assert client.get("notice").json()["notice"] is None


def test_another_users_token_is_refused(hub: HubProcess, running: HubAPI) -> None:
    with proxy(hub, mint_token(running, USER, [f"access:servers!server={USER}/"])) as owner:
        assert owner.put("notice", json=notice("private")).status_code == 200
    other_token = mint_token(running, OTHER, [f"access:servers!user={OTHER}"])
    with proxy(hub, other_token) as other:
        assert other.get("notice").status_code == 403
        assert other.put("notice", json=notice("forged")).status_code == 403
        assert other.post("keep", json={"notice_id": "private"}).status_code == 403
    with proxy(hub, mint_token(running, USER, [f"access:servers!server={USER}/"])) as owner:
        state = owner.get("notice").json()
        assert state["notice"]["id"] == "private"
        assert state["keep"] is None
        assert owner.delete("notice", params={"id": "private"}).status_code == 204


def test_the_hub_hears_of_a_keep_and_not_of_the_cullers_visits(hub: HubProcess, running: HubAPI) -> None:
    token = mint_token(running, USER, [f"access:servers!server={USER}/"])
    with proxy(hub, token) as client:
        visits_began = datetime.now(UTC)
        assert client.put("notice", json=notice("heard")).status_code == 200
        assert client.get("notice").status_code == 200
        # Several of the server's report intervals: none of the culler's requests is reported as use (the
        # server's own start, before them, may be).
        reports_done = datetime.now(UTC) + timedelta(seconds=4 * ACTIVITY_INTERVAL)
        wait_until(lambda: datetime.now(UTC) > reports_done, timeout=30, what="a few activity reports")
        assert hub_activity(running) < visits_began
        kept = client.post("keep", json={"notice_id": "heard"})
        assert kept.status_code == 200
        requested_at = datetime.fromisoformat(kept.json()["keep"]["requested_at"])
    # The hub's timestamps may be rounded to the millisecond.
    wait_until(
        lambda: hub_activity(running) >= requested_at - timedelta(milliseconds=1),
        timeout=30,
        what="the hub to hear of the keep",
    )


def test_the_state_carries_the_servers_own_last_activity_which_the_cullers_visits_never_move(
    hub: HubProcess, running: HubAPI
) -> None:
    """The proxy keeps only a route's latest request: the culler reads the server's own last activity instead,
    which jupyter_server keeps (and jupyterhub-singleuser reports), and which none of its visits moves."""
    token = mint_token(running, USER, [f"access:servers!server={USER}/"])
    server = f"{hub.proxy_url}/user/{USER}/"
    with proxy(hub, token) as client:
        assert client.get(server + "api/contents").status_code == 200  # the user
        used = datetime.fromisoformat(client.get("notice").json()["last_activity"])
        assert datetime.now(UTC) - timedelta(seconds=30) < used <= datetime.now(UTC)
        # The culler's visits: the GET before the PUT, the PUT, the inspection, the read before the cull.
        assert client.put("notice", json=notice("own-word")).json()["last_activity"] is not None
        assert client.get(server + "api/kernels", params={"no_track_activity": "1"}).status_code == 200
        status = client.get(server + "api/status").json()
        state = client.get("notice").json()
        assert datetime.fromisoformat(state["last_activity"]) == used
        assert datetime.fromisoformat(status["last_activity"]) == used, "the same word as api/status"
        assert client.delete("notice", params={"id": "own-word"}).status_code == 204
        # The control: the user's next request moves it.
        assert client.get(server + "api/contents").status_code == 200
        assert datetime.fromisoformat(client.get("notice").json()["last_activity"]) > used
