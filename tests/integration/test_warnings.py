"""Warnings that are true, against a real JupyterHub with configurable-http-proxy, real jupyter_server single-user
servers and real ipykernel kernels: the long-running culler with ``--warn-before``, ``--inspect-kernels`` and a
webhook, whose events the test reads.

The hub folds the proxy's record of traffic into ``last_activity`` every two seconds (deployments: every few
minutes), so every request of the culler's own through the proxy (the inspection, the notice, the state read
before the cull) shows as the server's activity, as it does in production: the warnings must not let it move the
cull time they announced.
"""

from __future__ import annotations

import importlib.util
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from .hubtools import HubAPI, HubProcess, culler_process, module_hub, start_servers, wait_until
from .test_inspect_kernels import Browser
from .webhook import Event, Webhook, open_webhook

pytestmark = pytest.mark.integration

#: The culler's --timeout, --warn-before and --cull-every here (seconds).
TIMEOUT = 12
WARN_BEFORE = 6
CULL_EVERY = 2
EXTENSION = importlib.util.find_spec("trio_culler_notice") is not None

EXTRA_CONFIG = """
c.JupyterHub.last_activity_interval = 2
"""

hub = module_hub("hub-warnings", extra_config=EXTRA_CONFIG)


@contextmanager
def warning_culler(
    hub: HubProcess, webhook: Webhook, log_path: Path, *extra: str, warn_before: float = WARN_BEFORE
) -> Iterator[Path]:
    """The long-running culler, its warnings to ``webhook``; yields its log's path. Stopped with SIGTERM."""
    state = log_path.parent / "culler-state.json"
    with culler_process(
        hub.culler_token,
        f"--url={hub.api_url}",
        f"--timeout={TIMEOUT}",
        f"--cull-every={CULL_EVERY}",
        f"--warn-before={warn_before}",
        f"--warn-url={webhook.url}",
        f"--state-file={state}",
        "--inspect-kernels",
        f"--public-url={hub.proxy_url}",
        *extra,
        log_path=log_path,
    ) as proc:
        yield log_path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()


def stamp(event: Event, key: str) -> datetime:
    return datetime.fromisoformat(event[key])


def one_of(webhook: Webhook, user: str, kind: str) -> Event:
    (event,) = [event for event in webhook.events(user) if event["event"] == kind]
    return event


def test_events_tell_the_truth_about_one_idle_stretch(api: HubAPI, hub: HubProcess, tmp_path: Path) -> None:
    """An idle server: ``warning`` then ``culled``, one id, culled at the time announced. A busy one: never
    warned. A warned one that is used again, or starts a long cell: ``cancelled``, and no cull at that time."""
    idle, busy, used, cell = api.create_users(["real-w-idle", "real-w-busy", "real-w-used", "real-w-cell"])
    start_servers(hub, [(idle, ""), (busy, ""), (used, ""), (cell, "")], concurrency=4)
    browser = Browser(hub)
    browser.run_cell(busy, browser.start_kernel(busy), "import time; time.sleep(900)")
    kernel = browser.start_kernel(cell)
    with open_webhook() as webhook, warning_culler(hub, webhook, tmp_path / "culler.log") as log:

        def warned(events: list[Event]) -> bool:
            return {event["user"] for event in events if event["event"] == "warning"} >= {idle, used, cell}

        webhook.wait_for(warned, timeout=120, what=lambda: f"warnings for {idle}, {used}, {cell}\n{log.read_text()}")
        # Used again, well after the culler's own requests to it: a request through the proxy, and a long cell.
        time.sleep(3)
        browser.kernels(used)
        browser.run_cell(cell, kernel, "import time; time.sleep(900)")
        culled = one_of_soon(webhook, idle, "culled", log)
        # Two passes past the latest time announced: nothing else was culled at its time.
        latest = max(stamp(event, "cull_at") for event in webhook.events() if event["event"] == "warning")
        wait_until(
            lambda: datetime.now(UTC) > latest + timedelta(seconds=2 * CULL_EVERY + 1),
            timeout=60,
            what="two passes past the times announced",
        )
        for user in (used, cell):
            assert webhook.kinds(user)[:2] == [("warning", None), ("cancelled", webhook.kinds(user)[1][1])], log
            assert webhook.kinds(user)[1][1] in ("used", "kernel_busy"), webhook.events(user)
            first = webhook.events(user)[0]["id"]
            assert all(e["id"] != first for e in webhook.events(user)[2:]), "a later stretch has an id of its own"
            # A cull of that server, if any, is of a later stretch, a full timeout after its use.
            for event in webhook.events(user):
                if event["event"] == "culled":
                    cancelled = webhook.events(user)[1]
                    assert stamp(event, "at") >= stamp(cancelled, "at") + timedelta(seconds=TIMEOUT - CULL_EVERY)
        assert api.server_state(cell) == "running", "its long cell runs on"
        assert webhook.events(busy) == [], "a busy server is never warned"
        assert api.server_state(busy) == "running"
    # The idle one: exactly a warning and its cull, one id, at the time announced (not before).
    assert webhook.kinds(idle) == [("warning", None), ("culled", None)], log.read_text()
    warning = one_of(webhook, idle, "warning")
    assert warning["id"] == culled["id"]
    assert stamp(culled, "at") >= stamp(warning, "cull_at")
    assert stamp(warning, "cull_at") >= stamp(warning, "warned_at") + timedelta(seconds=WARN_BEFORE)
    assert stamp(culled, "at") <= stamp(warning, "cull_at") + timedelta(seconds=CULL_EVERY + 5)
    assert api.wait_not_running(idle) in ("stopped", "absent")
    text = log.read_text()
    assert "Traceback" not in text
    assert hub.culler_token not in text


def one_of_soon(webhook: Webhook, user: str, kind: str, log: Path) -> Event:
    webhook.wait_for(
        lambda events: any(e["user"] == user and e["event"] == kind for e in events),
        timeout=120,
        what=lambda: f"the {kind} event of {user}\n{log.read_text()}",
    )
    return one_of(webhook, user, kind)


def test_a_restart_between_warning_and_cull_keeps_the_full_notice(api: HubAPI, hub: HubProcess, tmp_path: Path) -> None:
    """The culler that warned is stopped; the next one, with the same state file, culls at the time the first
    announced, and neither warns again nor culls sooner: one warning, one cull, one id."""
    (user,) = api.create_users(["real-w-restart"])
    start_servers(hub, [(user, "")])
    warn_before = 15
    with open_webhook() as webhook:
        with warning_culler(hub, webhook, tmp_path / "first.log", warn_before=warn_before) as log:
            warning = one_of_soon(webhook, user, "warning", log)
            if EXTENSION:
                notice = read_notice(api, hub, user)
                assert notice is not None
                assert (notice["id"], notice["cull_at"]) == (warning["id"], warning["cull_at"].replace("+00:00", "Z"))
        assert api.server_state(user) == "running"
        with warning_culler(hub, webhook, tmp_path / "second.log", warn_before=warn_before) as log:
            culled = one_of_soon(webhook, user, "culled", log)
    assert webhook.kinds(user) == [("warning", None), ("culled", None)], (tmp_path / "second.log").read_text()
    assert culled["id"] == warning["id"]
    assert stamp(culled, "at") >= stamp(warning, "cull_at")
    assert stamp(warning, "cull_at") >= stamp(warning, "warned_at") + timedelta(seconds=warn_before)
    assert api.wait_not_running(user) in ("stopped", "absent")


def read_notice(api: HubAPI, hub: HubProcess, user: str) -> dict[str, object] | None:
    """The notice the server holds, read as the culler reads it: with a token minted for that server alone."""
    response = api.client.post(
        f"/users/{user}/tokens", json={"scopes": [f"access:servers!server={user}/"], "expires_in": 300}
    )
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"token {response.json()['token']}"}
    with httpx.Client(headers=headers, timeout=60, trust_env=False) as client:
        state = client.get(f"{hub.proxy_url}/user/{user}/api/trio-culler/v1/notice")
    assert state.status_code == 200, state.text
    notice: dict[str, object] | None = state.json()["notice"]
    return notice
