"""Attacks on the culler found by reading its code as a user (or a visitor) would, each with what it did before
and what the culler does now. docs/security.md names these tests, beside the older ones that show the rest of
the threat model.

Against FakeHub on trio's autojump clock, or real loopback sockets where the bytes on the wire are the attack.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, PassReport, Server, run_pass
from trio_culler._cull_events import CullEvent
from trio_culler._deliver import MAX_WEBHOOK_ANSWER, open_webhook_client
from trio_culler._deliver import _post as post_event
from trio_culler._engine import inspect_through
from trio_culler._explain import run_explain
from trio_culler._hub import open_hub_client
from trio_culler._inspect import InspectionFailed, parse_kernels, parse_terminals
from trio_culler._notice import NoticeClient, NoticeFailed
from trio_culler._redact import url_secrets
from trio_culler._rules import structure_rules
from trio_culler._service import Culler
from trio_culler._standby import standby_config
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, open_fake_hub

from .support.net import dead_port
from .support.processes import TOKEN, run_culler, running_hub

URL = "http://127.0.0.1:8081/hub/api"
H = timedelta(hours=1)


def inspecting(**changes: Any) -> Config:
    config = Config(
        api_token=TOKEN, url=URL, timeout=3600, cull_every=600, inspect_kernels=True, public_url="http://proxy.test"
    )
    return attrs.evolve(config, **changes)


async def run_long(
    hub: FakeHub, config: Config, *, passes: int, between: Callable[[int], None] | None = None
) -> list[PassReport]:
    """A long-running culler (its per-server tokens kept between passes) for ``passes`` passes, then stopped;
    ``between(i)`` runs after pass ``i``."""
    reports: list[PassReport] = []
    send, receive = trio.open_memory_channel[PassReport](math.inf)
    culler = Culler(config, transport=hub.transport(), reporters=[send.send_nowait])
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        for i in range(passes):
            reports.append(await receive.receive())
            await hub.wait_stops_done()
            if between is not None:
                between(i)
        culler.stop(grace=0)
    return reports


def busy_server(now: datetime) -> FakeServer:
    return FakeServer("", now - 5 * H, now - 2 * H, kernels=[FakeKernel("k", "busy", now - 2 * H)])


# -- a user revokes the culler's per-server token ------------------------------------------------------------


async def test_a_per_server_token_its_user_revoked_is_replaced_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """The per-server token is its user's: they see it on their token page, with its note, and may revoke it.
    Before, the culler went on showing the revoked token until its renewal (three passes), and the server was
    kept, an error at each of them: a user who revoked each new token kept an idle server forever (up to
    --max-age), and an honest one who cleaned up their tokens kept theirs for an hour and a half by accident.
    Now a refused token is revoked and replaced at once, and the pass goes on with the new one."""
    now = datetime.now(UTC)  # a long-running culler measures idleness from the wall clock
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    hub.add_user("alice", servers={"": busy_server(now)})

    def revoke_and_go_idle(i: int) -> None:
        if i == 0:
            (token,) = hub.live_tokens()
            assert token.user == "alice"
            revoked = hub._tokens.revoke("alice", token.id, at=trio.current_time())  # as her token page does
            assert revoked.status_code == 204
            hub.users["alice"].servers[""].kernels = [FakeKernel("k", "idle", now - 2 * H)]

    reports = await run_long(hub, inspecting(), passes=2, between=revoke_and_go_idle)
    first, second = reports
    assert first.ok, first.summary()
    assert first.servers_culled == {}, "a busy kernel spares it"
    assert second.ok, second.summary()
    assert dict(second.servers_culled) == {"idle": 1}, "culled in the first pass after the revocation"
    stats = hub.statistics()
    # Shown the revoked token once (which the server refused), then the new one; each good token at api/kernels
    # and at api/status.
    assert stats.server_credentials == {"own": 4, "other": 1}
    assert stats.tokens_minted == 2
    assert hub.live_tokens() == ()


async def test_a_server_that_refuses_every_token_costs_one_mint_a_pass_and_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The other side of replacing a refused token: a server that refuses whatever it is shown (its user's code
    answering 403) is asked once more with a new token, no more, and kept as any refusal is."""
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    hub.add_user("mallory", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=[])})
    hub.server_access = False
    reports = await run_long(hub, inspecting(), passes=3)
    for report in reports:
        assert report.servers_culled == {}, "never culled because the culler could not look"
        assert dict(report.errors_by_kind) == {"inspection": 1}
    stats = hub.statistics()
    assert stats.tokens_minted == 3 + 1, "the first token, then one new one a pass"
    assert stats.requests_by_kind["kernels"] == 2 * 3
    assert hub.live_tokens() == (), "every one revoked"


# -- a user's server writes its own words into the culler's log lines -----------------------------------------

#: What a hostile server would like an operator to read in the culler's log, its page and --explain.
NOW_UTC = datetime(2026, 11, 25, 12, tzinfo=UTC)
FORGED = "Culling server admin (inactive for 99:00:00)"


@pytest.mark.parametrize(
    "answer",
    [
        f"HTTP/1.1 2x0 {FORGED}\r\n\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{FORGED}\r\n\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{FORGED}\r\n".encode(),
        f"{FORGED}\r\n\r\n".encode(),
    ],
    ids=["status line", "header line", "chunk header", "not HTTP"],
)
@pytest.mark.parametrize("use_proxy_env", [False, True], ids=["h11 transport", "httpcore"])
async def test_what_a_users_server_writes_is_not_quoted_in_any_message(
    answer: bytes, use_proxy_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, h11's refusal of a malformed answer quoted the offending bytes (``illegal status line:
    bytearray(b'HTTP/1.1 2x0 Culling server admin ...')``), and that message became the inspection failure's:
    the log line ``Cannot inspect server ...``, the admins' page, the user's own view and --explain. Now what a
    user's server wrote is never quoted; the hub's malformed answers still are (the operator's to debug)."""

    async def hostile(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            await stream.receive_some(65536)
            await stream.send_all(answer)
            await stream.aclose()

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    config = inspecting(max_retries=0, use_proxy_env=use_proxy_env)
    server = Server(url="/user/mallory/", ready=True, model={"url": "/user/mallory/"})
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hostile, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        config = attrs.evolve(config, public_url=f"http://127.0.0.1:{port}")
        async with open_hub_client(config) as hub:
            with pytest.raises(InspectionFailed) as failed:
                await inspect_through(hub, server, config, token="mallorys-own-token")
        nursery.cancel_scope.cancel()
    assert failed.value.kind == "unreadable"
    message = str(failed.value)
    assert "GET http://127.0.0.1:" in message, message
    for word in ("Culling", "admin", "99:00:00"):
        assert word not in message, message


class OwnToken:
    """The per-server credentials, for a notice client that talks to one hostile server: mallory's own token."""

    async def for_server(self, user: str, server: str) -> str:
        return "mallorys-own-token"


@pytest.mark.parametrize(
    "answer",
    [
        f"HTTP/1.1 2x0 {FORGED}\r\n\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{FORGED}\r\n\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{FORGED}\r\n".encode(),
        f"{FORGED}\r\n\r\n".encode(),
        f"HTTP/1.1 499 {FORGED}\r\nContent-Length: 0\r\n\r\n".encode(),
        *(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for body in (
                # Short enough to be read as a time or an id, and refused for what it holds.
                json.dumps({"keep": {"notice_id": None, "requested_at": "Culling admin 99:00:00"}}).encode(),
                json.dumps(
                    {"keep": {"notice_id": "Culling admin 99:00:00", "requested_at": "2026-11-25T12:05Z"}}
                ).encode(),
                json.dumps({"keep": FORGED}).encode(),
                FORGED.encode(),
            )
        ),
    ],
    ids=["status line", "header line", "chunk header", "not HTTP", "reason phrase", "time", "id", "keep", "body"],
)
async def test_what_a_users_server_answers_to_get_notice_is_not_quoted_in_any_message(answer: bytes) -> None:
    """The state a warned server answers before its cull (GET notice) is read as its inspection is: what the
    server wrote (its HTTP, its reason phrase, the keep's fields) never reaches the failure's message, which the
    log line ``Could not deliver a notice ...`` and --explain show."""

    async def hostile(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            await stream.receive_some(65536)
            await stream.send_all(answer)
            await stream.aclose()

    server = Server(url="/user/mallory/", ready=True, model={"url": "/user/mallory/"})
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hostile, 0, host="127.0.0.1"))
        config = attrs.evolve(
            inspecting(max_retries=0), public_url=f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        )
        async with open_hub_client(config) as hub:
            client = NoticeClient(hub, config, cast(Any, OwnToken()))
            with pytest.raises(NoticeFailed) as failed:
                await client.read_keep("mallory", server)
        nursery.cancel_scope.cancel()
    assert failed.value.kind in ("unreadable", "status"), failed.value.kind
    message = str(failed.value)
    assert message.startswith("GET notice"), message
    for word in ("Culling", "admin", "99:00:00"):
        assert word not in message, message


@pytest.mark.parametrize("field", ["last_activity", "execution_state"])
def test_a_value_a_server_answers_is_not_quoted_when_it_cannot_be_read(field: str) -> None:
    """The same for what is inside its answer: a timestamp that does not parse was quoted by
    ``datetime.fromisoformat`` (``Invalid isoformat string: 'Culling server admin ...'``)."""
    kernel: dict[str, object] = {"id": "k", "execution_state": "idle", "last_activity": "2026-11-25T12:00:00Z"}
    kernel[field] = FORGED if field == "last_activity" else [FORGED]
    with pytest.raises(InspectionFailed) as failed:
        parse_kernels(json.dumps([kernel]).encode())
    assert failed.value.kind == "unreadable"
    assert str(failed.value).startswith("kernels[0]: "), failed.value
    for word in ("Culling", "admin", "99:00:00"):
        assert word not in str(failed.value), failed.value
    with pytest.raises(InspectionFailed) as terminal:
        parse_terminals(json.dumps([{"name": "1", "last_activity": FORGED}]).encode())
    assert "Culling" not in str(terminal.value)


# -- a culler on standby sends its token to the default hub URL ----------------------------------------------

STANDBY_ENV = {
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101",
    "JUPYTERHUB_API_URL": "http://hub.internal:8081/hub/api",
    "JUPYTERHUB_API_TOKEN": TOKEN,
}


@pytest.mark.parametrize(
    "broken",
    [
        {"JUPYTERHUB_REQUEST_TIMEOUT": "60s"},
        {"JUPYTERHUB_REQUEST_TIMEOUT": "-1"},
        {"JUPYTERHUB_PUBLIC_URL": "hub.example.org"},
    ],
    ids=["timeout not a number", "negative timeout", "public url without scheme"],
)
def test_a_culler_on_standby_sends_its_token_only_to_the_hub_it_was_given(broken: dict[str, str]) -> None:
    """A managed service with a url whose configuration cannot be used stays up to show the error, and its page
    logs admins in through the hub: the culler's token is the OAuth client secret of that exchange. Before, when
    the hub's variables themselves could not all be used (a JUPYTERHUB_REQUEST_TIMEOUT of ``60s``), the page fell
    back to the default API URL, http://127.0.0.1:8081/hub/api, and posted the token there at the first login:
    on a host whose users have shells (The Littlest JupyterHub's hub listens on 15001), to whichever user's
    process listens on 8081. Now it keeps the hub's URL, or, without a usable one, the token."""
    config = standby_config({**STANDBY_ENV, **broken})
    assert (config.url, config.api_token) == ("http://hub.internal:8081/hub/api", TOKEN)
    without_url = standby_config({**STANDBY_ENV, **broken, "JUPYTERHUB_API_URL": "http://hub.internal/?x=1"})
    assert without_url.api_token == "", "no URL of the hub's to send it to: no token"
    assert standby_config(STANDBY_ENV).url == "http://hub.internal:8081/hub/api", "the ordinary case"


# -- the password in --url, in the log --------------------------------------------------------------------------

PASSWORD = "pw-Zq81x"


@pytest.mark.parametrize("hub_up", [False, True], ids=["hub down", "hub refusing"])
def test_the_password_in_url_is_never_logged(tmp_path: Path, hub_up: bool) -> None:
    """A hub behind a proxy that asks for basic auth has a ``--url`` with a password in it. It was logged at
    start-up (``hub http://culler:pw@.../hub/api``), in every failed pass (``the hub at http://culler:pw@...
    could not be reached``) and in every error naming a request; the status page's configuration alone showed the
    URL without it. Now it is redacted wherever the token is."""
    port = dead_port()
    with contextlib.ExitStack() as stack:
        if hub_up:
            hub = stack.enter_context(running_hub(users=2, fail_users=["user-0"]))
            port = int(hub.url.rsplit(":", 1)[1].split("/")[0])
        url = f"http://culler:{PASSWORD}@127.0.0.1:{port}/hub/api"
        run = run_culler(f"--url={url}", "--once", "--debug", "--max-retries=0", cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "http://culler:[redacted]@127.0.0.1:" in output, output
    if hub_up:
        assert "DELETE http://culler:[redacted]@127.0.0.1:" in output, "an error naming a request"
    assert PASSWORD not in output, output


async def test_the_password_in_url_is_in_no_error_the_page_shows(autojump_clock: trio.testing.MockClock) -> None:
    """The pass's errors (the admins' page, ``api/status``, an embedder's reporters) quote the request too."""
    hub = FakeHub(token=TOKEN, clock=lambda: datetime(2026, 11, 25, 12, tzinfo=UTC))
    long_ago = datetime(2026, 11, 25, 6, tzinfo=UTC)
    hub.add_user("alice", servers={"": FakeServer("", long_ago, long_ago)})

    async def refuse_stops(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(400, json={"message": "no"}) if request.method == "DELETE" else None

    hub.fault = refuse_stops
    config = Config(api_token=TOKEN, url=f"http://culler:{PASSWORD}@hub.test/hub/api", max_retries=0)
    async with hub.running():
        report = await run_pass(config, transport=hub.transport())
    assert report.errors, report.summary()
    messages = " ".join(error.message for error in report.errors)
    assert "http://culler:[redacted]@hub.test/hub/api/users/alice/server" in messages, messages
    assert PASSWORD not in messages


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("http://hub:8081/hub/api", []),
        ("http://culler@hub:8081/hub/api", []),
        ("http://culler:p%40ss@hub:8081/hub/api", ["p%40ss", "p@ss"]),
        ("http://[::1", []),
    ],
)
def test_url_secrets(url: str, secrets: list[str]) -> None:
    assert url_secrets(url) == secrets


# -- a webhook receiver answers a huge body ------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("use_proxy_env", [False, True], ids=["h11 transport", "httpcore"])
async def test_a_webhooks_answer_is_read_within_a_small_cap(
    status: int, use_proxy_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the POST read the receiver's whole answer, up to the transport's 512 MiB, within the delivery's
    30 s, to use its status alone: a receiver answering a gibibyte swelled the culler's memory (or made every
    delivery time out, retried). Now at most MAX_WEBHOOK_ANSWER bytes are read: an answer longer than that
    fails its delivery at once, and is not asked again."""
    sent = 0
    requests = 0

    async def gibibyte(stream: trio.SocketStream) -> None:
        nonlocal sent, requests
        request = b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(65536)
            requests += 1
            await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, 2**30))
            piece = b"x" * 65536
            while sent < 2**30:
                await stream.send_all(piece)
                sent += len(piece)

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    event = CullEvent(
        event="warning", user="ann", server="", id="0123456789abcdef", warned_at=NOW_UTC, cull_at=NOW_UTC,
        reason="idle", idle_seconds=60.0, at=NOW_UTC,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, gibibyte, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/hook"
        config = Config(
            api_token=TOKEN,
            url="http://127.0.0.1:9/hub/api",
            warn_url=url,
            warn_before=900,
            use_proxy_env=use_proxy_env,
        )
        async with open_webhook_client(config, None) as client:
            assert client is not None
            with trio.fail_after(10), pytest.raises(RuntimeError, match=f"longer than {MAX_WEBHOOK_ANSWER} bytes"):
                await post_event(client, url, event)
        await trio.sleep(0.1)  # the server sees the connection closed
        nursery.cancel_scope.cancel()
    assert requests == 1, "an answer too long is not asked for again"
    assert sent < 64 * 2**20, f"{sent} bytes of the answer were taken from the socket"


# -- a user names themselves to write to the operator's terminal through --explain -------------------------------

#: A window title set by an escape sequence, a forged line of --explain's own, a carriage return and a
#: right-to-left override: each would reach the operator's terminal as it is.
TERMINAL = "eve\x1b]0;pwned\x07\n  user:     keep: forged\r\u202e"


async def test_explain_prints_hostile_names_escaped_one_field_one_line() -> None:
    """Before, --explain's text wrote user and server names (and the rule's label, which quotes its globs) as
    they are: a user named with an escape sequence wrote to the operator's terminal when explained. Now every
    line is escaped as the text log's are; the JSON output keeps the exact names."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW_UTC)
    old = NOW_UTC - 5 * H
    hub.add_user(TERMINAL, created=old, last_activity=old, servers={TERMINAL: FakeServer(TERMINAL, old, old)})
    async with open_fake_hub(hub) as api_url:
        config = Config(
            api_token=TOKEN, url=api_url, timeout=600, rules=structure_rules([{"users": [TERMINAL], "timeout": 900}])
        )
        text, data = io.StringIO(), io.StringIO()
        assert await run_explain(config, TERMINAL, out=text) == 0
        assert await run_explain(config, TERMINAL, out=data, json_format=True) == 0
    printed = text.getvalue()
    for unsafe in ("\x1b", "\x07", "\r", "\u202e"):
        assert unsafe not in printed, repr(printed)
    lines = printed.splitlines()
    assert lines[0].startswith("User eve\\x1b]0;pwned\\x07\\n  user:     keep: forged\\r"), lines[0]
    assert not any(line.startswith("  user:     keep: forged") for line in lines), "no forged line"
    assert lines[1].startswith(r"  server eve\x1b]0;pwned\x07\n  user:     keep: forged\r"), lines[1]
    assert lines[2].startswith(r"    rule:     rules[0] (users=eve\x1b]0;pwned\x07\n"), lines[2]
    assert json.loads(data.getvalue())["user"] == TERMINAL, "the JSON output is exact"
