"""Pure, synchronous decisions: what to do with one server, and with one user. ``now`` is always a parameter.

The rules are the original ``jupyterhub-idle-culler``'s, in its order:

- a server with a pending action, or one that is not ready, is never culled;
- idle time is ``now - last_activity``, or the server's age when the hub has no activity yet (``null``); a
  model without the key (a token that may not read activity) has no idle time, and is culled for idleness
  never;
- an idle server is culled when ``cull_arbiter_hook`` (default: idle >= timeout) says so and its kind
  (default or named) is enabled;
- with ``max_age``, a server at least that old is culled however active it is;
- a culled named server is removed too with ``remove_named_servers``;
- with ``cull_users``, a user is deleted only when every server it had is stopped, it is idle for ``timeout``
  (``created`` standing in for activity) or older than ``max_age``, and it is not an admin spared by
  ``cull_admin_users=False``.

Past the original: a policy with ``exempt`` (a rule with ``cull = false``) keeps every server and user it
applies to, whatever their age (``_forecast.cull_time`` says when a server will be culled if nothing changes).

One deliberate difference: the original's max-age rule deletes admin users even with
``--cull-admin-users=false``; here an admin spared is spared for any reason.

With ``--inspect-kernels`` the caller also passes what the server said about itself (``activity``, a
:class:`~trio_culler._inspect.ServerActivity`; None, the default, means "not inspected" and every rule above is
exactly the original's):

- a server with a kernel whose ``execution_state`` is ``busy`` is active, for at most ``max_busy`` (measured
  from the busy kernel's ``last_activity``, when its current cell started); ``max_age`` still culls it;
- with ``kernel_activity_only``, idle time is measured from the newest ``last_activity`` of the server's kernels
  and terminals (from ``started`` when it has none), not from the hub's, which browser polling keeps fresh;
- otherwise idle time is the hub's, so an inspection can only spare a server the hub's data would cull.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Final

import attrs

from ._codes import CODES, DecisionCode
from ._inspect import ServerActivity
from ._models import Server, User
from ._policy import Policy

__all__ = [
    "Action",
    "Decision",
    "decide_server",
    "decide_user",
    "effective_idle_time",
    "format_duration",
    "idle_since",
    "server_idle_time",
]


class Action(enum.Enum):
    KEEP = "keep"
    STOP = "stop"
    #: Stop a named server and delete it (``remove_named_servers``).
    REMOVE = "remove"
    DELETE_USER = "delete_user"


@attrs.frozen
class Decision:
    action: Action
    #: Why (see :data:`._codes.CODES` for what each code means in logs, metrics, forecasts and on the page).
    code: DecisionCode
    inactive: timedelta | None = None
    age: timedelta | None = None
    #: What the code needs to explain itself: the pending action, the servers left, max-busy, an error.
    detail: str = ""
    #: When a server was inspected: the hub's idle time (``inactive`` is then the one the rule used) and how
    #: long its busy kernel has been busy (None: no busy kernel).
    hub_inactive: timedelta | None = None
    busy: timedelta | None = None
    #: Whether the server's own kernels and terminals were read for this decision.
    inspected: bool = False

    @property
    def rule(self) -> DecisionCode:
        """The code, which is its string (``"idle"``): the name this had before codes had a type of their own,
        kept for applications that read it."""
        return self.code

    @property
    def signal(self) -> str:
        """Which signal decided: ``hub`` (the hub's last_activity), ``kernel_busy`` or ``kernel_activity``."""
        return CODES[self.code].signal

    @property
    def acts(self) -> bool:
        return self.action is not Action.KEEP

    @property
    def reason(self) -> str:
        """Why, in words for the log: ``inactive for 01:02:03``, ``age 10:00:00, inactive for ...``.

        Built on demand: a pass decides about every server but explains only the few it culls (and, at DEBUG,
        the rest), and formatting durations is most of what deciding costs."""
        template = CODES[self.code].reason
        if "{" not in template:
            return template
        # Only the durations the template names: a pass formats this for every server it culls.
        durations = {
            name: format_duration(getattr(self, name))
            for name in ("inactive", "age", "busy", "hub_inactive")
            if "{" + name + "}" in template
        }
        return template.format(**durations, detail=self.detail, no_busy=", no kernel busy" if self.inspected else "")


_NO_TIME: Final = timedelta(0)


def format_duration(delta: timedelta | None) -> str:
    """``HH:MM:SS`` as the original logs it (hours may exceed 24); ``unknown`` when there is no value."""
    if delta is None:
        return "unknown"
    seconds = max(int(delta.total_seconds()), 0)
    return f"{seconds // 3600:02}:{seconds % 3600 // 60:02}:{seconds % 60:02}"


def _since(now: datetime, then: datetime | None) -> timedelta | None:
    if then is None:
        return None
    # A timestamp in the future (clocks out of step) means "just now", not negative idleness.
    delta = now - then
    return delta if delta > _NO_TIME else _NO_TIME


def idle_since(
    server: Server, *, policy: Policy | None = None, activity: ServerActivity | None = None
) -> datetime | None:
    """Since when a server counts as idle, as the rules measure it (the decisions' idle time and the forecast's
    cull time both start here): its last activity, or its start when there is none yet; None (unknown) when
    the hub did not show the activity at all. With ``kernel_activity_only`` and an inspected server, the newest
    activity of its kernels and terminals instead (its start when it has none: a server where nothing ever ran
    is as idle as it is old)."""
    if activity is not None and policy is not None and policy.kernel_activity_only:
        newest = activity.last_activity
        return newest if newest is not None else server.started
    if not server.activity_visible:
        return None
    return server.last_activity if server.last_activity is not None else server.started


def server_idle_time(server: Server, now: datetime) -> tuple[timedelta | None, timedelta | None]:
    """``(inactive, age)`` of a server, by the hub's data (:func:`idle_since`)."""
    return _since(now, idle_since(server)), _since(now, server.started)


def effective_idle_time(
    server: Server, now: datetime, *, policy: Policy, activity: ServerActivity | None = None
) -> tuple[timedelta | None, timedelta | None]:
    """``(inactive, age)`` as the rules measure them: :func:`server_idle_time`, except that with
    ``kernel_activity_only`` an inspected server is idle since its kernels and terminals were last active."""
    return _since(now, idle_since(server, policy=policy, activity=activity)), _since(now, server.started)


def decide_server(
    server: Server,
    *,
    policy: Policy,
    now: datetime,
    arbiter_says_cull: bool | None = None,
    activity: ServerActivity | None = None,
) -> Decision:
    """Decide one server. ``arbiter_says_cull`` is the verdict of a configured ``cull_arbiter_hook`` (None: no
    hook, the default rule ``inactive >= timeout`` applies). The caller consults the hook only when
    :func:`effective_idle_time` gives an ``inactive`` value, as the hook cannot judge an unknown idle time.
    ``activity`` is what inspecting the server found (None: not inspected, or the inspection failed)."""
    if policy.exempt:
        return Decision(Action.KEEP, DecisionCode.EXEMPT)
    if server.pending:
        return Decision(Action.KEEP, DecisionCode.PENDING, detail=server.pending)
    if not server.is_ready:
        return Decision(Action.KEEP, DecisionCode.NOT_READY)
    # Inspected: idle time may be the kernels' (kernel_activity_only), and a busy kernel may spare the server.
    inspected = activity is not None
    kernels_only = inspected and policy.kernel_activity_only
    inactive, age = effective_idle_time(server, now, policy=policy, activity=activity)
    hub_inactive = server_idle_time(server, now)[0] if inspected else None
    kind_enabled = policy.cull_named_servers if server.name else policy.cull_default_servers
    act = Action.REMOVE if server.name and policy.remove_named_servers else Action.STOP
    # As in the original, max-age applies to default and named servers whatever the kind toggles say:
    # they choose what idleness may cull, max-age is a hard lifetime.
    over_age = policy.max_age is not None and age is not None and age >= policy.max_age
    busy: timedelta | None = None

    def decision(action: Action, code: DecisionCode, detail: str = "") -> Decision:
        return Decision(action, code, inactive, age, detail, hub_inactive, busy, inspected)

    if activity is not None and activity.busy:
        # A busy kernel without a timestamp has been busy for an unknown time: it cannot be shown to be over
        # --max-busy, so it protects the server (sparing is the mistake that can be undone).
        busy = _since(now, activity.busy_since)
        if policy.max_busy is None or busy is None or busy < policy.max_busy:
            return decision(act, DecisionCode.MAX_AGE) if over_age else decision(Action.KEEP, DecisionCode.KERNEL_BUSY)
    if inactive is not None and kind_enabled:
        idle = inactive >= policy.timeout if arbiter_says_cull is None else arbiter_says_cull
        if idle:
            if busy is not None:
                return decision(act, DecisionCode.BUSY_EXPIRED, format_duration(policy.max_busy))
            return decision(act, DecisionCode.KERNELS_IDLE if kernels_only else DecisionCode.IDLE)
    if over_age:
        return decision(act, DecisionCode.MAX_AGE)
    if not kind_enabled:
        return decision(Action.KEEP, DecisionCode.NAMED_DISABLED if server.name else DecisionCode.DEFAULT_DISABLED)
    return decision(Action.KEEP, DecisionCode.KERNELS_ACTIVE if kernels_only else DecisionCode.ACTIVE)


def decide_user(user: User, *, policy: Policy, now: datetime, servers_left: int) -> Decision:
    """Decide whether to delete a user, given how many of its servers are still running after this pass acted
    on them (culled servers that answered 202 still count as running)."""
    if policy.exempt:
        return Decision(Action.KEEP, DecisionCode.EXEMPT)
    if not policy.cull_users:
        return Decision(Action.KEEP, DecisionCode.DISABLED)
    if servers_left:
        return Decision(Action.KEEP, DecisionCode.SERVERS_LEFT, detail=str(servers_left))
    if not user.servers_visible:
        # Deleting a user is only safe when its servers are known to be stopped.
        return Decision(Action.KEEP, DecisionCode.SERVERS_UNKNOWN)
    # The hub hides `admin` from tokens without the scope to read it: unknown is treated as admin, because
    # deleting an admin by mistake is the error that cannot be undone.
    if not policy.cull_admin_users and user.admin is not False:
        return Decision(Action.KEEP, DecisionCode.ADMIN)
    age = _since(now, user.created)
    inactive = _since(now, user.last_activity) if user.last_activity is not None else age
    if inactive is not None and inactive >= policy.timeout:
        return Decision(Action.DELETE_USER, DecisionCode.IDLE, inactive, age)
    if policy.max_age is not None and age is not None and age >= policy.max_age:
        return Decision(Action.DELETE_USER, DecisionCode.MAX_AGE, inactive, age)
    return Decision(Action.KEEP, DecisionCode.ACTIVE, inactive, age)
