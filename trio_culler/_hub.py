"""HubClient: the hub's REST API, endpoint by endpoint, on the request engine of ``_http``.

::

    GET    {api}/                           the version (no token needed)       -> HubInfo
    GET    {api}/user                       who the token is, and its scopes    -> the owner's model
    GET    {api}/users?state&offset&limit   a page of users                     -> Page
    GET    {api}/users/{name}               one user (--explain)                -> User | None
    DELETE {api}/users/{name}/server        stop the default server             -> the hub's status
    DELETE {api}/users/{name}/servers/{s}   stop (or remove) a named server     -> the hub's status
    DELETE {api}/users/{name}               delete a user                       -> the hub's status
    POST   {api}/users/{name}/tokens        mint a token owned by a user        -> MintedToken
    DELETE {api}/users/{name}/tokens/{id}   revoke it                           -> the hub's status

This module builds the paths (each segment percent-encoded with nothing left safe) and reads the answers into
the culler's values; everything about sending them (the token, the limiter, deadlines, retries, caps and the
mapping of errors) is the engine's (:class:`~trio_culler._http.RequestEngine`). A request to a user's server
goes through :meth:`HubClient.get_elsewhere`, with the credential its caller has for that server, or none.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

import attrs
import httpx
import trio

from ._clients import HEADER_SAFE_RE, check_client_settings
from ._config import Config
from ._errors import HubProtocolError
from ._http import HubStatistics, RequestEngine, open_request_engine
from ._models import ModelError, User, parse_timestamp, structure_user
from ._scopes import parse_scopes

__all__ = [
    "PAGINATION_MEDIA_TYPE",
    "HubClient",
    "HubInfo",
    "HubStatistics",
    "MintedToken",
    "Page",
    "SkippedItem",
    "check_client_settings",
    "open_hub_client",
    "quote_segment",
]

#: The media type that asks a JupyterHub >= 2.0 for a page with ``_pagination`` instead of a plain list.
PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"

_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def quote_segment(segment: str) -> str:
    """Percent-encode one path segment with nothing left safe: ``/ # ? ; % @ +``, spaces, non-ASCII, and the
    dots of a name that is only ``.`` or ``..``."""
    quoted = quote(segment, safe="")
    if quoted in (".", ".."):
        # Dot-segments are removed by every RFC 3986 client, httpx included: user "." would turn
        # DELETE /users/./server into DELETE /users/server, which deletes the user called "server".
        return quoted.replace(".", "%2E")
    return quoted


@attrs.frozen
class HubInfo:
    version: str
    #: (major, minor, patch) when the version string could be read, else None (then the newest API is assumed).
    release: tuple[int, int, int] | None

    @property
    def has_state_filter(self) -> bool:
        return self.release is None or self.release >= (1, 3, 0)

    @property
    def has_pagination(self) -> bool:
        return self.release is None or self.release >= (2, 0, 0)


def parse_release(version: str) -> tuple[int, int, int] | None:
    match = _VERSION_RE.match(version)
    if match is None:
        return None
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


@attrs.frozen
class SkippedItem:
    """A list item that could not be read; it is not acted upon."""

    label: str
    problem: str


@attrs.frozen
class Page:
    users: Sequence[User]
    skipped: Sequence[SkippedItem]
    #: None for a plain-list answer (hubs before 2.0, or no pagination): then this page is everything.
    total: int | None
    offset: int
    limit: int | None


@attrs.frozen
class MintedToken:
    """A token the hub minted for a user. ``token`` is a secret: left out of ``repr``, never logged."""

    token: str = attrs.field(repr=False)
    id: str
    #: When the hub will refuse it; None: never (a hub without a maximum, asked for no lifetime).
    expires_at: datetime | None
    #: When the hub minted it, by the hub's clock (with ``expires_at``: the lifetime it granted).
    created: datetime | None = None
    #: The scopes the hub granted (it adds some to those asked for); None when its answer did not say.
    scopes: frozenset[str] | None = None


class HubClient:
    """The hub's endpoints; create it with :func:`open_hub_client`. ``http`` is the engine that sends."""

    def __init__(self, http: RequestEngine) -> None:
        self.http = http
        self.limiter: trio.CapacityLimiter = http.limiter
        self._base = http.base

    def statistics(self) -> HubStatistics:
        return self.http.statistics()

    async def get_elsewhere(self, kind: str, url: str, *, credential: str | None, max_body: int) -> tuple[int, bytes]:
        """GET ``url`` outside the hub's API with ``credential`` alone: see ``RequestEngine.get_elsewhere``."""
        return await self.http.get_elsewhere(kind, url, credential=credential, max_body=max_body)

    async def get_info(self, *, retries: int | None = None) -> HubInfo:
        """The hub's version (``GET /``, no token needed). ``retries=0``: one attempt, the caller retries."""
        response = await self.http.request("version", "GET", "/", retries=retries)
        model = self.http.json(response)
        version = model.get("version") if isinstance(model, dict) else None
        if not isinstance(version, str):
            raise HubProtocolError(f"GET {self._base}/: no version in the answer")
        return HubInfo(version, parse_release(version))

    async def get_token_owner(self, *, retries: int | None = None) -> dict[str, Any] | None:
        """Who the token is (``GET /user``): the owner's model, with the token's expanded ``scopes`` on
        JupyterHub 2+. Every valid token may read it; 401/403 means the token itself is refused. None when the
        hub has no such endpoint (404) or answers something that is not an object: the caller falls back."""
        response = await self.http.request("whoami", "GET", "/user", ok=_GET_USER_OK, retries=retries)
        if response.status_code == 404:
            return None
        model = self.http.json(response)
        return model if isinstance(model, dict) else None

    async def list_groups(self, *, offset: int, limit: int) -> Any:
        """``GET /groups`` (scope ``list:groups``): one page of the hub's groups, as the hub answered it (a
        ``_pagination`` page from JupyterHub 2, a plain list before); HubAuthError when the token may not list
        them."""
        target = f"/groups?{urlencode({'offset': offset, 'limit': limit})}"
        response = await self.http.request("groups", "GET", target, headers=_PAGINATED)
        return self.http.json(response)

    async def list_users(self, *, state: str | None, offset: int, limit: int | None, paginate: bool = True) -> Page:
        params: dict[str, str] = {}
        if state:
            params["state"] = state
        if paginate:
            params["offset"] = str(offset)
        if limit:
            params["limit"] = str(limit)
        target = f"/users?{urlencode(params)}" if params else "/users"
        response = await self.http.request("list", "GET", target, headers=_PAGINATED if paginate else ())
        body = self.http.json(response)
        if isinstance(body, list):
            items: list[Any] = body
            total = None
            page_limit = None
        elif isinstance(body, dict) and isinstance(body.get("items"), list):
            items = body["items"]
            pagination = body.get("_pagination")
            total, page_limit = _pagination(pagination)
            if total is None:
                raise HubProtocolError(
                    self.http.redact(f"GET {self._base}/users: unreadable _pagination {pagination!r:.200}")
                )
        else:
            raise HubProtocolError(f"GET {self._base}/users: expected a list or a page of users")
        users: list[User] = []
        skipped: list[SkippedItem] = []
        redact = self.http.redact
        for index, item in enumerate(items):
            try:
                users.append(structure_user(item))
            except ModelError as error:
                name = item.get("name") if isinstance(item, dict) else None
                where = f"item {offset + index} of the page at offset {offset}"
                if isinstance(name, str) and name:
                    label = _printable(name)
                elif name == "":
                    label = f"'' (an empty name, {where})"
                else:
                    label = where
                skipped.append(SkippedItem(redact(label), redact(str(error))))
        return Page(users, skipped, total, offset, page_limit)

    async def get_user(self, name: str) -> User | None:
        """One user's model (``GET /users/{name}``, for ``--explain``); None when the hub has no such user."""
        target = f"/users/{quote_segment(name)}"
        response = await self.http.request("get_user", "GET", target, ok=_GET_USER_OK)
        if response.status_code == 404:
            return None
        try:
            return structure_user(self.http.json(response))
        except ModelError as error:
            raise HubProtocolError(self.http.redact(f"GET {self._base}{target}: {error}")) from None

    async def stop_server(
        self,
        user: str,
        server: str,
        *,
        remove: bool = False,
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """DELETE the server; the hub's status: 204 (or 200) stopped, 202 still stopping, 404 already gone.
        ``before_retry``: awaited before the DELETE is sent again (see ``HttpEngine.request``)."""
        if server:
            target = f"/users/{quote_segment(user)}/servers/{quote_segment(server)}"
        else:
            target = f"/users/{quote_segment(user)}/server"
        if remove:
            response = await self.http.request(
                "remove",
                "DELETE",
                target,
                ok=_STOP_OK,
                headers=_JSON_BODY,
                body=b'{"remove": true}',
                before_retry=before_retry,
            )
        else:
            response = await self.http.request("stop", "DELETE", target, ok=_STOP_OK, before_retry=before_retry)
        return response.status_code

    async def delete_user(self, user: str) -> int:
        """DELETE the user; the hub's status: 204 (or 200) deleted, 404 already gone."""
        target = f"/users/{quote_segment(user)}"
        response = await self.http.request("delete_user", "DELETE", target, ok=_DELETE_USER_OK)
        return response.status_code

    async def mint_token(self, user: str, *, scopes: Sequence[str], expires_in: int | None, note: str) -> MintedToken:
        """``POST /users/{user}/tokens``: a new token owned by ``user`` with ``scopes``, living ``expires_in``
        seconds (None: as long as the hub allows). The hub checks the scopes against the owner's own
        permissions (400 when it will not assign them, or when ``expires_in`` exceeds its maximum); the
        culler's role needs ``tokens`` (403 without).

        A POST is not idempotent: after a timeout the hub may have minted a token whose answer was lost, so it
        is not sent again then (a second one would be left behind too; each expires on its own)."""
        target = f"/users/{quote_segment(user)}/tokens"
        body = json.dumps({"scopes": list(scopes), "expires_in": expires_in, "note": note}).encode()
        response = await self.http.request("mint", "POST", target, ok=_MINT_OK, headers=_JSON_BODY, body=body)
        return _minted_token(self.http.json(response), f"POST {self._base}{target}")

    async def revoke_token(self, user: str, token_id: str) -> int:
        """``DELETE /users/{user}/tokens/{id}``; the hub's status: 204 revoked, 404 already gone (revoked,
        expired, or its user deleted)."""
        target = f"/users/{quote_segment(user)}/tokens/{quote_segment(token_id)}"
        response = await self.http.request("revoke", "DELETE", target, ok=_REVOKE_OK)
        return response.status_code


def _printable(text: str) -> str:
    """``text`` as it can be logged and encoded: a lone surrogate (from a JSON ``\\udXXX`` escape) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_PAGINATED: Final = (("Accept", PAGINATION_MEDIA_TYPE),)
_JSON_BODY: Final = (("Content-Type", "application/json"),)
_GET_USER_OK: Final = frozenset({200, 404})
_STOP_OK: Final = frozenset({200, 202, 204, 404})
_DELETE_USER_OK: Final = frozenset({200, 204, 404})
_MINT_OK: Final = frozenset({200, 201})
_REVOKE_OK: Final = frozenset({200, 204, 404})


def _pagination(value: Any) -> tuple[int | None, int | None]:
    if not isinstance(value, dict):
        return None, None
    total, limit = value.get("total"), value.get("limit")
    if type(total) is not int or total < 0 or type(limit) is not int or limit <= 0:
        return None, None
    return total, limit


def _minted_token(model: Any, what: str) -> MintedToken:
    """The hub's answer to a mint, or HubProtocolError: an answer that cannot be read is never used."""
    if not isinstance(model, dict):
        raise HubProtocolError(f"{what}: the answer is not a token model")
    token, token_id = model.get("token"), model.get("id")
    # The token will travel in a header: a value that cannot would be quoted by the error httpx raises.
    if not isinstance(token, str) or not HEADER_SAFE_RE.match(token):
        raise HubProtocolError(f"{what}: no usable token in the answer")
    if type(token_id) is int:
        token_id = str(token_id)  # JupyterHub 1.x numbered its tokens
    if not isinstance(token_id, str) or not token_id:
        raise HubProtocolError(f"{what}: no token id in the answer")
    try:
        expires_at = _optional_timestamp(model.get("expires_at"))
        created = _optional_timestamp(model.get("created"))
    except (TypeError, ValueError):
        raise HubProtocolError(f"{what}: unreadable expires_at or created in the answer") from None
    return MintedToken(token, token_id, expires_at, created, parse_scopes(model.get("scopes")))


def _optional_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(value)
    return parse_timestamp(value)


@asynccontextmanager
async def open_hub_client(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[HubClient]:
    """A HubClient for ``config``; ``transport`` replaces the network (e.g. FakeHub's MockTransport) and stays
    its caller's to close."""
    async with open_request_engine(config, transport=transport) as http:
        yield HubClient(http)
