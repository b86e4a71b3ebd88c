"""A pass's report, and what the status page's ``api/status`` serves from the reports it was given."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from trio_culler._forecast import Forecast
from trio_culler._history import History
from trio_culler._report import CullRecord, PassError, PassRecorder, PassReport

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
    assert document["warnings"] == {"enabled": False, "sent": 0, "failed": 0, "pending": 0, "waiting": 0}
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


def test_a_finished_report_does_not_change_with_its_recorder() -> None:
    recorder = PassRecorder(started=STARTED, started_at=10.0, dry_run=False)
    recorder.error("alice", RuntimeError("first"))
    recorder.servers_culled["idle"] += 1
    report = recorder.finish(12.5)
    recorder.error("bob", RuntimeError("second"))
    recorder.servers_culled["idle"] += 1
    assert (report.duration, report.errors_by_kind, report.servers_culled) == (2.5, {"internal": 1}, {"idle": 1})
    assert report.errors == (PassError("alice", "internal", "first"),)
