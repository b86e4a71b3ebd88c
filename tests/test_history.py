"""A pass's report, what the status page's ``api/status`` serves from the reports it was given, and each user's own
record of culls and judgments (what the page's user view shows)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from trio_culler._codes import DecisionCode
from trio_culler._decide import Action, Decision
from trio_culler._forecast import Forecast
from trio_culler._history import History
from trio_culler._judgments import ServerJudgment
from trio_culler._report import MAX_CULLS_KEPT, MAX_JUDGED_KEPT, CullRecord, PassError, PassRecorder, PassReport
from trio_culler._user_record import CULLS_PER_USER, JUDGMENTS_KEPT, USERS_KEPT, UserRecord, UserRecordStatistics
from trio_culler._warning_book import MAX_REMEMBERED, WarningBook
from trio_culler._warning_tally import SHOWN
from trio_culler._warnings_now import KeptServer, StandingWarning, WarningsNow
from trio_culler._warnings_state import KeepRecord, WarningRecord

from .support.docs import code_blocks
from .support.processes import REPO

STARTED = datetime(2026, 11, 30, 16, 42, 18, tzinfo=UTC)


def report() -> PassReport:
    return PassReport(
        started=STARTED,
        duration=0.23456,
        hub_version="6.1.1",
        dry_run=False,
        users_seen=2,
        servers_seen=2,
        servers_culled={"idle": 1},
        servers_stopped=1,
        servers_pending=0,
        users_culled=0,
        users_deleted=0,
        skipped=0,
        duplicates=0,
        pages=1,
        pages_failed=0,
        errors_by_kind={"status": 1},
        errors=(PassError("bob/gpu", "status", "..."),),
        culls=(
            CullRecord(
                user="alice",
                server="",
                action="stop",
                rule="idle",
                reason="inactive for 01:00:04",
                at=STARTED + timedelta(milliseconds=120),
                outcome="stopped",
            ),
        ),
        upcoming=(
            Forecast(
                user="carol", server="", cull_at=STARTED + timedelta(seconds=44), limit="idle", limit_seconds=3600
            ),
        ),
        upcoming_due={"idle": 1200, "max_age": 34},
        servers_kept={"active": 1},
        warning_events={"warning": 1, "culled": 2},
        notices_delivered=1,
        keeps=1,
        warnings_now=WarningsNow(
            standing=(
                StandingWarning(
                    user="dave",
                    server="",
                    started=STARTED - timedelta(hours=2),
                    id="7f3c2a9e4b1d0c55",
                    warned_at=STARTED,
                    cull_at=STARTED + timedelta(minutes=15),
                    reason="idle",
                ),
            ),
            kept=(KeptServer(user="erin", server="gpu", started=None, kept_at=STARTED - timedelta(minutes=11)),),
            without_extension=3,
        ),
    )


def test_api_status_serves_the_documented_document() -> None:
    history = History({"timeout": 3600}, size=100, interval=600)
    history.observe(report())
    document = history.snapshot.to_json()
    assert document["passes"] == [
        {
            "started": "2026-11-30T16:42:18Z",
            "duration_seconds": 0.235,
            "hub_version": "6.1.1",
            "dry_run": False,
            "users_seen": 2,
            "servers_seen": 2,
            "servers_culled": 1,
            "servers_stopped": 1,
            "servers_pending": 0,
            "users_deleted": 0,
            "skipped": 0,
            "errors": 1,
            "aborted": None,
            "interrupted": False,
            "outcome": "ran",
        }
    ]
    assert document["culls"] == [
        {
            "user": "alice",
            "server": "",
            "action": "stop",
            "rule": "idle",
            "reason": "inactive for 01:00:04",
            "signal": "hub",
            "matched_rule": None,
            "at": "2026-11-30T16:42:18.120000Z",
            "outcome": "stopped",
        }
    ]
    assert document["upcoming"] == {
        "as_of": "2026-11-30T16:42:18Z",
        "horizon_seconds": 3600,
        "due": {"idle": 1200, "max_age": 34},
        "total_due": 1234,
        "foreseen": 1234,
        "unknown": None,
        "soonest": [
            {
                "user": "carol",
                "server": "",
                "cull_at": "2026-11-30T16:43:02Z",
                "limit": "idle",
                "limit_seconds": 3600,
                "rule": None,
            }
        ],
    }
    assert document["last_errors"] == [{"subject": "bob/gpu", "kind": "status", "message": "..."}]
    assert document["config_error"] is None
    assert document["kept"] == {"as_of": "2026-11-30T16:42:18Z", "by_reason": {"active": 1}}
    last_pass = {
        "events": {"warning": 1, "cancelled": 0, "culled": 2},
        "notices": {"delivered": 1, "failed": 0, "without_extension": 0},
        "keeps": 1,
    }
    assert document["warnings"] == {
        "enabled": False,
        "sent": 0,
        "failed": 0,
        "pending": 0,
        "waiting": 0,
        "since_start": last_pass,
        "last_pass": last_pass,
        "as_of": "2026-11-30T16:42:18Z",
        "standing_total": 1,
        "standing": [
            {
                "user": "dave",
                "server": "",
                "id": "7f3c2a9e4b1d0c55",
                "warned_at": "2026-11-30T16:42:18Z",
                "cull_at": "2026-11-30T16:57:18Z",
                "reason": "idle",
                "kept_at": None,
                "no_extension": False,
            }
        ],
        "kept_total": 1,
        "kept": [{"user": "erin", "server": "gpu", "kept_at": "2026-11-30T16:31:18Z"}],
        "without_extension": 3,
    }
    # The README's example has the same shape, key for key.
    (block,) = [block for block in code_blocks(REPO / "README.md") if '"passes": [' in block.text]
    readme = json.loads(block.text)
    assert readme.keys() == document.keys()
    for key in ("passes", "culls", "last_errors"):
        assert readme[key][0].keys() == document[key][0].keys(), key
    assert readme["upcoming"].keys() == document["upcoming"].keys()
    assert readme["upcoming"]["soonest"][0].keys() == document["upcoming"]["soonest"][0].keys()
    for key in ("kept", "warnings"):
        assert readme[key].keys() == document[key].keys(), key
    warnings = document["warnings"]
    for key in ("since_start", "last_pass"):
        assert readme["warnings"][key].keys() == warnings[key].keys(), key
        for part in ("events", "notices"):
            assert readme["warnings"][key][part].keys() == warnings[key][part].keys(), (key, part)
    for key in ("standing", "kept"):
        assert readme["warnings"][key][0].keys() == warnings[key][0].keys(), key


def test_a_finished_report_does_not_change_with_its_recorder() -> None:
    recorder = PassRecorder(started=STARTED, started_at=10.0, dry_run=False)
    recorder.error("alice", RuntimeError("first"))
    recorder.servers_culled["idle"] += 1
    report = recorder.finish(12.5)
    recorder.error("bob", RuntimeError("second"))
    recorder.servers_culled["idle"] += 1
    assert (report.duration, report.errors_by_kind, report.servers_culled) == (2.5, {"internal": 1}, {"idle": 1})
    assert report.errors == (PassError("alice", "internal", "first"),)


# --- each user's own record: what the page's user view shows ------------------------------------------------------


def _cull(user: str, server: str = "", *, at: int = 0, outcome: str = "stopped") -> CullRecord:
    return CullRecord(
        user=user,
        server=server,
        action="stop",
        rule="idle",
        reason="inactive for 01:00:04",
        at=STARTED + timedelta(seconds=at),
        outcome=outcome,
    )


def _report_with(culls: tuple[CullRecord, ...] = (), **changes: Any) -> PassReport:
    return attrs.evolve(report(), culls=culls, **changes)


def test_a_users_culls_outlast_everyone_elses_in_the_record() -> None:
    """The page's list of culls keeps the latest `size` of everyone; a user's own stay in the per-user record
    however many others are culled after them."""
    history = History({}, size=100)
    history.observe(_report_with((_cull("alice", at=0),)))
    for batch in range(10):
        history.observe(_report_with(tuple(_cull(f"u{batch}-{n}", at=1 + n) for n in range(100))))
    assert "alice" not in {cull.user for cull in history.snapshot.culls}
    assert [cull.user for cull in history.users.culls_of("alice")] == ["alice"]
    assert history.users.culls_of("nobody") == ()


def test_the_record_keeps_the_last_few_culls_of_the_most_recently_culled_users() -> None:
    record = UserRecord(users=3, culls_per_user=2, judgments=4)
    record.add_culls([_cull("a", "one", at=1), _cull("a", "two", at=2), _cull("a", "three", at=3)])
    assert [cull.server for cull in record.culls_of("a")] == ["three", "two"]  # newest first, two kept
    record.add_culls([_cull("b", at=4), _cull("c", at=5)])
    # Reading protects nobody: "a" was culled least recently, so a fourth user pushes "a" out.
    assert record.culls_of("a")
    record.add_culls([_cull("d", at=6)])
    assert record.culls_of("a") == ()
    assert [user for user in "bcd" if record.culls_of(user)] == ["b", "c", "d"]
    # A new cull moves its user to the recent end: now "c" is the oldest.
    record.add_culls([_cull("b", at=7), _cull("e", at=8)])
    assert [user for user in "bcde" if record.culls_of(user)] == ["b", "d", "e"]
    assert record.statistics() == UserRecordStatistics(users=3, culls=4, judgments=0)
    with pytest.raises(ValueError, match="at least one"):
        UserRecord(users=0)


def test_a_pending_cull_is_stopped_in_the_users_record_too() -> None:
    history = History({}, size=1)
    history.observe(_report_with((_cull("sam", outcome="pending"), _cull("kim", outcome="pending"))))
    history.observe(_report_with((), stops_confirmed=(("sam", ""),)))
    assert [cull.outcome for cull in history.users.culls_of("sam")] == ["stopped"]
    assert [cull.outcome for cull in history.users.culls_of("kim")] == ["pending"]


def _judgment(user: str, server: str, *, code: DecisionCode = DecisionCode.KERNEL_BUSY) -> ServerJudgment:
    decision = Decision(Action.KEEP, code, timedelta(minutes=70), timedelta(hours=5), busy=timedelta(minutes=70))
    return ServerJudgment(
        user=user,
        server=server,
        started=STARTED - timedelta(hours=5),
        judged_at=STARTED,
        decision=decision,
        due=None,
        rule=None,
        by="kernels",
    )


def test_the_record_keeps_the_latest_judgment_of_each_server_within_its_bound() -> None:
    record = UserRecord(users=3, culls_per_user=2, judgments=3)
    record.add_judgments([_judgment("a", ""), _judgment("a", "gpu"), _judgment("b", "")])
    assert list(record.judgments_of("a")) == ["", "gpu"]
    newer = _judgment("a", "", code=DecisionCode.KERNELS_ACTIVE)
    record.add_judgments([newer, _judgment("c", "")])  # "a/gpu" is the oldest now, and goes
    assert record.judgments_of("a") == {"": newer}
    assert list(record.judgments_of("c")) == [""]
    record.add_judgments([_judgment("d", "x"), _judgment("d", "y")])  # "b/" and "a/" go: "a" has none left
    assert record.judgments_of("a") == {}
    assert record.judgments_of("b") == {}
    assert record.statistics().judgments == 3
    assert record._judged_servers.keys() == {"c", "d"}  # no user left behind with an empty set


def test_a_report_keeps_as_many_culls_as_the_record_keeps_users() -> None:
    """One pass that culls 10,000 users must not lose any of them before the record sees them."""
    assert MAX_CULLS_KEPT >= USERS_KEPT
    assert MAX_JUDGED_KEPT >= JUDGMENTS_KEPT


def test_the_record_at_its_bounds_holds_what_the_readme_says() -> None:
    """Full: USERS_KEPT users with CULLS_PER_USER culls each (long names, a rule on every cull) and JUDGMENTS_KEPT
    judgments. The README states the figure; this keeps it honest, and shows more culls cost nothing more."""
    rule = "rules[1] (groups=overnight -> timeout=86400)"

    def culls(rounds: int) -> Iterator[CullRecord]:
        for n in range(rounds):
            for u in range(USERS_KEPT):
                yield attrs.evolve(
                    _cull(f"user-{u:06d}@example.org", f"server-{n}", at=n * USERS_KEPT + u),
                    reason=f"inactive for 01:{n:02d}:04",
                    matched_rule=rule,
                )

    gc.collect()
    tracemalloc.start()
    try:
        record = UserRecord()
        record.add_culls(culls(CULLS_PER_USER))
        after_culls, _peak = tracemalloc.get_traced_memory()
        record.add_judgments(
            attrs.evolve(_judgment(f"user-{u:06d}@example.org", "gpu"), rule=rule) for u in range(JUDGMENTS_KEPT)
        )
        full, _peak = tracemalloc.get_traced_memory()
        record.add_culls(culls(2))  # as many again: the old ones go
        again, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.statistics() == UserRecordStatistics(
        users=USERS_KEPT, culls=USERS_KEPT * CULLS_PER_USER, judgments=JUDGMENTS_KEPT
    )
    mib = 1 << 20
    assert after_culls < 28 * mib  # README: about 25 MiB for the culls ...
    assert full - after_culls < 12 * mib  # ... and 9 MiB for the judgments
    assert again < full + 2 * mib


def test_what_stands_at_the_books_bound_costs_what_the_readme_says() -> None:
    """The book full (MAX_REMEMBERED warnings that stand and as many keeps): the copy a pass hands the page, and
    the page's index by user, take the figure the README states; the lists shown stay SHOWN long."""
    book = WarningBook(lambda: STARTED)
    started = STARTED - timedelta(hours=3)
    for n in range(MAX_REMEMBERED):
        user = f"user-{n:06d}@example.org"
        book.warn(
            WarningRecord(
                user=user,
                server="",
                started=started,
                id=f"{n:016x}",
                warned_at=STARTED + timedelta(seconds=n),
                due=STARTED + timedelta(minutes=10),
                cull_at=STARTED + timedelta(minutes=15),
                reason="idle",
            )
        )
        book.kept[(user, "gpu")] = KeepRecord(user, "gpu", started, STARTED)
    history = History({"warn_before": 900}, size=100)
    gc.collect()
    tracemalloc.start()
    try:
        history.observe(attrs.evolve(report(), warnings_now=book.now()))
        full, _peak = tracemalloc.get_traced_memory()
        history.observe(attrs.evolve(report(), warnings_now=book.now()))  # the next pass replaces it
        again, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tally = history.snapshot.warnings
    assert (tally.standing_total, tally.kept_total) == (MAX_REMEMBERED, MAX_REMEMBERED)
    assert (len(tally.standing), len(tally.kept)) == (SHOWN, SHOWN)
    assert tally.standing[0].warned_at == STARTED + timedelta(seconds=MAX_REMEMBERED - 1)
    mib = 1 << 20
    assert full < 52 * mib  # README: about 45 MiB at the bound
    assert again < full + 5 * mib
