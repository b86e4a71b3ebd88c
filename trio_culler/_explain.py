"""``trio-culler --explain USER [--explain-server NAME]``: how a pass would decide about one user, acting on nothing.

For each of the user's servers: the rule that matched (or the global options), the idle time by each signal,
the limits that apply, the decision a pass would take now, and when the server will be culled if nothing
changes; then the user itself when users may be deleted. :func:`explain_user` is pure (the user model and
``now`` in, a plain value out); :func:`run_explain` reads the user from the hub and prints it.

Signals: ``signals`` maps a signal's name to what it says: ``hub`` (the hub's ``last_activity``) and, with
``--inspect-kernels``, ``kernels`` (what the server itself said about its kernels and terminals, or why it could
not say). The decision shown is the one a pass would take with both.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import attrs

from ._config import Config
from ._decide import Decision, decide_server, decide_user, effective_idle_time, format_duration, server_idle_time
from ._errors import HubError
from ._forecast import cull_time
from ._groups import group_notes
from ._inspect import InspectionFailed, ServerActivity
from ._models import Server, User
from ._policy import Policy
from ._rules import MatchedRule, MissingFieldError
from ._time import as_number, iso_utc, seconds

__all__ = ["Explanation", "ServerExplanation", "explain_user", "run_explain"]


@attrs.frozen
class ServerExplanation:
    name: str
    matched: MatchedRule
    #: Signal name -> what it says: ``{"hub": {"last_activity": ..., "idle_seconds": ...}}``.
    signals: Mapping[str, Mapping[str, Any]]
    age: timedelta | None
    decision: Decision
    #: When it will be culled if nothing changes, and by which rule; None: never.
    cull_at: datetime | None
    cull_rule: str | None
    #: When its user will be warned (with ``--warn-before``).
    warn_at: datetime | None
    #: The arbiter hook's verdict, when one is configured and was consulted.
    arbiter: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.name,
            "rule": _rule_dict(self.matched),
            "signals": {name: dict(values) for name, values in self.signals.items()},
            "age_seconds": seconds(self.age),
            "limits": _limits(self.matched.policy, named=bool(self.name)),
            "decision": {
                "action": self.decision.action.value,
                "rule": self.decision.rule,
                "reason": self.decision.reason,
                "arbiter_hook": self.arbiter,
            },
            "cull_at": iso_utc(self.cull_at),
            "cull_rule": self.cull_rule,
            "warn_at": iso_utc(self.warn_at),
        }


@attrs.frozen
class Explanation:
    user: str
    now: datetime
    servers: tuple[ServerExplanation, ...]
    #: The user-level decision (``cull_users``), given the servers the pass would stop now.
    user_rule: MatchedRule
    user_decision: Decision

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": "explain",
            "user": self.user,
            "now": iso_utc(self.now),
            "servers": [server.as_dict() for server in self.servers],
            "user_decision": {
                "rule": _rule_dict(self.user_rule),
                "action": self.user_decision.action.value,
                "reason": self.user_decision.reason,
                "cull_users": self.user_rule.policy.cull_users,
            },
        }

    def render(self) -> str:
        lines = [f"User {self.user} at {iso_utc(self.now)}:"]
        if not self.servers:
            lines.append("  no running server")
        for server in self.servers:
            policy = server.matched.policy
            lines.append(f"  server {server.name or '(default)'}:")
            lines.append(f"    rule:     {server.matched.label}")
            for signal, values in server.signals.items():
                idle = values.get("idle_seconds")
                shown = "unknown" if idle is None else format_duration(timedelta(seconds=idle))
                lines.append(f"    idle:     {shown} by the {signal} (last activity {values.get('last_activity')})")
            lines.append(f"    age:      {format_duration(server.age)}")
            limits = f"timeout {format_duration(policy.timeout)}, max-age {format_duration(policy.max_age)}"
            if policy.exempt:
                limits = "exempt: never culled"
            lines.append(f"    limits:   {limits}")
            verdict = (
                "" if server.arbiter is None else f" (cull_arbiter_hook says {'cull' if server.arbiter else 'keep'})"
            )
            lines.append(f"    now:      {server.decision.action.value}: {server.decision.reason}{verdict}")
            if server.cull_at is None:
                lines.append("    culled:   never, unless something changes")
            elif server.cull_at <= self.now:
                lines.append(f"    culled:   due now ({server.cull_rule}, since {iso_utc(server.cull_at)})")
            else:
                lines.append(
                    f"    culled:   at {iso_utc(server.cull_at)} ({server.cull_rule}, in "
                    f"{format_duration(server.cull_at - self.now)}) if nothing changes"
                )
            if server.warn_at is not None:
                lines.append(f"    warned:   at {iso_utc(server.warn_at)}")
        lines.append(
            f"  user:     {self.user_decision.action.value}: {self.user_decision.reason} ({self.user_rule.label})"
        )
        return "\n".join(lines) + "\n"


def explain_user(
    user: User,
    config: Config,
    now: datetime,
    *,
    server: str | None = None,
    arbiter: Mapping[str, bool] | None = None,
    activities: Mapping[str, ServerActivity | InspectionFailed] | None = None,
) -> Explanation:
    """What a pass at ``now`` would decide about ``user`` (only ``server`` when given). ``arbiter`` holds the
    verdicts of ``cull_arbiter_hook`` by server name, consulted by the caller (the hook may be async);
    ``activities`` what inspecting each server found (``--inspect-kernels``), or why it could not."""
    table = config.rule_table
    table.check_visible(user)
    explained = []
    servers_left = 0
    for name, model in sorted(user.servers.items()):
        matched = table.for_server(user, model)
        verdict = None if arbiter is None else arbiter.get(name)
        found = None if activities is None else activities.get(name)
        activity = found if isinstance(found, ServerActivity) else None
        decision = decide_server(model, policy=matched.policy, now=now, arbiter_says_cull=verdict, activity=activity)
        signals = {"hub": _hub_signal(model, now)}
        if found is not None:
            signals["kernels"] = _kernel_signal(model, found, matched.policy, now)
        if not decision.acts:
            # Every server counts against deleting the user, shown or not.
            servers_left += 1
        if server is not None and name != server:
            continue
        due = cull_time(model, policy=matched.policy)
        warn_at = None
        if due is not None and config.warn_before:
            warn_at = due[0] - timedelta(seconds=config.warn_before)
        explained.append(
            ServerExplanation(
                name=name,
                matched=matched,
                signals=signals,
                age=server_idle_time(model, now)[1],
                decision=decision,
                cull_at=None if due is None else due[0],
                cull_rule=None if due is None else due[1],
                warn_at=warn_at,
                arbiter=verdict,
            )
        )
    user_rule = table.for_user(user)
    user_decision = decide_user(user, policy=user_rule.policy, now=now, servers_left=servers_left)
    return Explanation(user.name, now, tuple(explained), user_rule, user_decision)


def _hub_signal(server: Server, now: datetime) -> dict[str, Any]:
    inactive, _age = server_idle_time(server, now)
    return {
        "last_activity": iso_utc(server.last_activity) if server.activity_visible else "not visible",
        "idle_seconds": seconds(inactive),
    }


def _kernel_signal(
    server: Server, found: ServerActivity | InspectionFailed, policy: Policy, now: datetime
) -> dict[str, Any]:
    if isinstance(found, InspectionFailed):
        return {"last_activity": f"cannot inspect: {found}", "idle_seconds": None, "inspection_failure": found.kind}
    busy_since = found.busy_since
    with_kernels = attrs.evolve(policy, kernel_activity_only=True)
    inactive, _age = effective_idle_time(server, now, policy=with_kernels, activity=found)
    return {
        "last_activity": iso_utc(found.last_activity) or "none (no kernel or terminal)",
        "idle_seconds": seconds(inactive),
        "kernels": len(found.kernels),
        "terminals": len(found.terminals),
        "busy": found.busy,
        "busy_seconds": None if busy_since is None else seconds(max(now - busy_since, timedelta(0))),
    }


async def _inspect_servers(hub: Any, user: User, config: Config) -> dict[str, ServerActivity | InspectionFailed] | None:
    """With --inspect-kernels, what each ready server says about itself (or why it cannot say)."""
    if not config.inspect_kernels:
        return None
    from ._engine import inspect_through

    found: dict[str, ServerActivity | InspectionFailed] = {}
    for name, server in user.servers.items():
        if server.pending or not server.is_ready:
            continue
        try:
            found[name] = await inspect_through(hub, server, config)
        except InspectionFailed as failed:
            found[name] = failed
    return found


async def _arbiter_verdicts(user: User, config: Config, now: datetime) -> dict[str, bool] | None:
    hook = config.cull_arbiter_hook
    if hook is None:
        return None
    verdicts: dict[str, bool] = {}
    for name, server in user.servers.items():
        policy = config.rule_table.for_server(user, server).policy
        inactive, _age = server_idle_time(server, now)
        if inactive is None or server.pending or not server.is_ready or policy.exempt:
            continue
        limit_value = as_number(policy.timeout.total_seconds())
        if config.arbiter_takes_user:
            result = hook(inactive, limit_value, server.model, user.model)
        else:
            result = hook(inactive=inactive, inactive_limit=limit_value, server=server.model)
        verdicts[name] = bool(await result) if inspect.isawaitable(result) else bool(result)
    return verdicts


async def run_explain(
    config: Config,
    user_name: str,
    *,
    server: str | None = None,
    json_format: bool = False,
    out: TextIO | None = None,
    transport: Any = None,
) -> int:
    """Read ``user_name`` from the hub, print the explanation; 0 when explained, 1 when it could not be."""
    from ._hub import open_hub_client

    out = sys.stdout if out is None else out
    now = datetime.now(UTC)
    try:
        async with open_hub_client(config, transport=transport) as hub:
            user = await hub.get_user(user_name)
            activities = None if user is None else await _inspect_servers(hub, user, config)
            notes = await group_notes(hub, config.rules)
    except HubError as error:
        return _fail(out, json_format, f"could not read user {user_name!r} from {config.url}: {error}")
    if user is None:
        return _fail(out, json_format, f"the hub has no user {user_name!r}")
    if server is not None and server not in user.servers:
        running = ", ".join(repr(name) for name in sorted(user.servers)) or "none"
        return _fail(out, json_format, f"user {user_name!r} has no running server {server!r} (running: {running})")
    try:
        verdicts = await _arbiter_verdicts(user, config, now)
        explanation = explain_user(user, config, now, server=server, arbiter=verdicts, activities=activities)
    except MissingFieldError as error:
        return _fail(out, json_format, str(error))
    if json_format:
        out.write(json.dumps({**explanation.as_dict(), "notes": notes}, sort_keys=True) + "\n")
    else:
        out.write(explanation.render() + "".join(f"  note:     {note}\n" for note in notes))
    return 0


def _fail(out: TextIO, json_format: bool, message: str) -> int:
    if json_format:
        out.write(json.dumps({"event": "explain", "error": message}) + "\n")
    else:
        print(f"trio-culler: --explain: {message}", file=sys.stderr)
    return 1


def _rule_dict(matched: MatchedRule) -> dict[str, Any] | None:
    if matched.rule is None:
        return None
    return {"index": matched.index, "rule": matched.rule.as_dict(), "label": matched.label}


def _limits(policy: Policy, *, named: bool) -> dict[str, Any]:
    return {
        "timeout_seconds": seconds(policy.timeout),
        "max_age_seconds": seconds(policy.max_age),
        "exempt": policy.exempt,
        "culled_when_idle": policy.cull_named_servers if named else policy.cull_default_servers,
        "removed_when_culled": named and policy.remove_named_servers,
    }
