"""The notice API (docs/notice-api.md) against a real jupyter_server: authentication and XSRF are the
server's own, the state machine holds, and only the user's keep counts as activity."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.serverapp import ServerApp
from tornado.httpclient import HTTPResponse
from traitlets.config import Config

from .conftest import Fetch

API = "api/trio-culler/v1"
NOW = datetime.now(UTC)


def notice(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "7f3c2a9e4b1d",
        "warned_at": (NOW - timedelta(minutes=5)).isoformat(),
        "cull_at": (NOW + timedelta(minutes=55)).isoformat(),
        "idle_since": (NOW - timedelta(minutes=10)).isoformat(),
        "reason": "idle",
        "limit": "timeout",
        "limit_seconds": 3600,
        "rule": "rules[1] (groups=overnight -> timeout=86400)",
        "activity": "running code in a notebook or typing in a terminal",
        "keepable": True,
    }
    body.update(overrides)
    return body


def as_json(response: HTTPResponse) -> Any:
    return json.loads(response.body)


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def get(fetch: Fetch, **kwargs: Any) -> HTTPResponse:
    return await fetch(API, "notice", raise_error=False, **kwargs)


async def put(fetch: Fetch, body: dict[str, Any] | bytes, **kwargs: Any) -> HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await fetch(API, "notice", method="PUT", body=data, raise_error=False, **kwargs)


async def delete(fetch: Fetch, notice_id: str | None, **kwargs: Any) -> HTTPResponse:
    params = {} if notice_id is None else {"id": notice_id}
    return await fetch(API, "notice", method="DELETE", params=params, raise_error=False, **kwargs)


async def keep(fetch: Fetch, body: dict[str, Any] | bytes, **kwargs: Any) -> HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await fetch(API, "keep", method="POST", body=data, raise_error=False, **kwargs)


# --- the state machine ----------------------------------------------------------------------------------------


async def test_a_fresh_server_has_no_notice_and_tells_its_clock(jp_fetch: Fetch) -> None:
    response = await get(jp_fetch)
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    state = as_json(response)
    assert state["notice"] is None
    assert state["keep"] is None
    assert abs(parse_time(state["now"]) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_put_then_get_returns_the_notice_in_utc(jp_fetch: Fetch) -> None:
    body = notice(warned_at="2026-12-06T13:05:00+00:00", cull_at="2026-12-06T14:05:00.250000Z")
    response = await put(jp_fetch, body)
    assert response.code == 200
    expected = {**body, "warned_at": "2026-12-06T13:05:00Z", "cull_at": "2026-12-06T14:05:00.250000Z"}
    expected["idle_since"] = body["idle_since"].replace("+00:00", "Z")
    assert as_json(response)["notice"] == expected
    assert as_json(await get(jp_fetch))["notice"] == expected


async def test_a_new_notice_replaces_the_old_one(jp_fetch: Fetch) -> None:
    await put(jp_fetch, notice(id="first"))
    response = await put(jp_fetch, notice(id="second", keepable=False, reason="max_age", idle_since=None))
    assert as_json(response)["notice"]["id"] == "second"
    assert as_json(await get(jp_fetch))["notice"]["keepable"] is False


async def test_keep_clears_the_notice_and_records_the_keep(jp_fetch: Fetch) -> None:
    await put(jp_fetch, notice())
    before = datetime.now(UTC)
    response = await keep(jp_fetch, {"notice_id": "7f3c2a9e4b1d"})
    after = datetime.now(UTC)
    assert response.code == 200
    state = as_json(response)
    assert state["notice"] is None
    assert state["keep"]["notice_id"] == "7f3c2a9e4b1d"
    assert before <= parse_time(state["keep"]["requested_at"]) <= after
    # The keep stays for the culler to read at its next pass, after the notice is gone.
    assert as_json(await get(jp_fetch))["keep"] == state["keep"]


async def test_keep_without_a_notice_id_is_recorded_too(jp_fetch: Fetch) -> None:
    response = await keep(jp_fetch, {"notice_id": None})
    assert response.code == 200
    assert as_json(response)["keep"]["notice_id"] is None


async def test_keep_leaves_a_notice_that_cannot_be_kept(jp_fetch: Fetch) -> None:
    await put(jp_fetch, notice(id="old", reason="max_age", limit="max_age", idle_since=None, keepable=False))
    state = as_json(await keep(jp_fetch, {"notice_id": "old"}))
    assert state["notice"]["id"] == "old"
    assert state["keep"]["notice_id"] == "old"


async def test_keep_from_a_stale_page_clears_the_current_keepable_notice(jp_fetch: Fetch) -> None:
    # The culler counts any keep after its warning, whatever notice the page showed.
    await put(jp_fetch, notice(id="newer"))
    state = as_json(await keep(jp_fetch, {"notice_id": "older"}))
    assert state["notice"] is None
    assert state["keep"]["notice_id"] == "older"


async def test_delete_withdraws_the_current_notice_only(jp_fetch: Fetch) -> None:
    await put(jp_fetch, notice(id="current"))
    stale = await delete(jp_fetch, "stale")
    assert stale.code == 204
    assert stale.body == b""
    assert as_json(await get(jp_fetch))["notice"]["id"] == "current"
    current = await delete(jp_fetch, "current")
    assert current.code == 204
    assert as_json(await get(jp_fetch))["notice"] is None
    # Again, with nothing left: still 204.
    assert (await delete(jp_fetch, "current")).code == 204


async def test_delete_leaves_the_keep(jp_fetch: Fetch) -> None:
    await keep(jp_fetch, {"notice_id": None})
    await put(jp_fetch, notice(id="later"))
    await delete(jp_fetch, "later")
    assert as_json(await get(jp_fetch))["keep"]["notice_id"] is None


async def test_the_api_lives_below_the_base_url(jp_fetch: Fetch, jp_base_url: str) -> None:
    assert jp_base_url != "/"  # pytest-jupyter's is /a%40b/, as JupyterHub's /user/<name>/ is not /
    assert (await get(jp_fetch)).effective_url.split("/api/")[0].endswith(jp_base_url.rstrip("/"))


# --- authentication, XSRF, authorization ----------------------------------------------------------------------


@pytest.mark.parametrize("authorization", ["", "token wrong-token"])
async def test_every_verb_needs_the_servers_own_authentication(jp_fetch: Fetch, authorization: str) -> None:
    headers = {"Authorization": authorization}
    await put(jp_fetch, notice(id="kept-secret"))
    assert (await get(jp_fetch, headers=headers)).code == 403
    assert (await put(jp_fetch, notice(id="intruder"), headers=headers)).code == 403
    assert (await delete(jp_fetch, "kept-secret", headers=headers)).code == 403
    assert (await keep(jp_fetch, {"notice_id": "kept-secret"}, headers=headers)).code == 403
    state = as_json(await get(jp_fetch))
    assert state["notice"]["id"] == "kept-secret"
    assert state["keep"] is None


async def login(fetch: Fetch, token: str) -> dict[str, str]:
    """A browser's cookies after the login form: the login cookie and ``_xsrf``."""
    page = await fetch("login", raise_error=False, headers={"Authorization": ""})
    cookies = _cookies(page)
    form = urlencode({"_xsrf": cookies["_xsrf"], "password": token})
    answer = await fetch(
        "login",
        method="POST",
        body=form,
        headers={"Authorization": "", "Cookie": _cookie_header(cookies)},
        follow_redirects=False,
        raise_error=False,
    )
    assert answer.code == 302, answer.body
    cookies.update(_cookies(answer))
    assert any(name.startswith("username-") for name in cookies), cookies
    return cookies


def _cookies(response: HTTPResponse) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("Set-Cookie"):
        match = re.match(r'([^=]+)="?([^";]*)', header)
        assert match is not None, header
        cookies[match.group(1)] = match.group(2)
    return cookies


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def test_a_cookie_authenticated_page_needs_the_xsrf_header(jp_fetch: Fetch, jp_serverapp: ServerApp) -> None:
    cookies = await login(jp_fetch, jp_serverapp.identity_provider.token)
    browser = {"Authorization": "", "Cookie": _cookie_header(cookies)}
    assert (await get(jp_fetch, headers=browser)).code == 200
    await put(jp_fetch, notice())
    refused = await keep(jp_fetch, {"notice_id": "7f3c2a9e4b1d"}, headers=browser)
    assert refused.code == 403
    assert b"_xsrf" in refused.body
    assert (await put(jp_fetch, notice(id="forged"), headers=browser)).code == 403
    assert (await delete(jp_fetch, "7f3c2a9e4b1d", headers=browser)).code == 403
    assert as_json(await get(jp_fetch))["notice"]["id"] == "7f3c2a9e4b1d"
    # What ServerConnection.makeRequest sends: the _xsrf cookie's value in X-XSRFToken.
    accepted = await keep(jp_fetch, {"notice_id": "7f3c2a9e4b1d"}, headers={**browser, "X-XSRFToken": cookies["_xsrf"]})
    assert accepted.code == 200
    assert as_json(accepted)["keep"]["notice_id"] == "7f3c2a9e4b1d"


class ReadOnlyNotice(Authorizer):
    """Lets the user read the notice and do everything else on the server, but not change the notice."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "trio-culler-notice" or action == "read"


@pytest.fixture
def read_only_notice_config(jp_server_config: Config) -> Config:
    jp_server_config.ServerApp.authorizer_class = ReadOnlyNotice
    return jp_server_config


@pytest.mark.usefixtures("read_only_notice_config")
async def test_the_servers_authorizer_decides_on_the_notice_resource(jp_fetch: Fetch) -> None:
    assert (await get(jp_fetch)).code == 200
    assert (await put(jp_fetch, notice())).code == 403
    assert (await delete(jp_fetch, "7f3c2a9e4b1d")).code == 403
    assert (await keep(jp_fetch, {"notice_id": None})).code == 403
    assert (await jp_fetch("api", "contents", raise_error=False)).code == 200


# --- activity ------------------------------------------------------------------------------------------------


def last_activity(app: ServerApp) -> datetime:
    """What jupyterhub-singleuser reports to the hub: the latest of the server's activity sources."""
    value = app.web_app.last_activity()  # type: ignore[no-untyped-call]
    assert isinstance(value, datetime)
    return value


def api_activity(app: ServerApp) -> datetime | None:
    value = app.web_app.settings.get("api_last_activity")
    assert value is None or isinstance(value, datetime)
    return value


async def test_the_cullers_verbs_and_the_poll_are_not_activity(jp_fetch: Fetch, jp_serverapp: ServerApp) -> None:
    before = api_activity(jp_serverapp)
    await put(jp_fetch, notice())
    await get(jp_fetch)
    await delete(jp_fetch, "7f3c2a9e4b1d")
    await put(jp_fetch, b"{}")  # refused
    await keep(jp_fetch, {"notice_id": "bad id!"})  # refused: not the user asking to keep
    assert api_activity(jp_serverapp) == before
    # The control: any other API request is activity.
    await jp_fetch("api", "contents")
    assert api_activity(jp_serverapp) != before


async def test_keep_is_the_users_activity(jp_fetch: Fetch, jp_serverapp: ServerApp) -> None:
    await put(jp_fetch, notice())
    started = last_activity(jp_serverapp)
    before = datetime.now(UTC)
    assert (await keep(jp_fetch, {"notice_id": "7f3c2a9e4b1d"})).code == 200
    moved = api_activity(jp_serverapp)
    assert moved is not None
    assert moved >= before
    # What jupyterhub-singleuser reports to the hub is the server's last activity, which moved with it.
    assert last_activity(jp_serverapp) == moved > started


async def test_the_state_carries_the_servers_own_last_activity_which_the_cullers_visits_never_move(
    jp_fetch: Fetch, jp_serverapp: ServerApp
) -> None:
    """The proxy in front of the server keeps only its latest request, so a request of the culler's hides its
    user's activity before it from the hub: the culler reads the server's own last activity in the state."""
    await jp_fetch("api", "contents")  # the user's browser
    used = last_activity(jp_serverapp)
    state = as_json(await get(jp_fetch))
    assert parse_time(state["last_activity"]) == used
    # The culler's visits (its GET before the PUT, the PUT, a withdrawal, the read before a cull, api/status and
    # api/kernels as the inspection asks them) leave it where the user left it, and every answer says so.
    answers = [
        await get(jp_fetch),
        await put(jp_fetch, notice()),
        await get(jp_fetch),
    ]
    await delete(jp_fetch, "7f3c2a9e4b1d")
    await jp_fetch("api", "status")
    await jp_fetch("api", "kernels", params={"no_track_activity": "1"})
    answers.append(await get(jp_fetch))
    assert [parse_time(as_json(answer)["last_activity"]) for answer in answers] == [used] * 4
    assert last_activity(jp_serverapp) == used
    status = as_json(await jp_fetch("api", "status"))
    assert parse_time(state["last_activity"]) == datetime.fromisoformat(status["last_activity"])
    # The control: the user's next request moves it, and the state shows that.
    await jp_fetch("api", "contents")
    assert parse_time(as_json(await get(jp_fetch))["last_activity"]) == last_activity(jp_serverapp) > used


# --- validation ----------------------------------------------------------------------------------------------


BAD_NOTICES: dict[str, bytes] = {
    "not JSON": b"{",
    "not UTF-8": b'{"id": "\xff"}',
    "a list": b"[]",
    "unknown key": json.dumps({**notice(), "extra": 1}).encode(),
    "missing key": json.dumps({k: v for k, v in notice().items() if k != "activity"}).encode(),
    "duplicate key": json.dumps(notice()).encode()[:-1] + b', "id": "other"}',
    "id with a slash": json.dumps(notice(id="a/b")).encode(),
    "id too long": json.dumps(notice(id="a" * 65)).encode(),
    "empty id": json.dumps(notice(id="")).encode(),
    "id a number": json.dumps(notice(id=5)).encode(),
    "naive time": json.dumps(notice(cull_at="2026-12-06T14:05:00")).encode(),
    "time not in UTC": json.dumps(notice(cull_at="2026-12-06T14:05:00+01:00")).encode(),
    "time not a time": json.dumps(notice(warned_at="soon")).encode(),
    "time a number": json.dumps(notice(warned_at=1765026300)).encode(),
    "reason not a code": json.dumps(notice(reason="Idle!")).encode(),
    "limit null": json.dumps(notice(limit=None)).encode(),
    "limit_seconds a string": json.dumps(notice(limit_seconds="3600")).encode(),
    "limit_seconds a boolean": json.dumps(notice(limit_seconds=True)).encode(),
    "limit_seconds negative": json.dumps(notice(limit_seconds=-1)).encode(),
    "limit_seconds NaN": json.dumps(notice()).encode().replace(b"3600", b"NaN"),
    "limit_seconds infinite": json.dumps(notice()).encode().replace(b"3600", b"1e999"),
    "rule a list": json.dumps(notice(rule=["rules[1]"])).encode(),
    "activity too long": json.dumps(notice(activity="x" * 501)).encode(),
    "keepable a string": json.dumps(notice(keepable="true")).encode(),
    "deep nesting": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize("body", BAD_NOTICES.values(), ids=BAD_NOTICES.keys())
async def test_a_bad_notice_is_refused_with_a_one_line_reason(jp_fetch: Fetch, body: bytes) -> None:
    await put(jp_fetch, notice(id="before"))
    response = await put(jp_fetch, body)
    assert response.code == 400
    message = as_json(response)["message"]
    assert message
    assert "\n" not in message
    assert len(message) < 200
    assert as_json(await get(jp_fetch))["notice"]["id"] == "before"


async def test_an_oversized_body_is_refused(jp_fetch: Fetch) -> None:
    body = json.dumps(notice(rule="r" * 16 * 1024)).encode()
    response = await put(jp_fetch, body)
    assert response.code == 413
    assert "16384" in as_json(response)["message"]
    assert (await keep(jp_fetch, b" " * (16 * 1024 + 1))).code == 413
    # At the bound, accepted.
    exact = json.dumps(notice(rule="")).encode()
    exact = json.dumps(notice(rule="r" * (16 * 1024 - len(exact)))).encode()
    assert len(exact) == 16 * 1024
    assert (await put(jp_fetch, exact)).code == 200


async def test_unknown_codes_are_accepted_for_a_newer_culler(jp_fetch: Fetch) -> None:
    response = await put(jp_fetch, notice(reason="something_new", limit="max_other"))
    assert response.code == 200


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b'{"notice_id": 5}', b'{"notice_id": "a b"}', b'{"notice_id": null, "x": 1}', b'"abc"'],
)
async def test_a_bad_keep_is_refused(jp_fetch: Fetch, body: bytes) -> None:
    await put(jp_fetch, notice())
    response = await keep(jp_fetch, body)
    assert response.code == 400
    state = as_json(await get(jp_fetch))
    assert state["keep"] is None
    assert state["notice"] is not None


@pytest.mark.parametrize("notice_id", [None, "", "a/b", "a" * 65, "ü", "a b"])
async def test_a_bad_delete_is_refused(jp_fetch: Fetch, notice_id: str | None) -> None:
    await put(jp_fetch, notice(id="a"))
    response = await delete(jp_fetch, notice_id)
    assert response.code == 400
    assert as_json(await get(jp_fetch))["notice"]["id"] == "a"


async def test_a_delete_with_two_ids_is_refused(
    jp_fetch: Fetch, http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    await put(jp_fetch, notice(id="a"))
    url = f"{jp_base_url}{API}/notice?id=a&id=b"
    response = await http_server_client.fetch(url, method="DELETE", headers=jp_auth_header, raise_error=False)
    assert response.code == 400
    assert as_json(await get(jp_fetch))["notice"]["id"] == "a"
