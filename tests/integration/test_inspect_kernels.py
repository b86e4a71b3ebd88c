"""--inspect-kernels against a real JupyterHub, configurable-http-proxy, real jupyter_server single-user servers
and real ipykernel kernels.

The module starts its own hub (``hubtools.start_hub(extra_config=...)``): the culler's role gains
``access:servers``, a second culler service has the documented scopes without it, and the hub folds the proxy's
record of traffic into ``last_activity`` every two seconds, as deployments do every few minutes (that is how a
browser tab polling its server keeps the hub's activity fresh).

A cell is run the way a browser runs it: the kernel is started with jupyter_server's REST API through the proxy,
and an ``execute_request`` built by jupyter_client's ``Session`` is sent on the kernel's websocket.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from .hubtools import (
    SERVER_START_TIMEOUT,
    CullerRun,
    HubAPI,
    HubProcess,
    module_hub,
    start_servers,
    wait_until,
)
from .hubtools import run_culler as run_culler_cli

#: The culler's --timeout here: long enough to cover starting a kernel and a cell between two passes' reads.
TIMEOUT = 8
#: The hub folds the proxy's activity into last_activity this often (seconds).
ACTIVITY_INTERVAL = 2
NO_ACCESS_TOKEN = "a" * 32 + "b" * 32

EXTRA_CONFIG = f"""
c.JupyterHub.last_activity_interval = {ACTIVITY_INTERVAL}
for role in c.JupyterHub.load_roles:
    if role["name"] == "culler-role":
        role["scopes"] = [*role["scopes"], "access:servers"]
c.JupyterHub.services = [
    *c.JupyterHub.services,
    {{"name": "culler-no-access", "api_token": "{NO_ACCESS_TOKEN}"}},
]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {{
        "name": "culler-no-access-role",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["culler-no-access"],
    }},
]
"""


hub = module_hub("hub-kernels", extra_config=EXTRA_CONFIG)


# -- a browser's part: kernels, cells, polling -------------------------------------------------------------


@dataclass
class Browser:
    """What a user's browser does through the proxy, with the tests' admin token."""

    hub: HubProcess

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub.proxy_url,
            headers={"Authorization": f"token {self.hub.admin_token}"},
            timeout=SERVER_START_TIMEOUT,
            trust_env=False,
        )

    def kernels(self, user: str) -> list[dict[str, object]]:
        with self._client() as client:
            response = client.get(f"/user/{user}/api/kernels")
            assert response.status_code == 200, response.text
            kernels: list[dict[str, object]] = response.json()
            return kernels

    def start_kernel(self, user: str) -> str:
        """Start a kernel as JupyterLab does: POST api/kernels, then connect to it (jupyter_server reports a
        kernel as ``starting`` until a client has talked to it) and wait for it to be idle."""
        with self._client() as client:
            response = client.post(f"/user/{user}/api/kernels", json={"name": "python3"})
            assert response.status_code == 201, response.text
            kernel_id = str(response.json()["id"])
        self._send(user, kernel_id, "kernel_info_request", {}, until=("kernel_info_reply", None))

        def idle() -> bool:
            return any(k["id"] == kernel_id and k["execution_state"] == "idle" for k in self.kernels(user))

        wait_until(idle, timeout=SERVER_START_TIMEOUT, interval=0.5, what=f"{user}'s kernel to be idle")
        return kernel_id

    def run_cell(self, user: str, kernel_id: str, code: str) -> None:
        """Send ``code`` for execution and return once the kernel says it is busy with it."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
        self._send(user, kernel_id, "execute_request", content, until=("status", "busy"))

        def busy() -> bool:
            return any(k["id"] == kernel_id and k["execution_state"] == "busy" for k in self.kernels(user))

        wait_until(busy, timeout=30, interval=0.5, what=f"{user}'s kernel to be busy")

    def _send(
        self, user: str, kernel_id: str, msg_type: str, content: dict[str, object], *, until: tuple[str, str | None]
    ) -> None:
        """One message on the kernel's websocket; returns once its answer of type ``until`` arrived."""
        url = self.hub.proxy_url.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel_id}/channels"
        ws = websocket.create_connection(
            url, header=[f"Authorization: token {self.hub.admin_token}"], timeout=SERVER_START_TIMEOUT
        )
        try:
            message = Session(username="test").msg(msg_type, content)
            message["channel"] = "shell"
            ws.send(json.dumps(message, default=json_default))
            msg_id = message["header"]["msg_id"]
            reply_type, state = until
            while True:
                reply = json.loads(ws.recv())
                if reply.get("msg_type") != reply_type or reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if state is None or reply["content"].get("execution_state") == state:
                    return
        finally:
            ws.close()

    def poll(self, user: str, stop: threading.Event) -> None:
        """What an open JupyterLab tab does: a request through the proxy every second."""
        with self._client() as client:
            while not stop.wait(1.0):
                client.get(f"/user/{user}/api/status")


def run_culler(hub: HubProcess, *args: str, token: str | None = None) -> CullerRun:
    """One ``--once`` pass of the culler CLI with this module's timeout and the culler's token (or ``token``)."""
    return run_culler_cli(hub, f"--timeout={TIMEOUT}", *args, token=token)


def wait_idle(api: HubAPI, browser: Browser, *users: str) -> None:
    """Wait until the hub sees every one of ``users``' default servers idle for longer than TIMEOUT.

    The hub folds the proxy's record of traffic into ``last_activity`` only every ACTIVITY_INTERVAL seconds,
    so a request made just before (a cell run, a kernel listed, a culler's inspection) may not show yet: the
    servers would look idle here and active to the culler a moment later. So each server first gets one more
    request through the proxy, and the hub is waited for until it shows it; then no traffic is left unfolded."""
    now = datetime.now(UTC)
    touched = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the proxy's timestamps are whole ms
    for user in users:
        browser.kernels(user)

    def folded() -> bool:
        for user in users:
            model = api.get_user(user)
            assert model is not None
            if datetime.fromisoformat(model["servers"][""]["last_activity"]) < touched:
                return False
        return True

    wait_until(folded, timeout=60, interval=0.2, what=f"the hub to show the proxy's activity of {users}")

    def idle() -> bool:
        now = datetime.now(UTC)
        for user in users:
            model = api.get_user(user)
            assert model is not None
            then = datetime.fromisoformat(model["servers"][""]["last_activity"])
            if (now - then).total_seconds() <= TIMEOUT + 1:
                return False
        return True

    wait_until(idle, timeout=TIMEOUT + 60, interval=0.5, what=f"{users} to be idle")


def running(api: HubAPI, user: str) -> bool:
    return api.server_state(user) == "running"


# -- the tests ----------------------------------------------------------------------------------------------


def test_a_long_cell_is_spared_with_inspect_kernels_and_culled_without(api: HubAPI, hub: HubProcess) -> None:
    busy, idle, bare = api.create_users(["real-busy", "real-idle", "real-bare"])
    start_servers(hub, [(busy, ""), (idle, ""), (bare, "")], concurrency=3)
    browser = Browser(hub)
    browser.run_cell(busy, browser.start_kernel(busy), "import time; time.sleep(900)")
    browser.start_kernel(idle)
    wait_idle(api, browser, busy, idle, bare)

    run = run_culler(hub, "--inspect-kernels", f"--public-url={hub.proxy_url}")
    assert run.returncode == 0, run.describe()
    assert running(api, busy), run.describe()
    assert api.wait_not_running(idle, context=run.describe()) in ("stopped", "absent")
    assert api.wait_not_running(bare, context=run.describe()) in ("stopped", "absent")
    assert f"Not culling server {busy} (kernel busy for 00:00:" in run.stderr, run.describe()
    assert f"Culling server {idle} (inactive for " in run.stderr
    assert "3 servers inspected (0 could not be)" in run.stderr

    # The kernel is still busy; without --inspect-kernels the hub's data is all the culler has.
    assert any(k["execution_state"] == "busy" for k in browser.kernels(busy))
    wait_idle(api, browser, busy)  # the inspection went through the proxy, which the hub counts as activity
    run = run_culler(hub)
    assert run.returncode == 0, run.describe()
    assert api.wait_not_running(busy, context=run.describe()) in ("stopped", "absent")


def test_a_polling_tab_keeps_a_server_only_without_kernel_activity_only(api: HubAPI, hub: HubProcess) -> None:
    (tab,) = api.create_users(["real-tab"])
    start_servers(hub, [(tab, "")])
    browser = Browser(hub)
    browser.start_kernel(tab)
    stop = threading.Event()
    poller = threading.Thread(target=browser.poll, args=(tab, stop), daemon=True)
    poller.start()
    try:
        time.sleep(TIMEOUT + 2)  # the kernel is idle past the timeout; the hub sees the tab's requests

        run = run_culler(hub, "--inspect-kernels", f"--public-url={hub.proxy_url}")
        assert run.returncode == 0, run.describe()
        assert running(api, tab), run.describe()

        run = run_culler(hub, "--inspect-kernels", "--kernel-activity-only", f"--public-url={hub.proxy_url}")
        assert run.returncode == 0, run.describe()
        assert api.wait_not_running(tab, context=run.describe()) in ("stopped", "absent")
        assert f"Culling server {tab} (kernels idle for 00:00:" in run.stderr, run.describe()
        assert ", hub activity 00:00:0" in run.stderr
    finally:
        stop.set()
        poller.join()


def test_a_server_that_refuses_the_culler_is_kept_and_said_once(api: HubAPI, hub: HubProcess) -> None:
    """A 403 from the server is a failure to look, never a reason to cull: the busy server is kept, the pass
    counts an error (exit status 1) and says why once."""
    (user,) = api.create_users(["real-noaccess"])
    start_servers(hub, [(user, "")])
    browser = Browser(hub)
    browser.run_cell(user, browser.start_kernel(user), "import time; time.sleep(900)")
    wait_idle(api, browser, user)

    run = run_culler(hub, "--inspect-kernels", f"--public-url={hub.proxy_url}", token=NO_ACCESS_TOKEN)
    assert run.returncode == 1, run.describe()
    assert running(api, user), run.describe()
    warnings = [line for line in run.stderr.splitlines() if "Cannot inspect server" in line]
    assert len(warnings) == 1, run.describe()
    assert "403" in warnings[0]
    assert "keeping it" in warnings[0]
    assert "0 servers inspected (1 could not be)" in run.stderr
