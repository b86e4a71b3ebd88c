"""The API token never appears in output: logs at any level and in either format, tracebacks, reports,
``--show-config``, or error messages built from a hub that echoes the request back.

Two layers are tested separately: the culler never puts the token into a message (in-process, every logger at
DEBUG, no redacting formatter), and the command line's formatter removes it even from text the culler does not
control (a failing ``cull_arbiter_hook`` whose exception quotes it)."""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from trio_culler import ConfigError, Culler, run_pass
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

from .support.faults import NOW, TOKEN, is_page, make_config, make_hub
from .support.processes import running_culler, running_hub

OLD = NOW - timedelta(hours=5)


def echo(status: int, request: httpx.Request, padding: int = 0) -> httpx.Response:
    """An error answer that quotes the request's Authorization header, as a careless hub or proxy might."""
    quoted = request.headers.get("authorization", "")
    return httpx.Response(status, json={"status": status, "message": "x" * padding + f"bad request {quoted}"})


def assert_clean(text: str) -> None:
    assert TOKEN not in text
    # Nor any recognisable piece of it (a message cut through the token would leave a prefix).
    assert TOKEN[:12] not in text
    assert TOKEN[-12:] not in text


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 429, 500, 503])
# 270: the hub message is cut at 300 characters, right through the token unless it is redacted first.
@pytest.mark.parametrize("padding", [0, 270], ids=["short", "cut-at-300"])
async def test_an_echoed_token_is_redacted_from_every_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, status: int, padding: int
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    hub, _population = make_hub(12, idle=1.0, default_page_size=5)
    offsets_seen: set[str] = set()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        # The first page's users are stopped before any other page is read; once the echoing page has been
        # asked for, every stop echoes too (the users the final re-read of page 0 finds come after it).
        if request.method == "DELETE" and offsets_seen:
            return echo(status, request, padding)
        if is_page(request) and request.url.params.get("offset") == "5":
            offsets_seen.add("5")
            return echo(status, request, padding)
        return None

    hub.fault = fault
    async with hub.running():
        report = await run_pass(make_config(), transport=hub.transport(), now=NOW)
    assert offsets_seen, "the echoing page was asked for"
    assert report.errors or report.aborted or status == 404
    assert_clean(repr(report))
    assert_clean(report.summary())
    assert_clean(caplog.text)
    if report.errors and status != 404:
        assert "[redacted]" in " ".join(error.message for error in report.errors) + (report.aborted or "")


async def test_nothing_logged_at_debug_contains_the_token(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A whole service run with every kind of event: culls, retries, a lost page, an unreadable user, a refusal.
    caplog.set_level(logging.DEBUG)
    hub, _population = make_hub(40, idle=0.5, default_page_size=10)
    hub.add_user("unreadable", created=OLD, last_activity=OLD, servers={"": FakeServer("", OLD, OLD)})
    calls = 0

    async def fault(request: httpx.Request) -> httpx.Response | None:
        nonlocal calls
        calls += 1
        if calls % 7 == 0:
            raise httpx.ReadError(f"connection reset while sending {request.headers['authorization']}")
        if is_page(request) and trio.current_time() > 500:
            return echo(403, request)
        return None

    hub.fault = fault
    culler = Culler(make_config(cull_every=300, cull_users=True), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        await trio.sleep(700)
        assert_clean(repr(culler.statistics()))
        assert_clean(repr(culler.config))
        assert_clean(str(culler.config.public_dict()))
        culler.stop(grace=0)
    assert culler.last_report is not None
    assert culler.last_report.aborted is not None, "the last pass met the echoing refusal"
    assert "read:servers" in culler.last_report.aborted
    assert_clean(caplog.text)
    assert_clean(repr(culler.last_report))


@pytest.mark.parametrize(
    "token",
    [f"{TOKEN}\nnext-line", f"{TOKEN}\r\nX-Injected: 1", f"{TOKEN}-ünïcödé", f"{TOKEN}\x00"],
    ids=["newline", "header injection", "non-ascii", "nul"],
)
async def test_an_unsendable_token_is_refused_without_quoting_it(token: str) -> None:
    hub = FakeHub(token=TOKEN)
    with pytest.raises(ConfigError) as caught:
        await run_pass(make_config(api_token=token), transport=hub.transport())
    assert_clean("".join(traceback.format_exception(caught.value)))
    assert "JUPYTERHUB_API_TOKEN" in str(caught.value)
    assert sum(hub.statistics().requests_by_kind.values()) == 0, "nothing was sent with it"


async def test_surrounding_whitespace_is_not_part_of_the_token() -> None:
    # A token read from a Kubernetes secret or a file often ends in a newline; the hub would strip it anyway.
    # Over real HTTP/1.1, where a newline in a header could not be sent at all.
    hub, population = make_hub(10, idle=0.5)
    with trio.fail_after(20):
        async with open_fake_hub(hub) as api_url:
            report = await run_pass(make_config(api_token=f"  {TOKEN}\n", url=api_url), now=NOW)
    assert report.ok, report.errors
    assert hub.statistics().stop_requests.keys() == population.idle


# ------------------------------------------------------------------------------------------ the command line


def test_show_config_never_shows_the_token(tmp_path: Path) -> None:
    args = ["--show-config", "--debug", "--url=http://127.0.0.1:1/hub/api"]
    with running_culler(*args, token=TOKEN, cwd=tmp_path) as culler:
        status = culler.wait(30)
    assert status == 0
    output = culler.text()
    assert '"api_token_set": true' in output
    assert_clean(output)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_debug_run_against_an_echoing_hub_prints_no_token(tmp_path: Path, log_format: str) -> None:
    # The hub quotes the Authorization header in the 500 it answers to every first stop; the culler retries,
    # culls, and logs everything at DEBUG.
    with running_hub(users=8, token=TOKEN, extra=["--echo-auth"]) as hub:
        args = [f"--url={hub.url}", "--once", "--debug", f"--log-format={log_format}", "--max-retries=2"]
        with running_culler(*args, token=TOKEN, cwd=tmp_path) as culler:
            status = culler.wait(60)
    output = culler.text()
    assert status == 0, output
    assert output.count("Culling server") == 8
    assert_clean(output)
    assert_clean(hub.process.text())


def test_a_refusal_that_echoes_the_token_prints_no_token(tmp_path: Path) -> None:
    with (
        running_hub(users=3, token=TOKEN, extra=["--echo-auth", "--refuse-listing"]) as hub,
        running_culler(f"--url={hub.url}", "--once", "--debug", token=TOKEN, cwd=tmp_path) as culler,
    ):
        status = culler.wait(60)
    output = culler.text()
    assert status == 1, "a refused pass is a failed --once"
    assert "read:users:activity" in output
    assert "[redacted]" in output
    assert_clean(output)


def test_a_traceback_that_quotes_the_token_is_redacted(tmp_path: Path) -> None:
    # A cull_arbiter_hook (user code) fails with the token in its message: the culler logs the traceback, and
    # the log formatter, not the culler's care, is what keeps the token out of it.
    (tmp_path / "idle_culler_config.py").write_text(
        "import os\n"
        "def hook(inactive, inactive_limit, server):\n"
        "    raise RuntimeError('the hook saw ' + os.environ['JUPYTERHUB_API_TOKEN'])\n"
        "c.IdleCuller.cull_arbiter_hook = hook\n",
        encoding="utf-8",
    )
    with running_hub(users=3, token=TOKEN) as hub:
        for log_format in ("text", "json"):
            args = [f"--url={hub.url}", "--once", f"--log-format={log_format}"]
            with running_culler(*args, token=TOKEN, cwd=tmp_path) as culler:
                status = culler.wait(60)
            output = culler.text()
            assert status == 1, "a failing hook is an error of the pass"
            assert "Traceback" in output or "traceback" in output.lower()
            assert "RuntimeError: the hook saw [redacted]" in output.replace("\\n", "\n")
            assert_clean(output)


def test_short_tokens_are_redacted_as_whole_words_only() -> None:
    from trio_culler._redact import make_redactor

    redact = make_redactor(["x"])
    assert redact("--max-age x token=x") == "--max-age [redacted] token=[redacted]"
    long_token = "0123456789abcdef0123456789abcdef"
    redact = make_redactor([long_token, ""])
    assert redact(f"Authorization=token%20{long_token}") == "Authorization=token%20[redacted]"
    assert make_redactor([])("unchanged") == "unchanged"
