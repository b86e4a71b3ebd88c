"""Rules per user, group, server and profile: data read once, matched by pure functions, first match wins.

A rule has *match keys* (all given keys must match) and *settings* (what changes for what it matches)::

    {"users": ["vip-*", "svc-backup"], "cull": False}            # never culled, never deleted
    {"groups": ["overnight"], "timeout": 86400}
    {"user_options": {"profile": "gpu"}, "timeout": 900, "max_age": 14400}
    {"servers": ["scratch-*"], "timeout": 600, "remove": True}

Match keys: ``users`` (globs on the user name), ``groups`` (any of these group names), ``servers`` (globs on the
server name, ``""`` being the default server; ``*`` matches it too), ``admin`` (true or false), ``user_options``
(every given key equal to the server's ``user_options``). Settings: ``timeout``, ``max_age`` (0: none), ``cull``
(false: exempt, never culled and never deleted; true: idle culling on whatever ``--cull-default-servers`` /
``--cull-named-servers`` say), ``remove`` (delete culled named servers), ``cull_users`` (delete the user).

A server is decided by the first rule whose keys all match it and its user; a user (for ``cull_users``) by the
first rule that matches it without ``servers`` or ``user_options`` keys, which describe servers. Nothing matched:
the global options. The matched rule resolves to an effective :class:`~trio_culler.Policy`, computed once per
rule, so the decision functions are the same with or without rules.

The table is structured by its own cattrs converter (unknown keys forbidden, no coercion): every problem is
reported as one line naming the rule's index and key, e.g. ``rules[2].timeout: expected a number of seconds``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NewType

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ConfigError, HubAuthError
from ._models import Server, User
from ._policy import Policy
from ._time import as_number

__all__ = [
    "FIELD_SCOPES",
    "MatchedRule",
    "MissingFieldError",
    "Rule",
    "RuleTable",
    "group_check_lines",
    "structure_rules",
    "unknown_groups",
]

#: What a rule needs to read from the hub's models, and the scope that makes the hub show it. A model without
#: the field is not "no groups": a rule that spares a group must never be skipped silently.
FIELD_SCOPES: Mapping[str, str] = {
    "groups": "read:users:groups",
    "admin": "read:users:name",
    "user_options": "read:servers",
}

UserGlob = NewType("UserGlob", str)
ServerGlob = NewType("ServerGlob", str)
GroupName = NewType("GroupName", str)


class RuleError(ValueError):
    """A value cattrs structured but a rule cannot use; its message is shown as is."""


class MissingFieldError(HubAuthError):
    """The hub's models lack a field a rule matches on: a missing scope, treated like a 403 for the pass."""

    kind = "scope"

    def __init__(self, field: str, user: str) -> None:
        self.field = field
        self.scope = FIELD_SCOPES[field]
        super().__init__(
            f"a rule matches on {field!r}, but the hub's user model for {user!r} has no {field!r}: "
            f"grant the culler's role the scope {self.scope} (nothing is culled until then)"
        )


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else dict(value)


@attrs.frozen(kw_only=True)
class Rule:
    """One row of the table. ``None`` means "not given": a key that does not constrain, a setting that does
    not change the global option."""

    users: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    servers: tuple[str, ...] | None = None
    admin: bool | None = None
    user_options: Mapping[str, Any] | None = attrs.field(default=None, converter=_frozen_mapping, hash=False)
    timeout: float | None = None
    max_age: float | None = None
    cull: bool | None = None
    remove: bool | None = None
    cull_users: bool | None = None

    @property
    def match_keys(self) -> tuple[str, ...]:
        return tuple(key for key in MATCH_KEYS if getattr(self, key) is not None)

    @property
    def is_server_rule(self) -> bool:
        """Whether the rule describes servers, and so never decides about a user as a whole."""
        return self.servers is not None or self.user_options is not None

    def describe(self) -> str:
        """A short label for logs, ``--explain`` and the status page: ``groups=overnight -> timeout=86400``."""
        return f"{self._given(MATCH_KEYS)} -> {self.describe_settings()}"

    def describe_settings(self) -> str:
        """What the rule sets, without whom it matches: ``timeout=86400``, or ``global options``."""
        return self._given(SETTING_KEYS) or "global options"

    def _given(self, keys: tuple[str, ...]) -> str:
        return ", ".join(f"{key}={_show(getattr(self, key))}" for key in keys if getattr(self, key) is not None)

    def as_dict(self) -> dict[str, Any]:
        """The rule as it would be written (JSON-ready), without the keys not given."""
        written = attrs.asdict(self, recurse=False, filter=lambda _field, value: value is not None)
        for key, value in written.items():
            if isinstance(value, tuple):
                written[key] = list(value)
            elif isinstance(value, float):
                written[key] = as_number(value)
            elif isinstance(value, Mapping):
                written[key] = dict(value)
        return written


MATCH_KEYS = ("users", "groups", "servers", "admin", "user_options")
SETTING_KEYS = ("timeout", "max_age", "cull", "remove", "cull_users")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(repr(item) if item == "" else str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(as_number(value))
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))
    return str(value)


# --- Structuring -----------------------------------------------------------------------------------------------


def _name(*, what: str, empty_ok: bool = False, glob: bool = True) -> Any:
    def hook(value: Any, _type: Any) -> str:
        if type(value) is not str:
            raise TypeError(f"expected a {what} (string), got {type(value).__name__}")
        if not value and not empty_ok:
            raise RuleError(f"an empty {what} matches nothing")
        # fnmatch turns a pattern that no string can match (an empty range such as `[z-a]`) into `(?!)`.
        if glob and "(?!)" in fnmatch.translate(value):
            raise RuleError(f"{what} {value!r} cannot match any name")
        return value

    return hook


def _seconds(value: Any, _type: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise RuleError(f"expected a number of seconds >= 0, not {value!r}")
    return float(value)


def _strict_bool(value: Any, _type: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(UserGlob, _name(what="user-name glob"))
    converter.register_structure_hook(ServerGlob, _name(what="server-name glob", empty_ok=True))
    converter.register_structure_hook(GroupName, _name(what="group name", glob=False))
    converter.register_structure_hook(bool, _strict_bool)

    def names(inner: Any) -> Any:
        # cattrs' own tuple hook does the elements (and names the failing index); in front of it, what cattrs
        # would not refuse: a string (it would iterate it into characters) and an empty list.
        tuple_type = tuple[inner, ...]
        elements = converter.get_structure_hook(tuple_type)

        def hook(value: Any, _type: Any) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            if not value:
                raise RuleError("an empty list matches nothing")
            return elements(value, tuple_type)  # type: ignore[no-any-return]

        return hook

    for inner in (UserGlob, ServerGlob, GroupName):
        converter.register_structure_hook(tuple[inner, ...] | None, _optional(names(inner)))  # type: ignore[valid-type]

    def options(value: Any, _type: Any) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table of option names to values, got {type(value).__name__}")
        if not value:
            raise RuleError("an empty table matches nothing")
        return dict(value)

    # The element types are NewTypes only here, so that a Rule built in Python takes plain strings and numbers.
    rule_fn = make_dict_structure_fn(
        Rule,
        converter,
        _cattrs_forbid_extra_keys=True,
        users=override(struct_hook=_optional(names(UserGlob))),
        groups=override(struct_hook=_optional(names(GroupName))),
        servers=override(struct_hook=_optional(names(ServerGlob))),
        user_options=override(struct_hook=_optional(options)),
        timeout=override(struct_hook=_optional(_seconds)),
        max_age=override(struct_hook=_optional(_seconds)),
    )

    def structure_rule(value: Any, _type: Any) -> Rule:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table of keys, got {type(value).__name__}")
        rule = rule_fn(value, Rule)
        if not rule.match_keys:
            raise RuleError(f"a rule needs at least one match key ({', '.join(MATCH_KEYS)}); it would match everyone")
        return rule

    converter.register_structure_hook(Rule, structure_rule)
    return converter


def _optional(hook: Any) -> Any:
    def optional(value: Any, type_: Any) -> Any:
        return None if value is None else hook(value, type_)

    return optional


_CONVERTER = _make_converter()


def _format(error: BaseException, type_: type | None) -> str:
    if isinstance(error, RuleError | TypeError) and not isinstance(error, cattrs.BaseValidationError):
        return str(error)
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        known = ", ".join((*MATCH_KEYS, *SETTING_KEYS))
        return f"unknown key {', '.join(sorted(error.extra_fields))} (a rule has: {known})"
    return cattrs.v.format_exception(error, type_)


def structure_rules(value: Any, *, source: str = "rules") -> tuple[Rule, ...]:
    """A list of rule tables (or :class:`Rule` objects) -> rules, or :class:`ConfigError` in one line naming the
    rule's index and key: ``c.IdleCuller.rules: rules[1].timeout: expected a number of seconds, got str``."""
    if isinstance(value, list | tuple) and all(isinstance(rule, Rule) for rule in value):
        return tuple(value)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{source}: expected a list of rules, got {type(value).__name__}")
    try:
        return tuple(_CONVERTER.structure(list(value), list[Rule]))
    except cattrs.BaseValidationError as error:
        problems = cattrs.transform_error(error, path="rules", format_exception=_format)
        raise ConfigError(f"{source}: {'; '.join(_path_first(problem) for problem in problems)}") from None


def _path_first(problem: str) -> str:
    # cattrs writes "message @ path"; an operator looks for the path first.
    message, _, path = problem.rpartition(" @ ")
    return f"{path}: {message}" if message else problem


# --- Matching (pure) -------------------------------------------------------------------------------------------


@attrs.frozen
class MatchedRule:
    """The rule that decided, with the effective policy it gives. ``index`` is the rule's position (0-based,
    as in ``rules[index]`` of the error messages); None means no rule matched: the global options."""

    index: int | None
    rule: Rule | None
    policy: Policy

    @property
    def label(self) -> str:
        """``rules[1] (groups=overnight -> timeout=86400)`` or ``global options``."""
        if self.rule is None:
            return "global options"
        return f"rules[{self.index}] ({self.rule.describe()})"

    @property
    def own_label(self) -> str:
        """The label as the server's own user may see it (the notice put on their server): which rule and what
        it sets, never whom it matches, since that names other users, groups and profiles:
        ``rules[1] (timeout=86400)``. The same as the status page's user view (``web._user_view.own_rule``)."""
        if self.rule is None:
            return "global options"
        return f"rules[{self.index}] ({self.rule.describe_settings()})"


@attrs.frozen
class _Compiled:
    index: int
    rule: Rule
    policy: Policy
    users: re.Pattern[str] | None
    servers: re.Pattern[str] | None
    groups: frozenset[str] | None

    def matches(self, user: User, server: Server | None) -> bool:
        rule = self.rule
        if self.users is not None and self.users.match(user.name) is None:
            return False
        if self.groups is not None and (user.groups is None or self.groups.isdisjoint(user.groups)):
            return False
        if rule.admin is not None and user.admin is not rule.admin:
            return False
        if server is None:
            return not rule.is_server_rule
        if self.servers is not None and self.servers.match(server.name) is None:
            return False
        if rule.user_options is not None:
            options = server.user_options
            if options is None:
                return False
            for key, value in rule.user_options.items():
                if key not in options or not _same(options[key], value):
                    return False
        return True


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, although Python says True == 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _any_glob(globs: Sequence[str] | None) -> re.Pattern[str] | None:
    if globs is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


def effective_policy(base: Policy, rule: Rule) -> Policy:
    """The global policy with a rule's settings applied."""
    changes: dict[str, Any] = {}
    if rule.timeout is not None:
        changes["timeout"] = timedelta(seconds=rule.timeout)
    if rule.max_age is not None:
        changes["max_age"] = timedelta(seconds=rule.max_age) if rule.max_age else None
    if rule.cull is False:
        changes["exempt"] = True
    elif rule.cull is True:
        # An explicit `cull = true` culls what it matches even where a kind toggle is off.
        changes["cull_default_servers"] = changes["cull_named_servers"] = True
    if rule.remove is not None:
        changes["remove_named_servers"] = rule.remove
    if rule.cull_users is not None:
        changes["cull_users"] = rule.cull_users
    return attrs.evolve(base, **changes)


class RuleTable:
    """The rules compiled against a base policy: globs to regular expressions, each rule's policy resolved."""

    def __init__(self, rules: Iterable[Rule], base: Policy) -> None:
        self.rules = tuple(rules)
        self.base = base
        self._compiled = tuple(
            _Compiled(
                index,
                rule,
                effective_policy(base, rule),
                _any_glob(rule.users),
                _any_glob(rule.servers),
                None if rule.groups is None else frozenset(rule.groups),
            )
            for index, rule in enumerate(self.rules)
        )
        self._global = MatchedRule(None, None, base)
        #: The model fields some rule matches on that a token may not see.
        self.needed_fields: frozenset[str] = frozenset(
            field for field in FIELD_SCOPES for rule in self.rules if getattr(rule, field) is not None
        )
        #: Whether some rule lets users be deleted (then users without servers must be listed too).
        self.may_cull_users: bool = base.cull_users or any(rule.cull_users for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check_visible(self, user: User) -> None:
        """Raise :class:`MissingFieldError` when ``user``'s model lacks a field some rule matches on."""
        for field in self.needed_fields:
            if field == "groups" and user.groups is None:
                raise MissingFieldError(field, user.name)
            if field == "admin" and user.admin is None:
                raise MissingFieldError(field, user.name)
            if field == "user_options" and any(s.user_options is None for s in user.servers.values()):
                raise MissingFieldError(field, user.name)

    def for_server(self, user: User, server: Server | None) -> MatchedRule:
        """The first rule matching this server of this user, or the global options. No server: the first rule
        without server keys matching ``user`` (:meth:`for_user`)."""
        for compiled in self._compiled:
            if compiled.matches(user, server):
                return MatchedRule(compiled.index, compiled.rule, compiled.policy)
        return self._global

    def for_user(self, user: User) -> MatchedRule:
        """The first rule without server keys matching ``user``, or the global options (for ``cull_users``)."""
        return self.for_server(user, None)


# --- Group names the hub does not have (pure) -------------------------------------------------------------------


def unknown_groups(rules: Iterable[Rule], known: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The group names the rules match on that are not among ``known`` (the hub's groups), each with the indexes
    of the rules that name it, in the order the rules name them. A rule on a group that does not exist matches
    nobody, silently: a typo sends that group's users to the next rule that matches, or the global options."""
    present = frozenset(known)
    missing: dict[str, list[int]] = {}
    for index, rule in enumerate(rules):
        for name in rule.groups or ():
            if name not in present:
                indexes = missing.setdefault(name, [])
                if index not in indexes:
                    indexes.append(index)
    return {name: tuple(indexes) for name, indexes in missing.items()}


#: Why the group names could not be checked (``known`` is None): what the culler says once.
GROUPS_UNCHECKED = (
    "the culler's token may not list the hub's groups (scope list:groups): the group names in the rules cannot "
    "be checked; a name the hub does not have matches nobody"
)


def group_check_lines(rules: Iterable[Rule], known: Iterable[str] | None) -> list[str]:
    """What to tell the operator about the group names in ``rules``, given the hub's groups (``known``; None when
    the token may not list them): one line naming every unknown group and its rules, or the line that says they
    cannot be checked, or nothing (every name exists, or no rule matches on groups). ``--explain`` prints these
    lines; a long-running culler logs them at start and at every pass while a name is still unknown."""
    rules = tuple(rules)
    if not any(rule.groups for rule in rules):
        return []
    if known is None:
        return [GROUPS_UNCHECKED]
    missing = unknown_groups(rules, known)
    if not missing:
        return []
    named = "; ".join(
        f"{name!r} ({', '.join(f'rules[{index}]' for index in indexes)})" for name, indexes in missing.items()
    )
    what, it = ("a group", "it") if len(missing) == 1 else ("groups", "them")
    return [
        f"the rules name {what} the hub does not have: {named}; no user can match a rule through {it}, so the "
        f"users meant for {it} fall to the next rule that matches them, or the global options"
    ]
