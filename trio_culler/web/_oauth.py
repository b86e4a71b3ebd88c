"""The service side of the hub's OAuth authorization-code flow, as JupyterHub's own ``HubOAuth`` does it.

::

    browser --GET page--> us: no session -> a state cookie (signed: state, next), 302 to the hub's authorize
    browser --login at the hub--> hub: 302 to our callback with ?code=...&state=...
    us: state == the browser's state cookie and not used before -> POST code + verifier + our client
        credentials to {api}/oauth2/token -> the user's token -> GET {api}/user with it -> name, scopes, admin
        -> allowed iff the token holds an access scope of this service -> signed session cookie, which says
        whether it sees every user (Identity.sees_everyone) or only its own servers

Each piece is the standard library's or httpx's: ``hashlib`` for the S256 challenge, ``urllib.parse.urlencode``
for the query, httpx for the requests and form encoding. The culler's token travels only as the client secret of
the token request, as the hub requires; the user's token is used for one request and then forgotten (never
stored, never logged, never sent to the browser). The state, the verifier and the memory of logins and
credentials are ``_auth.py``'s.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import trio

from ._settings import StatusPageSettings

__all__ = ["EVERYONE_SCOPE", "Identity", "OAuthError", "OAuthFlow", "OAuthRefused", "pkce_challenge"]

#: The kinds of token owner the hub names; any other value is read as a user (the narrower view).
KINDS = frozenset({"user", "service"})


class OAuthError(Exception):
    """The hub did not complete a login. The message names the step, never a token or a code."""


class OAuthRefused(OAuthError):
    """The hub answered, and said no: the code or the token is not (or no longer) good. Unlike an
    unreachable hub, asking again with the same credential gets the same answer."""


#: What the hub answers for a code or a token it does not accept (400 invalid_grant, 401, 403).
REFUSALS = frozenset({400, 401, 403})


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``code_verifier`` (RFC 7636, section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


#: A token holding this scope without a filter may read every user's servers at the hub itself; the page's full
#: view shows no more than that (who ran, what was culled and why, what comes next).
EVERYONE_SCOPE = "read:servers"


@attrs.frozen
class Identity:
    """Who holds a token, as the hub's ``GET /user`` says: the name, the token's scopes, and (JupyterHub 2.0 and
    later list them for every token, its ``identify`` scopes being added for the purpose) the owner's ``admin``
    flag and ``kind`` (``user`` or ``service``)."""

    name: str
    scopes: frozenset[str]
    admin: bool = False
    kind: str = "user"

    def may_access(self, access_scopes: Iterable[str]) -> bool:
        # `access:services` without a filter grants every service (what an admin's token may hold).
        return "access:services" in self.scopes or any(scope in self.scopes for scope in access_scopes)

    @property
    def sees_everyone(self) -> bool:
        """Whether the page shows this identity every user's servers, or only its own.

        What JupyterHub 6.1 answers for a login through the page's OAuth (checked against a real hub: see the
        README's "Who sees what") settles it. The token it issues to the page holds the same scopes for an admin
        as for anyone (``access:services!service=<name>`` and the ``identify`` scopes of its owner), so the
        scopes cannot tell an admin; the ``admin`` flag the hub adds to the model can. Beside admins: a
        *service* (Prometheus's token, a dashboard's), which only the hub's operator can create and which has
        no servers of its own; and a token holding :data:`EVERYONE_SCOPE` unfiltered, with which its holder
        could read every user's servers from the hub anyway (a non-admin operator's role, asked for by the
        service's ``oauth_client_allowed_scopes``: a plain user's token then gets it filtered to their own)."""
        return self.admin or self.kind == "service" or EVERYONE_SCOPE in self.scopes


class OAuthFlow:
    """Requests to the hub for one login: the authorize URL, the code exchange, the identity."""

    def __init__(self, settings: StatusPageSettings, *, api_url: str, client_secret: str, client: httpx.AsyncClient):
        self.settings = settings
        self._api_url = api_url.rstrip("/")
        self._secret = client_secret
        self._client = client

    def authorize_url(self, state: str, challenge: str) -> str:
        query = urlencode(
            {
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.callback_url,
                "response_type": "code",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self.settings.authorize_url}?{query}"

    async def exchange(self, code: str, verifier: str) -> str:
        """The user's access token for an authorization code."""
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self._secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.callback_url,
            "code_verifier": verifier,
        }
        reply = await self._json("POST", f"{self._api_url}/oauth2/token", "token exchange", data=form)
        token = reply.get("access_token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthError("the hub's token answer has no access_token")
        return token

    async def identify(self, token: str) -> Identity:
        """Who holds ``token``, and which scopes it has, as the hub says."""
        model = await self._json(
            "GET", f"{self._api_url}/user", "identity", headers={"Authorization": f"Bearer {token}"}
        )
        if not isinstance(model, dict):
            raise OAuthError("the hub's user model is not an object")
        name, scopes = model.get("name"), model.get("scopes")
        if not isinstance(name, str) or not name:
            raise OAuthError("the hub's user model has no name")
        if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
            # A hub before 2.0 does not list scopes: nobody can be shown to have access.
            raise OAuthError("the hub's user model lists no scopes")
        kind = model.get("kind")
        # Only a true `admin` makes an admin: anything else the model says (missing, null, "yes") is not one.
        admin = model.get("admin") is True
        return Identity(name, frozenset(scopes), admin=admin, kind=kind if kind in KINDS else "user")

    async def _json(self, method: str, url: str, step: str, **kwargs: Any) -> Any:
        try:
            with trio.fail_after(self._client.timeout.read or 30):
                response = await self._client.request(method, url, **kwargs)
        except (httpx.HTTPError, trio.TooSlowError) as error:
            raise OAuthError(f"{step}: the hub could not be reached ({type(error).__name__})") from None
        if response.status_code in REFUSALS:
            raise OAuthRefused(f"{step}: the hub answered {response.status_code}")
        if response.status_code != 200:
            raise OAuthError(f"{step}: the hub answered {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise OAuthError(f"{step}: the hub's answer is not JSON") from None
