"""The status page as an ASGI application (Starlette): the page, its JSON twin, the OAuth callback, logout.

Who gets in is decided for every request, before anything of the page is built (``_auth.py`` says how):

- a valid session cookie (signed with a key made at start-up, HttpOnly, SameSite=Lax, Secure under https,
  scoped to the service's prefix, expiring SESSION_SECONDS after the login whatever is done with it), or, for
  ``api/status`` and ``metrics`` only, an ``Authorization: token ...`` / ``Bearer ...`` header holding a hub
  token (a script's or Prometheus's);
- and the hub said, for that login or token, that it holds one of the service's access scopes.

No session: the page redirects to the hub's login (through OAuth), ``api/status`` and ``metrics`` answer 401. A login
without access: 403, a plain sentence and nothing of the page.

What a reader with access sees depends on who they are (:attr:`~._oauth.Identity.sees_everyone`, decided at the
login and kept in the signed session): an admin (or a service, or a token that may read every user's servers)
gets the whole page, from the last published :class:`~.._history.StatusSnapshot`, rendered once per snapshot and
then served from memory, so readers never wait for the passes; anyone else gets their own servers and culls only
(:mod:`._user_view`), in the page and in ``api/status`` alike, and no ``metrics`` (403: they are the operators').
A :class:`~._pacer.Pacer` in front of it all keeps readers, however many and however eager, from taking more than
a small share of the thread the passes run in, and anonymous ones from taking a logged-in reader's share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._codes import PAGE_WORDING
from .._history import History, StatusSnapshot
from .._toml import rules_as_toml
from ._auth import LOGIN_SECONDS, SESSION_COOKIE, STATE_COOKIE, Auth, Refusal, Viewer
from ._oauth import OAuthFlow
from ._pacer import Pacer
from ._settings import StatusPageSettings
from ._user_values import UserView
from ._user_view import UserViews, format_period

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["SESSION_COOKIE", "STATE_COOKIE", "create_app", "json_bytes"]

log = logging.getLogger("trio_culler.web")

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
    environment.filters["period"] = format_period
    # How each decision code is worded: the one table logs, metrics and forecasts also read.
    environment.globals["wording"] = PAGE_WORDING
    environment.filters["shown"] = _format_value
    environment.filters["toml"] = rules_as_toml
    return environment


def _format_value(value: Any) -> str:
    """A configuration value as the operator writes it: ``true``, ``null``, ``3600``, a list as JSON; never a
    Python repr."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _format_when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 60:
        return "-" if seconds is None else f"{seconds:.2f} s"
    return format_period(timedelta(seconds=seconds))


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


def create_app(
    settings: StatusPageSettings,
    history: History,
    flow: OAuthFlow,
    *,
    secret_key: bytes,
    metrics: CollectorRegistry | None = None,
    users: UserViews | None = None,
) -> Pacer:
    """The ASGI app. ``secret_key`` signs cookies (a new one at each start: logins then start again).
    With ``metrics``, that registry is also served, in Prometheus's text format, at ``<prefix>metrics``.
    ``users`` builds the view of a user who does not see everyone (by default one that asks the hub nothing and
    shows what the culler remembers: for a page with no culler behind it)."""
    templates = _templates()
    page_template = templates.get_template("status.html")
    user_template = templates.get_template("user.html")
    views = users if users is not None else UserViews(None, history, None)
    auth = Auth(settings, flow, secret_key=secret_key)
    prefix = settings.prefix
    state_path = prefix if settings.callback_path.startswith(prefix) else "/"
    page = _Rendered(
        lambda snapshot: page_template.render(
            snapshot=snapshot, settings=settings, logout_url=f"{prefix}logout"
        ).encode("utf-8")
    )
    document = _Rendered(lambda snapshot: json_bytes(snapshot.to_json()))

    def user_page(view: UserView) -> bytes:
        return user_template.render(view=view, settings=settings, logout_url=f"{prefix}logout").encode("utf-8")

    def is_https(request: Request) -> bool:
        # Behind the hub's proxy the browser's scheme is in X-Forwarded-Proto; it can only make cookies stricter.
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"

    def set_cookie(response: Response, request: Request, name: str, value: str, *, max_age: int, path: str) -> None:
        secure = is_https(request)
        response.set_cookie(name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="lax")

    def plain_refusal(refusal: Refusal) -> Response:
        headers = {**_SECURITY_HEADERS, "Retry-After": "5"} if refusal.status == 503 else _SECURITY_HEADERS
        return _plain(
            refusal.status, f"{refusal.status} {_REASONS.get(refusal.status, 'Error')}: {refusal.message}\n", headers
        )

    def start_login(request: Request) -> Response:
        next_path = request.url.path if request.url.path.startswith(prefix) else prefix
        authorize_url, state_cookie = auth.begin_login(next_path)
        response = RedirectResponse(authorize_url, status_code=302, headers=_SECURITY_HEADERS)
        set_cookie(response, request, STATE_COOKIE, state_cookie, max_age=LOGIN_SECONDS, path=state_path)
        return response

    async def status_page(request: Request) -> Response:
        viewer = auth.session_viewer(request)
        if viewer is None:
            return start_login(request)
        body = page.get(history.snapshot) if viewer.everyone else user_page(await views.view(viewer.name))
        return Response(body, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)

    async def viewer_for_scripts(request: Request) -> Viewer | Response:
        """Who may read, by a session or a hub token in the request; else the answer to send instead."""
        viewer = auth.session_viewer(request)
        if viewer is not None:
            return viewer
        try:
            identity = await auth.token_identity(request)
        except Refusal as refusal:
            if refusal.status == 403:
                return _plain(403, _NO_ACCESS)
            if refusal.status != 401:
                return _json_refusal(refusal.status, refusal.message)
            identity = None
        if identity is None:
            return _json_refusal(401, "not logged in: log in at the page, or send a hub token")
        return Viewer.of(identity)

    async def status_document(request: Request) -> Response:
        viewer = await viewer_for_scripts(request)
        if isinstance(viewer, Response):
            return viewer
        if viewer.everyone:
            body = document.get(history.snapshot)
        else:
            body = json_bytes((await views.view(viewer.name)).to_json())
        return Response(body, media_type="application/json", headers=_SECURITY_HEADERS)

    async def metrics_text(request: Request) -> Response:
        viewer = await viewer_for_scripts(request)
        if isinstance(viewer, Response):
            return viewer
        if not viewer.everyone:
            # Counts over every user's servers: the operators' (admins, services such as Prometheus).
            return _plain(
                403,
                "403 Forbidden: the culler's metrics are for the hub's operators (admins, and services such as "
                "Prometheus); your own servers are at the page and at api/status.\n",
            )
        assert metrics is not None  # the route exists only with a registry
        # Imported here, as everywhere: prometheus-client is loaded only by a culler that serves metrics.
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST, headers=_SECURITY_HEADERS)

    async def oauth_callback(request: Request) -> Response:
        try:
            login = await auth.complete_login(request.query_params, request.cookies.get(STATE_COOKIE, ""))
        except Refusal as refusal:
            return plain_refusal(refusal)
        identity = login.identity
        if not identity.may_access(settings.access_scopes):
            log.warning(
                "Status page: %s logged in but may not see the page", identity.name, extra={"user": identity.name}
            )
            response = _plain(403, _NO_ACCESS)
        else:
            sees = "every user's servers" if identity.sees_everyone else "their own servers"
            log.info("Status page: %s logged in (%s)", identity.name, sees, extra={"user": identity.name})
            response = RedirectResponse(login.next_path, status_code=302, headers=_SECURITY_HEADERS)
            session = auth.new_session(identity)
            set_cookie(response, request, SESSION_COOKIE, session, max_age=settings.session_seconds, path=prefix)
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
    return Pacer(Starlette(routes=routes), classify=auth.pace_key)


#: What a login or a token without access gets: a plain sentence, and nothing of the page.
_NO_ACCESS = (
    "403 Forbidden: this account may not see the culler's status page.\n"
    "The hub grants access with the scope access:services!service=<this service's name>.\n"
)


def _plain(status: int, text: str, headers: dict[str, str] = _SECURITY_HEADERS) -> Response:
    return PlainTextResponse(text, status_code=status, headers=headers)


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}


def _json_refusal(status: int, message: str) -> Response:
    headers = dict(_SECURITY_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="JupyterHub"'
    elif status == 503:
        headers["Retry-After"] = "5"
    return Response(json_bytes({"error": message}), status_code=status, media_type="application/json", headers=headers)
