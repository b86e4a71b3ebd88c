"""What one pass saw and did: a mutable recorder while it runs, a frozen PassReport when it is done, and the
one summary line per pass."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import HubAuthError, HubError
from ._forecast import Forecast, Upcoming

if TYPE_CHECKING:
    from ._decide import Decision
    from ._judgments import ServerJudgment
    from ._warnings_now import WarningsNow

__all__ = ["OUTCOMES", "CullRecord", "PassError", "PassRecorder", "PassReport", "count"]

log = logging.getLogger("trio_culler")

#: Errors kept verbatim in a report; the rest are only counted, so a broken hub cannot grow memory.
MAX_ERRORS_KEPT = 100
#: Culls kept in a report (the latest; all are counted): a pass that stops 20,000 servers keeps 10,000 records,
#: as many users as the status page remembers culls of (``_user_record.USERS_KEPT``), so that no user it could
#: remember falls out of one large pass.
MAX_CULLS_KEPT = 10_000
#: Judgments kept in a report, of the servers only a worker could judge (kernels read, or a hook asked): the
#: latest, for the status page's user view (``_judgments``).
MAX_JUDGED_KEPT = 10_000
#: Forecasts kept in a report: the soonest culls due within the next hour (all are counted).
MAX_UPCOMING_KEPT = 100

#: How a pass ended (:attr:`PassReport.outcome`), as the README's "Logs and metrics" defines each:
#: ``ran`` (every page of users read, every user decided), ``hub_down`` (not run: the hub could not be reached),
#: ``scopes`` (not run: the hub refused the token, or it lacks a scope the configured features need),
#: ``failed`` (part or all of the user list could not be read, or the hub answered what the culler cannot use),
#: ``interrupted`` (a graceful stop ended it first).
OUTCOMES = ("ran", "hub_down", "scopes", "failed", "interrupted")
#: The subjects under which the engine records the error that ends a pass before its users are decided.
_ABORT_SUBJECTS = frozenset({"probe", "scopes", "authorization"})


@attrs.frozen
class PassError:
    #: What failed: a user name, ``user/server``, or ``page <state> offset <n>`` / ``version``.
    subject: str
    kind: str
    message: str


@attrs.frozen(kw_only=True)
class CullRecord:
    """One server stopped (or user deleted) by a pass, and why: what the status page lists."""

    user: str
    #: The server's name (``""`` for the default server); None when the user itself was deleted.
    server: str | None
    #: ``stop``, ``remove`` (a named server deleted too) or ``delete_user``.
    action: str
    #: What decided: ``idle`` or ``max_age``, or with --inspect-kernels ``kernels_idle`` / ``busy_expired``.
    rule: str
    #: In words, with the signal that decided: ``inactive for 01:02:03`` (since the last activity the hub
    #: recorded, or since the start when it recorded none), ``age 10:00:00, inactive for ...``.
    reason: str
    #: When the hub answered (or, in a dry run, when the pass decided).
    at: datetime
    #: ``stopped``, ``pending`` (202: still stopping), ``gone`` (404), ``deleted``, ``failed`` or ``dry_run``.
    outcome: str
    #: The rule that set the limits, as ``rules[1] (groups=overnight -> timeout=86400)``; None: global options.
    matched_rule: str | None = None
    #: The signal that measured the idleness: ``hub`` (the hub's last_activity), ``kernel_busy`` or
    #: ``kernel_activity`` (the server's own kernels and terminals, with --inspect-kernels).
    signal: str = "hub"


@attrs.frozen(kw_only=True)
class PassReport:
    started: datetime
    duration: float
    hub_version: str | None
    dry_run: bool
    users_seen: int
    servers_seen: int
    #: Servers the pass decided to cull (in a dry run: would have culled), by rule: ``idle``, ``max_age``.
    servers_culled: Mapping[str, int]
    #: Of those, confirmed down (204, or 404: already gone).
    servers_stopped: int
    #: Of those, still stopping after the hub's slow_stop_timeout (202); their users are kept this pass.
    servers_pending: int
    users_culled: int
    users_deleted: int
    #: Items of a page that could not be read, and so were not acted upon.
    skipped: int
    #: Users listed twice by the hub in this pass (offsets shift while servers stop); handled once.
    duplicates: int
    pages: int
    pages_failed: int
    errors_by_kind: Mapping[str, int]
    errors: Sequence[PassError]
    #: Set when the pass stopped early: the hub refused the token, or could not be reached at all.
    aborted: str | None = None
    #: A graceful stop ended the pass before every user was handled.
    interrupted: bool = False
    #: The latest culls of this pass (at most MAX_CULLS_KEPT), in the order the hub answered.
    culls: Sequence[CullRecord] = ()
    #: The servers this pass kept that are due to be culled within the hour, soonest first (at most
    #: MAX_UPCOMING_KEPT), and how many are due in all, by limit.
    upcoming: Sequence[Forecast] = ()
    upcoming_due: Mapping[str, int] = attrs.field(factory=dict)
    #: Warnings' events delivered, and failed (hook or URL), since the previous pass's report.
    warnings_sent: int = 0
    warnings_failed: int = 0
    #: The warnings' events since the previous pass's report, by kind: ``warning``, ``cancelled``, ``culled``.
    warning_events: Mapping[str, int] = attrs.field(factory=dict)
    #: Notices delivered to servers (PUT and DELETE) and failed, servers whose notice API answered 404 (no
    #: extension: counted once each), and warned servers spared because their users asked to keep them.
    notices_delivered: int = 0
    notices_failed: int = 0
    notices_without_extension: int = 0
    keeps: int = 0
    #: With --inspect-kernels: servers whose kernels and terminals were read, and those that could not be
    #: inspected, by kind (``_judge.DECIDED_FROM_HUB_DATA`` says which were then decided from the hub's data;
    #: the others were kept and are errors too).
    servers_inspected: int = 0
    inspection_failures: Mapping[str, int] = attrs.field(factory=dict)
    #: Users read again before a DELETE because their listing was old (``_work.RECHECK_AFTER``), and culls
    #: that reading prevented (a server restarted or used since the listing, a user with a server again).
    rereads: int = 0
    culls_prevented: int = 0
    #: The hub accepted the token at this pass's probe (what the ``trio_culler_hub_up`` gauge shows).
    hub_up: bool = False
    #: How the pass ended: one of :data:`OUTCOMES`.
    outcome: str = "ran"
    #: The servers the pass kept, by the decision's code (``active``, ``exempt``, ``kernel_busy``, ...; ``warned``:
    #: kept until the notice its user was promised runs out). A server whose cull_arbiter_hook failed is an error
    #: instead.
    servers_kept: Mapping[str, int] = attrs.field(factory=dict)
    #: Warnings waiting for delivery (hook or URL) when the pass ended.
    warnings_pending: int = 0
    #: Servers an earlier pass stopped with a 202 (still stopping) that this pass saw stopped: ``(user, server)``.
    stops_confirmed: Sequence[tuple[str, str]] = ()
    #: What the workers decided about the servers they judged with their kernels or a hook (the latest
    #: MAX_JUDGED_KEPT), for the status page's user view, which must not ask a server or a hook itself.
    judgments: Sequence[ServerJudgment] = ()
    #: The warnings that stand and the keeps, as the pass left them (a long-running culler's, with
    #: --warn-before; set by the service, which holds the notifier), for the status page.
    warnings_now: WarningsNow | None = None

    @property
    def listed(self) -> bool:
        """Whether the pass got as far as asking for users: a pass that did not (hub down, scopes, a wrong
        ``--url``) has no duration or time worth plotting."""
        return bool(self.pages or self.pages_failed)

    @property
    def error_count(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def ok(self) -> bool:
        """The pass ran to its end and nothing failed: what ``--once`` turns into exit status 0."""
        return self.aborted is None and not self.interrupted and self.error_count == 0

    def log_fields(self) -> dict[str, object]:
        """The structured fields of the summary line (what ``--log-format=json`` carries beside the text)."""
        return {
            "event": "pass",
            # When it began: the summary line comes after what follows a pass (stops confirmed, unused tokens
            # revoked), so its own time less the duration is not the start a reader of the log needs.
            "started": self.started.isoformat().replace("+00:00", "Z"),
            "duration_seconds": round(self.duration, 3),
            "users_seen": self.users_seen,
            "servers_seen": self.servers_seen,
            "servers_culled": sum(self.servers_culled.values()),
            "servers_stopped": self.servers_stopped,
            "servers_pending": self.servers_pending,
            "users_deleted": self.users_deleted,
            "skipped": self.skipped,
            "errors": self.error_count,
            "dry_run": self.dry_run,
            "warnings_sent": self.warnings_sent,
            "warnings_failed": self.warnings_failed,
            "warning_events": dict(self.warning_events),
            "notices_delivered": self.notices_delivered,
            "notices_failed": self.notices_failed,
            "notices_without_extension": self.notices_without_extension,
            "keeps": self.keeps,
            "servers_inspected": self.servers_inspected,
            "inspection_failures": self.servers_not_inspected,
            "rereads": self.rereads,
            "culls_prevented": self.culls_prevented,
        }

    @property
    def servers_not_inspected(self) -> int:
        """Servers whose kernels could not be read; ``status_unreadable`` is counted beside them (its kernels
        were read, only its own last activity was not: it was inspected)."""
        return sum(count for kind, count in self.inspection_failures.items() if kind != "status_unreadable")

    def summary(self) -> str:
        if self.aborted and not self.pages and not self.pages_failed:
            # Nothing was listed: a line of zeros would bury the one thing to read.
            return f"Pass not run: {self.aborted}"
        culled = sum(self.servers_culled.values())
        verb = "would cull" if self.dry_run else "culled"
        text = (
            f"Pass {'aborted' if self.aborted else 'done'} in {self.duration:.2f}s: "
            f"{count(self.users_seen, 'user')} seen ({count(self.servers_seen, 'server')}), "
            f"{verb} {count(culled, 'server')} "
            f"({self.servers_stopped} stopped, {self.servers_pending} still stopping), "
            f"{'would delete' if self.dry_run else 'deleted'} "
            f"{count(self.users_culled if self.dry_run else self.users_deleted, 'user')}, "
            f"{self.skipped} skipped, {count(self.error_count, 'error')}, {count(self.pages, 'page')}"
        )
        if self.warnings_sent or self.warnings_failed:
            text += f", warnings {self.warnings_sent} sent, {self.warnings_failed} failed"
        events = {kind: number for kind, number in self.warning_events.items() if number}
        if events:
            # "2 warnings, 1 cancelled, 1 culled": the events' own names, the first a noun.
            said = [count(number, kind) if kind == "warning" else f"{number} {kind}" for kind, number in events.items()]
            text += ", " + ", ".join(said)
        if self.keeps:
            text += f" ({count(self.keeps, 'server')} kept by their users)"
        if self.notices_delivered or self.notices_failed or self.notices_without_extension:
            text += (
                f", notices {self.notices_delivered} delivered, {self.notices_failed} failed, "
                f"{self.notices_without_extension} to servers without the extension"
            )
        if self.servers_inspected or self.inspection_failures:
            text += f", {self.servers_inspected} servers inspected ({self.servers_not_inspected} could not be)"
        if self.rereads:
            text += f", {count(self.rereads, 'user')} read again before culling ({self.culls_prevented} kept)"
        if self.aborted:
            text += f"; {self.aborted}"
        return text


def count(number: int, noun: str) -> str:
    """``1 server``, ``2 servers``, ``0 servers``: the nouns of the culler's lines are all regular."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@attrs.define
class PassRecorder:
    """Counters a running pass updates. Only the pass's own tasks touch it (one trio thread: no locks)."""

    started: datetime
    started_at: float
    dry_run: bool
    hub_version: str | None = None
    #: The hub's count of users in the current listing, for progress lines.
    listing_total: int | None = None
    users_seen: int = 0
    servers_seen: int = 0
    servers_culled: Counter[str] = attrs.field(factory=Counter)
    servers_stopped: int = 0
    servers_pending: int = 0
    users_culled: int = 0
    users_deleted: int = 0
    skipped: int = 0
    duplicates: int = 0
    pages: int = 0
    pages_failed: int = 0
    errors_by_kind: Counter[str] = attrs.field(factory=Counter)
    errors: list[PassError] = attrs.field(factory=list)
    aborted: str | None = None
    interrupted: bool = False
    culls: deque[CullRecord] = attrs.field(factory=lambda: deque(maxlen=MAX_CULLS_KEPT))
    #: Set by the engine once it knows the policy; the pager shows it every user it reads.
    upcoming: Upcoming | None = None
    warnings_sent: int = 0
    warnings_failed: int = 0
    warnings_pending: int = 0
    warning_events: Counter[str] = attrs.field(factory=Counter)
    notices_delivered: int = 0
    notices_failed: int = 0
    notices_without_extension: int = 0
    keeps: int = 0
    hub_up: bool = False
    servers_kept: Counter[str] = attrs.field(factory=Counter)
    stops_confirmed: tuple[tuple[str, str], ...] = ()
    #: Why the pass was aborted, as an outcome (set with the error that aborted it).
    abort_cause: str | None = None
    judgments: deque[ServerJudgment] = attrs.field(factory=lambda: deque(maxlen=MAX_JUDGED_KEPT))
    #: The decisions of the user the pager's triage last kept whole, until the pager says whether it counts.
    _triaged: Iterable[Decision] = attrs.field(default=(), init=False)

    def cull(self, record: CullRecord) -> None:
        self.culls.append(record)

    def judged(self, judgment: ServerJudgment) -> None:
        """Keep what a worker decided about a server it judged with its kernels or a hook."""
        self.judgments.append(judgment)

    def kept(self, code: str) -> None:
        """Count a server the pass decided to keep, by the decision's code."""
        self.servers_kept[code] += 1

    def triaged(self, decisions: Iterable[Decision]) -> None:
        """The decisions of a user the pager's triage keeps whole, counted by :meth:`count_triaged` only if the
        pager counts the user (a user re-read where pages overlap is not counted twice)."""
        self._triaged = decisions

    def count_triaged(self) -> None:
        for decision in self._triaged:
            self.servers_kept[decision.code] += 1
        self._triaged = ()

    servers_inspected: int = 0
    inspection_failures: Counter[str] = attrs.field(factory=Counter)
    rereads: int = 0
    culls_prevented: int = 0
    _said: set[str] = attrs.field(factory=set)

    def inspection_failed(self, kind: str) -> bool:
        """Count a server that could not be inspected; True for the first of its kind in this pass (the one to
        log: 2,000 servers refusing the same token say it once, not 2,000 times)."""
        self.inspection_failures[kind] += 1
        return self.inspection_failures[kind] == 1

    def first_in_pass(self, what: str) -> bool:
        """True the first time ``what`` happens in this pass: the line to log at its level (the rest DEBUG)."""
        if what in self._said:
            return False
        self._said.add(what)
        return True

    def error(self, subject: str, error: HubError | Exception, *, kind: str | None = None) -> None:
        """Count an error of the pass; ``kind`` (default: the HubError's, else ``internal``) labels it."""
        if kind is None:
            kind = error.kind if isinstance(error, HubError) else "internal"
        self.errors_by_kind[kind] += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(PassError(subject, kind, str(error)))
        if subject in _ABORT_SUBJECTS and isinstance(error, HubError):
            self.abort_cause = _abort_cause(error)

    def finish(self, now: float) -> PassReport:
        # Every counter of the same name, copied (a report is frozen: no Counter or list of the recorder's
        # may change under it); the recorder's Upcoming becomes the report's two views of it.
        values = {
            field.name: _copied(getattr(self, field.name))
            for field in attrs.fields(PassReport)
            if field.name not in ("duration", "upcoming", "upcoming_due", "outcome", "warnings_now")
        }
        return PassReport(
            **values,
            outcome=self._outcome(),
            duration=now - self.started_at,
            upcoming=() if self.upcoming is None else self.upcoming.soonest(),
            upcoming_due={} if self.upcoming is None else dict(self.upcoming.due),
        )

    def _outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.aborted is not None:
            return self.abort_cause or "failed"
        return "failed" if self.pages_failed else "ran"

    def progress_line(self) -> str:
        total = "?" if self.listing_total is None else str(self.listing_total)
        culled = sum(self.servers_culled.values())
        return (
            f"Pass in progress: {count(self.users_seen, 'user')} seen (hub lists {total}), "
            f"{count(culled, 'server')} culled, {count(self.users_deleted, 'user')} deleted, "
            f"{count(sum(self.errors_by_kind.values()), 'error')}"
        )


def _abort_cause(error: HubError) -> str:
    """The outcome of a pass ended by ``error``: HubAuthError covers a refused token and every missing scope."""
    if isinstance(error, HubAuthError):
        return "scopes"
    return "hub_down" if error.transient else "failed"


def _copied(value: Any) -> Any:
    if isinstance(value, Counter):
        return dict(value)
    if isinstance(value, list | deque):
        return tuple(value)
    return value
