"""The culler's token goes to the hub's API and nowhere else, whichever code path sends the request.

Every party the culler talks to is a recording listener on loopback (real sockets; ``loopback_recorder``), and
the assertions are on what arrived: the hub's API (in front of a FakeHub) gets the token, and nothing else does:
users' servers read on the API's own origin under another path (``--public-url`` = the origin of ``--url``, as
a standalone culler has it) or on another origin (the hub's ``full_url``), the ``--warn-url`` webhook, the status
page's OAuth client (code exchange and identity), the target of a redirect from the hub (never followed; and
if followed anyway, the token stays behind). Where nothing is due, no ``Authorization`` header arrives at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest
import trio

from trio_culler import Config, run_pass
from trio_culler._clients import TokenScope, http_client
from trio_culler._credentials import open_server_credentials
from trio_culler._cull_events import stretch_id
from trio_culler._engine import run_pass_with
from trio_culler._history import History
from trio_culler._hub import open_hub_client
from trio_culler._notify import open_notifier
from trio_culler.testing import FakeHub, FakeKernel, FakeServer
from trio_culler.web import StatusPageSettings
from trio_culler.web._server import serve_status_page

from .loopback_recorder import Answer, Recorder, Seen, open_recorder

TOKEN = "culler-token-0123456789abcdef0123456789"
HUB_AUTH = f"token {TOKEN}"
SCOPES = b'{"name": "culler", "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}'
NOW = datetime.now(UTC)


def assert_each_server_saw_only_its_own_users_token(servers: list[Seen], api: list[Seen]) -> None:
    """Every request to a user's server carries one credential, not the culler's: the token minted for that
    user (one mint per user, through the API), the same for all of that user's requests and no other user's."""
    by_user: dict[str, set[str]] = {}
    for seen in servers:
        assert len(seen.authorization) == 1, seen
        assert TOKEN not in seen.authorization[0]
        by_user.setdefault(seen.target.split("/")[2], set()).add(seen.authorization[0])
    assert all(len(tokens) == 1 for tokens in by_user.values()), by_user
    assert len({token for tokens in by_user.values() for token in tokens}) == len(by_user), "one token per user"
    mints = sorted(seen.target for seen in api if seen.method == "POST" and seen.target.endswith("/tokens"))
    assert mints == sorted(f"/hub/api/users/{user}/tokens" for user in by_user)


def every_header(recorder: Recorder) -> str:
    return repr([seen.headers for seen in recorder.seen]) + repr([seen.body for seen in recorder.seen])


def hub_with_servers(public_url: str | None = None) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, public_url=public_url)
    for name in ("alice", "bob"):
        server = FakeServer(
            "",
            started=NOW - timedelta(hours=5),
            last_activity=NOW - timedelta(hours=2),
            kernels=[FakeKernel("k", "idle", NOW - timedelta(hours=2))],
        )
        hub.add_user(name, last_activity=NOW - timedelta(hours=2), servers={"": server})
    return hub


@asynccontextmanager
async def hub_behind(hub: FakeHub) -> AsyncIterator[Recorder]:
    """A recording listener playing the proxy: ``/hub/api/...`` goes to ``hub``, every other path is a user's
    server answering ``[]`` (kernels and terminals alike)."""
    transport = hub.transport()

    async def respond(seen: Seen) -> Answer:
        if not seen.target.startswith("/hub/api"):
            return Answer()
        request = httpx.Request(seen.method, recorder.url + seen.target, headers=list(seen.headers), content=seen.body)
        response = await transport.handle_async_request(request)
        body = await response.aread()
        return Answer(response.status_code, (("Content-Type", "application/json"),), body)

    async with hub.running(), open_recorder(respond) as recorder:
        yield recorder


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


# ------------------------------------------------------------------------------------------ where the token goes


@pytest.mark.parametrize("use_proxy_env", [False, True], ids=["h11 transport", "httpcore"])
async def test_servers_on_the_apis_own_origin_get_only_their_users_token(
    use_proxy_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with hub_behind(hub_with_servers()) as proxy:
        # --url and --public-url on one origin: the servers are under /user/, the API under /hub/api.
        config = inspecting(f"{proxy.url}/hub/api", proxy.url, use_proxy_env=use_proxy_env)
        report = await run_pass(config)
    assert report.ok, report.errors
    assert report.servers_inspected == 2
    api, servers = proxy.under("/hub/api/"), proxy.under("/user/")
    assert {seen.target.split("?")[0] for seen in servers} == {
        f"/user/{name}/api/{endpoint}" for name in ("alice", "bob") for endpoint in ("kernels", "terminals")
    }
    assert_each_server_saw_only_its_own_users_token(servers, api)
    assert TOKEN not in repr(servers)
    # The control: the same client did send the token, to the API only, and the API accepted it.
    assert len(api) >= 4
    assert all(seen.authorization == [HUB_AUTH] for seen in api)


async def test_notices_on_the_apis_own_origin_get_only_their_users_token() -> None:
    """The notice API's requests (``GET notice``, then ``PUT notice`` here) to servers under --url's own origin,
    through the same request engine: each server gets its own user's token, never the culler's."""
    async with hub_behind(hub_with_servers()) as proxy:
        config = inspecting(f"{proxy.url}/hub/api", proxy.url, warn_before=900)
        async with (
            open_hub_client(config) as client,
            open_server_credentials(client, config) as credentials,
            open_notifier(config, hub=client, credentials=credentials) as notifier,
        ):
            assert notifier is not None
            credentials.begin_pass()
            report = await run_pass_with(client, config, now=NOW, notifier=notifier, credentials=credentials)
            with trio.fail_after(10):
                # The deliveries run beside the pass, over real sockets; the notifier has no event to wait on.
                while notifier.statistics().queued or notifier.statistics().delivering:  # noqa: ASYNC110
                    await trio.sleep(0.01)
    assert report.ok, report.errors
    notices = [seen for seen in proxy.under("/user/") if "/api/trio-culler/v1/" in seen.target]
    assert sorted((seen.method, seen.target) for seen in notices) == [
        (method, f"/user/{name}/api/trio-culler/v1/notice") for method in ("GET", "PUT") for name in ("alice", "bob")
    ]
    assert_each_server_saw_only_its_own_users_token(proxy.under("/user/"), proxy.under("/hub/api/"))
    assert TOKEN not in repr(proxy.under("/user/"))


async def test_servers_on_another_origin_get_only_their_users_token() -> None:
    async with open_recorder() as public, hub_behind(hub_with_servers(public_url=public.url)) as hub_api:
        # full_url (the hub's public_url) wins over --public-url: the servers are read on another origin.
        report = await run_pass(inspecting(f"{hub_api.url}/hub/api", "http://127.0.0.1:9"))
    assert report.ok, report.errors
    assert report.servers_inspected == 2
    assert len(public.seen) == 4
    assert_each_server_saw_only_its_own_users_token(public.seen, hub_api.under("/hub/api/"))
    assert TOKEN not in every_header(public)
    assert hub_api.under("/user/") == []


async def test_an_explicit_credential_goes_alone_and_only_where_it_is_sent() -> None:
    async with open_recorder() as server, hub_behind(hub_with_servers()) as hub_api:
        config = inspecting(f"{hub_api.url}/hub/api", server.url)
        async with open_hub_client(config) as hub:
            status, body = await hub.get_elsewhere(
                "inspect", f"{server.url}/user/alice/api/kernels", credential="alices-own", max_body=1024
            )
            # Even to the hub's API an explicit credential replaces the culler's token.
            answer = await hub.http.request("whoami", "GET", "/user", ok=(200, 403), credential="alices-own")
    assert (status, body) == (200, b"[]")
    assert [seen.authorization for seen in server.seen] == [["token alices-own"]]
    assert answer.status_code == 403, "FakeHub does not know alice's token: it was sent instead of the culler's"
    assert [seen.authorization for seen in hub_api.seen] == [["token alices-own"]]


async def test_no_caller_can_send_the_token_elsewhere() -> None:
    """Neither as a header of its own nor as the credential of a request outside the scope: refused before a
    byte is sent (a bug, never a fallback)."""
    async with (
        open_recorder() as server,
        hub_behind(hub_with_servers()) as hub_api,
        open_hub_client(inspecting(f"{hub_api.url}/hub/api", server.url)) as hub,
    ):
        kernels = f"{server.url}/user/alice/api/kernels"
        with pytest.raises(ValueError, match="own token"):
            await hub.get_elsewhere("inspect", kernels, credential=TOKEN, max_body=1024)
        with pytest.raises(ValueError, match="own token"):
            await hub.get_elsewhere("inspect", kernels, credential=f" {TOKEN}\n", max_body=1024)
        for headers in ([("Authorization", HUB_AUTH)], [("authorization", "token other")]):
            with pytest.raises(ValueError, match="credential="):
                await hub.http.request("inspect", "GET", kernels, headers=headers)
            with pytest.raises(ValueError, match="credential="):
                await hub.http.request("whoami", "GET", "/user", headers=headers)
        # Under the scope the culler's token as a credential is just the token, where it may go anyway.
        answer = await hub.http.request("whoami", "GET", "/user", credential=TOKEN)
    assert answer.status_code == 200
    assert server.seen == []
    assert [seen.authorization for seen in hub_api.seen] == [[HUB_AUTH]]


#: What a webhook event holds (README, "Warnings"): the first release's keys, and the event's.
WEBHOOK_KEYS = {"user", "server", "cull_at", "reason", "idle_seconds", "event", "id", "warned_at", "at", "detail"}
WEBHOOK_KEYS |= {"kept_at"}


async def test_the_webhook_gets_no_authorization() -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    idle = FakeServer("", started=NOW - timedelta(hours=3), last_activity=NOW - timedelta(minutes=50))
    hub.add_user("ann", last_activity=NOW - timedelta(minutes=50), servers={"": idle})
    async with open_recorder(lambda _seen: _no_content()) as webhook:
        config = Config(
            api_token=TOKEN, url="http://hub.test/hub/api", timeout=3600, warn_before=900, warn_url=f"{webhook.url}/w"
        )
        async with (
            hub.running(),
            open_hub_client(config, transport=hub.transport()) as client,
            open_notifier(config) as notifier,  # the real webhook client: loopback HTTP
        ):
            report = await run_pass_with(client, config, now=NOW, notifier=notifier)
    assert report.ok
    assert [seen.target for seen in webhook.seen] == ["/w"]
    assert webhook.seen[0].authorization == []
    assert TOKEN not in every_header(webhook)
    # The event's documented keys, and an id derived from what names the stretch, never from a secret.
    event = json.loads(webhook.seen[0].body)
    assert set(event) == WEBHOOK_KEYS
    assert event["id"] == stretch_id("ann", "", NOW - timedelta(hours=3), NOW + timedelta(minutes=10))


async def _no_content() -> Answer:
    return Answer(204, (), b"")


async def test_the_status_pages_oauth_client_sends_no_token_header() -> None:
    """A login through the real status page (served by hypercorn, its OAuth client made by the factory): the code
    exchange carries the culler's token only as the client secret in its body, to the hub's API, as OAuth
    requires, and no Authorization header; the identity request carries the user's token alone."""

    async def hub_oauth(seen: Seen) -> Answer:
        if seen.target == "/hub/api/oauth2/token":
            return Answer(body=b'{"access_token": "users-oauth-token", "token_type": "Bearer"}')
        if seen.target == "/hub/api/user":
            return Answer(body=b'{"name": "ops", "scopes": ["access:services!service=culler"]}')
        return Answer(404, (), b"")

    async with open_recorder(hub_oauth) as hub_api:
        environ = {
            "JUPYTERHUB_SERVICE_NAME": "culler",
            "JUPYTERHUB_CLIENT_ID": "service-culler",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/culler/",
            "JUPYTERHUB_HOST": hub_api.url,
        }
        settings = StatusPageSettings.from_environment(environ, bind="127.0.0.1:0")
        assert settings is not None
        config = Config(api_token=TOKEN, url=f"{hub_api.url}/hub/api")
        async with trio.open_nursery() as nursery:
            (page,) = await nursery.start(serve_status_page, settings, config, History(config.public_dict()))
            async with httpx.AsyncClient(base_url=page) as browser:
                to_hub = await browser.get("/services/culler/")
                query = parse_qs(urlsplit(to_hub.headers["location"]).query)
                callback = urlsplit(query["redirect_uri"][0]).path
                back = await browser.get(callback, params={"code": "the-code", "state": query["state"][0]})
                shown = await browser.get(back.headers["location"])
            nursery.cancel_scope.cancel()
    assert shown.status_code == 200, "the login went through"
    exchange, identify, own_view = hub_api.seen
    assert exchange.target == "/hub/api/oauth2/token"
    assert exchange.authorization == []
    assert parse_qs(exchange.body.decode())["client_secret"] == [TOKEN]
    assert identify.target == "/hub/api/user"
    assert identify.authorization == ["Bearer users-oauth-token"]
    assert TOKEN not in repr(identify.headers)
    # ops is no admin: their own view reads them from the hub, with the culler's token, under --url.
    assert (own_view.method, own_view.target) == ("GET", "/hub/api/users/ops")
    assert own_view.authorization == [HUB_AUTH]
    # The user's OAuth token was used for the identity alone: the browser never sees it, nor the culler's.
    for answer in (to_hub, back, shown):
        assert "users-oauth-token" not in repr(answer.headers) + answer.text
        assert TOKEN not in repr(answer.headers) + answer.text


async def test_a_redirect_from_the_hub_is_not_followed() -> None:
    async with open_recorder() as elsewhere:

        async def redirecting(seen: Seen) -> Answer:
            if seen.target == "/hub/api/":
                return Answer(body=b'{"version": "5.2.1"}')
            if seen.target == "/hub/api/user":
                return Answer(body=SCOPES)
            if seen.target.startswith("/hub/api/users"):
                return Answer(302, (("Location", "/user/alice/api/kernels"),), b"")
            return Answer()

        async with open_recorder(redirecting) as hub_api:
            report = await run_pass(Config(api_token=TOKEN, url=f"{hub_api.url}/hub/api", max_retries=0))
    assert report.aborted is None
    assert report.pages_failed == 1
    assert "the hub answered with a redirect to /user/alice/api/kernels" in report.errors[0].message
    assert hub_api.under("/user/") == [], "the redirect was not followed"
    assert elsewhere.seen == []


@pytest.mark.parametrize("where", ["same origin", "another origin"])
async def test_a_redirect_followed_anyway_leaves_the_token_behind(where: str) -> None:
    """No client of the culler's follows redirects; this one is made to, and the clients' request hook still
    takes the token off the redirected request (httpx itself keeps it for a redirect within the origin)."""
    async with open_recorder() as other:

        async def redirecting(seen: Seen) -> Answer:
            if seen.target.startswith("/hub/api"):
                location = "/user/alice/api/kernels" if where == "same origin" else f"{other.url}/user/alice/"
                return Answer(302, (("Location", location),), b"")
            return Answer()

        async with open_recorder(redirecting) as hub_api:
            config = Config(api_token=TOKEN, url=f"{hub_api.url}/hub/api")
            async with http_client(config, timeout=5) as client:
                request = client.build_request(
                    "GET", f"{hub_api.url}/hub/api/users", headers={"Authorization": HUB_AUTH}
                )
                await client.send(request, follow_redirects=True)
    assert hub_api.seen[0].authorization == [HUB_AUTH], "the API itself gets the token"
    followed = hub_api.seen[1:] + other.seen
    assert len(followed) == 1, "the redirect was followed"
    assert followed[0].authorization == []


# ------------------------------------------------------------------------------------------ the scope itself


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        ("https://hub.example.org/hub/api", True),
        ("https://hub.example.org/hub/api/", True),
        ("https://hub.example.org/hub/api/users/%2E/server", True),  # user "." (quote_segment's encoding)
        ("https://hub.example.org/hub/api/users/%2E%2E/server", True),  # user "..": resolves inside the API
        ("https://HUB.example.org:443/hub/api/users?state=ready", True),
        ("https://hub.example.org/user/alice/api/kernels", False),  # the API's origin, another path
        ("https://hub.example.org/hub/apix/users", False),  # a prefix of the path, not a parent
        ("https://hub.example.org/hub", False),
        ("https://hub.example.org/hub/api/../../user/alice/api", False),  # httpx resolves it
        ("https://hub.example.org/hub/api/%2e%2e/%2E%2E/user/alice/api", False),  # a proxy may resolve it
        ("http://hub.example.org/hub/api/users", False),  # another scheme
        ("https://hub.example.org:8443/hub/api/users", False),  # another port
        ("https://alice.hub.example.org/hub/api/users", False),  # another host
        ("https://hub.example.org.evil.test/hub/api/users", False),
    ],
)
def test_the_token_scope(url: str, inside: bool) -> None:
    scope = TokenScope("https://hub.example.org/hub/api/", TOKEN)
    assert scope.contains(httpx.URL(url)) is inside
