"""The status page for a user who is not an admin: their own servers and culls, and nobody else's.

For each running server: its idle time now, when it will be culled if nothing changes and by which limit (and
the rule that set it), what counts as activity for it, and when its user is warned. The judgment is the pass's
own first step, made purely (:meth:`~.._judge.Judge.prejudge`, whose forecast is :func:`~.._forecast.cull_time`)
on the model the hub gives now, under the rule that matches, so the page and the next pass agree. Where that
step cannot decide (the server's kernels must be read, or the ``cull_arbiter_hook`` asked), the page does
neither: it shows what the last pass decided, if the culler remembers it (:class:`~.._user_record.UserRecord`),
or says that the next pass decides. Then the user's last culls, from the same record.

:func:`build_user_view` is pure (everything arrives as arguments, ``now`` too); :class:`UserViews` reads the
user from the hub (:class:`~._lookup.UserLookup`) and calls it. What they make is in :mod:`._user_values`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .._config import Config
from .._decide import server_idle_time
from .._forecast import Due, Forecast
from .._history import History, StatusSnapshot
from .._inspect import InspectionFailed, ServerActivity
from .._judge import Judge, _with_keep
from .._judgments import ServerJudgment
from .._models import Server, User
from .._policy import Policy
from .._report import CullRecord
from .._rules import MissingFieldError
from .._warning_tally import UserWarnings
from ._lookup import Lookup, UserLookup
from ._user_values import ServerView, UserView

__all__ = ["UserViews", "activity_words", "build_user_view", "format_period", "own_rule"]


async def _never_inspect(user: User, server: Server) -> ServerActivity:
    """The page's judge has an inspector only so that :meth:`Judge.prejudge` knows which servers need their
    kernels read; it never awaits it (a visitor must not make the culler call a user's server)."""
    raise InspectionFailed("internal", "the status page never inspects a server")


def own_rule(label: str | None) -> str | None:
    """A rule's label as a user is shown it: which rule, and what it sets, but not whom it matches.

    ``rules[1] (users=alice, bob -> timeout=86400)`` names other users (and groups, profiles); the user sees
    ``rules[1] (timeout=86400)``. What a rule sets is ``key=value`` of numbers and booleans, never `` -> ``, so
    the last one splits the label whatever the names hold."""
    if label is None:
        return None
    head, paren, inner = label.partition(" (")
    _matched, arrow, settings = inner.removesuffix(")").rpartition(" -> ")
    if not paren or not arrow:
        return head  # not a label this culler writes: its number at most, never what it matched
    return f"{head} ({settings})"


def activity_words(policy: Policy, config: Config, named: bool) -> tuple[str, str]:
    """What counts as activity for a server under ``policy``: a code and the words the page shows its user."""
    if policy.exempt:
        return "nothing", "nothing needs to: a rule exempts this server, which is never culled"
    if not (policy.cull_named_servers if named else policy.cull_default_servers):
        kind = "named" if named else "default"
        age = "only its age counts (max age)" if policy.max_age is not None else "it is never culled"
        return "nothing", f"{kind} servers are not culled for idleness here: {age}"
    if config.inspect_kernels and policy.kernel_activity_only:
        words = (
            "its kernels and terminals only: code running or having run, and terminal use, as the server itself "
            "reports them; an open browser tab alone does not count"
        )
        code = "kernels"
    else:
        words = (
            "what the hub records as activity: your use of the server through the hub (an open JupyterLab tab "
            "counts) and the server's own reports"
        )
        code = "hub"
        if config.inspect_kernels:
            limit = "" if policy.max_busy is None else f" (for at most {format_period(policy.max_busy)})"
            words += f"; and a kernel busy running code keeps it{limit}"
    if config.cull_arbiter_hook is not None:
        words += "; a check set up by the hub's operators decides whether an idle time is long enough"
    return code, words


def build_user_view(
    name: str,
    lookup: Lookup | None,
    *,
    config: Config | None,
    judge: Judge | None,
    snapshot: StatusSnapshot,
    culls: Sequence[CullRecord],
    judgments: Mapping[str, ServerJudgment],
    culls_per_user: int,
    users_remembered: int,
    now: datetime,
) -> UserView:
    """The view of user ``name``. ``lookup``: what the hub said now (None: not asked); ``judgments``: what the
    passes decided about the user's servers that only they could judge, by server name. ``config`` and ``judge``
    are the culler's (None only without a hub to ask: then only what the culler remembers is shown)."""
    user = None if lookup is None else lookup.user
    warn_before = 0.0 if config is None else config.warn_before
    # The user's own, by their exact name: nothing of another user's can be in it.
    warnings = snapshot.warnings_of(name)
    hub_read = lookup is not None and lookup.problem is None
    servers: list[ServerView] = []
    rules_problem = None
    if user is not None and config is not None and judge is not None:
        try:
            config.rule_table.check_visible(user)
        except MissingFieldError as error:
            rules_problem = f"the culler cannot see this user's {error.field}, which its rules match on"
        else:
            for server in sorted(user.servers.values(), key=lambda server: server.name):
                view = _judged_now(user, server, config, judge, judgments.get(server.name), warnings, now)
                servers.append(_with_warnings(view, server.started, warnings, config))
    elif not hub_read:
        servers = [
            _with_warnings(view, None, warnings, config)
            for view in _remembered(name, snapshot.upcoming, judgments, warnings, warn_before)
        ]
    last = snapshot.passes[0] if snapshot.passes else None
    return UserView(
        user=name,
        now=now,
        hub_read=hub_read,
        hub_problem=None if lookup is None else lookup.problem,
        servers=tuple(servers),
        culls=tuple(attrs.evolve(cull, matched_rule=own_rule(cull.matched_rule)) for cull in culls),
        culls_per_user=culls_per_user,
        users_remembered=users_remembered,
        last_pass_at=None if last is None else last.started,
        next_pass_at=snapshot.next_pass_at,
        stopped=snapshot.config_error is not None,
        dry_run=bool(snapshot.config.get("dry_run")),
        warn_before=warn_before,
        rules_problem=rules_problem,
        warns_operators=config is not None and (config.warn_hook is not None or config.warn_url is not None),
    )


def _judged_now(
    user: User,
    server: Server,
    config: Config,
    judge: Judge,
    remembered: ServerJudgment | None,
    warnings: UserWarnings,
    now: datetime,
) -> ServerView:
    keep = warnings.kept.get(server.name)
    if keep is not None and keep.started == server.started:
        # The keep is activity at its time, as the pass takes it: the hub folds the request that carried it into
        # the server's last_activity only every last_activity_interval.
        server = _with_keep(server, keep.kept_at)
    matched = config.rule_table.for_server(user, server)
    policy = matched.policy
    inactive, age = server_idle_time(server, now)
    view = ServerView(
        name=server.name,
        state=_state(server),
        started=server.started,
        last_activity=server.last_activity,
        idle=inactive,
        age=age,
        rule=own_rule(None if matched.rule is None else matched.label),
        policy=policy,
        activity=activity_words(policy, config, bool(server.name)),
    )
    verdict = judge.prejudge(server, policy, now)
    if verdict is not None:
        due, decision = verdict.due, verdict.decision
        return attrs.evolve(
            view,
            judged_by="page",
            judged_at=now,
            code=str(decision.code),
            reason=decision.reason,
            culling=decision.acts,
            **_due_fields(due, config.warn_before),
        )
    # Only the server's kernels or the hook can say: what the last pass said, if it judged this run of it.
    if remembered is not None and remembered.started == server.started:
        return attrs.evolve(view, **_remembered_fields(remembered, config.warn_before))
    return view


def _with_warnings(
    view: ServerView, started: datetime | None, warnings: UserWarnings, config: Config | None
) -> ServerView:
    """``view`` with the warning that stands for it and its user's keep, where they are of this run of the server
    (``started``; None: the hub could not be read, and the culler's last word is shown)."""
    warning = warnings.standing.get(view.name)
    keep = warnings.kept.get(view.name)
    changes: dict[str, Any] = {}
    if keep is not None and (started is None or keep.started == started):
        changes["kept_at"] = keep.kept_at
    if warning is not None and (started is None or warning.started == started):
        notice: str | None
        if config is not None and not config.warn_servers:
            notice = "off"
        elif warning.no_extension:
            notice = "no_extension"
        else:
            notice = None if config is None else "server"
        # While a warning stands, the time it announced holds: never sooner (the user was promised that much
        # notice), and not later for the culler's own requests to the server, which the hub counts as activity.
        changes |= {"warning": warning, "notice": notice, "cull_at": warning.cull_at, "warn_at": None}
        changes["cull_code"] = warning.reason
    return attrs.evolve(view, **changes) if changes else view


def _remembered(
    name: str,
    upcoming: Sequence[Forecast],
    judgments: Mapping[str, ServerJudgment],
    warnings: UserWarnings,
    warn_before: float,
) -> list[ServerView]:
    """What the culler remembers of the user's servers when the hub cannot be read: the passes' judgments, the
    last pass's forecast where it lists them, and the warnings that stand and keeps."""
    views = {
        server: ServerView(name=server, state=None, **_remembered_fields(judgment, warn_before))
        for server, judgment in judgments.items()
    }
    for forecast in upcoming:
        if forecast.user == name and forecast.server not in views:
            views[forecast.server] = ServerView(
                name=forecast.server,
                state=None,
                rule=own_rule(forecast.rule),
                cull_at=forecast.cull_at,
                cull_code=forecast.limit,
                limit_seconds=forecast.limit_seconds,
                warn_at=_warn_at(forecast.cull_at, warn_before),
            )
    for server in warnings.standing.keys() | warnings.kept.keys():
        views.setdefault(server, ServerView(name=server, state=None))
    return [views[server] for server in sorted(views)]


def _remembered_fields(judgment: ServerJudgment, warn_before: float) -> dict[str, Any]:
    decision = judgment.decision
    return {
        "judged_by": "pass",
        "judged_at": judgment.judged_at,
        "code": str(decision.code),
        "reason": f"{decision.reason} (judged by {judgment.by})",
        "culling": decision.acts,
        "rule": own_rule(judgment.rule),
        **_due_fields(judgment.due, warn_before),
    }


def _due_fields(due: Due | None, warn_before: float) -> dict[str, Any]:
    if due is None:
        return {}
    return {
        "cull_at": due.at,
        "cull_code": str(due.code),
        "limit_seconds": None if due.limit is None else due.limit.total_seconds(),
        "warn_at": _warn_at(due.at, warn_before),
    }


def _warn_at(cull_at: datetime, warn_before: float) -> datetime | None:
    return cull_at - timedelta(seconds=warn_before) if warn_before else None


#: The hub's words for a pending action, as a state the page shows (any other is shown as the hub says it).
_PENDING = {"spawn": "starting", "stop": "stopping"}


def _state(server: Server) -> str:
    if server.pending:
        return _PENDING.get(server.pending, server.pending)
    return "running" if server.is_ready else "not ready"


def format_period(delta: timedelta | None) -> str:
    """A stretch of time as a user reads it: ``1:02:03``, whole seconds (``-``: none)."""
    if delta is None:
        return "-"
    whole = max(int(delta.total_seconds()), 0)
    return f"{whole // 3600}:{whole % 3600 // 60:02}:{whole % 60:02}"


class UserViews:
    """Users' views of the page: each reads its user from the hub (briefly cached) and judges their servers."""

    def __init__(
        self,
        config: Config | None,
        history: History,
        lookup: UserLookup | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Without ``config`` (a page that has no culler behind it: the configuration could not be read) there is
        nothing to judge with, and no hub is asked."""
        self.config = config
        self.history = history
        self.lookup = lookup if config is not None else None
        self.judge = None if config is None else Judge.for_config(config, _never_inspect)
        self._clock = clock

    async def view(self, name: str) -> UserView:
        snapshot = self.history.snapshot
        # A culler that waits with a configuration error runs no pass: nothing of the hub is worth asking.
        lookup = None if self.lookup is None or snapshot.config_error else await self.lookup.read(name)
        record = self.history.users
        return build_user_view(
            name,
            lookup,
            config=self.config,
            judge=self.judge,
            snapshot=snapshot,
            culls=record.culls_of(name),
            judgments=record.judgments_of(name),
            culls_per_user=record.culls_per_user,
            users_remembered=record.users,
            now=self._clock(),
        )
