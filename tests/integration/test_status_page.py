"""The status page, end to end: a real JupyterHub (with configurable-http-proxy) runs the culler as a managed
service with a ``url``; a real browser (Debian's Chromium, driven by Playwright) logs in at the hub's login form.

That the hub starts at all is the first check: JupyterHub waits at start-up for a managed service's URL and
exits if it does not answer, so the page must listen before the hub's API does.

The hub here has a login form (DummyAuthenticator with a password), an admin, plain users and an operator who is
not an admin, and the culler as service ``trio-culler`` with ``oauth_no_confirm``, opened to every user by the
recipe's own ``user`` role (``docs/recipes.md``, run as written) and to the operator by the recipe for operators.
Its passes run every 2 s with a 3 s timeout, so a server left alone is culled within seconds, while the test
watches through ``api/status``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from trio_culler.web import OAuthFlow, StatusPageSettings

from ..support.docs import marked_block
from .browser import browser_login, launched_chromium
from .hubtools import (
    REPO_ROOT,
    HubAPI,
    HubProcess,
    free_ports,
    missing_tools,
    start_hub,
    start_servers,
    stop_hub,
    wait_until,
)

pytestmark = pytest.mark.integration

#: The recipes' name: their blocks run here as written.
SERVICE = "trio-culler"
PASSWORD = secrets.token_urlsafe(12)
PROMETHEUS_TOKEN = secrets.token_hex(32)
ADMIN = "boss"
PLAIN = "pleb"
#: Not an admin; in a group with read:servers, as the operators' recipe has it.
OPERATOR = "oper"
#: A second OAuth client of the hub, set up as the operators' recipe sets up the page's (its login asks for
#: read:servers), to read what the hub answers such a login (the page's own client keeps the plain recipe here,
#: so that the admin's whole page rests on the admin flag alone).
PROBE_CLIENT = "service-oauth-probe"
PROBE_SECRET = secrets.token_hex(32)
PROBE_CALLBACK = "http://127.0.0.1:9/oauth_callback"
HOSTILE = "<img src=x onerror=alert(1)>"
PREFIX = f"/services/{SERVICE}/"
#: What the operator wrote: the page shows it back as TOML.
RULES = '[[rules]]\nusers = ["vip-*"]\ncull = false\n'
#: Set to a path (docs/status-page.png) to keep the browser's screenshot of the page there ...
SCREENSHOT = os.environ.get("TRIO_CULLER_SCREENSHOT")
#: ... and of a user's own view (docs/status-page-user.png).
USER_SCREENSHOT = os.environ.get("TRIO_CULLER_USER_SCREENSHOT")


@pytest.fixture(scope="module")
def status_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(f"real-JupyterHub integration tests need their tools: {reason}")
    (service_port,) = free_ports(1)
    service_token = secrets.token_hex(32)
    workdir = tmp_path_factory.mktemp("status-hub")
    rules = workdir / "rules.toml"
    rules.write_text(RULES)
    # A cull_arbiter_hook with the default's verdict: idleness it decides cannot be foreseen, and the page says so.
    hook = workdir / "culler_config.py"
    hook.write_text(
        "def same_as_the_timeout(inactive, inactive_limit, server):\n"
        "    return inactive.total_seconds() >= inactive_limit\n\n"
        "c.IdleCuller.cull_arbiter_hook = same_as_the_timeout\n\n"
        # Warnings, to a hook that hears them (the servers here run no notice extension): the page's warning
        # sections show what they did.
        "def heard(user, server, cull_at):\n"
        "    pass\n\n"
        "c.IdleCuller.warn_hook = heard\n"
    )
    extra_config = f"""
import sys
# The hub's public URL: the proxy's own (JUPYTERHUB_PUBLIC_HUB_URL then says where the hub's pages are).
c.JupyterHub.public_url = f"http://127.0.0.1:{{env['TRIO_CULLER_IT_PROXY_PORT']}}/"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{{ADMIN!r}}}
c.JupyterHub.services.append({{
    "name": {SERVICE!r},
    "url": "http://127.0.0.1:{service_port}",
    "api_token": {service_token!r},
    "oauth_no_confirm": True,
    "command": [sys.executable, "-m", "trio_culler", "--timeout=3", "--cull-every=2", "--status-history=50",
                "--max-age=1800", "--cull-named-servers=false", "--rules-file={rules}", "--config={hook}",
                "--warn-before=2", "--no-warn-servers"],
    "environment": {{"PYTHONPATH": {str(REPO_ROOT)!r}}},
}})
# As the README's "Metrics through the hub" has it: a service for Prometheus with only the access scope.
c.JupyterHub.services.append({{"name": "prometheus", "api_token": {PROMETHEUS_TOKEN!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "culler-metrics", "scopes": ["access:services!service={SERVICE}"], "services": ["prometheus"]}}
)
c.JupyterHub.load_roles.append({{
    "name": "trio-culler-role",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": [{SERVICE!r}],
}})
c.JupyterHub.load_groups = {{"operators": {{"users": [{OPERATOR!r}]}}}}
c.JupyterHub.load_roles.append({{"name": "culler-operators", "scopes": ["read:servers"], "groups": ["operators"]}})
# What the user role gives the page's own client, for the probe's.
c.JupyterHub.load_roles.append(
    {{"name": "probe-users", "scopes": ["access:services!service=oauth-probe"], "users": [{PLAIN!r}, {OPERATOR!r}]}}
)
c.JupyterHub.services.append({{
    "name": "oauth-probe",
    "api_token": {PROBE_SECRET!r},
    "oauth_client_id": {PROBE_CLIENT!r},
    "oauth_redirect_uri": {PROBE_CALLBACK!r},
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": ["read:servers"],
}})
"""
    # The recipe, as written: every user may open the page.
    extra_config += marked_block("status-page-user-role").text
    hub = start_hub(workdir, extra_config=extra_config)
    try:
        # The hub adds the service's proxy route once its URL answered (it waits for that, then goes on).
        wait_until(
            lambda: httpx.get(f"{hub.proxy_url}{PREFIX}", timeout=30).status_code != 404,
            timeout=60,
            what="the proxy route to the service",
        )
        yield hub, service_token
    finally:
        stop_hub(hub)
        _stop_leftover_service(f"http://127.0.0.1:{service_port}")


def _stop_leftover_service(url: str) -> None:
    """The hub starts its managed services in sessions of their own; one that a hub stopping early did not stop
    keeps retrying a dead hub. Find it by the URL this test gave it, and end it."""
    needle = f"JUPYTERHUB_SERVICE_URL={url}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            pid = int(entry.name)
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture(scope="module")
def culled(status_hub: tuple[HubProcess, str]) -> dict[str, Any]:
    """Idle servers for two users (one with the hostile name), culled by the running culler, and one that is
    slow to stop (the hub answers 202), whose cull is pending until a later pass sees it stopped; an exempt one;
    returns the ``api/status`` document that shows them."""
    hub, _token = status_hub
    with HubAPI(hub) as api:
        names = api.create_users(["idle-alice", HOSTILE])
        api.create_users([PLAIN, "bob", "vip-val", "slow-sam"])
        # Named servers are culled for age only here (--cull-named-servers=false, --max-age=1800): they are
        # what comes next, half an hour after their start.
        start_servers(
            hub,
            [
                *((name, "") for name in [*names, "bob"]),
                ("bob", "gpu"),
                ("bob", "analysis"),
                ("vip-val", ""),
                ("slow-sam", ""),
            ],
        )

        def slow_sam(document: dict[str, Any]) -> str | None:
            return next((cull["outcome"] for cull in document["culls"] if cull["user"] == "slow-sam"), None)

        pending = wait_until(
            lambda: slow_sam(_status_document(hub, hub.admin_token)) == "pending",
            timeout=120,
            interval=0.1,
            what="slow-sam's cull pending (the hub answered 202)",
        )
        assert pending

        def document_with_culls() -> dict[str, Any] | None:
            document = _status_document(hub, hub.admin_token)
            culled_users = {cull["user"] for cull in document["culls"]}
            upcoming = {(item["user"], item["server"]) for item in document["upcoming"]["soonest"]}
            done = {*names, "bob"} <= culled_users and len(upcoming) == 2 and slow_sam(document) == "stopped"
            return document if done else None

        document = wait_until(document_with_culls, timeout=120, what="the culls in api/status, slow-sam's stopped")
        for name in [*names, "slow-sam"]:
            assert api.server_state(name) in ("stopped", "absent")
        assert api.server_state("vip-val") == "running", "exempt by the rules file"
        return document


def _status_document(hub: HubProcess, token: str) -> dict[str, Any]:
    response = httpx.get(f"{hub.proxy_url}{PREFIX}api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def _hub_login(client: httpx.Client, hub: HubProcess, user: str) -> httpx.Response:
    """Open the page with ``client`` (no session) and log in at the hub's form, as a browser would; returns
    the final answer, with every hop in ``history``."""
    login_page = client.get(f"{hub.proxy_url}{PREFIX}")
    assert login_page.status_code == 200, login_page.text
    assert urlsplit(str(login_page.url)).path == "/hub/login"
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login_page.text)
    assert xsrf is not None
    return client.post(str(login_page.url), data={"username": user, "password": PASSWORD, "_xsrf": xsrf.group(1)})


# --- the hub started, the page answers ---------------------------------------------------------------------


def test_hub_starts_with_the_culler_as_a_service_with_a_url(status_hub: tuple[HubProcess, str]) -> None:
    hub, _token = status_hub
    assert hub.proc.poll() is None, hub.log_tail()
    # Not logged in: off to the hub's authorization endpoint, which sends an anonymous browser to its login.
    response = httpx.get(f"{hub.proxy_url}{PREFIX}", timeout=30)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/hub/api/oauth2/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == [f"service-{SERVICE}"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"{PREFIX}oauth_callback"]
    assert len(query["state"][0]) >= 32


def test_api_status_without_login_is_401(status_hub: tuple[HubProcess, str]) -> None:
    hub, _token = status_hub
    response = httpx.get(f"{hub.proxy_url}{PREFIX}api/status", timeout=30)
    assert response.status_code == 401
    assert "culls" not in response.text


# --- the JSON document -------------------------------------------------------------------------------------


def test_api_status_lists_the_culls_of_the_pass_that_just_ran(
    status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    hub, _token = status_hub
    by_user = {cull["user"]: cull for cull in culled["culls"]}
    alice = by_user["idle-alice"]
    assert alice["server"] == ""
    assert alice["action"] == "stop"
    assert alice["rule"] == "idle"
    assert alice["reason"].startswith("inactive for 00:00:")
    assert alice["outcome"] == "stopped"
    assert culled["passes"][0]["users_seen"] >= 1
    assert culled["passes"][0]["outcome"] == "ran"
    assert culled["config"]["timeout"] == 3
    # The hub's public URL, not the service's own (JUPYTERHUB_PUBLIC_URL is .../services/trio-culler/).
    assert culled["config"]["public_url"] == f"{hub.proxy_url}/"
    assert culled["kept"]["by_reason"]["exempt"] == 1
    assert culled["kept"]["by_reason"]["named_disabled"] == 2
    # A hook decides idleness: what comes next by it is unknown (not 0); max-age culls are still foreseen.
    assert culled["upcoming"]["unknown"] == (
        "a cull_arbiter_hook decides idleness, which cannot be foreseen: only --max-age culls are counted"
    )
    assert (culled["upcoming"]["total_due"], culled["upcoming"]["foreseen"]) == (None, 2)
    # What comes next: bob's two named servers, culled for age 30 minutes after they started.
    upcoming = culled["upcoming"]
    assert upcoming["due"] == {"max_age": 2}
    assert {(item["user"], item["server"], item["limit"]) for item in upcoming["soonest"]} == {
        ("bob", "gpu", "max_age"),
        ("bob", "analysis", "max_age"),
    }
    with HubAPI(hub) as api:
        bob = api.get_user("bob")
    assert bob is not None
    started = {name: server["started"] for name, server in bob["servers"].items()}
    for item in upcoming["soonest"]:
        assert item["limit_seconds"] == 1800
        due = datetime.fromisoformat(item["cull_at"])
        assert due - datetime.fromisoformat(started[item["server"]]) == timedelta(seconds=1800)
    assert culled["history"] == 50
    # Names arrive intact in the parsed document, and escaped in its bytes.
    assert HOSTILE in by_user
    raw = httpx.get(
        f"{hub.proxy_url}{PREFIX}api/status", headers={"Authorization": f"token {hub.admin_token}"}, timeout=30
    ).content
    assert b"<img" not in raw
    assert b"\\u003cimg src=x onerror=alert(1)\\u003e" in raw


def test_api_status_refuses_a_token_without_access(status_hub: tuple[HubProcess, str]) -> None:
    hub, _token = status_hub
    # The culler's own service token holds no access:services scope.
    response = httpx.get(
        f"{hub.proxy_url}{PREFIX}api/status", headers={"Authorization": f"token {hub.culler_token}"}, timeout=30
    )
    assert response.status_code == 403
    assert "culls" not in response.text
    bogus = httpx.get(f"{hub.proxy_url}{PREFIX}api/status", headers={"Authorization": "token not-a-token"}, timeout=30)
    assert bogus.status_code == 401


def test_prometheus_scrapes_the_metrics_through_the_hub_with_a_hub_token(
    status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """How an operator's Prometheus reads the culler's metrics with no port of their own: through the hub's
    proxy, with the token of a service that holds only the culler's access scope (the README's recipe)."""
    hub, token = status_hub
    url = f"{hub.proxy_url}{PREFIX}metrics"
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {PROMETHEUS_TOKEN}"}, timeout=30)
    assert scraped.status_code == 200, scraped.text
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    culled_idle = next(
        sample.value
        for sample in families["trio_culler_servers_culled"].samples
        if sample.name == "trio_culler_servers_culled_total" and sample.labels == {"reason": "idle"}
    )
    assert culled_idle >= len({cull["user"] for cull in culled["culls"] if cull["rule"] == "idle"}) >= 2
    passes = {
        sample.labels["outcome"]: sample.value
        for sample in families["trio_culler_passes"].samples
        if sample.name == "trio_culler_passes_total"
    }
    assert passes["ran"] >= 1
    assert passes["hub_down"] == passes["scopes"] == 0
    assert families["trio_culler_hub_up"].samples[0].value == 1
    assert families["trio_culler_config_error"].samples[0].value == 0
    kept = {sample.labels["reason"]: sample.value for sample in families["trio_culler_servers_kept"].samples}
    assert kept["exempt"] == 1
    _assert_no_token(scraped, token, hub)
    assert PROMETHEUS_TOKEN not in scraped.text
    assert httpx.get(url, timeout=30).status_code == 401
    without_access = httpx.get(url, headers={"Authorization": f"token {hub.culler_token}"}, timeout=30)
    assert without_access.status_code == 403
    assert "trio_culler" not in without_access.text


# --- OAuth: state, replay, cookies --------------------------------------------------------------------------


def test_login_then_forged_and_replayed_states_are_refused(
    status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    hub, token = status_hub
    with httpx.Client(follow_redirects=True, timeout=30) as client:
        page = _hub_login(client, hub, ADMIN)
        assert page.status_code == 200, page.text
        assert urlsplit(str(page.url)).path == PREFIX
        assert "idle-alice" in page.text
        callbacks = [hop for hop in page.history if urlsplit(str(hop.url)).path == f"{PREFIX}oauth_callback"]
        assert len(callbacks) == 1
        callback = callbacks[0]
        session = callback.cookies["trio-culler-session"]
        set_cookie = [v for k, v in callback.headers.multi_items() if k == "set-cookie"]
        session_header = next(v for v in set_cookie if v.startswith("trio-culler-session="))
        for flag in ("HttpOnly", "SameSite=lax", f"Path={PREFIX}"):
            assert flag.lower() in session_header.lower(), session_header
        state_cookie = callback.request.headers["cookie"]
        # Replayed: the same callback URL, with the same state cookie the browser had then.
        with httpx.Client(timeout=30) as replay:
            replayed = replay.get(str(callback.request.url), headers={"cookie": state_cookie})
            assert replayed.status_code == 400
            assert "trio-culler-session" not in replayed.headers.get("set-cookie", "")
            # Forged: a state the culler never issued, with a matching cookie the attacker cannot sign.
            query = parse_qs(urlsplit(str(callback.request.url)).query)
            forged = replay.get(
                f"{hub.proxy_url}{PREFIX}oauth_callback",
                params={"code": query["code"][0], "state": "forged"},
                headers={"cookie": "trio-culler-oauth-state=forged"},
            )
            assert forged.status_code == 400
        # A real state of another login attempt, sent with this browser's (now used) state cookie: refused.
        fresh = httpx.get(f"{hub.proxy_url}{PREFIX}", timeout=30)
        other_state = parse_qs(urlsplit(fresh.headers["location"]).query)["state"][0]
        crossed = client.get(
            f"{hub.proxy_url}{PREFIX}oauth_callback",
            params={"code": "x", "state": other_state},
            headers={"cookie": state_cookie},
            follow_redirects=False,
        )
        assert crossed.status_code == 400

        # The session works, a tampered one does not.
        def page_with(cookie_value: str) -> httpx.Response:
            return httpx.get(
                f"{hub.proxy_url}{PREFIX}", headers={"cookie": f"trio-culler-session={cookie_value}"}, timeout=30
            )

        assert page_with(session).status_code == 200
        payload, _, signature = session.rpartition(".")
        # Flip the FIRST character: every bit of it is signature. The last base64 character also carries
        # padding bits, so changing it can leave the decoded signature (and the cookie) valid.
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        assert page_with(f"{payload}.{flipped}").status_code == 302
        assert page_with(session.replace(session[0], "Z" if session[0] != "Z" else "Y", 1)).status_code == 302
        assert page_with("eyJ1c2VyIjoiYm9zcyJ9.AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA").status_code == 302
        for response in [page, *page.history, replayed, forged, crossed]:
            _assert_no_token(response, token, hub)


def _assert_no_token(response: httpx.Response, *secrets_: str | HubProcess) -> None:
    texts = [response.text, str(response.headers), str(response.url)]
    for secret in secrets_:
        values = [secret.admin_token, secret.culler_token] if isinstance(secret, HubProcess) else [secret]
        for value in values:
            for text in texts:
                if value in text and not _is_own_request(response, value):
                    raise AssertionError(f"a token is in the answer to {response.request.url}")


def _is_own_request(response: httpx.Response, value: str) -> bool:
    # The admin token in our own Authorization header is echoed by nothing; only the request carries it.
    return value in response.request.headers.get("authorization", "") and value not in response.text


# --- a real browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


def _browser_login(browser: Any, hub: HubProcess, user: str) -> tuple[Any, Any, list[str]]:
    return browser_login(browser, f"{hub.proxy_url}{PREFIX}", user, PASSWORD)


def test_browser_admin_sees_the_culls(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any], tmp_path: Path
) -> None:
    hub, token = status_hub
    context, page, dialogs = _browser_login(chromium, hub, ADMIN)
    try:
        assert urlsplit(page.url).path == PREFIX, page.url
        assert page.title() == f"Idle culler · {SERVICE}"
        culls = page.locator("#culls + .scroll table")
        culls_text = culls.inner_text()
        assert "idle-alice" in culls_text
        assert "inactive for 00:00:" in culls_text
        # The hostile name is text, not markup: no image element, no script ran.
        assert HOSTILE in culls_text
        card = page.locator(".card", has_text="Due within the hour").inner_text()
        assert card.startswith("Due within the hour\nunknown\n2 foreseen"), card
        assert (
            page.locator("#next-unknown")
            .inner_text()
            .startswith("Unknown: a cull_arbiter_hook decides idleness, which cannot be foreseen")
        )
        upcoming_text = page.locator("#next-unknown + p + .scroll table").inner_text()
        assert "analysis" in upcoming_text
        assert "age ≥ 0:30:00" in upcoming_text
        # A stop the hub answered 202 shows pending no longer, once a later pass saw it done.
        sam = culls.locator("tr", has_text="slow-sam").inner_text()
        assert sam.rstrip().endswith("stopped"), sam
        # The new sections: servers kept and why, warnings (every idle server was warned, then culled: none
        # stands now, and the section says as of which pass).
        kept = page.locator("#kept + .scroll table").inner_text()
        assert "exempt by a rule (cull = false)\t1" in kept
        assert "named servers are not culled for idleness (--cull-named-servers=false)\t2" in kept
        assert re.fullmatch(r"None stands after the pass of \S+ \S+ UTC\.", page.locator("#standing + p").inner_text())
        # The rules as the operator wrote them, and the hub's public URL.
        assert page.locator("#rules").inner_text() == RULES
        config = page.locator(".config").inner_text()
        assert f"public_url {hub.proxy_url}/" in config
        assert "/services/" not in config.split("public_url", 1)[1].split("\n", 1)[0]
        assert "True" not in config
        assert "None" not in config
        assert page.locator("img").count() == 0
        assert dialogs == []
        assert token not in page.content()
        assert hub.admin_token not in page.content()
        shot = tmp_path / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if SCREENSHOT:
            shutil.copyfile(shot, SCREENSHOT)
        # Readable on a phone: no sideways scrolling of the page itself.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Logging out leaves the page closed to this browser.
        page.goto(f"{hub.proxy_url}{PREFIX}logout")
        again = context.new_page()
        again.goto(f"{hub.proxy_url}{PREFIX}")
        assert urlsplit(again.url).path == "/hub/login"
    finally:
        context.close()


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def test_browser_user_sees_their_own_culls_and_not_anyone_elses(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any], tmp_path: Path
) -> None:
    """idle-alice is a plain user (the recipe's role lets her in): her cull, with its reason, and nothing of
    anyone else, though the pass culled others and other users' servers run."""
    hub, token = status_hub
    context, page, dialogs = _browser_login(chromium, hub, "idle-alice")
    try:
        assert urlsplit(page.url).path == PREFIX, page.url
        assert page.title() == f"Your servers · {SERVICE}"
        assert _text(page, "#viewer") == "idle-alice"
        culls = _text(page, "#culls + .scroll table")
        assert "inactive for 00:00:" in culls
        assert "stopped" in culls
        assert _text(page, "#no-servers") == "None of your servers is running."
        body = _text(page, "body")
        for other in (HOSTILE, "slow-sam", "bob", "vip-val", "analysis", ADMIN, "Recent culls", "Next hour"):
            assert other not in body, other
        # The browser's cookies, outside the page (whose Content-Security-Policy allows no fetch at all).
        document = page.request.get(f"{hub.proxy_url}{PREFIX}api/status").json()
        assert (document["view"], document["user"]) == ("user", "idle-alice")
        assert {cull["user"] for cull in document["culls"]} == {"idle-alice"}
        assert document["servers"] == []
        assert dialogs == []
        assert token not in page.content()
    finally:
        context.close()


def test_browser_user_sees_when_their_running_servers_will_be_culled(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """bob's two named servers run (named servers are culled for age only here): each with the time it will be
    culled, the limit that sets it, and what counts as activity; the page's times are the pass's. His default
    server was culled: that is his, and listed."""
    hub, _token = status_hub
    context, page, _dialogs = _browser_login(chromium, hub, "bob")
    try:
        assert urlsplit(page.url).path == PREFIX, page.url
        servers = _text(page, "#servers ~ section.server >> nth=0") + _text(page, "#servers ~ section.server >> nth=1")
        assert "Server analysis" in servers
        assert "Server gpu" in servers
        assert servers.count("if nothing changes: age ≥ 0:30:00") == 2
        assert servers.count("named servers are not culled for idleness here: only its age counts (max age)") == 2
        assert "idle-alice" not in _text(page, "body")
        # The browser's cookies, outside the page (whose Content-Security-Policy allows no fetch at all).
        document = page.request.get(f"{hub.proxy_url}{PREFIX}api/status").json()
        foreseen = {item["server"]: item["cull_at"] for item in culled["upcoming"]["soonest"]}
        assert {server["server"]: server["cull_at"] for server in document["servers"]} == foreseen
        assert {server["judged"]["decision"] for server in document["servers"]} == {"named_disabled"}
        assert [(cull["user"], cull["server"]) for cull in document["culls"]] == [("bob", "")]
        assert "inactive for 00:00:" in _text(page, "#culls + .scroll table")
        if USER_SCREENSHOT:
            page.screenshot(path=USER_SCREENSHOT, full_page=True)
        # Readable on a phone: no sideways scrolling of the page itself.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()


def test_browser_user_names_with_markup_are_text(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """The user named <img src=x onerror=alert(1)> logs in: the name shows as text, no image, no script ran."""
    hub, _token = status_hub
    context, page, dialogs = _browser_login(chromium, hub, HOSTILE)
    try:
        assert urlsplit(page.url).path == PREFIX, page.url
        assert _text(page, "#viewer") == HOSTILE
        assert "inactive for 00:00:" in _text(page, "#culls + .scroll table")
        assert page.locator("img").count() == 0
        assert page.locator("#viewer *").count() == 0  # text, not elements
        assert dialogs == []
        assert "idle-alice" not in _text(page, "body")
    finally:
        context.close()


def _oauth_identity(hub: HubProcess, user: str, client_id: str, secret: str, callback: str) -> tuple[Any, Any]:
    """The page's OAuth flow by hand, as ``_oauth.py`` makes it: log in at the hub's form, authorize the client,
    exchange the code with the client's secret, and read ``GET /hub/api/user`` with the token, through
    :meth:`OAuthFlow.identify` itself. Returns (the hub's model, the Identity the page reads from it)."""
    with httpx.Client(timeout=30) as client:
        login = client.get(f"{hub.proxy_url}/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login.text)
        assert xsrf is not None
        client.post(f"{hub.proxy_url}/hub/login", data={"username": user, "password": PASSWORD, "_xsrf": xsrf.group(1)})
        params = {"client_id": client_id, "redirect_uri": callback, "response_type": "code", "state": "s"}
        answer = client.get(f"{hub.proxy_url}/hub/api/oauth2/authorize", params=params)
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        form = {
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": callback,
        }
        token = client.post(f"{hub.proxy_url}/hub/api/oauth2/token", data=form).json()["access_token"]
        model = client.get(f"{hub.api_url}/user", headers={"Authorization": f"Bearer {token}"}).json()

    async def identify() -> Any:
        async with httpx.AsyncClient(timeout=30) as http:
            settings = StatusPageSettings.from_environment(
                {"JUPYTERHUB_SERVICE_NAME": SERVICE, "JUPYTERHUB_CLIENT_ID": client_id}, bind="127.0.0.1:0"
            )
            assert settings is not None
            flow = OAuthFlow(settings, api_url=hub.api_url, client_secret=secret, client=http)
            return await flow.identify(token)

    return model, trio.run(identify)


def test_what_jupyterhub_returns_to_the_pages_login_decides_who_sees_everyone(
    status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """Why the admin flag decides: the token JupyterHub 6.1 issues to the page holds the same scopes for an admin
    as for a plain user; only `admin` tells them apart. And the operators' recipe: a login that asks for
    read:servers gets it unfiltered for an operator, filtered to their own servers for a plain user."""
    hub, service_token = status_hub
    page_client = f"service-{SERVICE}"
    callback = f"{PREFIX}oauth_callback"
    admin_model, admin = _oauth_identity(hub, ADMIN, page_client, service_token, callback)
    plain_model, plain = _oauth_identity(hub, PLAIN, page_client, service_token, callback)
    assert (admin_model["kind"], admin_model["admin"], plain_model["kind"], plain_model["admin"]) == (
        "user",
        True,
        "user",
        False,
    )
    # The same scopes, but for whose name the identify scopes carry.
    same = {f"access:services!service={SERVICE}", "read:users:groups!user=<them>", "read:users:name!user=<them>"}
    assert {scope.replace(f"={ADMIN}", "=<them>") for scope in admin_model["scopes"]} == same
    assert {scope.replace(f"={PLAIN}", "=<them>") for scope in plain_model["scopes"]} == same
    assert (admin.sees_everyone, plain.sees_everyone) == (True, False)
    operator_model, operator = _oauth_identity(hub, OPERATOR, PROBE_CLIENT, PROBE_SECRET, PROBE_CALLBACK)
    _plain_model, plain_by_probe = _oauth_identity(hub, PLAIN, PROBE_CLIENT, PROBE_SECRET, PROBE_CALLBACK)
    assert operator_model["admin"] is False
    assert "read:servers" in operator_model["scopes"]
    assert f"read:servers!user={PLAIN}" in plain_by_probe.scopes
    assert (operator.sees_everyone, plain_by_probe.sees_everyone) == (True, False)


def test_the_hubs_services_menu_takes_a_user_to_their_page(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """JupyterHub 6.1 lists a service with a url in its Services menu for whoever holds its access scope: with the
    recipe's role, every user. A plain user finds the page there."""
    hub, _token = status_hub
    context, page, _dialogs = _browser_login(chromium, hub, PLAIN)
    try:
        page.goto(f"{hub.proxy_url}/hub/home")
        page.get_by_role("button", name="Services").or_(page.get_by_role("link", name="Services")).first.click()
        page.get_by_role("link", name=SERVICE).click()
        page.wait_for_load_state()
        assert urlsplit(page.url).path == PREFIX, page.url
        assert page.title() == f"Your servers · {SERVICE}"
        assert _text(page, "#viewer") == PLAIN
    finally:
        context.close()


def test_a_users_own_hub_token_gets_their_document_and_no_metrics(
    status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """A token the hub issued to idle-alice (what a script of hers would hold): her document, and a 403 for the
    metrics, which are the operators'."""
    hub, _token = status_hub
    response = httpx.post(
        f"{hub.api_url}/users/idle-alice/tokens",
        headers={"Authorization": f"token {hub.admin_token}"},
        json={"note": "her script"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"token {response.json()['token']}"}
    document = httpx.get(f"{hub.proxy_url}{PREFIX}api/status", headers=headers, timeout=30)
    metrics = httpx.get(f"{hub.proxy_url}{PREFIX}metrics", headers=headers, timeout=30)
    assert document.status_code == 200, document.text
    assert (document.json()["view"], document.json()["user"]) == ("user", "idle-alice")
    assert {cull["user"] for cull in document.json()["culls"]} == {"idle-alice"}
    assert b"\\u003cimg" not in document.content  # nobody else's culls, the hostile name's least of all
    assert metrics.status_code == 403
    assert "trio_culler" not in metrics.text


def test_browser_without_login_gets_the_hub_login_page(chromium: Any, status_hub: tuple[HubProcess, str]) -> None:
    hub, _token = status_hub
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{hub.proxy_url}{PREFIX}api/status")
        assert "not logged in" in page.inner_text("body")
        page.goto(f"{hub.proxy_url}{PREFIX}")
        assert urlsplit(page.url).path == "/hub/login"
        assert page.locator("input[name=password]").count() == 1
    finally:
        context.close()


# --- hostile traffic, with the real proxy and a real browser ---------------------------------------------------


FLOOD = Path(__file__).with_name("flood.py")


@contextmanager
def _flood(hub: HubProcess, path: str, clients: int, total: int | None = None) -> Iterator[_Flood]:
    """``flood.py`` asking for ``path`` through the hub's proxy; stopped (if still running) on leaving."""
    process = subprocess.Popen(
        [sys.executable, str(FLOOD), f"{hub.proxy_url}{path}", str(clients), *([str(total)] if total else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    flood = _Flood(process)
    try:
        yield flood
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        assert process.stdout is not None
        process.stdout.close()


class _Flood:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0

    def wait_refused(self, timeout: float = 120) -> None:
        """Until the strangers' first 503: their budget is spent."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"no 503 for the strangers within {timeout} s"
        assert self.process.stdout.readline().strip() == "refused"

    def finish(self, timeout: float) -> None:
        """Wait for the flood to end (at its TOTAL) and read what it got."""
        out, _ = self.process.communicate(timeout=timeout)
        result = json.loads(out.strip().splitlines()[-1])
        self.statuses = collections.Counter({int(status): count for status, count in result["statuses"].items()})
        self.errors = result["errors"]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.finish(60)


def test_an_anonymous_flood_leaves_the_logged_in_admins_browser_answered(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """Chromium holds an admin's session; 300 anonymous clients ask for the page through the proxy as fast as
    they are answered (more than the strangers' budget holds waiting): every reload of the admin's page is
    answered 200, while the strangers get their budget and 503s."""
    hub, _token = status_hub
    context, page, _dialogs = _browser_login(chromium, hub, ADMIN)
    try:
        assert urlsplit(page.url).path == PREFIX, page.url
        with _flood(hub, PREFIX, 300) as flood:
            flood.wait_refused()
            statuses = []
            for _ in range(15):
                response = page.reload()
                assert response is not None
                statuses.append(response.status)
                assert "idle-alice" in page.inner_text("body")
            flood.stop()
        assert statuses == [200] * 15
        assert flood.statuses[503] > 0
        assert flood.statuses[302] > 0  # the strangers were served too, within their budget
    finally:
        context.close()


def test_a_browser_login_in_progress_survives_2000_anonymous_gets(
    chromium: Any, status_hub: tuple[HubProcess, str], culled: dict[str, Any]
) -> None:
    """Chromium waits at the hub's login form (its login under way: a state cookie from the page); 2,000
    anonymous GETs of the page come through the proxy, each that reaches the page starting a login of its
    own; then the user submits the form, and the callback completes the login."""
    hub, _token = status_hub
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{hub.proxy_url}{PREFIX}")
        assert urlsplit(page.url).path == "/hub/login", page.url
        with _flood(hub, PREFIX, 1000, total=2000) as flood:
            flood.finish(300)
        assert sum(flood.statuses.values()) + flood.errors == 2000
        assert sum(flood.statuses.values()) >= 1900  # a connection the proxy dropped under the load is not an answer
        assert set(flood.statuses) <= {302, 503}
        assert flood.statuses[302] >= 20  # some reached the page (and started logins of their own)
        page.fill("input[name=username]", ADMIN)
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_load_state()
        assert urlsplit(page.url).path == PREFIX, page.url
        assert "Recent culls" in page.inner_text("body")
    finally:
        context.close()
