"""Claims of docs/security.md that no other test shows: exactly what a user's server receives from the culler,
what a hostile server's answers cost a pass, and that no name reaches a metric's label.

Over loopback sockets where the bytes on the wire are the claim, against FakeHub on trio's autojump clock
where time is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import trio
import trio.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_culler import Config, run_pass
from trio_culler._credentials import open_server_credentials
from trio_culler._cull_events import EVENTS
from trio_culler._engine import run_pass_with
from trio_culler._hub import open_hub_client
from trio_culler._metrics import CULL_REASONS, ERROR_KINDS, INSPECTION_FAILURE_KINDS, KEPT_REASONS, Metrics
from trio_culler._notify import open_notifier
from trio_culler._report import OUTCOMES
from trio_culler._rules import structure_rules
from trio_culler.testing import FakeHub, FakeKernel, FakeServer

from .loopback_recorder import Answer, Seen, open_recorder
from .test_status_web import PAGE, login, make_app, stranger

TOKEN = "threat-model-token-0123456789abcdef"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
H = timedelta(hours=1)


def idle_server(name: str = "", *, kernels: list[FakeKernel] | None = None) -> FakeServer:
    return FakeServer(name, started=NOW - 5 * H, last_activity=NOW - 2 * H, kernels=kernels)


def inspecting(api_url: str, public_url: str | None, **changes: Any) -> Config:
    config = Config(
        api_token=TOKEN,
        url=api_url,
        timeout=3600,
        inspect_kernels=True,
        kernel_activity_only=True,
        public_url=public_url,
        max_retries=0,
    )
    return attrs.evolve(config, **changes)


# -- what a user's server receives ------------------------------------------------------------------------------

#: Every header a request of the culler's to a user's server may carry: the request's own, the client's fixed
#: ones, and the server's own token. No cookie, nothing of the hub's, nothing of any other user's.
SERVER_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent", "authorization"}


async def test_a_users_server_receives_two_gets_its_own_token_and_nothing_else() -> None:
    """Everything that arrives at a user's server from the culler, on the wire: ``GET api/kernels`` and ``GET
    api/terminals`` with ``?no_track_activity=1``, no body, the fixed headers of every client of the culler's,
    and one ``Authorization``: a token its own user holds, for it alone (minted through the hub's API)."""

    minted: dict[str, str] = {}
    async with open_recorder() as servers:
        hub = FakeHub(token=TOKEN, clock=lambda: NOW, public_url=servers.url)
        for name in ("alice", "bob"):
            hub.add_user(name, servers={"": idle_server(kernels=[])})
        transport = hub.transport()

        async def api(seen: Seen) -> Answer:
            """The hub's API on a socket of its own (FakeHub behind it), keeping what each mint answered."""
            url = f"http://hub.test{seen.target}"
            request = httpx.Request(seen.method, url, headers=list(seen.headers), content=seen.body)
            response = await transport.handle_async_request(request)
            body = await response.aread()
            if seen.method == "POST" and seen.target.endswith("/tokens"):
                minted[seen.target.split("/")[-2]] = json.loads(body)["token"]
            return Answer(response.status_code, (("Content-Type", "application/json"),), body)

        async with hub.running(), open_recorder(api) as hub_api:
            report = await run_pass(inspecting(f"{hub_api.url}/hub/api", None), now=NOW)
    assert report.ok, report.summary()
    assert sorted((seen.method, seen.target) for seen in servers.seen) == sorted(
        ("GET", f"/user/{name}/api/{endpoint}?no_track_activity=1")
        for name in ("alice", "bob")
        for endpoint in ("kernels", "terminals")
    )
    for seen in servers.seen:
        names = [name for name, _value in seen.headers]
        assert set(names) <= SERVER_HEADERS, seen.headers
        assert len(names) == len(set(names)), f"one of each: {seen.headers}"
        assert seen.body == b""
        assert seen.header("accept-encoding") == ["identity"]
        assert seen.header("user-agent")[0].startswith("trio-culler/")
        (authorization,) = seen.authorization
        assert authorization.startswith("token ")
        assert TOKEN not in authorization
    # Each server was shown the token the hub minted for its own user, and no other.
    for seen in servers.seen:
        assert seen.authorization == [f"token {minted[seen.target.split('/')[2]]}"]
    assert hub.statistics().tokens_minted == 2


#: What a notice is made of (docs/notice-api.md): these keys, nothing else.
NOTICE_KEYS = {"id", "warned_at", "cull_at", "idle_since", "reason", "limit", "limit_seconds", "rule", "activity"}
NOTICE_KEYS |= {"keepable"}
M = timedelta(minutes=1)


async def test_a_warned_users_server_receives_its_notice_its_own_token_and_nothing_else() -> None:
    """Everything that arrives at users' servers from the culler's warnings, on the wire: ``PUT notice`` with the
    notice (its documented keys; no other user's name, not even through a rule that lists them), ``DELETE
    notice?id=`` when the warning is cancelled, ``GET notice`` before the cull; the fixed headers of every
    client of the culler's (and the PUT's body headers), and one ``Authorization``: the token minted for that
    server's own user, never the culler's."""
    minted: dict[str, str] = {}

    async def extension(seen: Seen) -> Answer:
        """trio-culler-notice as a listener: a state for GET and PUT, 204 for DELETE."""
        if seen.method == "DELETE":
            return Answer(204, (), b"")
        notice = json.loads(seen.body) if seen.method == "PUT" else None
        # The server's own last activity: its user's last use, which the culler's visits do not move.
        state = {"notice": notice, "keep": None, "now": "2026-11-25T12:00:00Z", "last_activity": "2026-11-25T11:10:00Z"}
        return Answer(body=json.dumps(state).encode())

    rules = structure_rules([{"users": ["alice", "bob", "carol-the-admin"], "timeout": 3600}])
    clock = [NOW]
    async with open_recorder(extension) as servers:
        hub = FakeHub(token=TOKEN, clock=lambda: clock[0], public_url=servers.url)
        for name in ("alice", "bob"):
            hub.add_user(name, servers={"": FakeServer("", started=NOW - 5 * H, last_activity=NOW - 50 * M)})
        transport = hub.transport()

        async def api(seen: Seen) -> Answer:
            url = f"http://hub.test{seen.target}"
            request = httpx.Request(seen.method, url, headers=list(seen.headers), content=seen.body)
            response = await transport.handle_async_request(request)
            body = await response.aread()
            if seen.method == "POST" and seen.target.endswith("/tokens"):
                minted[seen.target.split("/")[-2]] = json.loads(body)["token"]
            return Answer(response.status_code, (("Content-Type", "application/json"),), body)

        async with hub.running(), open_recorder(api) as hub_api:
            config = Config(
                api_token=TOKEN,
                url=f"{hub_api.url}/hub/api",
                timeout=3600,
                cull_every=300,
                warn_before=900,
                rules=rules,
                max_retries=0,
            )
            async with (
                open_hub_client(config) as client,
                open_server_credentials(client, config) as credentials,
                open_notifier(config, hub=client, credentials=credentials, clock=lambda: clock[0]) as notifier,
            ):
                assert notifier is not None
                # The last pass a second after +15: the notice counts from when the warning was made, real
                # milliseconds into the first pass.
                for at in (NOW, NOW + 5 * M, NOW + 15 * M + timedelta(seconds=1)):
                    clock[0] = at
                    credentials.begin_pass()
                    report = await run_pass_with(
                        client, config, now=clock[0], notifier=notifier, credentials=credentials
                    )
                    assert report.ok, report.summary()
                    await hub.wait_stops_done()
                    with trio.fail_after(10):
                        # The deliveries run beside the passes, over real sockets; the notifier has no event.
                        while notifier.statistics().queued or notifier.statistics().delivering:  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    if at == NOW:
                        hub.users["bob"].servers[""].last_activity = NOW + 2 * M  # bob came back
    assert set(hub.statistics().stop_requests) == {("alice", "")}
    notice = "api/trio-culler/v1/notice"
    put = (seen.body for seen in servers.seen if seen.method == "PUT" and seen.target == f"/user/bob/{notice}")
    bobs = json.loads(next(put))
    # A bodyless GET before each PUT (whether the server has the extension), and one before the cull.
    assert sorted((seen.method, seen.target) for seen in servers.seen) == sorted(
        [
            ("GET", f"/user/alice/{notice}"),
            ("PUT", f"/user/alice/{notice}"),
            ("GET", f"/user/bob/{notice}"),
            ("PUT", f"/user/bob/{notice}"),
            ("DELETE", f"/user/bob/{notice}?id={bobs['id']}"),
            ("GET", f"/user/alice/{notice}"),
        ]
    )
    for seen in servers.seen:
        user = seen.target.split("/")[2]
        names = [name for name, _value in seen.headers]
        body_headers = {"content-type", "content-length"} if seen.method == "PUT" else set()
        assert set(names) <= SERVER_HEADERS | body_headers, seen.headers
        assert len(names) == len(set(names)), f"one of each: {seen.headers}"
        assert seen.authorization == [f"token {minted[user]}"], "the token minted for that server's own user"
        assert TOKEN not in repr(seen)
        if seen.method != "PUT":
            assert seen.body == b""
            continue
        sent = json.loads(seen.body)
        assert set(sent) == NOTICE_KEYS, sent
        assert sent["rule"] == "rules[0] (timeout=3600)", "what the rule sets, never whom it matches"
        other = "bob" if user == "alice" else "alice"
        for word in (other, "carol", *(token for name, token in minted.items() if name != user)):
            assert word not in seen.body.decode(), seen.body
    assert set(minted) == {"alice", "bob"}


# -- what a hostile server's answers cost a pass ------------------------------------------------------------


async def test_a_server_that_fails_or_hangs_costs_its_pass_a_bounded_time_and_nobody_else_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A user's server answering 500 to everything is asked ``--max-retries`` more times, with the backoff
    (0.5 s doubling, at most 15.5 s of waits for the default 5 retries), holding no limiter token while it
    waits; one that never answers costs one deadline (10 s), not retried. Both are kept (an error each), and
    the other users' servers are culled meanwhile, not after them."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in ("failing", "hanging", "honest"):
        hub.add_user(name, servers={"": idle_server(kernels=[])})
    asked: dict[str, list[float]] = {}

    async def hostile(request: httpx.Request) -> httpx.Response | None:
        user = request.url.path.split("/")[2] if request.url.path.startswith("/user/") else None
        if user is not None:
            asked.setdefault(user, []).append(trio.current_time())
        if user == "failing":
            return httpx.Response(500)
        if user == "hanging":
            await trio.sleep_forever()
        return None

    hub.fault = hostile
    config = inspecting("http://hub.test/hub/api", "http://proxy.test", kernel_activity_only=False, max_retries=5)
    start = trio.current_time()
    async with hub.running():
        report = await run_pass(config, transport=hub.transport(), now=NOW)
        await hub.wait_stops_done()
    assert set(hub.statistics().stop_requests) == {("honest", "")}
    assert dict(report.errors_by_kind) == {"inspection": 2}
    assert report.inspection_failures == {"status": 1, "timeout": 1}
    assert len(asked["failing"]) == 6, "the first attempt and 5 retries"
    assert asked["failing"][-1] - asked["failing"][0] <= 15.5
    assert len(asked["hanging"]) == 1, "a timeout is not retried outside the hub's API"
    assert asked["honest"][0] - start < 1, "nobody waits behind them"
    assert report.duration <= 15.5 + 10 + 1, "the two at once, within their bounds"


# -- names in the metrics ------------------------------------------------------------------------------------

#: Names a user picks, made to break the text format (a label value's quote, a new line and a sample of its own)
#: or to swell it (a label value per name would be a new series per user).
HOSTILE_NAMES = ['x"} 1\nforged_metric{a="b', "<img src=x onerror=alert(1)>", "u\u2028x"]


async def test_no_name_reaches_a_metric_label_only_codes_do(autojump_clock: trio.testing.MockClock) -> None:
    """Every label value of every metric comes from the culler's own tables (decision codes, error and inspection
    failure kinds, pass outcomes, its version): a pass over users with hostile names, culled, kept busy and
    failing inspection, adds not one series per name, and no name appears in the exposition."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user(HOSTILE_NAMES[0], servers={"": idle_server(kernels=[])})
    hub.add_user(HOSTILE_NAMES[1], servers={HOSTILE_NAMES[2]: idle_server(HOSTILE_NAMES[2], kernels=[])})
    hub.add_user(HOSTILE_NAMES[2], servers={"": idle_server(kernels=[FakeKernel("k", "busy", NOW - 2 * H)])})
    hub.add_user("failing", servers={"": idle_server(kernels=[])})

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(500) if request.url.path.startswith("/user/failing/") else None

    hub.fault = refuse
    metrics = Metrics(interval=600)
    async with hub.running():
        report = await run_pass(inspecting("http://hub.test/hub/api", "http://proxy.test"), transport=hub.transport())
        await hub.wait_stops_done()
    assert sum(report.servers_culled.values()) == 2, (
        report.summary(),
        report.errors,
        report.servers_kept,
        hub.statistics().stop_requests,
    )
    assert report.servers_kept.get("kernel_busy") == 1
    assert report.errors_by_kind == {"inspection": 1}
    metrics.observe(report)
    text = generate_latest(metrics.registry).decode()
    allowed = {
        "reason": {*CULL_REASONS, *KEPT_REASONS},
        "kind": {*ERROR_KINDS, *INSPECTION_FAILURE_KINDS},
        "outcome": {*OUTCOMES, "sent", "failed", "delivered", "no_extension"},
        "event": set(EVENTS),
    }
    seen_labels = set()
    for family in text_string_to_metric_families(text):
        assert not family.name.startswith("forged"), family.name
        for sample in family.samples:
            for label, value in sample.labels.items():
                seen_labels.add(label)
                if label in allowed:
                    assert value in allowed[label], (family.name, label, value)
                elif label == "le":
                    float(value)  # a histogram's bucket: a number
                else:
                    assert family.name in ("trio_culler_build", "trio_culler_build_info"), (family.name, label)
                    assert label in ("version", "python")
    assert {"reason", "kind", "outcome"} <= seen_labels
    for name in HOSTILE_NAMES:
        for piece in (name, name[:6]):
            assert piece not in text, piece
    assert "failing" not in text


# -- what a browser is told to do with the page's answers ------------------------------------------------------

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


async def test_every_answer_of_the_page_forbids_scripts_framing_caching_and_referrers() -> None:
    """The page is read, not run: no script of anyone's runs in it (a name that got past the escaping could not
    act), no other site frames it, no cache keeps a user's view, and the OAuth callback's URL (its code) is sent
    to no one as a Referer. Every answer carries it: the page, api/status, the redirect to the hub's login, the
    callback, and the refusals."""
    client, flow, _history = make_app()
    async with client, stranger(client) as pleb:
        answers = {
            "redirect to login": await client.get(PAGE),
            "401": await client.get(f"{PAGE}api/status"),
            "callback": await login(client, flow, "admin"),
            "page": await client.get(PAGE),
            "api/status": await client.get(f"{PAGE}api/status"),
            "403": await login(pleb, flow, "pleb"),
            "logout": await client.get(f"{PAGE}logout"),
        }
    assert [answer.status_code for answer in answers.values()] == [302, 401, 302, 200, 200, 403, 302]
    for what, answer in answers.items():
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (what, name, answer.headers)
