"""The status page as an ASGI application (Starlette): the page, its JSON twin, the OAuth callback, logout.

Who gets in is decided here, for every request, before anything of the page is built:

- a valid session cookie (signed with a key made at start-up, HttpOnly, SameSite=Lax, Secure under https,
  scoped to the service's prefix, expiring SESSION_SECONDS after the login whatever is done with it), or, for
  ``api/status`` and ``metrics`` only, an ``Authorization: token ...`` / ``Bearer ...`` header holding a hub
  token (a script's or Prometheus's);
- and the hub said, for that login or token, that it holds one of the service's access scopes.

No session: the page redirects to the hub's login (through OAuth), ``api/status`` and ``metrics`` answer 401. A login
without access: 403, a plain sentence and nothing of the page. Everything shown comes from the last
published :class:`~.._history.StatusSnapshot`, rendered once per snapshot and then served from memory, so
readers never wait for the passes; and a :class:`~._pacer.Pacer` in front of it all keeps readers, however many
and however eager, from taking more than a small share of the thread the passes run in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import itsdangerous
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._codes import PAGE_WORDING
from .._history import History, StatusSnapshot
from ._oauth import Identity, OAuthError, OAuthFlow, PendingLogins, pkce_pair
from ._pacer import Pacer
from ._settings import StatusPageSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["SESSION_COOKIE", "STATE_COOKIE", "create_app", "json_bytes"]

log = logging.getLogger("trio_culler.web")

SESSION_COOKIE = "trio-culler-session"
STATE_COOKIE = "trio-culler-oauth-state"
#: Hub tokens presented in an Authorization header are checked with the hub at most this often ...
TOKEN_CACHE_SECONDS = 60.0
#: ... for this many tokens at once (by their SHA-256, never the token itself).
TOKEN_CACHE_SIZE = 256
#: Session cookies whose signature was checked are remembered (until they expire) for this many sessions.
SESSION_CACHE_SIZE = 1024

_SECURITY_HEADERS = {
    # No script, no outside asset, no framing: the page is read, not run.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def json_bytes(document: Any) -> bytes:
    """JSON with ``<``, ``>`` and ``&`` escaped as ``\\u003c`` ...: a hostile user name stays inert even in a
    browser that would read the document as HTML (they can only occur inside JSON strings)."""
    text = json.dumps(document, ensure_ascii=True, sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("ascii")


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("trio_culler.web", "templates"),
        autoescape=True,  # every value is escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _format_when
    environment.filters["duration"] = _format_duration
    # How each decision code is worded: the one table logs, metrics and forecasts also read.
    environment.globals["wording"] = PAGE_WORDING
    return environment


def _format_when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02}:{whole % 60:02}"


class _Rendered:
    """The page and the document of the current snapshot, built on first request after each pass."""

    def __init__(self, render: Callable[[StatusSnapshot], bytes]) -> None:
        self._render = render
        self._version = -1
        self._body = b""

    def get(self, snapshot: StatusSnapshot) -> bytes:
        if snapshot.version != self._version:
            self._body = self._render(snapshot)
            self._version = snapshot.version
        return self._body


class _TokenCache:
    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    def get(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, token: str, identity: Identity) -> None:
        self._items[hashlib.sha256(token.encode()).hexdigest()] = (time.monotonic() + TOKEN_CACHE_SECONDS, identity)
        while len(self._items) > TOKEN_CACHE_SIZE:
            self._items.popitem(last=False)


class _SessionCache:
    """Cookies already verified, until their sessions expire: checking a signature (key derivation, HMAC,
    base64, JSON) is a tenth of a page's CPU, and a dashboard sends the same cookie every time. Only valid
    cookies are kept, at most SESSION_CACHE_SIZE of them (the oldest go first); a forged one is checked anew
    each time, which the Pacer bounds."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, raw: str) -> str | None:
        item = self._items.get(raw)
        if item is None:
            return None
        if item[0] <= time.time():
            del self._items[raw]
            return None
        return item[1]

    def put(self, raw: str, user: str, *, expires: float) -> None:
        self._items[raw] = (expires, user)
        while len(self._items) > SESSION_CACHE_SIZE:
            self._items.popitem(last=False)


def create_app(
    settings: StatusPageSettings,
    history: History,
    flow: OAuthFlow,
    *,
    secret_key: bytes,
    metrics: CollectorRegistry | None = None,
) -> Pacer:
    """The ASGI app. ``secret_key`` signs cookies (a new one at each start: logins then start again).
    With ``metrics``, that registry is also served, in Prometheus's text format, at ``<prefix>metrics``."""
    templates = _templates()
    page_template = templates.get_template("status.html")
    sessions = itsdangerous.URLSafeTimedSerializer(secret_key, salt="trio-culler-session")
    states = itsdangerous.URLSafeTimedSerializer(secret_key, salt="trio-culler-oauth-state")
    pending = PendingLogins()
    token_cache = _TokenCache()
    session_cache = _SessionCache()
    prefix = settings.prefix
    state_path = prefix if settings.callback_path.startswith(prefix) else "/"
    page = _Rendered(
        lambda snapshot: page_template.render(
            snapshot=snapshot, settings=settings, logout_url=f"{prefix}logout"
        ).encode("utf-8")
    )
    document = _Rendered(lambda snapshot: json_bytes(snapshot.to_json()))

    def is_https(request: Request) -> bool:
        # Behind the hub's proxy the browser's scheme is in X-Forwarded-Proto; it can only make cookies stricter.
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"

    def session_user(request: Request) -> str | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        known = session_cache.get(raw)
        if known is not None:
            return known
        try:
            value, signed_at = sessions.loads(raw, max_age=settings.session_seconds, return_timestamp=True)
        except itsdangerous.BadData:
            return None  # tampered, expired, or signed by an earlier process
        user = value.get("user") if isinstance(value, dict) else None
        if not isinstance(user, str):
            return None
        session_cache.put(raw, user, expires=signed_at.timestamp() + settings.session_seconds)
        return user

    def forbidden() -> Response:
        return PlainTextResponse(
            "403 Forbidden: this account may not see the culler's status page.\n"
            "The hub grants access with the scope access:services!service=<this service's name>.\n",
            status_code=403,
            headers=_SECURITY_HEADERS,
        )

    def start_login(request: Request) -> Response:
        verifier, challenge = pkce_pair()
        next_path = request.url.path if request.url.path.startswith(prefix) else prefix
        state = pending.add(verifier, next_path)
        response = RedirectResponse(flow.authorize_url(state, challenge), status_code=302, headers=_SECURITY_HEADERS)
        response.set_cookie(
            STATE_COOKIE,
            states.dumps(state),
            max_age=settings.session_seconds,
            path=state_path,
            secure=is_https(request),
            httponly=True,
            samesite="lax",
        )
        return response

    async def status_page(request: Request) -> Response:
        if session_user(request) is None:
            return start_login(request)
        return Response(page.get(history.snapshot), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)

    async def refusal_for_scripts(request: Request) -> Response | None:
        """None when a session or a hub token in the request may read; else the answer to send instead."""
        if session_user(request) is not None:
            return None
        identity = await _bearer_identity(request)
        if identity is None:
            return Response(
                json_bytes({"error": "not logged in: log in at the page, or send a hub token"}),
                status_code=401,
                media_type="application/json",
                headers={**_SECURITY_HEADERS, "WWW-Authenticate": 'Bearer realm="JupyterHub"'},
            )
        if not identity.may_access(settings.access_scopes):
            return forbidden()
        return None

    async def status_document(request: Request) -> Response:
        refusal = await refusal_for_scripts(request)
        if refusal is not None:
            return refusal
        return Response(document.get(history.snapshot), media_type="application/json", headers=_SECURITY_HEADERS)

    async def metrics_text(request: Request) -> Response:
        refusal = await refusal_for_scripts(request)
        if refusal is not None:
            return refusal
        assert metrics is not None  # the route exists only with a registry
        # Imported here, as everywhere: prometheus-client is loaded only by a culler that serves metrics.
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST, headers=_SECURITY_HEADERS)

    async def _bearer_identity(request: Request) -> Identity | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("token", "bearer") or not token:
            return None
        identity = token_cache.get(token)
        if identity is None:
            try:
                identity = await flow.identify(token)
            except OAuthError as error:
                log.info("Status API: a token was refused: %s", error)
                return None
            token_cache.put(token, identity)
        return identity

    async def oauth_callback(request: Request) -> Response:
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        try:
            cookie_state = states.loads(request.cookies.get(STATE_COOKIE, ""), max_age=settings.session_seconds)
        except itsdangerous.BadData:
            cookie_state = None
        # The state must be the one this browser was sent off with (login CSRF) and still pending (replay).
        taken = pending.take(state) if state and cookie_state == state else None
        if taken is None or not code:
            log.warning("Status page: refused an OAuth callback with a missing, forged or used state")
            return PlainTextResponse(
                f"400 Bad Request: this login is unknown, used or expired. Start again at {prefix}\n",
                status_code=400,
                headers=_SECURITY_HEADERS,
            )
        verifier, next_path = taken
        try:
            token = await flow.exchange(code, verifier)
            identity = await flow.identify(token)
        except OAuthError as error:
            log.warning("Status page: login failed: %s", error)
            return PlainTextResponse(
                f"502 Bad Gateway: the hub did not complete the login ({error}).\n",
                status_code=502,
                headers=_SECURITY_HEADERS,
            )
        if not identity.may_access(settings.access_scopes):
            log.warning(
                "Status page: %s logged in but may not see the page", identity.name, extra={"user": identity.name}
            )
            response = forbidden()
        else:
            log.info("Status page: %s logged in", identity.name, extra={"user": identity.name})
            response = RedirectResponse(next_path, status_code=302, headers=_SECURITY_HEADERS)
            response.set_cookie(
                SESSION_COOKIE,
                sessions.dumps({"user": identity.name}),
                max_age=settings.session_seconds,
                path=prefix,
                secure=is_https(request),
                httponly=True,
                samesite="lax",
            )
        response.delete_cookie(STATE_COOKIE, path=state_path)
        return response

    async def logout(request: Request) -> Response:
        # Out of the hub too: otherwise the next visit would log straight back in through the hub's cookie.
        response = RedirectResponse(settings.hub_logout_url, status_code=302, headers=_SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path=prefix, secure=is_https(request), httponly=True, samesite="lax")
        return response

    async def add_slash(request: Request) -> Response:
        return RedirectResponse(prefix, status_code=302, headers=_SECURITY_HEADERS)

    routes = [
        Route(prefix, status_page, methods=["GET", "HEAD"]),
        Route(f"{prefix}api/status", status_document, methods=["GET", "HEAD"]),
        Route(settings.callback_path, oauth_callback, methods=["GET"]),
        Route(f"{prefix}logout", logout, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(Route(f"{prefix}metrics", metrics_text, methods=["GET", "HEAD"]))
    if prefix != "/":
        routes.append(Route(prefix.rstrip("/"), add_slash, methods=["GET", "HEAD"]))
    return Pacer(Starlette(routes=routes))
