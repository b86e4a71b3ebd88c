"""The users' side, end to end: a real JupyterHub whose single-user servers run real jupyter_server with JupyterLab
and trio-culler-notice, Debian's chromium (driven by Playwright, logged in at the hub's login form), and the
long-running culler with ``--warn-before``, ``--inspect-kernels --kernel-activity-only`` (so that the open tab does
not count: the forgotten-tab case) and a webhook, whose events the test reads.

- the warning shows in JupyterLab with the cull time announced (a screenshot is kept; the test prints its path);
- "Keep running", clicked in the browser, spares the server at that time: the hub shows it running, the culler
  logs that its user kept it;
- without the click the server is culled at the time announced, give or take one ``--cull-every``;
- a server without the extension (its user's Jupyter configuration disables it) is culled as before, and the
  culler logs no error, nor anything, about its notices.

scripts/test.sh installs the extension into the test venv (whose servers these are); elsewhere this is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .hubtools import HubAPI, HubProcess, culler_process, module_hub, start_servers, wait_until
from .webhook import Event, Webhook, open_webhook

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("trio_culler_notice") is None,
        reason="trio-culler-notice is not installed here (bash scripts/notice-extension.sh installs it)",
    ),
]

CHROMIUM = os.environ.get("TRIO_CULLER_CHROMIUM", "/usr/bin/chromium")
PASSWORD = secrets.token_urlsafe(12)
KEEP, CULL, PLAIN = "real-lab-keep", "real-lab-cull", "real-plain-lab"
#: Every server is idle longer than this by the time the culler starts: each is warned at its first pass.
TIMEOUT = 10
#: Time enough to see the notification and click in it.
WARN_BEFORE = 40
CULL_EVERY = 2
WAIT_MS = 60_000

EXTRA_CONFIG = f"""
import json
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.JupyterHub.last_activity_interval = 2
# JupyterLab's settings for every user: no "Jupyter news?" toast beside the culler's.
settings = workdir / "lab-settings" / "@jupyterlab" / "apputils-extension"
settings.mkdir(parents=True, exist_ok=True)
(settings / "notification.jupyterlab-settings").write_text(json.dumps({{"fetchNews": "false"}}))
# A user whose Jupyter configuration disables the extension: their server has no notice API.
plain = workdir / "jupyter-config-plain"
plain.mkdir(exist_ok=True)
(plain / "jupyter_server_config.json").write_text(
    json.dumps({{"ServerApp": {{"jpserver_extensions": {{"trio_culler_notice": False}}}}}})
)
default = workdir / "jupyter-config"
default.mkdir(exist_ok=True)


def jupyter_config_dir(spawner):
    return str(plain if spawner.user.name.startswith("real-plain") else default)


c.IntegrationSpawner.environment = {{
    "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
    "JUPYTERLAB_SETTINGS_DIR": str(workdir / "lab-settings"),
    "JUPYTER_CONFIG_DIR": jupyter_config_dir,
}}
"""

hub = module_hub("hub-notice-browser", extra_config=EXTRA_CONFIG)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_lab(browser: Any, hub: HubProcess, user: str) -> tuple[Any, Any]:
    """A browser context of ``user``'s, logged in at the hub's form, with their JupyterLab open."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    page = context.new_page()
    page.goto(f"{hub.proxy_url}/user/{user}/lab")
    assert urlsplit(page.url).path == "/hub/login", page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#jp-main-dock-panel", timeout=WAIT_MS)
    assert urlsplit(page.url).path.startswith(f"/user/{user}/lab"), page.url
    return context, page


def poll_now(page: Any) -> None:
    """What the page does when its tab becomes visible again: ask for the notice at once (else within 30 s)."""
    with page.expect_request_finished(lambda request: "/api/trio-culler/v1/notice" in request.url):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")


def event_of(webhook: Webhook, user: str, kind: str) -> Event | None:
    return next((event for event in webhook.events(user) if event["event"] == kind), None)


def stamp(event: Event, key: str) -> datetime:
    return datetime.fromisoformat(event[key])


def test_a_user_sees_the_warning_in_jupyterlab_and_keeps_the_server(
    api: HubAPI, hub: HubProcess, chromium: Any, tmp_path: Path
) -> None:
    api.create_users([KEEP, CULL, PLAIN])
    start_servers(hub, [(KEEP, ""), (CULL, ""), (PLAIN, "")], concurrency=3)
    keep_context, keep_page = open_lab(chromium, hub, KEEP)
    cull_context, _cull_page = open_lab(chromium, hub, CULL)  # open and forgotten
    log = tmp_path / "culler.log"
    try:
        with (
            open_webhook() as webhook,
            culler_process(
                hub.culler_token,
                f"--url={hub.api_url}",
                f"--timeout={TIMEOUT}",
                f"--cull-every={CULL_EVERY}",
                f"--warn-before={WARN_BEFORE}",
                f"--warn-url={webhook.url}",
                f"--state-file={tmp_path / 'state.json'}",
                "--inspect-kernels",
                "--kernel-activity-only",
                f"--public-url={hub.proxy_url}",
                log_path=log,
            ) as culler,
        ):
            webhook.wait_for(
                lambda events: {e["user"] for e in events if e["event"] == "warning"} >= {KEEP, CULL, PLAIN},
                timeout=120,
                what=lambda: f"the three warnings\n{log.read_text()}",
            )
            warning = event_of(webhook, KEEP, "warning")
            assert warning is not None
            cull_at = stamp(warning, "cull_at")
            # The page shows the notice at its next poll; asked at once here.
            from playwright.sync_api import expect

            toast = keep_page.locator(".Toastify__toast--warning", has_text="this server will be stopped")

            def shown() -> bool:
                poll_now(keep_page)
                return bool(toast.count() > 0)

            wait_until(shown, timeout=60, what="the notice in the page")
            expect(toast).to_contain_text(
                re.compile(rf"this server will be stopped at {cull_at:%H:%M} \(in \d+:\d\d\) unless you use it"),
                timeout=WAIT_MS,
            )
            expect(toast).to_be_in_viewport(ratio=1.0, timeout=WAIT_MS)  # slid in
            shot = tmp_path / "notice-under-jupyterhub.png"
            keep_page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            print(f"screenshot of the culler's notice in JupyterLab, under JupyterHub: {shot}")
            clicked = datetime.now(UTC)
            toast.get_by_role("button", name="Keep running").click()
            expect(keep_page.locator(".Toastify__toast--success")).to_contain_text(
                "This server keeps running", timeout=WAIT_MS
            )
            assert clicked < cull_at, "clicked while the notice still ran"

            # The culler's pass at the time announced: CULL and PLAIN go, KEEP stays.
            webhook.wait_for(
                lambda events: (
                    event_of(webhook, CULL, "culled") is not None
                    and event_of(webhook, PLAIN, "culled") is not None
                    and event_of(webhook, KEEP, "cancelled") is not None
                ),
                timeout=WARN_BEFORE + 90,
                what=lambda: f"the culls at {cull_at}\n{log.read_text()}",
            )
            wait_until(
                lambda: datetime.now(UTC) > cull_at + timedelta(seconds=2 * CULL_EVERY + 1),
                timeout=60,
                what="two passes past the time announced",
            )
            assert api.server_state(KEEP) == "running", log.read_text()
            kept = event_of(webhook, KEEP, "cancelled")
            assert kept is not None
            assert (kept["id"], kept["detail"]) == (warning["id"], "kept")
            assert clicked - timedelta(seconds=2) <= stamp(kept, "kept_at") <= cull_at
            for user in (CULL, PLAIN):
                culled, warned = event_of(webhook, user, "culled"), event_of(webhook, user, "warning")
                assert culled is not None
                assert warned is not None
                assert culled["id"] == warned["id"]
                announced = stamp(warned, "cull_at")
                assert announced <= stamp(culled, "at") <= announced + timedelta(seconds=CULL_EVERY + 5), user
                assert api.wait_not_running(user) in ("stopped", "absent")
            culler.send_signal(signal.SIGTERM)
            assert culler.wait(timeout=60) == 0
    finally:
        keep_context.close()
        cull_context.close()
    text = log.read_text()
    assert f"Not culling server {KEEP}: its user asked to keep it at " in text
    assert "to servers without the extension" in text
    assert re.search(r"notices \d+ delivered, 0 failed, 1 to servers without the extension", text), text
    # Nothing logged about the server without the extension, at any level that is shown: no error, no warning.
    assert not [line for line in text.splitlines() if PLAIN in line and line.startswith(("[E", "[W"))], text
    assert not [line for line in text.splitlines() if line.startswith("[E")], text
    assert hub.culler_token not in text
