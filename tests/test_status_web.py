"""The status page's ASGI app with an in-memory hub for the OAuth steps: who gets in, what is shown, escaping.

The real hub, proxy and browser are in ``tests/integration/test_status_page.py``; here every branch of the
access rules and the rendering runs in milliseconds, hostile data included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import itsdangerous
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from trio_culler import Config, run_pass
from trio_culler._codes import DecisionCode
from trio_culler._decide import Action, Decision
from trio_culler._errors import ConfigError
from trio_culler._forecast import Forecast
from trio_culler._history import History
from trio_culler._hub import open_hub_client
from trio_culler._judgments import ServerJudgment
from trio_culler._metrics import Metrics
from trio_culler._models import Server, User
from trio_culler._redact import shown_url
from trio_culler._report import CullRecord, PassError, PassReport
from trio_culler._rules import Rule
from trio_culler._time import iso_utc
from trio_culler.testing import FakeHub, FakeKernel, FakeServer
from trio_culler.web import Identity, OAuthFlow, StatusPageSettings, create_app
from trio_culler.web._app import SESSION_COOKIE, STATE_COOKIE, json_bytes
from trio_culler.web._auth import (
    LOGIN_SECONDS,
    LOOKUP_MAX_DELAY,
    LOOKUPS,
    REFUSED_SECONDS,
    SESSIONS_KEPT,
    TOKEN_CHECK_SECONDS,
    TOKENS_KEPT,
    Auth,
    Refusal,
    Viewer,
)
from trio_culler.web._lookup import FRESH_SECONDS, HUB_DEADLINE, UserLookup
from trio_culler.web._oauth import EVERYONE_SCOPE, OAuthError, OAuthRefused
from trio_culler.web._pacer import ANONYMOUS, Budget, Pacer
from trio_culler.web._server import hypercorn_config, serve_status_page
from trio_culler.web._settings import parse_bind
from trio_culler.web._user_view import UserViews, activity_words, own_rule

from .support.docs import code_blocks, exec_hub_config, load_yaml, marked_block
from .support.processes import REPO

TOKEN = "culler-secret-token-0123456789abcdef"
HOSTILE = "<img src=x onerror=alert(1)>"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ENV = {
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101",
    "JUPYTERHUB_SERVICE_PREFIX": "/services/culler/",
    "JUPYTERHUB_SERVICE_NAME": "culler",
    "JUPYTERHUB_CLIENT_ID": "service-culler",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/culler/oauth_callback",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services!service=culler"]',
    "JUPYTERHUB_HOST": "",
    "JUPYTERHUB_BASE_URL": "/",
}
_SETTINGS = StatusPageSettings.from_environment(ENV)
assert _SETTINGS is not None
SETTINGS: StatusPageSettings = _SETTINGS
PAGE = "http://127.0.0.1:10101/services/culler/"


class FakeFlow(OAuthFlow):
    """The hub's side of OAuth in memory: codes it issued, the PKCE challenge each was issued for."""

    def __init__(self, users: Mapping[str, list[str]]) -> None:
        self.users = users  # name -> scopes of the token the hub would issue
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (user, challenge)
        self.tokens: dict[str, str] = {
            "script-token": "admin",
            "weak-token": "pleb",
            "alice-token": "alice",
            "prometheus-token": "prometheus",
        }
        self.exchanges: list[dict[str, str]] = []
        self.identified: list[str] = []  # every token asked about, as the hub's GET /user would count them
        super().__init__(SETTINGS, api_url="http://hub/hub/api", client_secret=TOKEN, client=httpx.AsyncClient())

    def login(self, authorize_url: str, user: str) -> str:
        """What the hub does at its login form: a redirect to the callback with a code for this user."""
        query = parse_qs(urlsplit(authorize_url).query)
        assert query["code_challenge_method"] == ["S256"]
        code = f"code-{len(self.codes)}"
        self.codes[code] = (user, query["code_challenge"][0])
        return f"{query['redirect_uri'][0]}?code={code}&state={query['state'][0]}"

    async def exchange(self, code: str, verifier: str) -> str:
        self.exchanges.append({"code": code, "verifier": verifier})
        user, challenge = self.codes.pop(code, ("", ""))
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not user or digest != challenge:
            raise OAuthRefused("token exchange: the hub answered 400")
        token = f"token-of-{user}"
        self.tokens[token] = user
        return token

    @property
    def hub_requests(self) -> int:
        return len(self.exchanges) + len(self.identified)

    async def identify(self, token: str) -> Identity:
        self.identified.append(token)
        if token not in self.tokens:
            raise OAuthRefused("identity: the hub answered 403")
        return identity(self.tokens[token], self.users)


#: What the hub's GET /user lists as the scopes of each one's token. As JupyterHub 6.1 answers the page's OAuth
#: flow (README, "Who sees what"): an admin's token holds no more than anyone's, and the `admin` flag tells.
USERS = {
    "admin": ["access:services!service=culler", "read:users:name!user=admin"],
    # A non-admin operator: a role with read:servers, asked for by the service's oauth_client_allowed_scopes.
    "ops": ["access:services!service=culler", "read:servers"],
    "pleb": ["access:services!service=other"],
    HOSTILE: ["access:services!service=culler"],
    # Plain users, granted the page by the recipe (read:servers filtered to their own, as the hub gives it).
    "alice": ["access:services!service=culler", "read:servers!user=alice"],
    "bob": ["access:services!service=culler"],
    # Prometheus's service token: only the access scope.
    "prometheus": ["access:services!service=culler"],
}
ADMINS = frozenset({"admin"})
SERVICES = frozenset({"prometheus"})


def identity(name: str, users: Mapping[str, list[str]] = USERS) -> Identity:
    """Who the hub says ``name`` is, as it answers GET /user for their token."""
    kind = "service" if name in SERVICES else "user"
    return Identity(name, frozenset(users[name]), admin=name in ADMINS, kind=kind)


def report(**changes: Any) -> PassReport:
    values: dict[str, Any] = {
        "started": NOW,
        "duration": 4.2,
        "hub_version": "6.1.1",
        "dry_run": False,
        "users_seen": 100_000,
        "servers_seen": 100_000,
        "servers_culled": {"idle": 2},
        "servers_stopped": 2,
        "servers_pending": 0,
        "users_culled": 0,
        "users_deleted": 0,
        "skipped": 0,
        "duplicates": 0,
        "pages": 200,
        "pages_failed": 0,
        "errors_by_kind": {"status": 1},
        "errors": (PassError(f"{HOSTILE}/srv", "status", f"the hub answered 500 for {HOSTILE}"),),
        "culls": (
            CullRecord(
                user=HOSTILE,
                server="<script>alert(2)</script>",
                action="stop",
                rule="idle",
                reason="inactive for 02:00:00",
                at=NOW,
                outcome="stopped",
            ),
            CullRecord(
                user="alice", server="", action="stop", rule="max_age", reason="age 10:00:00", at=NOW, outcome="gone"
            ),
        ),
        "upcoming": tuple(
            Forecast(
                user=f"{HOSTILE}{i}", server="", cull_at=NOW + timedelta(seconds=i), limit="idle", limit_seconds=3600
            )
            for i in range(100)
        ),
        "upcoming_due": {"idle": 99_000, "max_age": 1_000},
    }
    values.update(changes)
    return PassReport(**values)


def make_app(
    history: History | None = None, *, metrics: Metrics | None = None, cfg: Config | None = None
) -> tuple[httpx.AsyncClient, FakeFlow, History]:
    cfg = cfg or Config(api_token=TOKEN)
    history = history or History(cfg.public_dict(), size=5)
    flow = FakeFlow(USERS)
    registry = None if metrics is None else metrics.registry
    app = create_app(SETTINGS, history, flow, secret_key=b"k" * 32, metrics=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:10101")
    return client, flow, history


def stranger(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser (a cookie jar of its own) on the same app."""
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))


async def login(client: httpx.AsyncClient, flow: FakeFlow, user: str) -> httpx.Response:
    start = await client.get(PAGE)
    assert start.status_code == 302
    return await client.get(flow.login(start.headers["location"], user))


def assert_clean(response: httpx.Response) -> None:
    assert TOKEN not in response.text
    assert TOKEN not in str(response.headers)


# --- settings -----------------------------------------------------------------------------------------------


def test_settings_from_the_variables_a_hub_sets() -> None:
    assert SETTINGS is not None
    assert (SETTINGS.bind_host, SETTINGS.bind_port, SETTINGS.prefix) == ("127.0.0.1", 10101, "/services/culler/")
    assert SETTINGS.authorize_url == "/hub/api/oauth2/authorize"
    assert SETTINGS.access_scopes == {"access:services!service=culler"}
    assert StatusPageSettings.from_environment({}) is None
    standalone = StatusPageSettings.from_environment(
        {**ENV, "JUPYTERHUB_SERVICE_URL": "", "JUPYTERHUB_HOST": "https://hub.example.org"}, bind="[::1]:9000"
    )
    assert standalone is not None
    assert (standalone.bind_host, standalone.bind_port) == ("::1", 9000)
    assert standalone.authorize_url == "https://hub.example.org/hub/api/oauth2/authorize"
    assert hypercorn_config(standalone).bind == ["[::1]:9000"]
    assert hypercorn_config(standalone).backlog == 1024  # a burst of strangers leaves room for an admin's SYN


@pytest.mark.parametrize("bind", ["9000", "host:", ":80", "host:99999", "host:x"])
def test_bad_bind_is_a_config_error(bind: str) -> None:
    with pytest.raises(ConfigError, match="--status-bind"):
        parse_bind(bind)


def test_a_page_without_oauth_client_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="JUPYTERHUB_CLIENT_ID"):
        StatusPageSettings.from_environment({"JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="ACCESS_SCOPES"):
        StatusPageSettings.from_environment({**ENV, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": "[1]"})


# --- who gets in --------------------------------------------------------------------------------------------


async def test_no_session_redirects_to_the_hubs_authorization_with_pkce() -> None:
    client, _flow, _history = make_app()
    async with client:
        response = await client.get(PAGE)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/hub/api/oauth2/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == ["service-culler"]
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256, unpadded
    state_cookie = response.headers["set-cookie"]
    assert state_cookie.startswith(f"{STATE_COOKIE}=")
    assert "httponly" in state_cookie.lower()
    assert_clean(response)


@pytest.mark.parametrize("user", ["admin", "ops", HOSTILE])
async def test_a_user_with_access_logs_in_and_sees_the_page(user: str) -> None:
    """Every user the access scope lets in gets a page; an admin or operator (``ops`` holds read:servers) the whole
    one, anyone else their own (``HOSTILE``: see the user view's tests below for what it holds)."""
    client, flow, history = make_app()
    history.observe(report())
    async with client:
        callback = await login(client, flow, user)
        assert callback.status_code == 302
        assert callback.headers["location"] == "/services/culler/"
        cookie = next(v for k, v in callback.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
        assert "httponly" in cookie.lower()
        assert "samesite=lax" in cookie.lower()
        assert "path=/services/culler/" in cookie.lower()
        assert "secure" not in cookie.lower()
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert page.status_code == 200
    assert document.status_code == 200
    if user == HOSTILE:
        assert "Your recent culls" in page.text
        assert document.json()["view"] == "user"
    else:
        assert "Recent culls" in page.text
        assert document.json()["view"] == "all"
    # The secret is sent to the hub as the client secret of the token request, and nowhere else.
    assert flow.exchanges
    assert all(TOKEN not in json.dumps(e) for e in flow.exchanges)
    for response in (callback, page, document):
        assert_clean(response)


async def test_the_secure_flag_follows_the_browsers_scheme() -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE, headers={"x-forwarded-proto": "https"})
        assert "secure" in start.headers["set-cookie"].lower()
        # The client speaks plain http to the app (the proxy ends TLS), so it holds back a Secure cookie:
        # send it by hand, as the browser on https would.
        state_cookie = start.headers["set-cookie"].split(";")[0]
        callback = await client.get(
            flow.login(start.headers["location"], "ops"),
            headers={"x-forwarded-proto": "https", "cookie": state_cookie},
        )
    cookie = next(v for k, v in callback.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
    assert "secure" in cookie.lower()


async def test_a_user_without_access_gets_403_and_nothing_of_the_page() -> None:
    client, flow, history = make_app()
    history.observe(report())
    async with client:
        callback = await login(client, flow, "pleb")
        again = await client.get(PAGE)
    assert callback.status_code == 403
    assert "alice" not in callback.text
    assert "Recent culls" not in callback.text
    assert SESSION_COOKIE not in callback.headers.get("set-cookie", "").split("=")[0]
    assert again.status_code == 302  # no session was made: off to the hub again


async def test_a_replayed_callback_is_refused() -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        state_cookie = client.cookies[STATE_COOKIE]
        callback_url = flow.login(start.headers["location"], "admin")
        first = await client.get(callback_url)
        assert first.status_code == 302
        client.cookies.clear()
        client.cookies.set(STATE_COOKIE, state_cookie)
        replayed = await client.get(callback_url)
    assert replayed.status_code == 400
    assert SESSION_COOKIE not in replayed.headers.get("set-cookie", "")


async def test_a_forged_or_crossed_state_is_refused() -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        real = flow.login(start.headers["location"], "admin")
        code = parse_qs(urlsplit(real).query)["code"][0]
        forged = await client.get(f"{PAGE}oauth_callback", params={"code": code, "state": "forged"})
        # Someone else's genuine state, in this browser (login CSRF): the state cookie does not match it.
        other = await stranger(client).get(PAGE)
        other_state = parse_qs(urlsplit(other.headers["location"]).query)["state"][0]
        crossed = await client.get(f"{PAGE}oauth_callback", params={"code": code, "state": other_state})
        no_cookie = await stranger(client).get(real)
        genuine = await client.get(real)
    assert (forged.status_code, crossed.status_code, no_cookie.status_code) == (400, 400, 400)
    assert genuine.status_code == 302  # the refusals did not use the real login up


async def test_a_code_the_hub_refuses_is_a_502_without_details() -> None:
    client, _flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        response = await client.get(f"{PAGE}oauth_callback", params={"code": "stolen", "state": state})
    assert response.status_code == 502
    assert "stolen" not in response.text
    assert_clean(response)


async def test_a_tampered_or_foreign_session_cookie_is_no_session() -> None:
    client, flow, _history = make_app()
    async with client:
        await login(client, flow, "ops")
        good = client.cookies[SESSION_COOKIE]
        _payload, _, rest = good.partition(".")
        forged_payload = base64.urlsafe_b64encode(b'{"user":"root"}').decode().rstrip("=")
        variants = [f"{forged_payload}.{rest}", good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "x", ""]
        statuses = []
        for value in variants:
            client.cookies.clear()
            client.cookies.set(SESSION_COOKIE, value)
            statuses.append((await client.get(PAGE)).status_code)
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, good)
        assert (await client.get(PAGE)).status_code == 200
    assert statuses == [302, 302, 302, 302]
    # A cookie signed by another process (another key) is no session either.
    other_client, _f, _h = make_app()
    other_app = create_app(SETTINGS, History({}), FakeFlow(USERS), secret_key=b"z" * 32)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other_app), base_url=PAGE) as other:
        other.cookies.set(SESSION_COOKIE, good)
        assert (await other.get(PAGE)).status_code == 302
    await other_client.aclose()


async def test_a_session_expires_on_time_though_its_cookie_was_checked_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verified cookies are remembered (a dashboard sends the same one every time), but never past the
    session's end: the memory holds the expiry the signature carried. Both ways a cookie is remembered: by
    the process that made it at the login, and by one that checked its signature (here a second app with the
    same key, as an embedder that keeps its key across restarts has)."""
    client, flow, _history = make_app()
    restarted, _flow, _history = make_app()
    async with client, restarted:
        await login(client, flow, "ops")
        # Sent by hand: the client's cookie jar would drop an expired cookie itself.
        cookie = {"cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}
        client.cookies.clear()
        for app in (client, restarted):
            assert (await app.get(PAGE, headers=cookie)).status_code == 200
            assert (await app.get(PAGE, headers=cookie)).status_code == 200  # from the memory of the first check
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + SETTINGS.session_seconds - 60)
        for app in (client, restarted):
            assert (await app.get(PAGE, headers=cookie)).status_code == 200
        monkeypatch.setattr(time, "time", lambda: real_time() + SETTINGS.session_seconds + 2)
        for app in (client, restarted):
            assert (await app.get(PAGE, headers=cookie)).status_code == 302


async def test_the_memory_of_checked_sessions_is_bounded_and_forgetting_one_ends_no_session() -> None:
    auth = Auth(SETTINGS, FakeFlow(USERS), secret_key=b"k" * 32)
    cookies = [auth.new_session(Identity(f"user-{index}", frozenset())) for index in range(SESSIONS_KEPT + 10)]
    assert len(auth._checked_sessions) == SESSIONS_KEPT
    assert cookies[0] not in auth._checked_sessions  # the oldest went first
    assert cookies[-1] in auth._checked_sessions
    # A forgotten session is still a session: its signature is checked again, and it is remembered again.
    request = httpx.Request("GET", PAGE, headers={"cookie": f"{SESSION_COOKIE}={cookies[0]}"})
    assert auth.session_user(Request({"type": "http", "headers": request.headers.raw})) == "user-0"
    assert cookies[0] in auth._checked_sessions


async def test_logout_clears_the_session_and_logs_out_of_the_hub() -> None:
    client, flow, _history = make_app()
    async with client:
        await login(client, flow, "admin")
        response = await client.get(f"{PAGE}logout")
        after = await client.get(PAGE)
    assert response.status_code == 302
    assert response.headers["location"] == "/hub/logout"
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert after.status_code == 302


async def test_api_status_takes_a_hub_token_for_scripts() -> None:
    client, _flow, history = make_app()
    history.observe(report())
    async with client:
        none = await client.get(f"{PAGE}api/status")
        good = await client.get(f"{PAGE}api/status", headers={"Authorization": "token script-token"})
        bearer = await client.get(f"{PAGE}api/status", headers={"Authorization": "Bearer script-token"})
        weak = await client.get(f"{PAGE}api/status", headers={"Authorization": "token weak-token"})
        bogus = await client.get(f"{PAGE}api/status", headers={"Authorization": "token nope"})
    assert none.status_code == 401
    assert (good.status_code, bearer.status_code, weak.status_code, bogus.status_code) == (200, 200, 403, 401)
    assert "alice" not in weak.text


async def test_metrics_are_served_behind_the_same_check_as_api_status() -> None:
    """Prometheus scrapes through the hub's proxy with a hub token holding the service's access scope; a
    logged-in admin may read them too; everyone else gets what they get at api/status."""
    metrics = Metrics()
    client, flow, _history = make_app(metrics=metrics)
    metrics.observe(report())
    async with client:
        none = await client.get(f"{PAGE}metrics")
        weak = await client.get(f"{PAGE}metrics", headers={"Authorization": "token weak-token"})
        bogus = await client.get(f"{PAGE}metrics", headers={"Authorization": "Bearer nope"})
        scraped = await client.get(f"{PAGE}metrics", headers={"Authorization": "Bearer script-token"})
        await login(client, flow, "ops")
        by_session = await client.get(f"{PAGE}metrics")
    assert (none.status_code, weak.status_code, bogus.status_code) == (401, 403, 401)
    assert (scraped.status_code, by_session.status_code) == (200, 200)
    assert "trio_culler" not in none.text + weak.text + bogus.text
    for response in (scraped, by_session):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")  # the exposition format
        assert_clean(response)
        families = {family.name: family for family in text_string_to_metric_families(response.text)}
        culled = {sample.labels["reason"]: sample.value for sample in families["trio_culler_servers_culled"].samples}
        assert culled["idle"] == 2
        assert culled["max_age"] == 0  # every reason exists from the start


async def test_the_next_hour_names_the_kernel_limits() -> None:
    client, flow, history = make_app()
    upcoming = (
        Forecast(user="kim", server="", cull_at=NOW + timedelta(minutes=5), limit="kernels_idle", limit_seconds=3600),
        Forecast(
            user="lee", server="gpu", cull_at=NOW + timedelta(minutes=9), limit="busy_expired", limit_seconds=7200
        ),
    )
    history.observe(report(upcoming=upcoming, upcoming_due={"kernels_idle": 1, "busy_expired": 1}))
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    # (by code, in alphabetical order: busy_expired before kernels_idle)
    assert "1 for a busy kernel&#39;s limit, 1 for their kernels&#39; idleness" in page
    assert "kernels idle ≥ 1:00:00" in page
    assert "kernel busy ≥ 2:00:00" in page
    assert "(--max-busy)" in page
    assert [item["limit"] for item in document["upcoming"]["soonest"]] == ["kernels_idle", "busy_expired"]


async def test_without_a_registry_there_is_no_metrics_route() -> None:
    client, flow, _history = make_app()
    async with client:
        await login(client, flow, "admin")
        assert (await client.get(f"{PAGE}metrics")).status_code == 404


# --- what is shown ------------------------------------------------------------------------------------------


async def test_hostile_names_are_escaped_in_html_and_json() -> None:
    client, flow, history = make_app()
    history.observe(report())
    async with client:
        await login(client, flow, "admin")
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert "<img" not in page.text
    assert "<script>alert" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text
    assert "<img" not in document.text
    assert "<script" not in document.text
    parsed = document.json()
    assert parsed["culls"][1]["user"] == HOSTILE  # newest first: the last cull of the pass leads
    assert parsed["culls"][1]["server"] == "<script>alert(2)</script>"
    assert parsed["last_errors"][0]["subject"] == f"{HOSTILE}/srv"
    for response in (page, document):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert_clean(response)


def test_json_bytes_leaves_no_markup_characters() -> None:
    text = json_bytes({"a<b>&c": ["</script>", "\u2028"]}).decode()
    assert not set("<>&") & set(text)
    assert json.loads(text) == {"a<b>&c": ["</script>", "\u2028"]}


async def test_a_pass_over_100000_users_renders_a_summary_not_a_row_per_user() -> None:
    client, flow, history = make_app()
    history.observe(report())
    async with client:
        await login(client, flow, "admin")
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert "100,000 servers will be culled in the hour" in page.text
    assert "The 100 soonest" in page.text
    assert page.text.count("<tr>") < 150
    assert len(page.content) < 100_000
    assert document.json()["upcoming"]["total_due"] == 100_000
    assert len(document.json()["upcoming"]["soonest"]) == 100


async def test_the_page_before_any_pass_and_the_configuration_without_the_token() -> None:
    client, flow, _history = make_app()
    async with client:
        await login(client, flow, "admin")
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert "No pass has finished yet" in page.text
    assert document.json()["passes"] == []
    assert document.json()["config"]["api_token_set"] is True
    assert "api_token" not in document.json()["config"]
    assert_clean(page)
    assert_clean(document)


def test_history_is_bounded_newest_first_and_an_aborted_pass_keeps_the_forecast() -> None:
    history = History({}, size=3)
    for index in range(10):
        history.observe(
            report(
                started=NOW + timedelta(minutes=index),
                culls=tuple(
                    CullRecord(
                        user=f"u{index}-{n}",
                        server="",
                        action="stop",
                        rule="idle",
                        reason="r",
                        at=NOW,
                        outcome="stopped",
                    )
                    for n in range(5)
                ),
            )
        )
    snapshot = history.snapshot
    assert [p.started for p in snapshot.passes] == [NOW + timedelta(minutes=m) for m in (9, 8, 7)]
    assert [c.user for c in snapshot.culls] == ["u9-4", "u9-3", "u9-2"]
    history.observe(report(aborted="the hub could not be reached", upcoming=(), upcoming_due={}))
    assert history.snapshot.upcoming_total == 100_000
    assert history.snapshot.passes[0].aborted == "the hub could not be reached"
    with pytest.raises(ValueError, match="at least one"):
        History({}, size=0)


# --- served by hypercorn on trio ----------------------------------------------------------------------------


async def test_served_over_loopback_and_listening_before_any_pass() -> None:
    settings = StatusPageSettings.from_environment(ENV, bind="127.0.0.1:0")
    assert settings is not None
    cfg = Config(api_token=TOKEN, url="http://127.0.0.1:9/hub/api")  # nothing listens there
    history = History(cfg.public_dict())
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_status_page, settings, cfg, history)
        (url,) = binds
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/services/culler/")
            slashless = await client.get("/services/culler")
            missing = await client.get("/elsewhere")
        nursery.cancel_scope.cancel()
    assert response.status_code == 302
    assert "server" not in response.headers
    assert slashless.status_code == 302
    assert slashless.headers["location"] == "/services/culler/"
    assert missing.status_code == 404


async def test_hanging_clients_do_not_hold_up_a_pass() -> None:
    """Clients that connect and never finish a request, or never read the answer, while a pass runs: the pass
    ends and its snapshot is published all the same (the page only ever reads what a pass published)."""
    settings = StatusPageSettings.from_environment(ENV, bind="127.0.0.1:0")
    assert settings is not None
    hub = FakeHub(token="tok", clock=lambda: NOW)
    for index in range(30):
        hub.add_user(f"u{index}", servers={"": FakeServer("", NOW - timedelta(hours=3), NOW - timedelta(hours=2))})
    cfg = Config(api_token="tok", url="http://127.0.0.1:8081/hub/api", timeout=600)
    history = History(cfg.public_dict())
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(serve_status_page, settings, cfg, history)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        streams = []
        for index in range(20):
            stream = await trio.open_tcp_stream(host, int(port))
            # Half of them send half a request head; the others a whole one, and then never read.
            partial = index % 2 == 0
            await stream.send_all(b"GET /services/culler/ HTTP/1.1\r\nHost: x\r\n" + (b"" if partial else b"\r\n"))
            streams.append(stream)
        async with hub.running():
            report = await run_pass(cfg, transport=hub.transport(), now=NOW)
        history.observe(report)
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert sum(report.servers_culled.values()) == 30
    assert history.snapshot.passes[0].servers_culled == 30


async def test_readers_are_paced_so_they_cannot_take_the_passes_time(autojump_clock: trio.testing.MockClock) -> None:
    """150 requests at once: 20 go through at once, the rest at 100 a second (in trio's virtual time), and
    none waits more than 5 s; with a smaller budget, those beyond are answered 503 without reaching the app."""
    calls: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(trio.current_time())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pacer = Pacer(app, anonymous=Budget(rate=100, burst=20))
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pacer), base_url=PAGE) as client:

        async def one() -> None:
            statuses.append((await client.get(PAGE)).status_code)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(150):
                nursery.start_soon(one)
        flood_seconds = trio.current_time() - start
        # Past the flood the budget refills: a request later on goes straight through.
        await trio.sleep(1)
        before = trio.current_time()
        assert (await client.get(PAGE)).status_code == 200
        assert trio.current_time() - before < 0.01
    assert statuses.count(200) == 150
    offsets = sorted(call - start for call in calls[:150])
    assert offsets[19] < 0.01  # the burst
    assert offsets[-1] >= (150 - 20) / 100 - 0.01
    assert flood_seconds < 5
    many = Pacer(app, anonymous=Budget(rate=10, burst=1), max_delay=1.05)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=many), base_url=PAGE) as client:
        results: list[int] = []

        async def other() -> None:
            results.append((await client.get(PAGE)).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(other)
    assert results.count(200) == 11  # the burst of one, then 10 within the second it may wait
    assert results.count(503) == 19
    assert many.statistics().refused_anonymous == 19


async def test_a_refusal_is_answered_after_the_wait_it_was_refused_and_few_are_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client refused at once would ask again at once, each refusal costing hypercorn its parsing: so a
    503 comes after ``max_delay``, and only ``held`` of them wait at once (the others are answered at once)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pacer = Pacer(app, anonymous=Budget(rate=1, burst=1), max_delay=2, held=5)
    answers: list[tuple[int, float]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pacer), base_url=PAGE) as client:
        began = trio.current_time()

        async def one() -> None:
            response = await client.get(PAGE)
            answers.append((response.status_code, trio.current_time() - began))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
    assert sorted(status for status, _ in answers) == [200] * 3 + [503] * 17  # one at once, two within 2 s
    refused_at = sorted(at for status, at in answers if status == 503)
    assert refused_at == [0.0] * 12 + [2.0] * 5
    assert pacer.statistics().refused_anonymous == 17


async def test_a_cull_shows_its_signal_and_the_rule_that_set_the_limit() -> None:
    client, flow, history = make_app()
    kernel_cull = CullRecord(
        user="kim",
        server="gpu",
        action="stop",
        rule="kernels_idle",
        reason="kernels idle for 00:20:00",
        at=NOW,
        outcome="stopped",
        matched_rule="rules[2] (user_options.profile=gpu -> timeout=900)",
        signal="kernel_activity",
    )
    forecast = Forecast(
        user="ovid",
        server="",
        cull_at=NOW + timedelta(minutes=5),
        limit="idle",
        limit_seconds=86400,
        rule="rules[1] (groups=overnight -> timeout=86400)",
    )
    history.observe(report(culls=(kernel_cull,), upcoming=(forecast,), upcoming_due={"idle": 1}))
    async with client:
        await login(client, flow, "admin")
        page = await client.get(PAGE)
        document = (await client.get(f"{PAGE}api/status")).json()
    assert "(kernels idle, by kernel activity; rules[2] (user_options.profile=gpu -&gt; timeout=900))" in page.text
    assert "rule rules[1] (groups=overnight -&gt; timeout=86400): idle ≥ 24:00:00" in page.text
    assert document["culls"][0]["signal"] == "kernel_activity"
    assert document["culls"][0]["matched_rule"] == "rules[2] (user_options.profile=gpu -> timeout=900)"
    assert document["upcoming"]["soonest"][0]["rule"] == "rules[1] (groups=overnight -> timeout=86400)"


# --- hostile traffic: budgets, logins under way, credentials the hub refused ----------------------------------


async def test_an_anonymous_flood_leaves_a_logged_in_admin_and_a_known_script_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Strangers without a session (no cookie, forged cookies, random tokens) ask again as soon as they are
    answered, more of them than the strangers' budget holds waiting, while an admin reads the page and a
    script reads api/status: those two draw on budgets of their own, and every one of their requests is
    answered 200. The strangers get what their budget gives, and 503s."""
    client, flow, history = make_app()
    pacer = client._transport.app  # type: ignore[attr-defined]
    assert isinstance(pacer, Pacer)
    history.observe(report())
    admin: list[int] = []
    script: list[int] = []
    anonymous: list[int] = []
    async with client, stranger(client) as scripted, stranger(client) as strangers:
        await login(client, flow, "admin")
        token = {"Authorization": "token script-token"}
        assert (await scripted.get(f"{PAGE}api/status", headers=token)).status_code == 200  # known from now on
        flooding = True

        async def one_stranger(index: int) -> None:
            while flooding:
                kind = index % 3
                if kind == 0:
                    response = await strangers.get(PAGE)
                elif kind == 1:
                    response = await strangers.get(PAGE, headers={"cookie": f"{SESSION_COOKIE}=forged.{index}"})
                else:
                    headers = {"Authorization": f"token random-{index}-{len(anonymous)}"}
                    response = await strangers.get(f"{PAGE}api/status", headers=headers)
                anonymous.append(response.status_code)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            # More than the strangers' budget holds waiting (20 at once, 20 a second for 5 s).
            for index in range(200):
                nursery.start_soon(one_stranger, index)
            await trio.testing.wait_all_tasks_blocked()
            assert pacer.statistics().refused_anonymous >= 200 - (ANONYMOUS.burst + 5 * ANONYMOUS.rate)
            for _ in range(40):
                admin.append((await client.get(PAGE)).status_code)
                admin.append((await client.get(f"{PAGE}api/status")).status_code)
                script.append((await scripted.get(f"{PAGE}api/status", headers=token)).status_code)
                await trio.sleep(0.25)
            flooding = False
        elapsed = trio.current_time() - began
    assert admin == [200] * 80
    assert script == [200] * 40
    # The strangers had their budget and no more, and were refused all along.
    admitted = len(anonymous) - anonymous.count(503)
    assert admitted <= ANONYMOUS.burst + ANONYMOUS.rate * elapsed
    assert admitted >= ANONYMOUS.rate * (elapsed - 5)
    assert pacer.statistics().refused_anonymous >= 2 * 80


async def test_one_session_cannot_spend_another_sessions_budget(autojump_clock: trio.testing.MockClock) -> None:
    client, flow, history = make_app()
    history.observe(report())
    async with client, stranger(client) as other:
        await login(client, flow, "admin")
        await login(other, flow, "ops")
        hammering: list[int] = []

        async def hammer() -> None:
            hammering.append((await client.get(f"{PAGE}api/status")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(hammer)
            await trio.testing.wait_all_tasks_blocked()  # the 300 have taken their turns, or their 503s
            others = [(await other.get(PAGE)).status_code for _ in range(10)]
    assert others == [200] * 10
    assert hammering.count(503) > 200  # past its own budget (10 a second, bursts of 20, 5 s of waiting)


async def test_the_pacers_total_stays_bounded_however_many_sessions(autojump_clock: trio.testing.MockClock) -> None:
    """Each verified key has a budget of its own, and all of them together one more: 30 keys asking as fast
    as they can get no more than the shared budget's rate (plus its burst) through."""
    starts: list[tuple[float, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        starts.append((trio.current_time(), dict(scope["headers"])[b"x-key"].decode()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def classify(scope: Any) -> str | None:
        return dict(scope["headers"]).get(b"x-key", b"").decode() or None

    shared, each = Budget(rate=50, burst=10), Budget(rate=10, burst=10)
    pacer = Pacer(app, classify=classify, verified=shared, each_verified=each, max_delay=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pacer), base_url=PAGE) as client:

        async def key_user(key: int) -> None:
            for _ in range(10):
                response = await client.get(PAGE, headers={"x-key": f"k{key}"})
                if response.status_code == 503:
                    await trio.sleep(0.1)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for key in range(30):
                for _ in range(5):  # five tabs each
                    nursery.start_soon(key_user, key)
    seconds = int(trio.current_time() - began) + 1
    assert seconds > 5
    for second in range(seconds):
        window = [key for start, key in starts if began + second <= start < began + second + 1]
        assert len(window) <= shared.rate + shared.burst
        assert max(Counter(window).values(), default=0) <= each.rate + each.burst
    assert pacer.statistics().refused_verified > 0
    assert pacer.statistics().keys_tracked <= 30


async def test_2000_anonymous_gets_do_not_break_a_login_in_progress(autojump_clock: trio.testing.MockClock) -> None:
    """A browser is at the hub's login form; 2,000 anonymous GETs reach the page (each starting a login of
    its own); then the browser comes back with its code: the login completes."""
    client, flow, history = make_app()
    history.observe(report())
    async with client, stranger(client) as strangers:
        start = await client.get(PAGE)
        callback_url = flow.login(start.headers["location"], "admin")
        statuses = [(await strangers.get(PAGE)).status_code for _ in range(2000)]
        callback = await client.get(callback_url)
        page = await client.get(PAGE)
    assert statuses == [302] * 2000  # each one reached the app (they waited their turn at the pacer)
    assert callback.status_code == 302
    assert callback.headers["location"] == "/services/culler/"
    assert page.status_code == 200
    assert "Recent culls" in page.text


async def test_the_login_state_is_a_signed_cookie_without_the_verifier(autojump_clock: trio.testing.MockClock) -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        state_cookie = client.cookies[STATE_COOKIE]
        payload = state_cookie.split(".")[0]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        assert decoded == {"state": state, "next": "/services/culler/"}
        callback = await client.get(flow.login(start.headers["location"], "admin"))
    assert callback.status_code == 302
    # The hub got a verifier that matches the challenge it was sent (FakeFlow checks), and it is in no cookie.
    (exchange,) = flow.exchanges
    assert len(exchange["verifier"]) == 43
    assert exchange["verifier"] not in state_cookie + start.headers["location"]


async def test_an_expired_login_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        callback_url = flow.login(start.headers["location"], "admin")
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + LOGIN_SECONDS + 2)
        late = await client.get(callback_url)
    assert late.status_code == 400
    assert flow.exchanges == []  # refused before any hub request


async def test_a_callback_sent_twice_at_once_logs_in_once() -> None:
    client, flow, _history = make_app()
    async with client:
        start = await client.get(PAGE)
        callback_url = flow.login(start.headers["location"], "admin")
        statuses: list[int] = []

        async def send() -> None:
            statuses.append((await client.get(callback_url)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(send)
    assert sorted(statuses) == [302, 400]
    assert len(flow.exchanges) == 1


async def test_a_code_the_hub_refused_is_not_sent_again(autojump_clock: trio.testing.MockClock) -> None:
    """A stolen code, tried with a state of the thief's own: the hub refuses it once (the PKCE verifier is
    not the one it was issued for), and the culler does not ask again."""
    client, flow, _history = make_app()
    async with client, stranger(client) as thief:
        start = await client.get(PAGE)
        code = parse_qs(urlsplit(flow.login(start.headers["location"], "admin")).query)["code"][0]
        statuses = []
        for _ in range(5):
            own = await thief.get(PAGE)
            state = parse_qs(urlsplit(own.headers["location"]).query)["state"][0]
            response = await thief.get(f"{PAGE}oauth_callback", params={"code": code, "state": state})
            statuses.append(response.status_code)
    assert statuses == [502] * 5
    assert len(flow.exchanges) == 1


async def test_100_random_bearer_tokens_cost_a_bounded_number_of_hub_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """100 distinct random tokens within one second: at most LOOKUPS.burst hub requests at once and
    LOOKUPS.rate a second after, while the flood lasts: at most 1 s of arrivals + 5 s waiting at the pacer +
    LOOKUP_MAX_DELAY waiting for a lookup = 8 s, so N <= 10 + 2 * 8 = 26 hub requests (21 here: the flood
    took 5.5 s); the others are answered 503 without a hub request. A token the hub refused is answered 401
    from memory for REFUSED_SECONDS, then asked about again."""
    client, flow, _history = make_app()
    tokens = [secrets.token_hex(20) for _ in range(100)]
    statuses: dict[str, int] = {}
    async with client:

        async def one(index: int, token: str) -> None:
            await trio.sleep(index / 100)
            response = await client.get(f"{PAGE}api/status", headers={"Authorization": f"Bearer {token}"})
            statuses[token] = response.status_code

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for index, token in enumerate(tokens):
                nursery.start_soon(one, index, token)
        elapsed = trio.current_time() - began
        assert elapsed <= 1 + 5 + LOOKUP_MAX_DELAY
        assert len(flow.identified) <= LOOKUPS.burst + LOOKUPS.rate * elapsed
        assert len(flow.identified) <= 26
        refused = [token for token, status in statuses.items() if status == 401]
        assert sorted(refused) == sorted(flow.identified)  # every lookup was one refusal, and the only ones
        assert sorted(statuses.values()) == sorted([401] * len(refused) + [503] * (100 - len(refused)))

        # The refused ones again, and one of them 50 times: the memory answers, the hub is not asked.
        asked = len(flow.identified)
        for token in [*refused, *[refused[0]] * 50]:
            response = await client.get(f"{PAGE}api/status", headers={"Authorization": f"token {token}"})
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Bearer realm="JupyterHub"'
        assert len(flow.identified) == asked
        # Past REFUSED_SECONDS the hub is asked again (the token might have been made since).
        await trio.sleep(REFUSED_SECONDS + 1)
        assert (
            await client.get(f"{PAGE}api/status", headers={"Authorization": f"token {refused[0]}"})
        ).status_code == 401
        assert len(flow.identified) == asked + 1


async def test_a_known_token_is_checked_again_and_a_revoked_one_loses_the_page(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, flow, _history = make_app()
    headers = {"Authorization": "token script-token"}
    async with client:
        assert (await client.get(f"{PAGE}api/status", headers=headers)).status_code == 200
        for _ in range(30):
            assert (await client.get(f"{PAGE}api/status", headers=headers)).status_code == 200
        assert flow.identified == ["script-token"]  # once for 31 requests
        del flow.tokens["script-token"]  # revoked at the hub
        await trio.sleep(TOKEN_CHECK_SECONDS + 1)
        assert (await client.get(f"{PAGE}api/status", headers=headers)).status_code == 401
        assert flow.identified == ["script-token"] * 2
        # A token whose owner may not see the page: 403, remembered as well.
        for _ in range(5):
            assert (
                await client.get(f"{PAGE}api/status", headers={"Authorization": "token weak-token"})
            ).status_code == 403
        assert flow.identified.count("weak-token") == 1


async def test_a_hub_that_cannot_check_a_token_is_503_and_nothing_is_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, flow, _history = make_app()
    down = True

    async def identify(token: str) -> Identity:
        flow.identified.append(token)
        if down:
            raise OAuthError("identity: the hub could not be reached (ConnectError)")
        return identity("admin")

    flow.identify = identify  # type: ignore[method-assign]
    headers = {"Authorization": "token script-token"}
    async with client:
        failed = await client.get(f"{PAGE}api/status", headers=headers)
        down = False
        recovered = await client.get(f"{PAGE}api/status", headers=headers)
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "5"
    assert recovered.status_code == 200


def test_the_memories_strangers_fill_are_sized_for_everything_their_budgets_admit() -> None:
    """Refused credentials and used states are remembered once per budgeted hub lookup at most, so their maps
    hold all that the lookups can admit within the entries' lifetimes: no stranger can evict a used state
    (and replay its callback) or a refusal (and make it cost the hub again) before it expires."""
    auth = Auth(SETTINGS, FakeFlow(USERS), secret_key=b"k" * 32)
    assert auth._used_states.size >= LOOKUPS.rate * LOGIN_SECONDS + LOOKUPS.burst
    assert auth._used_states.lifetime == LOGIN_SECONDS
    # Tokens and codes have budgets of their own, both are refused into one map, and so are the known tokens
    # found revoked when they are checked again (each once a TOKEN_CHECK_SECONDS, at most TOKENS_KEPT of them).
    assert REFUSED_SECONDS <= TOKEN_CHECK_SECONDS
    assert auth._refused.size >= 2 * (LOOKUPS.rate * REFUSED_SECONDS + LOOKUPS.burst) + TOKENS_KEPT
    assert auth._refused.lifetime == REFUSED_SECONDS


async def test_only_what_the_page_verified_gets_a_budget_of_its_own() -> None:
    client, flow, _history = make_app()
    auth = Auth(SETTINGS, flow, secret_key=b"k" * 32)

    def key(**headers: str) -> str | None:
        raw = [(name.encode(), value.encode()) for name, value in headers.items()]
        return auth.pace_key({"type": "http", "headers": raw})

    good = auth.new_session(identity("admin"))
    assert key() is None
    assert key(cookie=f"{SESSION_COOKIE}=forged") is None
    assert key(cookie=f"{SESSION_COOKIE}={good}") == f"session:{good}"
    assert key(authorization="token script-token") is None  # not checked yet
    request = Request({"type": "http", "headers": [(b"authorization", b"token script-token")]})
    assert await auth.token_identity(request) is not None
    assert (key(authorization="token script-token") or "").startswith("token:")
    with pytest.raises(Refusal):
        await auth.token_identity(Request({"type": "http", "headers": [(b"authorization", b"token weak-token")]}))
    assert key(authorization="token weak-token") is None  # a token without access is no one's budget
    await client.aclose()


# --- no secret in a URL is shown --------------------------------------------------------------------------------

WARN_URL = "https://hookuser:hookpass@hooks.example.org:8443/services/T0/SECRETPATH?token=QUERYSECRET#FRAGSECRET"
URL_SECRETS = ("hookuser", "hookpass", "SECRETPATH", "QUERYSECRET", "FRAGSECRET", "/services/T0")


async def test_the_webhooks_url_is_shown_as_scheme_host_and_port_only() -> None:
    cfg = Config(
        api_token=TOKEN, url="http://hubuser:hubpass@127.0.0.1:8081/hub/api", warn_before=600, warn_url=WARN_URL
    )
    client, flow, history = make_app(cfg=cfg)
    history.observe(report())
    async with client:
        await login(client, flow, "admin")
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert document.json()["config"]["warn_url"] == "https://hooks.example.org:8443"
    assert document.json()["config"]["url"] == "http://127.0.0.1:8081/hub/api"
    assert "https://hooks.example.org:8443" in page.text
    for response in (page, document):
        for secret in (*URL_SECRETS, "hubuser", "hubpass"):
            assert secret not in response.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (WARN_URL, "https://hooks.example.org:8443"),
        ("http://[::1]:8080/x?y=z", "http://[::1]:8080"),
        ("https://user@example.org/a#b", "https://example.org"),
        ("http://example.org:99999/", "[redacted]"),
        ("not a url", "[redacted]"),
    ],
)
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert shown_url("http://u:p@hub:8081/hub/api?q=1#f", keep_path=True) == "http://hub:8081/hub/api"


# --- only what is so ----------------------------------------------------------------------------------------


def _pending(user: str) -> CullRecord:
    return CullRecord(user=user, server="", action="stop", rule="idle", reason="r", at=NOW, outcome="pending")


async def test_a_pending_cull_is_stopped_once_a_later_pass_saw_the_stop_done() -> None:
    client, flow, history = make_app()
    history.observe(report(culls=(_pending("ann"), _pending("bob"))))
    assert [c.outcome for c in history.snapshot.culls] == ["pending", "pending"]
    history.observe(report(culls=(), stops_confirmed=(("ann", ""),)))
    assert {c.user: c.outcome for c in history.snapshot.culls} == {"ann": "stopped", "bob": "pending"}
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    assert {c["user"]: c["outcome"] for c in document["culls"]} == {"ann": "stopped", "bob": "pending"}
    rows = {row.split("</td>")[1].split(">")[-1]: row for row in page.split("<tr><td>")[1:3]}
    assert ">stopped</td>" in rows["ann"]
    assert ">pending</td>" in rows["bob"]


async def test_a_stop_under_way_is_followed_until_the_hub_shows_it_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The real loop against FakeHub: ann's stop takes 30 s (the hub answers 202 after 10); the pass right after
    still sees it stopping; the one after the stop finished makes the cull ``stopped``."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, stop_latency=30, slow_stop_timeout=10)
    hub.populate(1, idle_fraction=1.0, seed=1, now=NOW)
    history = History({}, size=5)
    cfg = Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api", timeout=600, cull_every=600)
    from trio_culler._service import Culler

    culler = Culler(cfg, transport=hub.transport(), reporters=[history.observe])
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        first = await culler.run_pass_now()
        second = await culler.run_pass_now()
        assert [c.outcome for c in history.snapshot.culls] == ["pending"]
        await hub.wait_stops_done()
        third = await culler.run_pass_now()
        culler.stop(grace=0)
    assert first.servers_pending == 1
    assert second.stops_confirmed == ()
    assert third.stops_confirmed == (("user-0", ""),)
    assert [c.outcome for c in history.snapshot.culls] == ["stopped"]
    assert hub.statistics().requests_by_kind["other"] == 2, "the hub was asked about the stop (GET /users/user-0)"


def test_due_within_the_hour_is_unknown_where_it_cannot_be_foreseen() -> None:
    plain = History({"cull_arbiter_hook": None}, size=3)
    plain.observe(report())
    assert plain.snapshot.upcoming_unknown is None
    assert plain.snapshot.to_json()["upcoming"]["total_due"] == 100_000
    # A hook decides idleness.
    hooked = History({"cull_arbiter_hook": "my_hook"}, size=3)
    hooked.observe(report(upcoming_due={"max_age": 3}))
    assert hooked.snapshot.upcoming_unknown == (
        "a cull_arbiter_hook decides idleness, which cannot be foreseen: only --max-age culls are counted"
    )
    upcoming = hooked.snapshot.to_json()["upcoming"]
    assert (upcoming["total_due"], upcoming["foreseen"]) == (None, 3)
    # With --kernel-activity-only, servers whose kernels could not be read.
    kernels = History({"kernel_activity_only": True}, size=3)
    kernels.observe(report(inspection_failures={"timeout": 2}))
    assert kernels.snapshot.upcoming_unknown == (
        "2 servers could not be inspected, and with --kernel-activity-only only their kernels say when they "
        "will be idle"
    )
    kernels.observe(report())
    assert kernels.snapshot.upcoming_unknown is None
    # A pass that did not run.
    plain.observe(report(aborted="the hub at X could not be reached: connection refused", outcome="hub_down", pages=0))
    assert plain.snapshot.upcoming_unknown == (
        "the last pass did not read the hub's users (the hub at X could not be reached: connection refused)"
    )
    assert plain.snapshot.to_json()["upcoming"]["total_due"] is None
    plain.observe(report(pages_failed=2, outcome="failed"))
    assert plain.snapshot.upcoming_unknown == "the last pass could not read every user (2 of the hub's pages failed)"


async def test_the_page_says_unknown_not_0() -> None:
    client, flow, history = make_app(cfg=Config(api_token=TOKEN, cull_arbiter_hook=lambda **kw: True))
    history.observe(report(upcoming=(), upcoming_due={}))
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
    card = page.split("Due within the hour</span>")[1].split("</div>")[0]
    assert card.startswith("<b>unknown</b>0 foreseen")
    assert "Nothing is due to be culled" not in page
    assert '<span class="bad">Unknown:</span> a cull_arbiter_hook decides idleness' in page


async def test_rules_are_shown_as_the_toml_an_operator_writes() -> None:
    cfg = Config(
        api_token=TOKEN, rules=[{"groups": ["overnight"], "timeout": 86400}, {"users": ["vip-*"], "cull": False}]
    )
    client, flow, _history = make_app(cfg=cfg)
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
    import html
    import tomllib

    rules = html.unescape(page.split('<pre id="rules">')[1].split("</pre>")[0])
    assert rules == '[[rules]]\ngroups = ["overnight"]\ntimeout = 86400\n\n[[rules]]\nusers = ["vip-*"]\ncull = false\n'
    assert tomllib.loads(rules)["rules"] == [rule.as_dict() for rule in cfg.rules]
    config_list = page.split('<ul class="config">')[1].split("</ul>")[0]
    assert "{&#39;" not in page
    assert "True" not in config_list
    assert "None" not in config_list
    assert '<span class="muted">dry_run</span> false' in config_list


NO_NOTICES = {"delivered": 0, "failed": 0, "without_extension": 0}


async def test_the_warnings_and_the_servers_kept_sections() -> None:
    cfg = Config(api_token=TOKEN, warn_before=600, warn_url="http://hooks.test/x")
    client, flow, history = make_app(cfg=cfg)
    history.observe(report(warnings_sent=3, warnings_failed=1, servers_kept={"active": 7, "warned": 2}))
    history.observe(
        report(
            warnings_sent=2,
            warnings_pending=4,
            servers_kept={"active": 90_000, "kernel_busy": 3, "exempt": 12, "warned": 1, "custom_code": 1},
        )
    )
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    nothing = {"events": {"warning": 0, "cancelled": 0, "culled": 0}, "notices": NO_NOTICES, "keeps": 0}
    assert document["warnings"] == {
        "enabled": True,
        "sent": 5,
        "failed": 1,
        "pending": 4,
        "waiting": 1,
        # No pass told what stands (these reports carry no notifier's word): nothing is listed, as of nothing.
        "since_start": nothing,
        "last_pass": nothing,
        "as_of": None,
        "standing_total": 0,
        "standing": [],
        "kept_total": 0,
        "kept": [],
        "without_extension": 0,
    }
    assert document["kept"]["by_reason"]["kernel_busy"] == 3
    warnings = page.split('id="warnings"')[1].split("<h2")[0]
    assert "<b>5</b>since the culler started" in warnings
    assert "<b>4</b>when the last pass ended" in warnings
    assert '<b class="bad">1</b>' in warnings
    kept = page.split('id="kept"')[1].split("<h2")[0]
    rows = [row.split("</tr>")[0] for row in kept.split("<tr><td>")[1:]]
    assert rows == [
        'in use: active within the timeout</td><td class="num">90,000</td>',
        'exempt by a rule (cull = false)</td><td class="num">12</td>',
        'a kernel is busy</td><td class="num">3</td>',
        'custom code</td><td class="num">1</td>',
        'warned: waiting for the notice its user was promised</td><td class="num">1</td>',
    ]


async def test_without_warnings_the_page_says_none_are_sent() -> None:
    client, flow, history = make_app()
    history.observe(report())
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
    assert "None are sent (--warn-before is 0)." in page


async def test_a_configuration_error_is_the_whole_page_behind_the_same_login() -> None:
    metrics = Metrics()
    metrics.observe_config_error()
    client, flow, history = make_app(metrics=metrics)
    message = f"--rules-file /etc/rules.toml: rules[0]: unknown key grups (a rule has: users, groups, ...) {HOSTILE}"
    history.config_error(message)
    async with client:
        anonymous = await stranger(client).get(PAGE)
        refused = await login(client, flow, "pleb")
    async with stranger(client) as admin:
        await login(admin, flow, "admin")
        page = await admin.get(PAGE)
        document = (await admin.get(f"{PAGE}api/status")).json()
        scraped = await admin.get(f"{PAGE}metrics")
    assert anonymous.status_code == 302
    assert "/hub/api/oauth2/authorize" in anonymous.headers["location"]
    assert refused.status_code == 403
    assert "rules.toml" not in refused.text
    assert page.status_code == 200
    assert "The culler is not running: its configuration cannot be used" in page.text
    assert "unknown key grups" in page.text
    assert "<img" not in page.text
    assert "Recent culls" not in page.text
    assert "Next hour" not in page.text
    assert document["config_error"] == message
    assert "trio_culler_config_error 1.0" in scraped.text


async def test_a_stop_is_done_once_the_server_is_gone_or_no_longer_stopping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a 202: still stopping (``pending: stop``) is followed further; gone, or running again (the user
    started it anew: the stop is over), is done; a user deleted since is done too."""
    from trio_culler._hub import open_hub_client
    from trio_culler._stopping import StopsUnderWay

    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("still", servers={"": FakeServer("", NOW, NOW, pending="stop", ready=False)})
    hub.add_user("again", servers={"": FakeServer("", NOW, NOW)})
    hub.add_user("gone")
    stops = StopsUnderWay()
    stops.follow(report(culls=tuple(_pending(name) for name in ("still", "again", "gone", "deleted"))))
    assert len(stops) == 4
    cfg = Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api")
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as client:
        done = await stops.confirm(client)
    assert sorted(done) == [("again", ""), ("deleted", ""), ("gone", "")]
    assert len(stops) == 1, "still stopping: asked about again after the next pass"


# --- the user view: a user who is not an admin sees their own servers and culls, and nobody else's --------------

SERVER_MARKUP = "<img src=x onerror=alert(3)>"
QUOTES = "\"&'"
H = timedelta(hours=1)


def _cull_of(user: str, server: str | None, *, reason: str = "inactive for 01:00:04", **changes: Any) -> CullRecord:
    values: dict[str, Any] = {
        "user": user,
        "server": server,
        "action": "stop" if server is not None else "delete_user",
        "rule": "idle",
        "reason": reason,
        "at": NOW - 10 * timedelta(minutes=1),
        "outcome": "stopped",
    }
    values.update(changes)
    return CullRecord(**values)


def two_users_hub() -> FakeHub:
    """alice: a default server idle for 30 minutes and a named one just used; bob: a server whose name is markup."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user(
        "alice",
        servers={
            "": FakeServer("", NOW - 2 * H, NOW - timedelta(minutes=30)),
            "gpu": FakeServer("gpu", NOW - 3 * H, NOW - timedelta(minutes=1)),
        },
    )
    hub.add_user("bob", servers={SERVER_MARKUP: FakeServer(SERVER_MARKUP, NOW - H, NOW - timedelta(minutes=50))})
    hub.add_user(HOSTILE, servers={QUOTES: FakeServer(QUOTES, NOW - H, NOW - timedelta(minutes=5))})
    return hub


def culls_history(cfg: Config) -> History:
    history = History(cfg.public_dict(), size=5, interval=600)
    history.observe(
        report(
            culls=(
                _cull_of("alice", "old-one", reason="inactive for 01:00:09"),
                _cull_of("bob", "bobs-secret-project", reason="age 10:00:00", rule="max_age"),
                _cull_of(HOSTILE, SERVER_MARKUP),
                _cull_of("alice", None, reason="inactive for 30 days"),
            ),
            upcoming=(Forecast(user="bob", server="soon", cull_at=NOW + H, limit="idle", limit_seconds=3600),),
            upcoming_due={"idle": 1},
        )
    )
    return history


@asynccontextmanager
async def user_app(
    hub: FakeHub, cfg: Config, history: History | None = None, *, metrics: Metrics | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeFlow, History, UserLookup]]:
    """The app as serve_status_page builds it: users' views read the hub (here FakeHub) with a HubClient."""
    history = history if history is not None else culls_history(cfg)
    flow = FakeFlow(USERS)
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as hub_client:
        lookup = UserLookup(hub_client)
        views = UserViews(cfg, history, lookup, clock=lambda: NOW)
        registry = None if metrics is None else metrics.registry
        app = create_app(SETTINGS, history, flow, secret_key=b"k" * 32, metrics=registry, users=views)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:10101") as c:
            yield c, flow, history, lookup


def user_config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api", timeout=3600), **changes)


def _section(page: str, anchor: str) -> str:
    return page.split(f'id="{anchor}"', 1)[1].split("<h2", 1)[0]


async def test_a_user_sees_their_own_culls_and_servers_and_nobody_elses() -> None:
    async with user_app(two_users_hub(), user_config()) as (client, flow, _history, _lookup):
        anonymous = await stranger(client).get(PAGE)
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    assert anonymous.status_code == 302
    # Alice's: her two culls (a server, and her user once deleted), newest first ...
    culls = _section(page, "culls")
    assert "inactive for 01:00:09" in culls
    assert "old-one" in culls
    assert "(your user was deleted)" in culls
    assert culls.index("inactive for 30 days") < culls.index("inactive for 01:00:09")
    # ... and her two running servers: idle for 30 minutes, culled at NOW + 30 min by the 1-hour timeout.
    servers = _section(page, "servers")
    assert "Default server" in servers
    assert '<span class="server-name">gpu</span>' in servers
    assert "0:30:00, since 2026-11-25 11:30:00 UTC" in servers
    assert "at <b>2026-11-25 12:30:00 UTC</b> (in 0:30:00) if nothing changes: idle ≥ 1:00:00" in servers
    assert "at <b>2026-11-25 12:59:00 UTC</b> (in 0:59:00)" in servers
    assert "set by the culler's own options" in servers
    assert "what the hub records as activity" in servers
    assert "none: the culler sends no warnings here" in servers
    # Nobody else's: no other user, none of their servers, no count of the whole hub.
    for other in ("bob", "soon", "alert(", "100,000", "Recent culls", "Next hour", "Last passes", "Configuration"):
        assert other not in page, other
    # The same, as JSON.
    assert document["view"] == "user"
    assert document["user"] == "alice"
    assert [cull["user"] for cull in document["culls"]] == ["alice", "alice"]
    assert [cull["server"] for cull in document["culls"]] == [None, "old-one"]
    default, gpu = document["servers"]
    assert (default["server"], gpu["server"]) == ("", "gpu")
    assert default["state"] == "running"
    assert default["idle_seconds"] == 1800
    assert default["cull_at"] == "2026-11-25T12:30:00Z"
    assert (default["cull_rule"], default["limit_seconds"]) == ("idle", 3600)
    assert default["judged"] == {
        "by": "page",
        "at": "2026-11-25T12:00:00Z",
        "decision": "active",
        "reason": "active: inactive for 00:30:00, age 02:00:00",
        "culling": False,
    }
    assert default["limits"] == {
        "timeout_seconds": 3600,
        "max_age_seconds": None,
        "max_busy_seconds": None,
        "exempt": False,
    }
    assert default["activity"]["counts"] == "hub"
    assert document["hub"] == {"read": True, "problem": None}
    text = json.dumps(document)
    for other in ("bob", "soon", "alert(", "config", "passes", "upcoming"):
        assert other not in text, other


async def test_an_admin_sees_everyones_culls_and_the_whole_page() -> None:
    async with user_app(two_users_hub(), user_config()) as (client, flow, _history, lookup):
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    culls = _section(page, "culls")
    for name in ("alice", "bob", "bobs-secret-project", "old-one"):
        assert name in culls
    assert "Next hour" in page
    assert document["view"] == "all"
    assert {cull["user"] for cull in document["culls"]} == {"alice", "bob", HOSTILE}
    assert lookup.requests == 0  # the whole page is the pass's snapshot: nothing is read for it


async def test_a_users_own_hub_token_gets_the_filtered_document() -> None:
    async with user_app(two_users_hub(), user_config()) as (client, _flow, _history, _lookup):
        mine = await client.get(f"{PAGE}api/status", headers={"Authorization": "token alice-token"})
        admins = await client.get(f"{PAGE}api/status", headers={"Authorization": "token script-token"})
    assert mine.status_code == 200
    document = mine.json()
    assert (document["view"], document["user"]) == ("user", "alice")
    assert {cull["user"] for cull in document["culls"]} == {"alice"}
    assert [server["server"] for server in document["servers"]] == ["", "gpu"]
    assert "bob" not in mine.text
    assert admins.json()["view"] == "all"


async def test_metrics_are_refused_to_a_user_and_served_to_operators() -> None:
    """Metrics count every user's servers: a user who is not an admin gets a 403 (by session or by token), an
    admin, an operator holding read:servers and Prometheus's service token get them."""
    metrics = Metrics()
    metrics.observe(report())
    async with user_app(two_users_hub(), user_config(), metrics=metrics) as (client, flow, _history, _lookup):
        by_token = await client.get(f"{PAGE}metrics", headers={"Authorization": "token alice-token"})
        prometheus = await client.get(f"{PAGE}metrics", headers={"Authorization": "Bearer prometheus-token"})
        await login(client, flow, "alice")
        by_session = await client.get(f"{PAGE}metrics")
        async with stranger(client) as admin:
            await login(admin, flow, "admin")
            by_admin = await admin.get(f"{PAGE}metrics")
        async with stranger(client) as ops:
            await login(ops, flow, "ops")
            by_ops = await ops.get(f"{PAGE}metrics")
    assert (by_token.status_code, by_session.status_code) == (403, 403)
    for refused in (by_token, by_session):
        assert "trio_culler" not in refused.text
        assert "for the hub's operators" in refused.text
    assert (prometheus.status_code, by_admin.status_code, by_ops.status_code) == (200, 200, 200)
    assert "trio_culler_servers_culled_total" in prometheus.text


async def test_names_with_markup_are_escaped_in_the_user_view() -> None:
    """A user named <img ...> with a server named "&' and a cull of a server named <img ...>: text on the page,
    inert in the JSON."""
    async with user_app(two_users_hub(), user_config()) as (client, flow, _history, _lookup):
        await login(client, flow, HOSTILE)
        page = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    html = page.text
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the user's name, in the header
    assert "&lt;img src=x onerror=alert(3)&gt;" in _section(html, "culls")  # the culled server's
    assert '<span class="server-name">&#34;&amp;&#39;</span>' in _section(html, "servers")
    assert QUOTES not in html
    assert b"<" not in document.content.replace(b"\\u003c", b"")
    parsed = document.json()
    assert parsed["user"] == HOSTILE
    assert parsed["servers"][0]["server"] == QUOTES
    assert parsed["culls"][0]["server"] == SERVER_MARKUP
    for response in (page, document):
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert_clean(response)


async def test_a_hub_that_does_not_answer_gives_what_the_culler_remembers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = two_users_hub()

    async def hang(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/users/bob"):
            await trio.sleep_forever()
        return None

    hub.fault = hang
    history = culls_history(user_config())
    history.users.add_judgments([_busy_judgment("bob", "gpu")])
    async with user_app(hub, user_config(), history) as (client, flow, _history, lookup):
        await login(client, flow, "bob")
        started = trio.current_time()
        page = (await client.get(PAGE)).text
        waited = trio.current_time() - started
        document = (await client.get(f"{PAGE}api/status")).json()
        again = trio.current_time() - started - waited
    assert HUB_DEADLINE <= waited < HUB_DEADLINE + 1
    assert again < 1  # the failure is reused for a while: the second view waits for nothing
    assert lookup.requests == 1
    assert "the hub did not answer within 3 s" in _section(page, "hub-problem")
    assert "Your servers, as the culler last saw them" in page
    # What the culler remembers: bob's cull, the pass's judgment of his gpu server, the last forecast's row.
    assert "bobs-secret-project" in _section(page, "culls")
    servers = _section(page, "servers")
    assert (
        "As the culler's pass of 2026-11-25 12:00:00 UTC judged it: kernel busy for 01:10:00 (judged by kernels)"
        in servers
    )
    assert "soon" in servers
    assert document["hub"] == {"read": False, "problem": "the hub did not answer within 3 s"}
    assert [server["server"] for server in document["servers"]] == ["gpu", "soon"]
    assert document["servers"][0]["judged"]["by"] == "pass"
    assert document["servers"][1]["cull_at"] == "2026-11-25T13:00:00Z"


def _busy_judgment(user: str, server: str) -> ServerJudgment:
    decision = Decision(
        Action.KEEP, DecisionCode.KERNEL_BUSY, timedelta(minutes=70), 5 * H, busy=timedelta(minutes=70), inspected=True
    )
    return ServerJudgment(
        user=user,
        server=server,
        started=NOW - 5 * H,
        judged_at=NOW,
        decision=decision,
        due=None,
        rule=None,
        by="kernels",
    )


async def test_one_hub_request_per_user_a_while_and_one_for_views_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = two_users_hub()
    async with user_app(hub, user_config()) as (client, flow, _history, lookup):
        await login(client, flow, "alice")
        for _ in range(5):
            assert (await client.get(PAGE)).status_code == 200
        assert lookup.requests == 1
        await trio.sleep(FRESH_SECONDS)
        await client.get(f"{PAGE}api/status")
        assert lookup.requests == 2
        # Ten views at once (tabs, a reload storm) after the answer aged: one request, all answered.
        await trio.sleep(FRESH_SECONDS)
        slow = trio.Event()

        async def slowly(request: httpx.Request) -> httpx.Response | None:
            await trio.sleep(1)
            slow.set()
            return None

        hub.fault = slowly
        statuses: list[int] = []
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(lambda: _status_of(client, PAGE, statuses))
        assert statuses == [200] * 10
        assert lookup.requests == 3
        assert slow.is_set()


async def _status_of(client: httpx.AsyncClient, url: str, statuses: list[int]) -> None:
    statuses.append((await client.get(url)).status_code)


async def test_the_page_agrees_with_the_pass_under_the_rules(autojump_clock: trio.testing.MockClock) -> None:
    """A rule gives alice's gpu server a 45-minute timeout: the page's forecast for each server is the one the pass
    made for it (its Next hour), to the second, and names the rule."""
    hub = two_users_hub()
    rules = (Rule(users=("alice",), servers=("gpu",), timeout=2700),)
    cfg = user_config(rules=rules)
    history = History(cfg.public_dict(), size=5)
    async with hub.running():
        history.observe(await run_pass(attrs.evolve(cfg, dry_run=True), transport=hub.transport(), now=NOW))
    foreseen = {(item.user, item.server): item for item in history.snapshot.upcoming}
    async with user_app(hub, cfg, history) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        document = (await client.get(f"{PAGE}api/status")).json()
        page = (await client.get(PAGE)).text
    by_name = {server["server"]: server for server in document["servers"]}
    for name in ("", "gpu"):
        assert by_name[name]["cull_at"] == iso_utc(foreseen[("alice", name)].cull_at)
        assert by_name[name]["limit_seconds"] == foreseen[("alice", name)].limit_seconds
    assert by_name["gpu"]["cull_at"] == "2026-11-25T12:44:00Z"
    assert foreseen[("alice", "gpu")].rule == "rules[0] (users=alice, servers=gpu -> timeout=2700)"
    # Which rule, and what it sets; not whom it matches (a rule may name other users).
    assert by_name["gpu"]["rule"] == "rules[0] (timeout=2700)"
    assert by_name[""]["rule"] is None
    assert "set by rule rules[0] (timeout=2700)" in page


async def test_a_server_judged_by_its_kernels_shows_the_passes_verdict_and_the_page_never_asks_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With --inspect-kernels a busy kernel spares alice's idle server: the pass read the kernels and said so;
    the page shows that judgment, and reading it sends the server nothing (nor any server). Before any pass,
    the page says the next pass decides."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    busy = [FakeKernel("k", "busy", NOW - timedelta(minutes=70))]
    hub.add_user("alice", servers={"": FakeServer("", NOW - 5 * H, NOW - 2 * H, kernels=busy)})
    cfg = user_config(inspect_kernels=True, public_url="http://proxy.test")
    history = History(cfg.public_dict(), size=5)
    async with user_app(hub, cfg, history) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        before = (await client.get(f"{PAGE}api/status")).json()
        report_ = await run_pass(cfg, transport=hub.transport(), now=NOW)
        history.observe(report_)
        asked = hub.statistics().requests_by_kind
        await trio.sleep(FRESH_SECONDS)  # a fresh read of the user, as a later visit would make
        after = (await client.get(f"{PAGE}api/status")).json()
        page = (await client.get(PAGE)).text
        assert hub.statistics().requests_by_kind["kernels"] == asked["kernels"] == 1
        assert hub.statistics().requests_by_kind["mint"] == asked["mint"]
    (server,) = before["servers"]
    assert server["judged"] is None
    assert server["cull_at"] is None
    assert [judgment.decision.code for judgment in report_.judgments] == [DecisionCode.KERNEL_BUSY]
    (server,) = after["servers"]
    assert server["judged"]["by"] == "pass"
    assert server["judged"]["decision"] == "kernel_busy"
    assert server["judged"]["reason"] == "kernel busy for 01:10:00 (judged by kernels)"
    assert "a kernel busy running code keeps it" in server["activity"]["words"]
    assert "As the culler's pass of 2026-11-25 12:00:00 UTC judged it: kernel busy for 01:10:00" in page


async def test_a_pass_that_judged_a_server_before_it_restarted_is_not_shown_for_the_new_one() -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("alice", servers={"": FakeServer("", NOW - H, NOW - H)})  # started after the judged run
    cfg = user_config(inspect_kernels=True, public_url="http://proxy.test")
    history = History(cfg.public_dict(), size=5)
    history.users.add_judgments([_busy_judgment("alice", "")])  # of the run that started 5 hours ago
    async with user_app(hub, cfg, history) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        (server,) = (await client.get(f"{PAGE}api/status")).json()["servers"]
        page = (await client.get(PAGE)).text
    assert server["judged"] is None
    assert "when the culler's next pass decides so: it asks the server about its kernels" in page


async def test_a_rule_that_names_other_users_shows_a_user_what_it_sets_not_whom_it_matches() -> None:
    rule = Rule(users=("alice", "bob", "carol-*"), groups=("secret-project",), timeout=7200)
    cfg = user_config(rules=(rule,))
    history = culls_history(cfg)
    history.observe(
        report(
            culls=(_cull_of("alice", "", matched_rule="rules[0] (users=alice, bob, carol-* -> timeout=7200)"),),
            upcoming=(),
            upcoming_due={},
        )
    )
    hub = two_users_hub()
    hub.users["alice"].servers.pop("gpu")
    async with user_app(hub, cfg, history) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    # Alice is in no group on this hub: her running server falls to the global options; the cull the rule decided
    # shows which rule and what it set.
    assert document["culls"][0]["matched_rule"] == "rules[0] (timeout=7200)"
    for other in ("bob", "carol", "secret-project"):
        assert other not in page, other
        assert other not in json.dumps(document), other


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        (None, None),
        ("rules[3] (users=a -> bob -> cull=False)", "rules[3] (cull=False)"),
        ("rules[0] (groups=x -> global options)", "rules[0] (global options)"),
        ("something else", "something else"),
        ("rules[2] (users=bob)", "rules[2]"),
    ],
)
def test_own_rule(label: str | None, shown: str | None) -> None:
    assert own_rule(label) == shown


@pytest.mark.parametrize(
    ("changes", "rule", "named", "code", "words"),
    [
        ({}, {}, False, "hub", "what the hub records as activity"),
        (
            {"inspect_kernels": True, "max_busy": 7200},
            {},
            False,
            "hub",
            "a kernel busy running code keeps it (for at most 2:00:00)",
        ),
        (
            {"inspect_kernels": True, "kernel_activity_only": True},
            {},
            False,
            "kernels",
            "an open browser tab alone does not count",
        ),
        ({}, {"cull": False}, False, "nothing", "a rule exempts this server"),
        (
            {"cull_named_servers": False, "max_age": 3600},
            {},
            True,
            "nothing",
            "named servers are not culled for idleness here: only its age counts",
        ),
        (
            {"cull_arbiter_hook": lambda inactive, inactive_limit, server: True},
            {},
            False,
            "hub",
            "a check set up by the hub",
        ),
    ],
)
def test_what_counts_as_activity(
    changes: dict[str, Any], rule: dict[str, Any], named: bool, code: str, words: str
) -> None:
    cfg = user_config(**changes, rules=(Rule(users=("*",), **rule),) if rule else ())
    user = User(name="alice", servers={})
    server = Server(name="gpu" if named else "")
    policy = cfg.rule_table.for_server(user, server).policy
    got_code, got_words = activity_words(policy, cfg, named)
    assert got_code == code
    assert words in got_words


async def test_a_warning_is_shown_with_its_time(autojump_clock: trio.testing.MockClock) -> None:
    cfg = user_config(warn_before=900, warn_url="https://hooks.example.org/culler")
    async with user_app(two_users_hub(), cfg) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
        (default, _gpu) = (await client.get(f"{PAGE}api/status")).json()["servers"]
    assert default["warn_at"] == "2026-11-25T12:15:00Z"
    assert "at 2026-11-25 12:15:00 UTC (0:15:00 before)" in _section(page, "servers")
    # An hour ahead: the window opened at 11:30, and the last pass (12:00) ran since.
    cfg = attrs.evolve(cfg, warn_before=3600)
    async with user_app(two_users_hub(), cfg) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
    assert (
        "its window opened at 2026-11-25 11:30:00 UTC: the first pass of the culler since then warns you, once for "
        "this idle stretch (a pass ran at 2026-11-25 12:00:00 UTC)"
    ) in _section(page, "servers")


async def test_a_culler_with_a_configuration_error_tells_a_user_no_more_than_that() -> None:
    client, flow, history = make_app()
    history.config_error(f"--rules-file /etc/rules.toml: unknown key grups {HOSTILE}")
    async with client:
        await login(client, flow, "alice")
        page = await client.get(PAGE)
        document = (await client.get(f"{PAGE}api/status")).json()
    assert page.status_code == 200
    assert "The idle culler is not running" in page.text
    assert "rules.toml" not in page.text
    assert "grups" not in json.dumps(document)
    assert document["culler"]["running"] is False


async def test_who_sees_everyone_is_read_from_the_hubs_user_model() -> None:
    """As JupyterHub 6.1 answers GET /user for the page's OAuth token: the admin flag, the kind, the scopes."""
    models = {
        "admin": {"kind": "user", "name": "boss", "admin": True, "scopes": ["access:services!service=culler"]},
        "plain": {"kind": "user", "name": "pleb", "admin": False, "scopes": ["access:services!service=culler"]},
        "truthy": {"kind": "user", "name": "eve", "admin": "yes", "scopes": ["access:services!service=culler"]},
        "missing": {"name": "old", "scopes": ["access:services!service=culler"]},
        "service": {"kind": "service", "name": "prometheus", "admin": False, "scopes": []},
        "odd-kind": {"kind": "Service", "name": "eve", "scopes": ["access:services!service=culler"]},
        "operator": {"kind": "user", "name": "oper", "admin": False, "scopes": ["read:servers", "read:users"]},
        "filtered": {"kind": "user", "name": "pleb", "admin": False, "scopes": ["read:servers!user=pleb"]},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=models[request.headers["authorization"].removeprefix("Bearer ")])

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        flow = OAuthFlow(SETTINGS, api_url="http://hub/hub/api", client_secret=TOKEN, client=http)
        seen = {token: await flow.identify(token) for token in models}
    assert {token for token, who in seen.items() if who.sees_everyone} == {"admin", "service", "operator"}
    assert seen["admin"].admin is True
    assert seen["truthy"].admin is False
    assert seen["service"].kind == "service"
    assert seen["odd-kind"].kind == "user"


async def test_the_view_is_decided_at_login_and_sealed_in_the_signed_session() -> None:
    """A session cookie says whether it sees everyone; one without the mark (signed by this key: an older
    release's) is a user's view, and the mark cannot be added without the key."""
    client, flow, history = make_app()
    history.observe(report())
    auth = Auth(SETTINGS, flow, secret_key=b"k" * 32)
    signer = itsdangerous.URLSafeTimedSerializer(b"k" * 32, salt="trio-culler-session")
    old = signer.dumps({"user": "admin"})
    forged = itsdangerous.URLSafeTimedSerializer(b"x" * 32, salt="trio-culler-session").dumps(
        {"user": "alice", "all": True}
    )

    def viewer(raw: str) -> Any:
        return auth.session_viewer(
            Request({"type": "http", "headers": [(b"cookie", f"{SESSION_COOKIE}={raw}".encode())]})
        )

    assert viewer(auth.new_session(identity("admin"))) == Viewer("admin", everyone=True)
    assert viewer(auth.new_session(identity("alice"))) == Viewer("alice", everyone=False)
    assert viewer(old) == Viewer("admin", everyone=False)
    assert viewer(forged) is None
    await client.aclose()


# --- the recipes that open the page to every user (the real hub runs the user role's block as written) ----------

ACCESS = "access:services!service=trio-culler"


def _recipe_service(hub_config: Any) -> dict[str, Any]:
    (service,) = [service for service in hub_config.services if service["name"] == "trio-culler"]
    return dict(service)


def _user_role(roles: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [role for role in roles if role["name"] == "user"]
    return role


def test_the_recipe_gives_every_user_the_page_and_lists_it_in_the_services_menu() -> None:
    hub_config = exec_hub_config(
        attrs.evolve(
            marked_block("status-page-service"),
            text=marked_block("status-page-service").text + marked_block("status-page-user-role").text,
        )
    )
    service = _recipe_service(hub_config)
    # A url (JupyterHub lists only services with one in its Services menu), shown in the menu, no consent page.
    assert urlsplit(service["url"]).port == 10101
    assert service["display"] is True
    assert service["oauth_no_confirm"] is True
    role = _user_role(hub_config.load_roles)
    # JupyterHub's default role keeps what it grants ("self"), plus the page's access scope.
    assert role["scopes"] == ["self", ACCESS]
    assert {"groups", "users", "services"}.isdisjoint(role)  # the default role applies to every user already


def test_the_operators_recipe_asks_the_login_for_read_servers() -> None:
    block = marked_block("status-page-operators")
    hub_config = exec_hub_config(attrs.evolve(block, text=marked_block("status-page-service").text + "\n" + block.text))
    assert _recipe_service(hub_config)["oauth_client_allowed_scopes"] == [EVERYONE_SCOPE]
    (role,) = [role for role in hub_config.load_roles if role["name"] == "culler-operators"]
    assert role["scopes"] == [EVERYONE_SCOPE]
    # A login holding it unfiltered sees everyone; a plain user's, filtered to their own servers, does not.
    assert Identity("op", frozenset({ACCESS, EVERYONE_SCOPE})).sees_everyone
    assert not Identity("alice", frozenset({ACCESS, f"{EVERYONE_SCOPE}!user=alice"})).sees_everyone


def test_the_littlest_jupyterhub_recipe() -> None:
    hub_config = exec_hub_config(marked_block("status-page-tljh"))
    service = _recipe_service(hub_config)
    assert urlsplit(service["url"]).hostname == "127.0.0.1"
    assert service["display"] is True
    assert _user_role(hub_config.load_roles)["scopes"] == ["self", ACCESS]


def test_the_zero_to_jupyterhub_recipe_lets_the_proxy_reach_the_page() -> None:
    values = load_yaml(marked_block("status-page-z2jh").text)
    service = values["hub"]["services"]["trio-culler"]
    port = urlsplit(service["url"]).port
    assert urlsplit(service["url"]).hostname == "hub"  # the hub's Kubernetes Service, which the proxy reaches
    # The page listens on the pod's address at that port (the name "hub" is not an address of the pod).
    assert f"--status-bind=0.0.0.0:{port}" in service["command"]
    assert service["display"] is True
    assert values["hub"]["loadRoles"]["user"]["scopes"] == ["self", ACCESS]
    (extra,) = values["hub"]["service"]["extraPorts"]
    assert extra["port"] == extra["targetPort"] == port
    (ingress,) = values["hub"]["networkPolicy"]["ingress"]
    assert [rule["port"] for rule in ingress["ports"]] == [port]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"hub.jupyter.org/network-access-hub": "true"}
    (egress,) = values["proxy"]["chp"]["networkPolicy"]["egress"]
    assert [rule["port"] for rule in egress["ports"]] == [port]
    assert egress["to"][0]["podSelector"]["matchLabels"] == {"app": "jupyterhub", "component": "hub"}


async def test_the_readmes_user_document_has_the_shape_of_the_real_one() -> None:
    async with user_app(two_users_hub(), user_config()) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        document = (await client.get(f"{PAGE}api/status")).json()
    (block,) = [block for block in code_blocks(REPO / "README.md") if '"view": "user"' in block.text]
    readme = json.loads(block.text)
    assert readme.keys() == document.keys()
    for key in ("hub", "culler", "remembered"):
        assert readme[key].keys() == document[key].keys(), key
    assert readme["servers"][0].keys() == document["servers"][0].keys()
    for key in ("limits", "activity", "judged"):
        assert readme["servers"][0][key].keys() == document["servers"][0][key].keys(), key
    assert readme["culls"][0].keys() == document["culls"][0].keys()
