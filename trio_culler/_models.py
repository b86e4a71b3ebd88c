"""The hub's user and server models as the culler reads them, and the one converter that builds them.

Every field the culler does not strictly need may be missing (the token's scopes decide which keys the hub
sends); a missing key means "not visible", never a reason to cull. A present key of the wrong type, or a
timestamp that does not parse, makes the whole user unreadable: :func:`structure_user` raises
:class:`ModelError` and the caller skips that user. Unknown keys are ignored: the hub adds fields over time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

__all__ = [
    "SCOPED_USER_KEYS",
    "ModelError",
    "Server",
    "User",
    "parse_timestamp",
    "strict_hook",
    "structure_user",
    "timestamp_hook",
]

#: The keys of a user model that the hub leaves out for a token without the scope to read them, and that some
#: decision reads: a model without one has it hidden (noted in :attr:`User.hidden`), never empty. Each is a row
#: of ``_scopes.FIELDS``, which names its scope.
SCOPED_USER_KEYS = frozenset({"servers", "last_activity", "created", "admin"})


class ModelError(ValueError):
    """A user model that cannot be read safely. The message says where, never what the token is."""


@attrs.frozen(kw_only=True)
class Server:
    """One active (ready or pending) server of a user. ``name`` is ``""`` for the default server."""

    name: str = ""
    last_activity: datetime | None = None
    started: datetime | None = None
    pending: str | None = None
    ready: bool | None = None
    url: str | None = None
    #: The options the server was started with (``{"profile": "gpu"}``); None when the model has no such key.
    user_options: Mapping[str, Any] | None = None
    #: False when the model has no ``last_activity`` key at all: the token may not read it (it lacks
    #: ``read:users:activity``). Unlike ``null`` ("no activity yet"), that says nothing about idleness.
    activity_visible: bool = True
    #: The hub's model of this server, as received: what ``cull_arbiter_hook`` is given.
    model: Any = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def is_ready(self) -> bool:
        # Hubs before 0.9 had no `ready` key; a server with a URL was the implicit sign of readiness.
        return bool(self.url) if self.ready is None else self.ready


@attrs.frozen(kw_only=True)
class User:
    name: str
    admin: bool | None = None
    created: datetime | None = None
    last_activity: datetime | None = None
    servers: Mapping[str, Server] = attrs.field(factory=dict)
    #: The user's groups; None when the model has no ``groups`` key (a token without ``read:users:groups``).
    groups: tuple[str, ...] | None = None
    #: False when the model shows neither ``servers`` nor ``server`` (a token without ``read:servers``): the
    #: user's servers are unknown, which is not the same as having none.
    servers_visible: bool = True
    #: The hub's model of this user, as received: what a 4-argument ``cull_arbiter_hook`` and ``warn_hook`` get.
    model: Any = attrs.field(factory=dict, eq=False, repr=False)
    #: The keys a decision may read (:data:`SCOPED_USER_KEYS`) that the model lacks: the hub hides what the token may
    #: not read, so each is a missing scope, never "no servers" or "never active".
    hidden: frozenset[str] = frozenset()


def parse_timestamp(value: str) -> datetime:
    """Parse the hub's ISO 8601 timestamps; one without a zone is UTC, as the hub means it."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed


def strict_hook(kind: type) -> Any:
    # cattrs' default hooks coerce (str(5) == "5", bool("false") is True); on data that decides what to stop,
    # a value of the wrong type must be refused, not converted.
    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return hook


def timestamp_hook(value: Any, _type: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is not str:
        raise TypeError(f"expected a timestamp string, got {type(value).__name__}")
    return parse_timestamp(value)


def _optional_names(value: Any, _type: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) is not list or any(type(item) is not str for item in value):
        raise TypeError("expected a list of names")
    return tuple(value)


def _optional_object(value: Any, _type: Any) -> Mapping[str, Any] | None:
    if value is None:
        return {}  # present but null: no options (absent is None, "not visible", and never reaches here)
    if type(value) is not dict:
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _optional(kind: type) -> Any:
    strict = strict_hook(kind)

    def hook(value: Any, type_: Any) -> Any:
        return None if value is None else strict(value, type_)

    return hook


def _make_converter(*, detailed: bool) -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=False)
    converter.register_structure_hook(str, strict_hook(str))
    converter.register_structure_hook(bool, strict_hook(bool))
    converter.register_structure_hook(str | None, _optional(str))
    converter.register_structure_hook(bool | None, _optional(bool))
    converter.register_structure_hook(datetime | None, timestamp_hook)
    converter.register_structure_hook(tuple[str, ...] | None, _optional_names)
    converter.register_structure_hook(Mapping[str, Any] | None, _optional_object)
    server_fn = make_dict_structure_fn(Server, converter, _cattrs_detailed_validation=detailed)

    def structure_server(value: Any, _type: Any) -> Server:
        if not isinstance(value, dict):
            raise TypeError(f"expected a server object, got {type(value).__name__}")
        return server_fn({**value, "model": value, "activity_visible": "last_activity" in value}, Server)

    converter.register_structure_hook(Server, structure_server)

    def structure_servers(value: Any, _type: Any) -> Mapping[str, Server]:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object of servers, got {type(value).__name__}")
        servers = {}
        for name, model in value.items():
            # The key is authoritative: it is what the DELETE URL is built from.
            server = structure_server(model, Server)
            servers[name] = server if server.name == name else attrs.evolve(server, name=name)
        return servers

    converter.register_structure_hook(
        User,
        make_dict_structure_fn(
            User,
            converter,
            servers=override(struct_hook=structure_servers),
            _cattrs_detailed_validation=detailed,
        ),
    )
    return converter


# One converter for the hub boundary. The fast one runs on every user; the detailed one only re-reads a user
# that failed, to say precisely where.
_FAST = _make_converter(detailed=False)
_DETAILED = _make_converter(detailed=True)
# Looked up once: the converter's dispatch per call is a measurable part of reading 100,000 users.
_structure_fast_user = _FAST.get_structure_hook(User)


def _with_legacy_servers(model: dict[str, Any]) -> dict[str, Any]:
    """JupyterHub < 0.9 without named servers has no ``servers`` key: describe the default server from the user.

    Notes the watched keys the model lacks as ``hidden`` (checked first: it is one set operation per user)."""
    if not model.keys() >= SCOPED_USER_KEYS:
        hidden = SCOPED_USER_KEYS - model.keys()
        if "server" in model:
            hidden = hidden - {"servers"}  # a hub < 0.9: the default server is described by the user
        if hidden:
            model = {**model, "hidden": hidden}
    if "servers" in model:
        return model
    if "server" not in model:
        return {**model, "servers_visible": False}
    if not model["server"]:
        return model
    default = {"name": "", "pending": model.get("pending"), "url": model.get("server")}
    if "last_activity" in model:
        default["last_activity"] = model["last_activity"]
    return {**model, "servers": {"": default}}


def _check_names(user: User) -> User:
    """Names are what the DELETE URLs are built from: one that is empty would address the wrong resource
    (``DELETE /users/`` instead of a user), one that is not valid Unicode (a lone surrogate, which a JSON
    ``\\udXXX`` escape can produce) cannot be encoded into a URL at all."""
    if not user.name:
        raise ModelError("user.name: empty")
    # Runs for every user of every pass: the names are checked first, the words for one that fails made after.
    for name in (user.name, *user.servers):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            where = "user.name" if name is user.name else f"user.servers[{name!r}]"
            raise ModelError(f"{where}: not valid Unicode (a lone surrogate)") from None
    return user


def structure_user(model: Any) -> User:
    """Build a :class:`User` from one item of ``GET /users``, or raise :class:`ModelError`."""
    if not isinstance(model, dict):
        raise ModelError(f"expected a user object, got {type(model).__name__}")
    model = {**_with_legacy_servers(model), "model": model}
    try:
        user = _structure_fast_user(model, User)
    except Exception:
        pass
    else:
        return _check_names(user)
    try:
        _DETAILED.structure(model, User)
    except cattrs.BaseValidationError as error:
        raise ModelError("; ".join(cattrs.transform_error(error, path="user"))) from None
    except Exception as error:  # pragma: no cover - the detailed pass raises validation errors only
        raise ModelError(str(error)) from None
    raise ModelError("unreadable user model")  # pragma: no cover - the fast pass failed, so must this one
