"""Who may do what at the fake hub: the culler's token (its scopes, the requests they allow, the user-model keys
they show), the scopes a user's roles grant, and whether a set of scopes reaches one server.

JupyterHub filters every user model by the reader's scopes (a key the token may not read is absent, not empty),
refuses requests the scopes do not cover, and tells a token its own scopes (``GET /user``, JupyterHub 2+). The
culler's own requests are judged by its unfiltered scopes (filters on them are the culler's business:
``trio_culler._scopes``); a token's reach to a server also honours ``user=`` and ``server=`` filters, which is
how a per-server token works (``access:servers!server=alice/`` opens alice's default server and nothing else).
``group=`` filters reach nothing here: fake users have no groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._scopes import grants
from ._render import Json
from ._state import FakeUser

__all__ = ["FULL_SCOPES", "TokenScopes", "covers", "owner_scopes", "token_model"]

#: What a FakeHub's token may do unless told otherwise: everything the culler can use, and no access:servers
#: (so its single-user servers refuse the culler's own token, as a real one without that scope is refused).
FULL_SCOPES: tuple[str, ...] = (
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
    "admin:users",
    "tokens",
)

#: What JupyterHub's default ``user`` role (``self``) grants a user on their own account, filtered to them.
_SELF: tuple[str, ...] = (
    "read:users",
    "users:activity",
    "servers",
    "access:servers",
    "tokens",
    "read:users:name",
    "read:users:groups",
)
#: What the ``admin`` role adds for an admin user (the part that matters here), unfiltered.
_ADMIN: tuple[str, ...] = ("admin:users", "admin:servers", "tokens", "access:servers", "list:users")

#: Which user-model keys each scope shows, as JupyterHub's user model filters them.
_USER_KEYS_BY_SCOPE: Mapping[str, frozenset[str]] = {
    "read:users": frozenset(
        {"kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity", "auth_state"}
    ),
    "read:users:name": frozenset({"kind", "name", "admin"}),
    "read:users:groups": frozenset({"kind", "name", "groups"}),
    "read:users:activity": frozenset({"kind", "name", "last_activity"}),
    "read:servers": frozenset({"kind", "name", "servers"}),
    "read:roles:users": frozenset({"kind", "name", "roles", "admin"}),
}


class TokenScopes:
    """The culler token's unfiltered scopes (implied ones included) and the user-model keys they show;
    recomputed only when the scopes change (a test may fix the culler's role while the hub serves)."""

    def __init__(self) -> None:
        self._for: frozenset[str] | None = None
        self.granted: frozenset[str] = frozenset()
        self.user_keys: frozenset[str] = frozenset()

    def update(self, scopes: frozenset[str]) -> TokenScopes:
        if scopes is not self._for:
            self.granted = frozenset(scope for scope, filters in grants(scopes).items() if "" in filters)
            self.user_keys = frozenset().union(*(_USER_KEYS_BY_SCOPE.get(scope, ()) for scope in self.granted))
            self._for = scopes
        return self

    def visible(self, model: Json) -> Json:
        """``model`` as this token sees it."""
        if self.user_keys >= model.keys():
            return model
        return {key: value for key, value in model.items() if key in self.user_keys}


def covers(held: Iterable[str], wanted: str) -> bool:
    """Whether the scopes ``held`` grant ``wanted`` (``base`` or ``base!user=u`` or ``base!server=u/s``)."""
    base, _, wanted_filter = wanted.partition("!")
    filters = grants(held).get(base, frozenset())
    if "" in filters:
        return True
    if not wanted_filter:
        return False
    if wanted_filter in filters:
        return True
    kind, _, value = wanted_filter.partition("=")
    # A server's filter is "owner/name": its owner's filter reaches it too.
    return kind == "server" and f"user={value.partition('/')[0]}" in filters


def owner_scopes(user: FakeUser) -> frozenset[str]:
    """What ``user``'s roles grant: the limit of what a token minted for them may carry."""
    if user.scopes is not None:
        return user.scopes
    own = {f"{scope}!user={user.name}" for scope in _SELF}
    return frozenset(own | set(_ADMIN)) if user.admin else frozenset(own)


def token_model(scopes: Iterable[str], *, reports_scopes: bool) -> Json:
    """``GET /user`` for the culler's service token."""
    model: Json = {"kind": "service", "name": "fake-culler", "admin": False, "roles": ["fake-culler"]}
    if reports_scopes:
        model["scopes"] = sorted(scopes)
    return model
