"""``trio-culler --explain USER [--explain-server NAME]``: how a pass would decide about one user, acting on nothing.

For each of the user's servers: the rule that matched (or the global options), the idle time by each signal,
the limits that apply, the decision a pass would take now, and when the server will be culled if nothing
changes; then the user itself when users may be deleted. Every server is judged by the pass's own
:class:`~trio_culler._judge.Judge` (its hook, its inspection, its order), so the explanation cannot disagree
with the pass it explains, and the cull time shown is that same verdict's. :func:`explain_user` is pure (the
user, ``now`` and the verdicts in, a plain value out); :func:`run_explain` reads and judges the user, then prints.

Signals: ``signals`` maps a signal's name to what it says: ``hub`` (the hub's ``last_activity``) and, when the
judgment read the server (``--inspect-kernels``), ``kernels`` (what it said about its kernels and terminals, or
why it could not say), and ``server`` when the server's own last activity (its notice state, ``api/status``)
was later than the hub's and counted (``_judge``: the proxy's record can hide it).

Warnings (``--warn-before``): what the long-running culler remembers (its state file, ``--state-file``) says
whether, when and under which id a server's user was warned, and the cull time announced; a warned server's own
state (``GET notice``, with a token the hub mints for that server's user) says whether its user asked to keep it,
and when. Both go into the judgment exactly as a pass takes them (``_notify.Notifier.inputs``), so a keep that
will spare the server at its cull time is shown sparing it now.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import attrs
import trio

from ._config import Config
from ._decide import Decision, decide_user, effective_idle_time, format_duration, server_idle_time
from ._errors import HubError
from ._groups import group_notes
from ._hub import HubClient
from ._judge import Judge, Verdict
from ._logging import escape_controls
from ._models import Server, User
from ._notice import NoticeClient
from ._notify import Notifier
from ._policy import Policy
from ._rules import MatchedRule, MissingFieldError
from ._scopes import grants, parse_scopes
from ._time import iso_utc, seconds
from ._warnings_state import LoadedState, WarningRecord, read_state_file

__all__ = [
    "Explanation",
    "ServerExplanation",
    "explain_user",
    "judge_user",
    "read_warnings",
    "run_explain",
    "warnings_of",
]


@attrs.frozen
class ServerExplanation:
    name: str
    matched: MatchedRule
    #: Signal name -> what it says: ``{"hub": {"last_activity": ..., "idle_seconds": ...}}``.
    signals: Mapping[str, Mapping[str, Any]]
    verdict: Verdict
    #: When its user was warned, or will be at the earliest (with ``--warn-before``).
    warn_at: datetime | None
    #: The warning on record (the state file), when its user was warned for this stretch.
    warning: WarningRecord | None = None
    #: The earliest a pass culls it: the time a warning announced, or not before ``--warn-before`` after one.
    culled_from: datetime | None = None

    @property
    def decision(self) -> Decision:
        return self.verdict.decision

    @property
    def age(self) -> timedelta | None:
        return self.verdict.decision.age

    @property
    def cull_at(self) -> datetime | None:
        return None if self.verdict.due is None else self.verdict.due.at

    def as_dict(self) -> dict[str, Any]:
        due = self.verdict.due
        return {
            "server": self.name,
            "rule": _rule_dict(self.matched),
            "signals": {name: dict(values) for name, values in self.signals.items()},
            "age_seconds": seconds(self.age),
            "limits": _limits(self.matched.policy, named=bool(self.name)),
            "decision": {
                "action": self.decision.action.value,
                "rule": self.decision.code.value,
                "reason": self.decision.reason,
                "arbiter_hook": self.verdict.arbiter,
            },
            "cull_at": iso_utc(self.cull_at),
            "cull_rule": None if due is None else due.code.value,
            "warn_at": iso_utc(self.warn_at),
            "culled_from": iso_utc(self.culled_from),
            "warning": self._warning_dict(),
        }

    def _warning_dict(self) -> dict[str, Any] | None:
        warning, verdict = self.warning, self.verdict
        if warning is None:
            return None
        keep = verdict.keep
        return {
            "id": warning.id,
            "warned_at": iso_utc(warning.warned_at),
            "cull_at": iso_utc(warning.cull_at),
            "reason": warning.reason,
            "keep": None
            if keep is None
            else {"requested_at": iso_utc(keep.requested_at), "counts": keep.requested_at > warning.warned_at},
            "keep_failure": None if verdict.keep_failure is None else verdict.keep_failure.kind,
            "kept_at": iso_utc(verdict.kept_at),
        }

    def _warning_lines(self, now: datetime) -> list[str]:
        warning, verdict = self.warning, self.verdict
        if warning is None:
            lines = []
            if self.warn_at is not None:
                lines.append(f"    warned:   not yet; at {iso_utc(self.warn_at)} at the earliest")
            if self.culled_from is not None and self.decision.acts and self.culled_from > now:
                lines.append(f"    held:     until {iso_utc(self.culled_from)}: its user is warned first")
            return lines
        lines = [
            f"    warned:   at {iso_utc(warning.warned_at)} (warning {warning.id}), cull at {iso_utc(warning.cull_at)}"
        ]
        if self.decision.acts and warning.cull_at > now:
            lines.append(f"    held:     until {iso_utc(warning.cull_at)}, the time announced")
        keep, failure = verdict.keep, verdict.keep_failure
        if failure is not None and failure.kind == "no_extension":
            lines.append("    keep:     cannot be asked for (the server does not run trio-culler-notice)")
        elif failure is not None:
            lines.append(f"    keep:     unknown: {failure}")
        elif keep is None:
            lines.append("    keep:     not asked for")
        elif keep.requested_at > warning.warned_at:
            lines.append(
                f"    keep:     asked for at {iso_utc(keep.requested_at)}, after the warning: it counts as use"
            )
        else:
            lines.append(f"    keep:     last asked for at {iso_utc(keep.requested_at)}, before the warning")
        return lines

    def lines(self, now: datetime) -> list[str]:
        policy, due = self.matched.policy, self.verdict.due
        lines = [f"  server {self.name or '(default)'}:", f"    rule:     {self.matched.label}"]
        for signal, values in self.signals.items():
            idle = values.get("idle_seconds")
            shown = "unknown" if idle is None else format_duration(timedelta(seconds=idle))
            lines.append(f"    idle:     {shown} by the {signal} (last activity {values.get('last_activity')})")
        lines.append(f"    age:      {format_duration(self.age)}")
        limits = f"timeout {format_duration(policy.timeout)}, max-age {_limit(policy.max_age)}"
        if policy.max_busy is not None:
            limits += f", max-busy {_limit(policy.max_busy)}"
        lines.append(f"    limits:   {'exempt: never culled' if policy.exempt else limits}")
        arbiter = self.verdict.arbiter
        hook = "" if arbiter is None else f" (cull_arbiter_hook says {'cull' if arbiter else 'keep'})"
        lines.append(f"    now:      {self.decision.action.value}: {self.decision.reason}{hook}")
        if due is None:
            lines.append("    culled:   never, unless something changes")
        elif self.decision.acts:
            since = "by the cull_arbiter_hook" if due.limit is None else f"since {iso_utc(due.at)}"
            lines.append(f"    culled:   due now ({due.code}, {since})")
        else:
            when = f"{iso_utc(due.at)} ({due.code}, in {format_duration(due.at - now)})"
            lines.append(f"    culled:   at {when} if nothing changes")
        lines.extend(self._warning_lines(now))
        return lines


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
            lines.extend(server.lines(self.now))
        lines.append(
            f"  user:     {self.user_decision.action.value}: {self.user_decision.reason} ({self.user_rule.label})"
        )
        # Names (and the rules' globs, an inspection's failure) are the users' to choose: one field, one line, and
        # no escape sequence reaches the operator's terminal.
        return "".join(escape_controls(line) + "\n" for line in lines)


def explain_user(
    user: User,
    config: Config,
    now: datetime,
    *,
    server: str | None = None,
    verdicts: Mapping[str, Verdict] | None = None,
    warnings: Mapping[str, WarningRecord] | None = None,
) -> Explanation:
    """What a pass at ``now`` would decide about ``user`` (only ``server`` when given), from the ``verdicts`` of
    :func:`judge_user`; without them, from the judge's pure first step (a configuration with no hook to ask and
    no server to inspect needs nothing more). ``warnings``: the warnings on record, by server name."""
    table = config.rule_table
    table.check_visible(user)
    if verdicts is None:
        verdicts = _prejudged(user, config, now)
    explained = []
    servers_left = 0
    for name, model in sorted(user.servers.items()):
        matched = table.for_server(user, model)
        verdict = verdicts[name]
        if not verdict.acts:
            # Every server counts against deleting the user, shown or not.
            servers_left += 1
        if server is not None and name != server:
            continue
        signals = {"hub": _hub_signal(model, now)}
        if verdict.activity is not None or verdict.inspection is not None:
            signals["kernels"] = _kernel_signal(model, verdict, matched.policy, now)
        if verdict.reported_at is not None:
            signals["server"] = {
                "last_activity": iso_utc(verdict.reported_at),
                "idle_seconds": seconds(max(timedelta(0), now - verdict.reported_at)),
            }
        warning = None if warnings is None else warnings.get(name)
        warn_at, culled_from = _warning_times(config, matched.policy.exempt, verdict, warning, now)
        explained.append(ServerExplanation(name, matched, signals, verdict, warn_at, warning, culled_from))
    user_rule = table.for_user(user)
    user_decision = decide_user(user, policy=user_rule.policy, now=now, servers_left=servers_left)
    return Explanation(user.name, now, tuple(explained), user_rule, user_decision)


def _warning_times(
    config: Config, exempt: bool, verdict: Verdict, warning: WarningRecord | None, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """``(warn_at, culled_from)``: when the user was (or will at the earliest be) warned, and the earliest a
    pass culls the server, by the warnings' rules (``_notify``): a warning at the first pass that finds the cull
    within --warn-before plus one interval, and a cull no sooner than --warn-before after it."""
    if warning is not None:
        return warning.warned_at, warning.cull_at
    due = verdict.due
    if not config.warn_before or due is None or exempt:
        return None, None
    warn_at = max(now, due.at - timedelta(seconds=config.warn_before + config.interval))
    return warn_at, max(due.at, warn_at + timedelta(seconds=config.warn_before))


def _prejudged(user: User, config: Config, now: datetime) -> dict[str, Verdict]:
    judge = Judge.for_config(config)
    found: dict[str, Verdict] = {}
    for name, model in user.servers.items():
        verdict = judge.prejudge(model, config.rule_table.for_server(user, model).policy, now)
        if verdict is None:
            raise ValueError(f"server {name!r} needs its hook asked or its kernels read: use judge_user()")
        found[name] = verdict
    return found


async def judge_user(
    hub: HubClient, user: User, config: Config, now: datetime, *, state: LoadedState | None = None
) -> dict[str, Verdict]:
    """Each of ``user``'s servers judged as a pass would judge it (hook, inspection, warnings and keeps and all).
    ``state``: the warnings' state file as read (see :func:`read_warnings`)."""
    from ._credentials import MIN_LIFETIME, open_server_credentials
    from ._engine import inspector

    # Each server is asked with a token of its own user's, as a pass asks it; revoked before this returns.
    async with open_server_credentials(hub, config, lifetime=MIN_LIFETIME) as credentials:
        read_keep = None
        if config.warn_before and config.warn_servers:
            read_keep = NoticeClient(hub, config, credentials).read_keep
        judge = Judge.for_config(config, inspector(hub, config, credentials), read_keep=read_keep)
        notifier = Notifier(config, loaded=state) if config.warn_before else None
        verdicts = {}
        for name, model in user.servers.items():
            policy = config.rule_table.for_server(user, model).policy
            if notifier is None:
                verdicts[name] = await judge.judge(user, model, policy, now)
                continue
            inputs = notifier.inputs(user, model, now)
            # A warned server's keep is read whenever it is explained: it is what its cull will find.
            announced = None if inputs.announced is None else inputs.announced._replace(read_keep=True)
            verdicts[name] = await judge.judge(
                user, inputs.server, policy, now, kept_at=inputs.kept_at, announced=announced
            )
        return verdicts


def read_warnings(config: Config) -> LoadedState | None:
    """The warnings' state file of ``config`` (None without --warn-before or a state file)."""
    if not config.warn_before or not config.state_file:
        return None
    return read_state_file(config.state_file)


def warnings_of(user: User, state: LoadedState | None) -> dict[str, WarningRecord]:
    """The warnings on record for ``user``'s servers as they run now (a server started again has none)."""
    if state is None:
        return {}
    found = {}
    for record in state.warned:
        model = user.servers.get(record.server)
        if record.user == user.name and model is not None and model.started == record.started and not record.settled:
            found[record.server] = record
    return found


def _hub_signal(server: Server, now: datetime) -> dict[str, Any]:
    inactive, _age = server_idle_time(server, now)
    return {
        "last_activity": iso_utc(server.last_activity) if server.activity_visible else "not visible",
        "idle_seconds": seconds(inactive),
    }


def _kernel_signal(server: Server, verdict: Verdict, policy: Policy, now: datetime) -> dict[str, Any]:
    found = verdict.activity
    if found is None:
        failed = verdict.inspection
        assert failed is not None
        return {"last_activity": f"cannot inspect: {failed}", "idle_seconds": None, "inspection_failure": failed.kind}
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


async def explain(
    hub: HubClient, config: Config, user_name: str, now: datetime, *, server: str | None = None
) -> Explanation | str:
    """The explanation of ``user_name`` at ``now``, or why there is none (one line). Raises HubError."""
    user = await hub.get_user(user_name)
    if user is None:
        return await _not_found(hub, user_name)
    if server is not None and server not in user.servers:
        running = ", ".join(repr(name) for name in sorted(user.servers)) or "none"
        return f"user {user_name!r} has no running server {server!r} (running: {running})"
    state = await trio.to_thread.run_sync(read_warnings, config)
    try:
        config.rule_table.check_visible(user)
        verdicts = await judge_user(hub, user, config, now, state=state)
        return explain_user(user, config, now, server=server, verdicts=verdicts, warnings=warnings_of(user, state))
    except MissingFieldError as error:
        return str(error)


async def _not_found(hub: HubClient, user_name: str) -> str:
    """The hub answers 404 both for a user that does not exist and for one the token may not see: only a token
    that may read every user's name can tell them apart."""
    owner = await hub.get_token_owner()
    scopes = None if owner is None else parse_scopes(owner.get("scopes"))
    if scopes is not None and "" in grants(scopes).get("read:users:name", frozenset()):
        return f"the hub has no user {user_name!r}"
    return f"the token cannot see user {user_name!r} (or there is no such user)"


async def run_explain(
    config: Config,
    user_name: str,
    *,
    server: str | None = None,
    json_format: bool = False,
    out: TextIO | None = None,
    transport: Any = None,
    now: datetime | None = None,
) -> int:
    """Read ``user_name`` from the hub, print the explanation; 0 when explained, 1 when it could not be."""
    from ._hub import open_hub_client

    out = sys.stdout if out is None else out
    now = datetime.now(UTC) if now is None else now
    try:
        async with open_hub_client(config, transport=transport) as hub:
            explanation = await explain(hub, config, user_name, now, server=server)
            notes = await group_notes(hub, config.rules)
    except HubError as error:
        return _fail(out, json_format, f"could not read user {user_name!r} from {config.url}: {error}")
    if isinstance(explanation, str):
        return _fail(out, json_format, explanation)
    if json_format:
        out.write(json.dumps({**explanation.as_dict(), "notes": notes}, sort_keys=True) + "\n")
    else:
        out.write(explanation.render() + "".join(f"  note:     {escape_controls(note)}\n" for note in notes))
    return 0


def _fail(out: TextIO, json_format: bool, message: str) -> int:
    if json_format:
        out.write(json.dumps({"event": "explain", "error": message}) + "\n")
    else:
        print(f"trio-culler: --explain: {escape_controls(message)}", file=sys.stderr)
    return 1


def _rule_dict(matched: MatchedRule) -> dict[str, Any] | None:
    if matched.rule is None:
        return None
    return {"index": matched.index, "rule": matched.rule.as_dict(), "label": matched.label}


def _limits(policy: Policy, *, named: bool) -> dict[str, Any]:
    return {
        **policy.limits_json(),
        "culled_when_idle": policy.cull_named_servers if named else policy.cull_default_servers,
        "removed_when_culled": named and policy.remove_named_servers,
    }


def _limit(delta: timedelta | None) -> str:
    """A limit as ``HH:MM:SS``; ``none`` when it is off (max-age 0), never ``unknown``."""
    return "none" if delta is None else format_duration(delta)
