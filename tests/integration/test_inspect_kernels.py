"""--inspect-kernels against a real JupyterHub, configurable-http-proxy, real jupyter_server single-user servers
and real ipykernel kernels.

The module starts its own hub (``hubtools.start_hub(extra_config=...)``): the culler's role holds ``tokens`` (as
documented) and also ``access:servers`` (which it must never use: its token would then open every server), a
second culler service has ``access:servers`` and no ``tokens``, and the hub folds the proxy's record of traffic
into ``last_activity`` every two seconds, as deployments do every few minutes (that is how a browser tab polling
its server keeps the hub's activity fresh). Every inspection here is made with a per-server token minted by the
hub; one user's server is a recording listener (``hub_spawner``'s ``spy-`` users) that shows what a server
receives.

A cell is run the way a browser runs it: the kernel is started with jupyter_server's REST API through the proxy,
and an ``execute_request`` built by jupyter_client's ``Session`` is sent on the kernel's websocket.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from .hubtools import (
    SERVER_START_TIMEOUT,
    CullerRun,
    HubAPI,
    HubProcess,
    culler_process,
    module_hub,
    start_servers,
    wait_until,
)
from .hubtools import run_culler as run_culler_cli

#: The culler's --timeout here: long enough to cover starting a kernel and a cell between two passes' reads.
TIMEOUT = 8
#: The hub folds the proxy's activity into last_activity this often (seconds).
ACTIVITY_INTERVAL = 2
NO_TOKENS_TOKEN = "a" * 32 + "b" * 32

EXTRA_CONFIG = f"""
c.JupyterHub.last_activity_interval = {ACTIVITY_INTERVAL}
for role in c.JupyterHub.load_roles:
    if role["name"] == "culler-role":
        assert "tokens" in role["scopes"]
        role["scopes"] = [*role["scopes"], "access:servers"]
c.JupyterHub.services = [
    *c.JupyterHub.services,
    {{"name": "culler-no-tokens", "api_token": "{NO_TOKENS_TOKEN}"}},
]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {{
        "name": "culler-no-tokens-role",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", "access:servers"],
        "services": ["culler-no-tokens"],
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
    # Each asked with a token the hub minted for its own user (and revoked at the end of the --once pass).
    hub_log = hub.log_path.read_text(errors="replace")
    for user in (busy, idle, bare):
        assert f"Service culler requested API token for {user}" in hub_log
    assert "Revoked 1 per-server tokens" in run.stderr, "the busy server's; the culled ones' went with their cull"

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


def test_without_tokens_the_self_check_names_it_and_nothing_is_culled(api: HubAPI, hub: HubProcess) -> None:
    """A culler with --inspect-kernels whose role lacks ``tokens`` (``access:servers`` is no substitute) does not
    run the pass: culling on the hub's data alone would stop the busy server the option is there to spare."""
    (user,) = api.create_users(["real-notokens"])
    start_servers(hub, [(user, "")])
    browser = Browser(hub)
    browser.run_cell(user, browser.start_kernel(user), "import time; time.sleep(900)")
    wait_idle(api, browser, user)

    run = run_culler(hub, "--inspect-kernels", f"--public-url={hub.proxy_url}", token=NO_TOKENS_TOKEN)
    assert run.returncode == 1, run.describe()
    errors = [line for line in run.stderr.splitlines() if line.startswith("[E ")]
    assert len(errors) == 1, run.describe()
    assert (
        "Pass not run: the culler's token lacks tokens (--inspect-kernels: to mint each server's own token to ask it "
        "about its kernels)" in errors[0]
    ), run.describe()
    assert "The culler's role holds access:servers: remove it" in run.stderr, "the risk is named too"
    assert NO_TOKENS_TOKEN not in run.stdout + run.stderr
    assert running(api, user), run.describe()
    assert any(k["execution_state"] == "busy" for k in browser.kernels(user))


# -- what a server receives ----------------------------------------------------------------------------------


def spy_requests(hub: HubProcess, user: str) -> list[dict[str, Any]]:
    path = hub.workdir / "spy-requests.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [record for record in records if record["user"] == user]


def header(record: dict[str, Any], name: str) -> str:
    return next((value for key, value in record["headers"] if key.lower() == name), "")


def credentials_in(records: list[dict[str, Any]]) -> set[str]:
    found = set()
    for record in records:
        for name, value in record["headers"]:
            if name.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                assert scheme.lower() == "token", value
                found.add(token)
    return found


def test_a_listener_in_place_of_a_server_receives_only_a_token_for_that_server(
    api: HubAPI, hub: HubProcess, tmp_path: Path
) -> None:
    """A user who replaces jupyter-server with a listener of their own records what the culler sends: never the
    culler's own token (its role holds access:servers, which would open every server), only a token of that
    user's, which the hub refuses for anything but that server, and revokes when the culler stops."""
    spy, victim = api.create_users(["spy-mallory", "real-victim"])
    start_servers(hub, [(spy, ""), (victim, "")], concurrency=2)
    log_path = tmp_path / "culler.log"
    with culler_process(
        hub.culler_token,
        f"--url={hub.api_url}",
        "--timeout=3600",  # nothing is culled here: the tokens must be alive while the culler runs
        "--cull-every=2",
        "--inspect-kernels",
        "--kernel-activity-only",
        f"--public-url={hub.proxy_url}",
        log_path=log_path,
    ) as proc:

        def two_passes() -> list[dict[str, Any]] | None:
            records = spy_requests(hub, spy)
            kernels = [r for r in records if r["target"].split("?")[0].endswith("/api/kernels")]
            return records if len(kernels) >= 2 else None

        records = wait_until(two_passes, timeout=120, what="two passes to inspect the spy's server")
        everything = json.dumps(records)
        assert hub.culler_token not in everything
        culler = [r for r in records if header(r, "user-agent").startswith("trio-culler/")]
        # The rest is the hub's own readiness check of the server, which carries no credential.
        assert all(not credentials_in([r]) for r in records if r not in culler)
        assert {r["target"].split("?")[0] for r in culler} == {
            f"/user/{spy}/api/kernels",
            f"/user/{spy}/api/terminals",
        }
        assert all(credentials_in([r]) for r in culler), "every request of the culler's carried a credential"
        tokens = credentials_in(records)
        assert len(tokens) == 1, "one token, reused from pass to pass"
        (token,) = tokens
        with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=60, trust_env=False) as as_spy:
            whoami = as_spy.get(f"{hub.api_url}/user")
            assert whoami.status_code == 200, whoami.text
            assert whoami.json()["name"] == spy
            # What the hub granted: the one server, and the owner's own name and groups.
            assert sorted(whoami.json()["scopes"]) == [
                f"access:servers!server={spy}/",
                f"read:users:groups!user={spy}",
                f"read:users:name!user={spy}",
            ]
            assert as_spy.get(f"{hub.api_url}/users").status_code == 403
            assert as_spy.delete(f"{hub.api_url}/users/{victim}/server").status_code == 403
            reached = as_spy.get(f"{hub.proxy_url}/user/{victim}/api/kernels", follow_redirects=False)
            assert reached.status_code == 403, reached.text
        assert running(api, victim)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = log_path.read_text()
    assert "Revoked 2 per-server tokens" in log, log  # the spy's and the victim's
    with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=60, trust_env=False) as as_spy:
        assert as_spy.get(f"{hub.api_url}/user").status_code == 403, "revoked when the culler stopped"
    assert hub.culler_token not in log
