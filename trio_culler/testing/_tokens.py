"""The tokens the fake hub mints for its users (``POST /users/{name}/tokens``) and revokes
(``DELETE /users/{name}/tokens/{id}``), with JupyterHub's checks, in JupyterHub's order:

- the body is a JSON object; ``scopes`` a list of strings; ``expires_in`` null or an integer (else 400);
- with a maximum lifetime (``token_expires_in_max_seconds``): ``expires_in`` above it is 400 (``token
  expires_in: 900 must not exceed 600``), null means the maximum; without one, null means never;
- every scope asked for must be within the owner's own permissions (400 ``Not assigning requested scopes ...``):
  a token can never do more than its user;
- the answer (201) lists the scopes granted: those asked for, plus the owner's name and groups, as the hub adds.

Whether the requester may ask at all (the ``tokens`` scope) is the caller's check. Expiry is by
``trio.current_time()`` (so trio's autojump clock moves it); ``expires_at`` in the answer is by the hub's clock.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import httpx

from ._permissions import covers, owner_scopes
from ._render import error, minted_token_model
from ._routes import INVALID_JSON
from ._state import FakeToken, FakeUser

__all__ = ["TokenRegistry"]


class TokenRegistry:
    """The live minted tokens, by id and by secret."""

    def __init__(self) -> None:
        self._by_id: dict[str, FakeToken] = {}
        self._by_secret: dict[str, FakeToken] = {}
        self._next_id = 1
        self.minted = 0
        self.revoked = 0

    def mint(
        self, owner: FakeUser, body: object, *, now: datetime, at: float, max_seconds: int | None
    ) -> httpx.Response:
        """Answer a mint for ``owner`` whose JSON body is ``body`` (see the module docstring)."""
        if body is INVALID_JSON or not isinstance(body, dict | None):
            return error(400, "Invalid JSON in body of request")
        options = body or {}
        scopes = options.get("scopes")
        if scopes is None:
            scopes = ["inherit"]  # JupyterHub's default: everything the owner may do
        if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
            return error(400, f"token scopes must be null or a list of strings, not {scopes!r}")
        expires_in = options.get("expires_in")
        if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool)):
            return error(400, f"token expires_in must be null or integer, not {expires_in!r}")
        if max_seconds:
            if expires_in is None:
                expires_in = max_seconds
            elif expires_in > max_seconds:
                return error(400, f"token expires_in: {expires_in} must not exceed {max_seconds}")
        limit = owner_scopes(owner)
        granted = set(limit) if scopes == ["inherit"] else set(scopes)
        excess = sorted(scope for scope in granted if not covers(limit, scope))
        if excess:
            return error(400, f"Not assigning requested scopes {','.join(excess)} not held by User {owner.name}")
        granted |= {f"read:users:name!user={owner.name}", f"read:users:groups!user={owner.name}"}
        token = FakeToken(
            id=f"a{self._next_id}",
            user=owner.name,
            scopes=frozenset(granted),
            note=str(options.get("note") or ""),
            created=now,
            expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
            refused_from=None if expires_in is None else at + expires_in,
            token=secrets.token_hex(16),
        )
        self._next_id += 1
        self._by_id[token.id] = self._by_secret[token.token] = token
        self.minted += 1
        return httpx.Response(201, json=minted_token_model(token, with_secret=True))

    def revoke(self, user: str, token_id: str, *, at: float) -> httpx.Response:
        token = self._by_id.get(token_id)
        if token is None or token.user != user or self._expired(token, at):
            return error(404, f"No such token: {token_id}")
        self._forget(token)
        self.revoked += 1
        return httpx.Response(204)

    def find(self, secret: str, *, at: float) -> FakeToken | None:
        """The live token whose secret is ``secret``; None when unknown, revoked or expired."""
        token = self._by_secret.get(secret)
        if token is None or self._expired(token, at):
            return None
        return token

    def __len__(self) -> int:
        """Tokens neither revoked nor seen expired."""
        return len(self._by_id)

    def live(self, *, at: float) -> tuple[FakeToken, ...]:
        return tuple(token for token in self._by_id.values() if not self._expired(token, at))

    def forget_user(self, user: str) -> None:
        """A deleted user's tokens go with them."""
        for token in [token for token in self._by_id.values() if token.user == user]:
            self._forget(token)

    def _expired(self, token: FakeToken, at: float) -> bool:
        if token.refused_from is None or at < token.refused_from:
            return False
        self._forget(token)
        return True

    def _forget(self, token: FakeToken) -> None:
        self._by_id.pop(token.id, None)
        self._by_secret.pop(token.token, None)
