"""Who may read the status page: sessions, hub tokens that scripts present, and logins under way.

Every visitor is anonymous until the hub says otherwise, and nothing an anonymous visitor sends may cost the
culler more than a bounded amount or undo what a real user is doing. So:

- **No memory per login started.** The state of a login (a random ``state`` and the path to return to) travels
  in a signed, HttpOnly cookie that expires after :data:`LOGIN_SECONDS`; the PKCE verifier is not stored at all
  but derived from the state with the page's key (``HMAC(key, state)``): only this process can compute it, and
  neither the browser nor the hub's logs ever see it before the code exchange. However many anonymous GETs come
  in, no login under way is forgotten. The callback is accepted when its ``state`` equals the cookie's (login
  CSRF) and was not used before (replay): each used state is remembered until its cookie expires.
- **Hub lookups for credentials never seen are budgeted**, tokens and logins apart (:data:`LOOKUPS`): a flood of
  random tokens or codes costs the hub at most ``burst + rate * seconds`` requests, answered 503 beyond, and
  cannot spend the logins' budget. What the hub refused (a token, a code, or a token whose owner may not see
  the page) is remembered by its SHA-256 for :data:`REFUSED_SECONDS`, answered without asking the hub again.
- **What was verified is remembered**, so the :class:`~._pacer.Pacer` can give it a budget of its own
  (:meth:`Auth.pace_key`): session cookies whose signature was checked (until the session ends), and tokens
  the hub accepted with access (checked with the hub again after :data:`TOKEN_CHECK_SECONDS`).

Each memory is an :class:`~.._expiring.ExpiringMap`. Those filled by anonymous requests (refused credentials,
used states) are filled at most once per budgeted hub lookup, and are sized for everything those budgets admit
within their lifetimes: none of their entries is ever evicted before it expires. The others hold only what the
hub accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping

import attrs
import itsdangerous
import trio
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.types import Scope

from .._expiring import ExpiringMap
from ._oauth import Identity, OAuthError, OAuthFlow, OAuthRefused, pkce_challenge
from ._pacer import Budget, admit
from ._settings import StatusPageSettings

__all__ = ["LOGIN_SECONDS", "LOOKUPS", "SESSION_COOKIE", "STATE_COOKIE", "Auth", "Login", "Refusal", "Viewer"]

log = logging.getLogger("trio_culler.web")

SESSION_COOKIE = "trio-culler-session"
STATE_COOKIE = "trio-culler-oauth-state"
#: How long a login may take at the hub's login form: the state cookie's life.
LOGIN_SECONDS = 600
#: Hub lookups of credentials the page has not seen (for tokens, and apart for logins) ...
LOOKUPS = Budget(rate=2, burst=10)
#: ... of which a request waits at most this long for its turn (then 503).
LOOKUP_MAX_DELAY = 2.0
#: How long the hub's "no" to a token or a code is taken as the answer.
REFUSED_SECONDS = 60.0
#: A token the hub accepted is checked with it again after this long (a revoked token loses the page) ...
TOKEN_CHECK_SECONDS = 60.0
#: ... and known, for its budget at the pacer, for this long after its last check.
TOKEN_KNOWN_SECONDS = 600.0
#: Tokens with access remembered at once (only the hub's accepted ones: filling it takes a token with access).
TOKENS_KEPT = 256
#: Sessions whose cookie was checked, remembered at once (only sessions of users with access exist).
SESSIONS_KEPT = 1024


class Refusal(Exception):
    """The answer to send instead of the page: ``status`` and a sentence that names no credential."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen
class Viewer:
    """Who reads the page, as the hub said at their login or for their token: their name, and whether they see
    every user's servers (:attr:`Identity.sees_everyone`) or only their own."""

    name: str
    everyone: bool

    @classmethod
    def of(cls, identity: Identity) -> Viewer:
        return cls(identity.name, identity.sees_everyone)


@attrs.frozen
class _Known:
    identity: Identity
    checked_at: float


@attrs.frozen
class Login:
    """A login that completed at the hub: who, and where they were going."""

    identity: Identity
    next_path: str


class _Lookups:
    """One budget of hub lookups (see :data:`LOOKUPS`)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._tat = 0.0

    async def wait_turn(self, what: str) -> None:
        now = trio.current_time()
        admitted = admit(now, [self._tat], [self.budget], LOOKUP_MAX_DELAY)
        if admitted is None:
            raise Refusal(503, f"too many {what} to check with the hub at once; try again in a few seconds")
        start, self._tat = admitted
        if start > now:
            await trio.sleep_until(start)


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).digest()


class Auth:
    def __init__(self, settings: StatusPageSettings, flow: OAuthFlow, *, secret_key: bytes) -> None:
        self.settings = settings
        self.flow = flow
        self._key = secret_key
        self._sessions = itsdangerous.URLSafeTimedSerializer(secret_key, salt="trio-culler-session")
        self._states = itsdangerous.URLSafeTimedSerializer(secret_key, salt="trio-culler-oauth-state")
        # Cookies and states carry wall-clock timestamps; the lambda reads time.time at each call.
        wall_clock = lambda: time.time()  # noqa: E731
        self._checked_sessions: ExpiringMap[str, Viewer] = ExpiringMap(
            size=SESSIONS_KEPT, lifetime=settings.session_seconds, clock=wall_clock
        )
        self._tokens: ExpiringMap[bytes, _Known] = ExpiringMap(
            size=TOKENS_KEPT, lifetime=TOKEN_KNOWN_SECONDS, clock=trio.current_time
        )
        self._token_lookups = _Lookups(LOOKUPS)
        self._login_lookups = _Lookups(LOOKUPS)
        # Filled once per budgeted lookup at most, and once per known token's check (each known token is
        # checked once a TOKEN_CHECK_SECONDS): never evicted before REFUSED_SECONDS.
        self._refused: ExpiringMap[bytes, int] = ExpiringMap(
            size=2 * LOOKUPS.most_in(REFUSED_SECONDS) + TOKENS_KEPT,
            lifetime=REFUSED_SECONDS,
            clock=trio.current_time,
        )
        # Filled once per login lookup at most: never evicted before the state cookie expires.
        self._used_states: ExpiringMap[str, bool] = ExpiringMap(
            size=LOOKUPS.most_in(LOGIN_SECONDS), lifetime=LOGIN_SECONDS, clock=wall_clock
        )

    # --- sessions ---------------------------------------------------------------------------------------

    def session_viewer(self, request: Request) -> Viewer | None:
        """The viewer of the request's session cookie, if it is one this process signed and has not expired."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        known = self._checked_sessions.get(raw)
        if known is not None:
            return known
        try:
            value, signed_at = self._sessions.loads(raw, max_age=self.settings.session_seconds, return_timestamp=True)
        except itsdangerous.BadData:
            return None  # tampered, expired, or signed by an earlier process
        user = value.get("user") if isinstance(value, dict) else None
        if not isinstance(user, str):
            return None
        # Signed by this key, so written by new_session: anything but a true "all" is the narrower view.
        viewer = Viewer(user, value.get("all") is True)
        self._checked_sessions.put(raw, viewer, until=signed_at.timestamp() + self.settings.session_seconds)
        return viewer

    def session_user(self, request: Request) -> str | None:
        """The name of the request's session's user (:meth:`session_viewer`)."""
        viewer = self.session_viewer(request)
        return None if viewer is None else viewer.name

    def new_session(self, identity: Identity) -> str:
        """A session cookie's value for a user with access, known at once (its first request is verified). It
        says whether the user sees everyone: decided at the login, for the session's life."""
        signed_at = int(time.time())  # what itsdangerous puts in the signature
        viewer = Viewer.of(identity)
        raw = self._sessions.dumps({"user": viewer.name, "all": viewer.everyone})
        self._checked_sessions.put(raw, viewer, until=signed_at + self.settings.session_seconds)
        return raw

    # --- scripts' hub tokens ----------------------------------------------------------------------------

    async def token_identity(self, request: Request) -> Identity | None:
        """The owner of the hub token in the request's Authorization header (``token`` or ``Bearer``), who
        may see the page; None without such a header. Raises :class:`Refusal` for any other token."""
        token = _bearer(request.headers)
        if token is None:
            return None
        digest = _digest(token)
        now = trio.current_time()
        known = self._tokens.get(digest)
        if known is not None and now - known.checked_at < TOKEN_CHECK_SECONDS:
            return known.identity
        refused = self._refused.get(digest)
        if refused is not None:
            raise _token_refusal(refused)
        if known is None:
            await self._token_lookups.wait_turn("new tokens")
        try:
            identity = await self.flow.identify(token)
        except OAuthRefused as error:
            log.info("Status API: a token was refused: %s", error)
            self._tokens.pop(digest)
            self._refused.put(digest, 401)
            raise _token_refusal(401) from None
        except OAuthError as error:
            log.warning("Status API: a token could not be checked: %s", error)
            raise Refusal(503, "the hub could not check the token; try again later") from None
        if not identity.may_access(self.settings.access_scopes):
            self._tokens.pop(digest)
            self._refused.put(digest, 403)
            raise _token_refusal(403)
        self._tokens.put(digest, _Known(identity, trio.current_time()))
        return identity

    # --- logins -----------------------------------------------------------------------------------------

    def begin_login(self, next_path: str) -> tuple[str, str]:
        """``(the hub's authorize URL, the state cookie's value)`` for a browser without a session."""
        state = secrets.token_urlsafe(32)
        cookie = self._states.dumps({"state": state, "next": next_path})
        return self.flow.authorize_url(state, pkce_challenge(self._verifier(state))), cookie

    async def complete_login(self, query: Mapping[str, str], state_cookie: str) -> Login:
        """The callback: checks the state, exchanges the code, reads who logged in. Raises :class:`Refusal`."""
        state, code = query.get("state", ""), query.get("code", "")
        try:
            value, signed_at = self._states.loads(state_cookie, max_age=LOGIN_SECONDS, return_timestamp=True)
        except itsdangerous.BadData:
            value, signed_at = None, None
        ours = value.get("state") if isinstance(value, dict) else None
        next_path = value.get("next") if isinstance(value, dict) else None
        # The state must be the one this browser was sent off with (login CSRF), and unused (replay).
        if (
            signed_at is None
            or not isinstance(ours, str)
            or not isinstance(next_path, str)
            or not isinstance(state, str)
            or not hmac.compare_digest(ours.encode(), state.encode())
            or state in self._used_states
            or not code
        ):
            log.warning("Status page: refused an OAuth callback with a missing, forged or used state")
            raise Refusal(400, f"this login is unknown, used or expired. Start again at {self.settings.prefix}")
        code_digest = _digest(code)
        if self._refused.get(code_digest) is not None:
            raise Refusal(502, "the hub did not complete the login (token exchange: the hub refused this code)")
        await self._login_lookups.wait_turn("logins")
        if state in self._used_states:  # the same callback, twice at once
            raise Refusal(400, f"this login is unknown, used or expired. Start again at {self.settings.prefix}")
        self._used_states.put(state, True, until=signed_at.timestamp() + LOGIN_SECONDS)
        try:
            token = await self.flow.exchange(code, self._verifier(state))
        except OAuthError as error:
            if isinstance(error, OAuthRefused):
                self._refused.put(code_digest, 400)
            raise _login_failed(error) from None
        try:
            identity = await self.flow.identify(token)
        except OAuthError as error:
            raise _login_failed(error) from None
        if not next_path.startswith(self.settings.prefix):
            next_path = self.settings.prefix
        return Login(identity, next_path)

    def _verifier(self, state: str) -> str:
        # 43 characters of base64url: within PKCE's 43 to 128 (RFC 7636, section 4.1).
        mac = hmac.new(self._key, b"trio-culler-pkce\0" + state.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    # --- the pacer's key --------------------------------------------------------------------------------

    def pace_key(self, scope: Scope) -> str | None:
        """The budget a request draws on at the pacer: its session's or its token's when the page verified
        them before (a lookup in memory, nothing more), else None (anonymous)."""
        headers = Headers(scope=scope)
        cookies = headers.get("cookie")
        if cookies:
            raw = cookie_parser(cookies).get(SESSION_COOKIE)
            if raw and raw in self._checked_sessions:
                return f"session:{raw}"
        token = _bearer(headers)
        if token is not None:
            digest = _digest(token)
            if digest in self._tokens:
                return f"token:{digest.hex()}"
        return None


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() not in ("token", "bearer") or not token:
        return None
    return token


def _login_failed(error: OAuthError) -> Refusal:
    log.warning("Status page: login failed: %s", error)
    return Refusal(502, f"the hub did not complete the login ({error})")


def _token_refusal(status: int) -> Refusal:
    if status == 403:
        return Refusal(403, "this token's owner may not see the culler's status page")
    return Refusal(401, "the hub does not accept this token")
