"""A real browser for the status page's tests: Debian's Chromium, driven by Playwright (never a browser build
that Playwright downloads), and the hub's login form filled in as a person would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("TRIO_CULLER_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """Chromium for the block (fails, not skips, without it: scripts/test.sh installs Debian's chromium)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def browser_login(browser: Any, page_url: str, user: str, password: str) -> tuple[Any, Any, list[str]]:
    """A fresh browser context: open ``page_url``, land on the hub's login form, log in; returns (context,
    page, dialogs seen) with the page wherever the hub and the culler sent it."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(page_url)
    assert urlsplit(page.url).path == "/hub/login", page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state()
    return context, page, dialogs
