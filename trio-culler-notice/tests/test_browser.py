"""A real ``jupyter lab`` on 127.0.0.1 with the installed extension, below a JupyterHub-like base URL, and
Debian's chromium driven by Playwright (never a browser download of Playwright's own): what a user sees.

The notice is put, withdrawn and read over HTTP with the server's token, as the culler does; the rest happens in
the browser. Each step waits for what the page shows, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TRIO_CULLER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-token-0123456789abcdef"
BASE = "/user/alice/"
#: A zone with a half-hour offset: a time shown in UTC, or with the offset applied twice, cannot pass.
ZONE = "Asia/Kolkata"
WARNING = ".Toastify__toast--warning"
STARTUP_SECONDS = 120
WAIT_MS = 30_000
#: Set to a path (docs/notice-extension.png) to keep the screenshot of the notice in JupyterLab there too.
SCREENSHOT = os.environ.get("TRIO_CULLER_NOTICE_SCREENSHOT")


@pytest.fixture
def jp_asyncio_loop() -> None:
    """pytest-jupyter's per-test event loop, off: these tests run no server in process, and Playwright's sync
    API runs a loop of its own that pytest-jupyter would otherwise close under it."""


@pytest.fixture
def jp_server_cleanup() -> None:
    """Off too: it cleans up the in-process server these tests do not have, on the loop above."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT/user/alice/
    process: subprocess.Popen[bytes]

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}api/trio-culler/v1/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def put(self, notice: dict[str, Any]) -> None:
        status, _ = self.request("PUT", "notice", notice)
        assert status == 200

    def withdraw(self, notice_id: str) -> None:
        status, _ = self.request("DELETE", f"notice?id={notice_id}")
        assert status == 204

    def state(self) -> Any:
        status, state = self.request("GET", "notice")
        assert status == 200
        return state


def make_notice(notice_id: str, cull_in: timedelta, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    notice: dict[str, Any] = {
        "id": notice_id,
        "warned_at": now.isoformat(),
        "cull_at": (now + cull_in).isoformat(),
        "idle_since": (now - timedelta(minutes=50)).isoformat(),
        "reason": "idle",
        "limit": "timeout",
        "limit_seconds": 3600,
        "rule": "rules[0] (groups=students -> timeout=3600)",
        "activity": "running code in a notebook or typing in a terminal; an open browser tab alone does not count",
        "keepable": True,
    }
    notice.update(overrides)
    return notice


def local_clock(notice: dict[str, Any]) -> str:
    """The cull time as the page must show it: the browser's local time, on a 24-hour clock."""
    return datetime.fromisoformat(notice["cull_at"]).astimezone(ZoneInfo(ZONE)).strftime("%H:%M")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "Jupyter news?" toast beside ours.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (home / "root").mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    port = free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    log = (home / "lab.log").open("wb")
    process = subprocess.Popen(
        [
            str(jupyter),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={home / 'root'}",
            "--ServerApp.allow_root=True",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = Lab(f"http://127.0.0.1:{port}{BASE}", process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, (home / "lab.log").read_text()
            try:
                if server.request("GET", "notice")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, (home / "lab.log").read_text()
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, timezone_id=ZONE)
    errors: list[str] = []
    page = context.new_page()

    def on_error(error: Any) -> None:
        # Notebook 7.6.5's /tree page throws one of its own ("reading 'schema'"), with or without this
        # extension: only errors raised in this extension's code count.
        if "trio-culler-notice" in f"{error.stack}":
            errors.append(f"{error.stack}")

    page.on("pageerror", on_error)
    try:
        yield page
        assert errors == []
    finally:
        context.close()


def open_lab(page: Any, lab: Lab, path: str = "lab") -> None:
    page.goto(f"{lab.url}{path}?token={TOKEN}")


def poll_now(page: Any) -> None:
    """What the page does when its tab becomes visible again: ask at once (instead of at the next 30 s poll).
    Returns once the answer is in."""
    with page.expect_request_finished(lambda request: "/api/trio-culler/v1/notice" in request.url):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    # The page handles the answer on its next turn of the event loop.
    page.evaluate("new Promise(resolve => setTimeout(resolve, 0))")


def countdown(text: str) -> int:
    match = re.search(r"\(in (\d+):(\d\d)\)", text)
    assert match is not None, text
    return int(match.group(1)) * 60 + int(match.group(2))


def test_lab_shows_the_notice_and_keep_running_keeps_the_server(page: Any, lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    notice = make_notice("browser-keep", timedelta(minutes=10))
    lab.put(notice)
    open_lab(page, lab)
    warning = page.locator(WARNING, has_text="this server will be stopped")
    message = warning.locator(".jp-toast-message")
    expect(message).to_have_text(
        re.compile(
            rf"^Idle for 50 minutes: this server will be stopped at {local_clock(notice)} \(in \d+:\d\d\) "
            r"unless you use it\.$"
        ),
        timeout=WAIT_MS,
    )
    # The countdown moves.
    first = message.text_content()
    expect(message).not_to_have_text(first, timeout=WAIT_MS)
    assert 0 < countdown(message.text_content()) < countdown(first) <= 600
    expect(warning).to_be_in_viewport(ratio=1.0)
    shot = tmp_path / "notice-in-jupyterlab.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot of the notice in JupyterLab: {shot}")
    if SCREENSHOT:
        warning.screenshot(path=SCREENSHOT)

    # The details: the rule, the limit and what counts as use.
    warning.get_by_role("button", name="Details").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("rules[0] (groups=students -> timeout=3600)")
    expect(dialog).to_contain_text("an open browser tab alone does not count")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    before = datetime.now(UTC)
    warning.get_by_role("button", name="Keep running").click()
    expect(page.locator(".Toastify__toast--success")).to_contain_text("This server keeps running", timeout=WAIT_MS)
    expect(warning).to_have_count(0)
    state = lab.state()
    assert state["notice"] is None
    assert state["keep"]["notice_id"] == "browser-keep"
    assert datetime.fromisoformat(state["keep"]["requested_at"]) >= before


def test_a_withdrawn_or_replaced_notice_changes_the_page(page: Any, lab: Lab) -> None:
    from playwright.sync_api import expect

    first = make_notice("browser-withdrawn", timedelta(minutes=20))
    lab.put(first)
    open_lab(page, lab)
    warning = page.locator(WARNING, has_text="this server will be stopped")
    expect(warning).to_contain_text(f"at {local_clock(first)} ", timeout=WAIT_MS)

    second = make_notice("browser-replacing", timedelta(hours=2, minutes=7))
    lab.put(second)
    poll_now(page)
    replacing = page.locator(WARNING, has_text=f"at {local_clock(second)} (in 2:0")
    expect(replacing).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator(WARNING, has_text=f"at {local_clock(first)} ")).to_have_count(0, timeout=WAIT_MS)

    lab.withdraw("browser-replacing")
    poll_now(page)
    expect(warning).to_have_count(0, timeout=WAIT_MS)


def test_a_dismissed_notice_is_not_shown_again_in_that_page(page: Any, lab: Lab) -> None:
    from playwright.sync_api import expect

    lab.put(make_notice("browser-dismissed", timedelta(minutes=30)))
    open_lab(page, lab)
    warning = page.locator(WARNING, has_text="this server will be stopped")
    expect(warning).to_have_count(1, timeout=WAIT_MS)
    warning.get_by_title("Hide notification").click()
    expect(warning).to_have_count(0, timeout=WAIT_MS)
    # Neither the countdown's next tick nor the next poll brings it back.
    poll_now(page)
    page.wait_for_function("() => new Promise(resolve => setTimeout(() => resolve(true), 1500))")
    expect(warning).to_have_count(0)
    # A newer notice is shown.
    newer = make_notice("browser-after-dismissed", timedelta(minutes=40))
    lab.put(newer)
    poll_now(page)
    expect(warning).to_contain_text(f"at {local_clock(newer)} ", timeout=WAIT_MS)


def test_notebook_7_shows_a_max_age_notice_without_keep_running(page: Any, lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    notice = make_notice(
        "browser-max-age",
        timedelta(minutes=15),
        reason="max_age",
        limit="max_age",
        limit_seconds=8 * 3600,
        idle_since=None,
        keepable=False,
        rule=None,
    )
    lab.put(notice)
    open_lab(page, lab, "tree")
    expect(page.locator("#main-panel, .jp-FileBrowser").first).to_be_visible(timeout=WAIT_MS)
    warning = page.locator(WARNING, has_text="this server")
    expect(warning).to_contain_text(
        f"This server reaches its maximum age of 8 hours and will be stopped at {local_clock(notice)} (in ",
        timeout=WAIT_MS,
    )
    expect(warning).to_contain_text("It cannot be kept: save your work now.")
    expect(warning.get_by_role("button", name="Keep running")).to_have_count(0)
    expect(warning.get_by_role("button", name="Details")).to_have_count(1)
    expect(warning).to_be_in_viewport(ratio=1.0)  # slid in
    shot = tmp_path / "notice-in-notebook-7.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of the notice in Notebook 7: {shot}")
    lab.withdraw("browser-max-age")


def test_the_servers_clock_corrects_a_wrong_browser_clock(chromium: Any, lab: Lab) -> None:
    from playwright.sync_api import expect

    notice = make_notice("browser-clock", timedelta(minutes=10))
    lab.put(notice)
    context = chromium.new_context(timezone_id=ZONE)
    try:
        # The browser's clock is two hours fast: by its own clock, the cull would be long past.
        context.clock.install(time=time.time() + 2 * 3600)
        page = context.new_page()
        open_lab(page, lab)
        warning = page.locator(WARNING, has_text="this server will be stopped")
        expect(warning).to_contain_text(f"at {local_clock(notice)} (in ", timeout=WAIT_MS)
        assert 500 < countdown(warning.inner_text()) <= 600
    finally:
        context.close()
    lab.withdraw("browser-clock")
