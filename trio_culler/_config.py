"""The culler's configuration: one frozen object, validated once, shared by the CLI and embedders."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._errors import ConfigError
from ._policy import Policy
from ._rules import Rule, RuleTable, structure_rules
from ._time import as_number

# Policy lives in _policy (a leaf); it is named here too for the modules that import it from the configuration.
__all__ = ["DEFAULT_STATE_FILE", "DEFAULT_URL", "ArbiterHook", "Config", "Policy", "WarnHook"]

#: Where a hub listens for its services when nothing says otherwise (JupyterHub's own default hub_bind_url).
DEFAULT_URL = "http://127.0.0.1:8081/hub/api"

#: ``c.IdleCuller.cull_arbiter_hook``: called as ``hook(inactive=..., inactive_limit=..., server=...)`` with the
#: time since last activity, the timeout in seconds and the hub's server model (a dict); returns (or awaits to)
#: True to cull. Same contract as the original's.
ArbiterHook = Callable[..., bool | Awaitable[bool]]

#: ``c.IdleCuller.warn_hook``: called as ``hook(user=..., server=..., cull_at=...)`` with the hub's user and server
#: models (dicts) and the time (an aware datetime) the server will be culled; may be async. Its result is ignored.
#: A hook that names a parameter ``event`` hears cancellations and culls too (``_deliver``).
WarnHook = Callable[..., object]

#: Where the long-running culler keeps who was warned, relative to its working directory (the CLI's default;
#: ``Config.state_file`` is None, memory only, unless set).
DEFAULT_STATE_FILE = "trio-culler-state.json"

#: The smallest interval between passes: ``--cull-every=0`` with a tiny timeout must not become a busy loop.
MIN_CULL_EVERY = 1.0


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"--{attribute.name.replace('_', '-')} must be a number >= 0, not {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--{attribute.name.replace('_', '-')} must be a number > 0, not {value!r}")


def _http_url(_instance: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"--url must be an http:// or https:// URL, not {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ConfigError(f"--url {value!r} is not a valid URL: {error}") from None
    if not parts.hostname:
        raise ConfigError(f"--url {value!r} names no host")
    if parts.query or parts.fragment or any(c.isspace() for c in value):
        # Request paths are appended to it: a query, a fragment or a space would end up inside them.
        raise ConfigError(f"--url must be the API's base URL, without query, fragment or spaces, not {value!r}")


def _structure_rules(value: Any) -> tuple[Rule, ...]:
    return structure_rules(value, source="c.IdleCuller.rules")


def _warn_url(_instance: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--warn-url must be an http:// or https:// URL, not {value!r}")


def _optional_path(value: str | None) -> str | None:
    return value or None


def _accepts(function: Callable[..., object] | None, *names: str) -> bool:
    if function is None:
        return False
    try:
        inspect.signature(function).bind(*names)
    except (TypeError, ValueError):
        return False
    return True


def _public_url(_instance: object, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ConfigError(f"--public-url {value!r} is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--public-url must be the hub's public http:// or https:// URL, not {value!r}")
    if parts.query or parts.fragment or any(c.isspace() for c in value):
        raise ConfigError(f"--public-url must be a base URL, without query, fragment or spaces, not {value!r}")


@attrs.frozen(kw_only=True)
class Config:
    """Everything one culler needs. Option names and defaults are those of ``jupyterhub-idle-culler``.

    ``api_token`` is excluded from ``repr`` and from :meth:`public_dict` so that it cannot leak into logs.
    """

    api_token: str = attrs.field(repr=False)
    url: str = attrs.field(default=DEFAULT_URL, validator=_http_url)
    #: Seconds of inactivity after which a server is culled.
    timeout: float = attrs.field(default=600, validator=_non_negative)
    #: Seconds between the starts of two passes; 0 means ``timeout / 2`` (see :attr:`interval`).
    cull_every: float = attrs.field(default=0, validator=_non_negative)
    #: Seconds after which a server is culled even if active; 0 disables it.
    max_age: float = attrs.field(default=0, validator=_non_negative)
    cull_users: bool = False
    cull_admin_users: bool = True
    remove_named_servers: bool = False
    cull_default_servers: bool = True
    cull_named_servers: bool = True
    #: Requests in flight to the hub at most (pages and DELETEs alike); 0 means no bound, as in the original.
    concurrency: int = attrs.field(default=10, validator=_non_negative)
    #: ``limit`` for each page of users; 0 leaves it to the hub (its ``api_page_default_limit``).
    api_page_size: int = attrs.field(default=0, validator=_non_negative)
    ssl_enabled: bool = False
    internal_certs_location: str = "internal-ssl"
    #: TLS files a hub gives its managed services; when set they win over ``internal_certs_location``.
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_client_ca: str | None = None
    #: Total seconds one HTTP request may take, attempts counted separately (``JUPYTERHUB_REQUEST_TIMEOUT``).
    request_timeout: float = attrs.field(default=60, validator=_positive)
    #: Attempts after the first for a transient failure (connection, timeout, 5xx, 429).
    max_retries: int = attrs.field(default=5, validator=_non_negative)
    #: Honour HTTP(S)_PROXY / NO_PROXY for hub traffic. Off by default: a hub API is internal, and the
    #: original ignores them too; a cluster-wide proxy variable must not reroute the culler.
    use_proxy_env: bool = False
    #: Decide and log, but send no DELETE.
    dry_run: bool = False
    #: Seconds between progress lines while a pass runs.
    progress_interval: float = attrs.field(default=10, validator=_positive)
    cull_arbiter_hook: ArbiterHook | None = attrs.field(default=None, eq=False)
    #: Rules per user, group, server and profile (see ``_rules``): rule tables or :class:`Rule` objects.
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_structure_rules)
    #: Seconds before a server's cull at which its user is warned (0: no warnings).
    warn_before: float = attrs.field(default=0, validator=_non_negative)
    #: Where a warning is POSTed as JSON (never with the hub's token).
    warn_url: str | None = attrs.field(default=None, validator=attrs.validators.optional(_warn_url))
    warn_hook: WarnHook | None = attrs.field(default=None, eq=False)
    #: With warn_before: deliver each warning to the server itself too (trio-culler-notice), and read its
    #: user's keep before the cull.
    warn_servers: bool = True
    #: The file that keeps who was warned across restarts (None or "": memory only).
    state_file: str | None = attrs.field(default=None, converter=_optional_path)

    #: Ask each candidate server (through the proxy) for its kernels and terminals before culling it.
    inspect_kernels: bool = False
    #: Seconds a busy kernel protects its server at most; 0: as long as it is busy. Needs inspect_kernels.
    max_busy: float = attrs.field(default=0, validator=_non_negative)
    #: Measure idleness from kernels and terminals only (browser polling no longer counts); every ready server
    #: is then inspected. Needs inspect_kernels.
    kernel_activity_only: bool = False
    #: The hub's public URL (``$JUPYTERHUB_PUBLIC_URL``), where servers are reached when the hub gives no
    #: full_url; without either, a server is decided from the hub's data.
    public_url: str | None = attrs.field(default=None, validator=_public_url)

    def __attrs_post_init__(self) -> None:
        if self.warn_before and self.warn_url is None and self.warn_hook is None and not self.warn_servers:
            raise ConfigError(
                "--warn-before needs --warn-url, c.IdleCuller.warn_hook or --warn-servers: who is to be warned?"
            )
        if (self.warn_url is not None or self.warn_hook is not None) and not self.warn_before:
            raise ConfigError("--warn-url and c.IdleCuller.warn_hook need --warn-before=SECONDS")
        if not self.inspect_kernels:
            for name, value in (("kernel-activity-only", self.kernel_activity_only), ("max-busy", self.max_busy)):
                if value:
                    raise ConfigError(f"--{name} needs --inspect-kernels")
        # --inspect-kernels without --public-url is fine: a hub with a public_url gives each server a full_url,
        # and the address is decided per server (a server with neither is decided from the hub's data).

    @property
    def interval(self) -> float:
        """Seconds between pass starts, resolved the way the original resolves ``cull_every``."""
        every = self.cull_every if self.cull_every else self.timeout // 2
        return max(every, MIN_CULL_EVERY)

    @functools.cached_property
    def policy(self) -> Policy:
        return Policy(
            timeout=timedelta(seconds=self.timeout),
            max_age=timedelta(seconds=self.max_age) if self.max_age else None,
            cull_users=self.cull_users,
            cull_admin_users=self.cull_admin_users,
            cull_default_servers=self.cull_default_servers,
            cull_named_servers=self.cull_named_servers,
            remove_named_servers=self.remove_named_servers,
            max_busy=timedelta(seconds=self.max_busy) if self.max_busy else None,
            kernel_activity_only=self.kernel_activity_only,
        )

    @functools.cached_property
    def rule_table(self) -> RuleTable:
        return RuleTable(self.rules, self.policy)

    @functools.cached_property
    def arbiter_takes_user(self) -> bool:
        """Whether ``cull_arbiter_hook`` accepts the user model too (``hook(inactive, inactive_limit, server,
        user)``); 2.0's three-argument hooks keep being called as before."""
        return _accepts(self.cull_arbiter_hook, "inactive", "inactive_limit", "server", "user")

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-ready values, never including the token."""
        values: dict[str, Any] = {}
        for field in attrs.fields(Config):
            if field.name == "api_token":
                continue
            value = getattr(self, field.name)
            if field.name in ("cull_arbiter_hook", "warn_hook"):
                value = None if value is None else getattr(value, "__qualname__", repr(value))
            elif field.name == "rules":
                value = [rule.as_dict() for rule in value]
            elif isinstance(value, float):
                value = as_number(value)
            values[field.name] = value
        values["cull_every"] = as_number(self.interval)
        values["api_token_set"] = bool(self.api_token)
        return values

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from the variables a hub gives its managed services, then ``overrides``. As the command
        line's, it keeps its warnings' state in :data:`DEFAULT_STATE_FILE` in the working directory."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"api_token": env.get("JUPYTERHUB_API_TOKEN", "")}
        if env.get("JUPYTERHUB_API_URL"):
            values["url"] = env["JUPYTERHUB_API_URL"]
        if env.get("JUPYTERHUB_REQUEST_TIMEOUT"):
            raw = env["JUPYTERHUB_REQUEST_TIMEOUT"]
            try:
                values["request_timeout"] = float(raw)
            except ValueError:
                raise ConfigError(f"JUPYTERHUB_REQUEST_TIMEOUT must be a number of seconds, not {raw!r}") from None
        # A service keeps its state in its working directory, as the hub keeps its own database in its own.
        values["state_file"] = DEFAULT_STATE_FILE
        for name, variable in (
            ("public_url", "JUPYTERHUB_PUBLIC_URL"),
            ("ssl_keyfile", "JUPYTERHUB_SSL_KEYFILE"),
            ("ssl_certfile", "JUPYTERHUB_SSL_CERTFILE"),
            ("ssl_client_ca", "JUPYTERHUB_SSL_CLIENT_CA"),
        ):
            if env.get(variable):
                values[name] = env[variable]
        values.update(overrides)
        return cls(**values)
