"""What the fake hub's token may do: its scopes, the requests they allow and the user-model keys they show.

JupyterHub filters every user model by the reader's scopes (a key the token may not read is absent, not
empty) and refuses requests the scopes do not cover; ``GET /user`` tells a token its own scopes (JupyterHub 2+).
Only unfiltered scopes count here; filters are the culler's business (``trio_culler._scopes``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._scopes import grants
from ._render import Json

__all__ = ["FULL_SCOPES", "TokenScopes", "token_model"]

#: What a FakeHub's token may do unless told otherwise: everything the culler can use.
FULL_SCOPES: tuple[str, ...] = (
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
    "admin:users",
    "access:servers",
)

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
    """The scopes granted (implied ones included) and the user-model keys they show; recomputed only when
    the scopes change (a test may fix the culler's role while the hub serves)."""

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


def token_model(scopes: Iterable[str], *, reports_scopes: bool) -> Json:
    """``GET /user`` for the culler's service token."""
    model: Json = {"kind": "service", "name": "fake-culler", "admin": False, "roles": ["fake-culler"]}
    if reports_scopes:
        model["scopes"] = sorted(scopes)
    return model
