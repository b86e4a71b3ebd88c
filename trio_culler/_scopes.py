"""What the culler's token must be allowed to do, and whether it is: pure functions over two tables.

A token with the wrong scopes is the most common way a culler fails in the field, and it fails silently: the hub
hides from a token every field it may not read, so a culler that took "no ``servers`` key" for "no servers"
would report a clean pass that culled nothing. So the culler asks the hub who its token is (``GET /user``, whose
``scopes`` JupyterHub 2+ fills with the token's expanded scopes) and compares them with :data:`NEEDS`; where
the hub cannot say (older hubs, a ``scopes`` value that is not a list of strings), the user models themselves
are checked against :data:`FIELDS`: a field a decision needs that the model lacks is a missing scope.

Adding a feature that needs a scope is one row in :data:`NEEDS` (and, when the scope shows as a field of the
user model, one row in :data:`FIELDS`), e.g.::

    Need("read:users:groups", "rules on groups", "read users' groups", lambda c: "groups" in c.rule_table.needed_fields)

``applies`` receives the :class:`~trio_culler.Config` and says whether the configured culler uses the feature;
the README's scope table lists the same rows (a test keeps them in step). Fields that only rules read
(``groups``, ``admin`` and ``user_options`` on a rule) are checked on the models by ``_rules.RuleTable`` too.

Scopes are compared the way JupyterHub grants them:

- **implication**: a held scope grants its subscopes (``admin:users`` grants ``delete:users`` and, through
  ``users``, ``read:users`` and ``list:users``), after JupyterHub's hierarchy in ``jupyterhub/scopes.py``
  (:data:`SUBSCOPES` holds the part of it that reaches a scope the culler uses). The hub already sends
  ``scopes`` expanded; implying again is harmless and keeps a hand-written list honest.
- **filters**: ``read:servers!user=alice`` grants ``read:servers`` for alice only. The culler acts on the
  users ``list:users`` shows it, so a need is met when its scope is held without a filter, or, when the listing
  itself is filtered (``list:users!group=students``, a culler for one group), for at least every filter the
  listing has. ``read:servers!user=alice`` beside an unfiltered ``list:users`` is a missing ``read:servers``:
  the culler would list everybody and see nobody's servers but alice's; ``read:servers!group=a`` beside
  ``list:users!group=a`` and ``list:users!group=b`` is missing for ``group=b``, and the error says so.

Every need is blocking: a pass that could not do what it is configured to do is not run. ``--inspect-kernels``
needs ``tokens`` (to mint each server's own credential, see ``_credentials``) and never ``access:servers``, which
opens every user's server: a culler that showed such a token to one server would hand its user every other
user's server. :func:`risky_scopes` names such scopes when the culler's role holds them anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import HubAuthError

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "FIELDS",
    "NEEDS",
    "SUBSCOPES",
    "Field",
    "Missing",
    "MissingScopes",
    "Need",
    "describe_missing",
    "grants",
    "holds",
    "missing_fields",
    "missing_scopes",
    "needed_scopes",
    "parse_scopes",
    "risky_scopes",
]

#: Which scopes a scope grants, for the scopes that lead to one the culler uses or warns about (JupyterHub 2+,
#: unchanged to 6.x).
SUBSCOPES: Mapping[str, tuple[str, ...]] = {
    "admin:users": ("admin:auth_state", "users", "read:roles:users", "delete:users"),
    "users": ("read:users", "list:users", "users:activity"),
    "list:users": ("read:users:name",),
    "read:users": ("read:users:name", "read:users:groups", "read:users:activity"),
    "users:activity": ("read:users:activity",),
    "read:roles": ("read:roles:users", "read:roles:services", "read:roles:groups"),
    "admin:servers": ("admin:server_state", "servers"),
    "servers": ("read:servers", "start:servers", "delete:servers"),
    "read:servers": ("read:users:name",),
    "tokens": ("read:tokens",),
    # What reaches access:servers, which a culler's role should not hold (see risky_scopes).
    "shares": ("access:servers", "read:shares", "users:shares", "groups:shares"),
}


def _always(_config: Config) -> bool:
    return True


@attrs.frozen
class Need:
    """One scope that one feature needs; ``why`` completes "needed to ..."."""

    scope: str
    feature: str
    why: str
    applies: Callable[[Config], bool] = _always


@attrs.frozen
class Field:
    """A key of the hub's user model that a decision reads, and the scope without which the hub omits it."""

    key: str
    scope: str
    why: str
    applies: Callable[[Config], bool] = _always


#: The scopes each feature needs: the README's table, row for row.
NEEDS: tuple[Need, ...] = (
    Need("list:users", "culling", "list the users"),
    Need("read:servers", "culling", "see users' servers and their activity"),
    Need("read:users:activity", "culling", "read users' last activity"),
    Need("delete:servers", "culling", "stop servers"),
    Need("delete:users", "--cull-users", "delete idle users", lambda c: c.rule_table.may_cull_users),
    Need("read:users", "--cull-users", "read when a user was created", lambda c: c.rule_table.may_cull_users),
    Need(
        "read:users:groups",
        "rules on groups",
        "read users' groups",
        lambda c: "groups" in c.rule_table.needed_fields,
    ),
    Need(
        "tokens",
        "--inspect-kernels",
        "mint each server's own token to ask it about its kernels",
        lambda c: c.inspect_kernels,
    ),
    # With --warn-url or a warn_hook the notices are one channel of several: a role without tokens skips them
    # with a WARNING (_engine._notices_allowed). Alone they are the warning, and a pass must not cull unwarned.
    Need(
        "tokens",
        "--warn-before",
        "mint each server's own token to deliver its warning",
        lambda c: bool(c.warn_before) and c.warn_servers and c.warn_url is None and c.warn_hook is None,
    ),
)

#: What a user model without the key means, for hubs that cannot tell a token its scopes (one row for each of
#: ``_models.SCOPED_USER_KEYS``, the keys the models note as hidden).
FIELDS: tuple[Field, ...] = (
    Field("servers", "read:servers", "see users' servers and their activity"),
    Field("last_activity", "read:users:activity", "read users' last activity"),
    Field("created", "read:users", "read when a user was created", lambda c: c.rule_table.may_cull_users),
    Field(
        "admin",
        "read:users:name",
        "spare admin users (--cull-admin-users=false)",
        lambda c: c.rule_table.may_cull_users and not c.cull_admin_users,
    ),
)


@attrs.frozen
class Missing:
    """A scope the configured culler needs and the token lacks; ``held_for`` lists the filters it has it for,
    ``lacking_for`` the filters of the listing it lacks it for (when the listing itself is filtered)."""

    scope: str
    feature: str
    why: str
    held_for: tuple[str, ...] = ()
    lacking_for: tuple[str, ...] = ()


class MissingScopes(HubAuthError):
    """The token lacks scopes the configured features need: the pass is not run, it would lie."""

    kind = "scope"

    def __init__(self, missing: Iterable[Missing]) -> None:
        self.missing = tuple(missing)
        super().__init__(describe_missing(self.missing))


def parse_scopes(value: Any) -> frozenset[str] | None:
    """The ``scopes`` of a ``GET /user`` answer, or None when the hub did not say (absent, or not a list of
    strings): then the user models are checked instead."""
    if not isinstance(value, list) or not all(isinstance(scope, str) and scope for scope in value):
        return None
    return frozenset(value)


def _split(scope: str) -> tuple[str, str]:
    base, _, scope_filter = scope.partition("!")
    return base, scope_filter


def grants(held: Iterable[str]) -> dict[str, frozenset[str]]:
    """Every scope ``held`` grants, implied ones included, mapped to the filters it is held with (``""``: none).

    A filter carries over to what the scope implies: ``admin:users!group=a`` grants ``delete:users!group=a``."""
    found: dict[str, set[str]] = {}
    pending = [_split(scope) for scope in held]
    while pending:
        base, scope_filter = pending.pop()
        filters = found.setdefault(base, set())
        if scope_filter in filters:
            continue
        filters.add(scope_filter)
        pending.extend((sub, scope_filter) for sub in SUBSCOPES.get(base, ()))
    return {base: frozenset(filters) for base, filters in found.items()}


def needed_scopes(config: Config) -> tuple[Need, ...]:
    """The rows of :data:`NEEDS` that apply to ``config``."""
    return tuple(need for need in NEEDS if need.applies(config))


def _covers(filters: frozenset[str], listing: frozenset[str]) -> bool:
    # Unfiltered beats everything; otherwise every filter the listing shows users through must be held too.
    return "" in filters or (bool(listing) and "" not in listing and listing <= filters)


def holds(held: Iterable[str], scope: str) -> bool:
    """Whether the scopes ``held`` grant ``scope`` for every user the listing shows, as a need is met."""
    granted = grants(held)
    return _covers(granted.get(scope, frozenset()), granted.get("list:users", frozenset()))


def missing_scopes(held: Iterable[str], config: Config) -> tuple[Missing, ...]:
    """The needs of ``config`` that the scopes ``held`` do not meet, in table order, one per scope."""
    granted = grants(held)
    listing = granted.get("list:users", frozenset())
    missing: list[Missing] = []
    reported: set[str] = set()
    for need in needed_scopes(config):
        filters = granted.get(need.scope, frozenset())
        if need.scope in reported or _covers(filters, listing):
            continue
        reported.add(need.scope)
        held_for = tuple(sorted(f for f in filters if f))
        lacking_for = tuple(sorted(listing - filters)) if "" not in listing else ()
        missing.append(Missing(need.scope, need.feature, need.why, held_for, lacking_for))
    return tuple(missing)


#: Scopes a culler's role should not hold, and why.
_RISKY: Mapping[str, str] = {
    "access:servers": "it opens users' servers to the culler's token, and a user who captured the token could "
    "act as any other user; --inspect-kernels needs tokens instead",
}


def risky_scopes(held: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``(scope as held, why)`` for each scope in ``held`` that a culler should not have (implied ones too)."""
    granted = grants(held)
    found = []
    for scope, why in _RISKY.items():
        for scope_filter in sorted(granted.get(scope, ())):
            found.append((f"{scope}!{scope_filter}" if scope_filter else scope, why))
    return tuple(found)


def missing_fields(hidden: Iterable[str], config: Config) -> tuple[Missing, ...]:
    """The scopes implied by the user-model keys ``hidden`` (absent from a model) that ``config`` needs."""
    absent = set(hidden)
    missing: list[Missing] = []
    reported: set[str] = set()
    for field in FIELDS:
        if field.key in absent and field.applies(config) and field.scope not in reported:
            reported.add(field.scope)
            feature = next((need.feature for need in NEEDS if need.scope == field.scope), "culling")
            missing.append(Missing(field.scope, feature, field.why))
    return tuple(missing)


def describe_missing(missing: Iterable[Missing]) -> str:
    """One line: each missing scope, the feature that needs it and why."""
    parts = []
    for item in missing:
        qualifiers = [f"held only for {', '.join(item.held_for)}"] if item.held_for else []
        if item.lacking_for:
            qualifiers.append(f"not for {', '.join(item.lacking_for)}")
        held = f"; {', '.join(qualifiers)}" if qualifiers else ""
        parts.append(f"{item.scope} ({item.feature}: to {item.why}{held})")
    return (
        f"the culler's token lacks {'; '.join(parts)}. Add the missing scopes to the culler's role; "
        "the culler checks again before every pass"
    )
