"""The soak's oracle (benchmarks/soak_oracle.py) on synthetic timelines: a clean run breaks no invariant, and each
invariant, broken alone, is the one reported.

The baseline: one server ``ann/`` started at 10, used through the proxy until 40, warned at 115 for a cull at 140,
culled by the pass that started at 140; timeout 100, a pass every 10 s, the hub folding the proxy's activity in
every 10 s. Times are seconds from 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trio_culler._report import PassRecorder
from trio_culler._service import publish

from .support.logs import json_lines

# benchmarks/ is a folder of scripts, not a package: its modules import each other by their bare names.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak_monitor import LogTailer
from soak_oracle import fit_growth, judge, render, visible_at
from soak_timeline import (
    Activity,
    Busy,
    CullIntent,
    DriverStart,
    DriverStop,
    Fault,
    HubDelete,
    Inspection,
    LogLine,
    Params,
    PassEnd,
    Sample,
    StatusProbe,
    Timeline,
    WarningReceived,
)

ANN = "ann/"
PARAMS = Params(
    timeout=100,
    cull_every=10,
    activity_interval=10,
    warn_before=25,
    long_timeout=200,
    long_users=("lena",),
    exempt_users=("vip",),
    warmup=0,
)


def clean(end: float = 400.0) -> Timeline:
    timeline = Timeline(params=PARAMS, started=0.0, ended=end, hub_up_at=0.0, culler_pids=[4242], culler_exit=0)
    timeline.starts.append(DriverStart(ANN, 10.0, 11.0))
    timeline.activities += [Activity(ANN, t, t + 0.01) for t in (20.0, 30.0, 40.0)]
    timeline.warnings.append(WarningReceived(115.2, ANN, 140.0))
    for t in range(0, int(end), 10):
        timeline.passes.append(PassEnd(t + 0.5, 0.5))
        timeline.samples.append(Sample(float(t), 50.0, 20, 30, 1))
        timeline.status.append(StatusProbe(float(t) + 1, 0.01, 200, True))
    cull(timeline, ANN, pass_start=140.0)
    return timeline


def cull(timeline: Timeline, key: str, *, pass_start: float, status: int = 204) -> None:
    """The culler's part of one cull: the pass (started at ``pass_start``), its log line, its DELETE."""
    timeline.passes = [p for p in timeline.passes if abs(p.started - pass_start) > 1.0]
    timeline.passes.append(PassEnd(pass_start + 1.0, 1.0))
    timeline.passes.sort(key=lambda p: p.time)
    timeline.intents.append(CullIntent(pass_start + 0.5, key, "idle"))
    timeline.deletes.append(HubDelete(key, pass_start + 0.6, pass_start + 0.7, status))


def recull(timeline: Timeline, key: str, *, pass_start: float) -> None:
    """The baseline's cull of ``key`` moved to the pass that starts at ``pass_start``."""
    timeline.deletes = [d for d in timeline.deletes if d.key != key]
    timeline.intents = [i for i in timeline.intents if i.key != key]
    cull(timeline, key, pass_start=pass_start)


def broken(timeline: Timeline, **kwargs: Any) -> set[str]:
    return {invariant.name for invariant in judge(timeline, **kwargs).broken}


def test_a_clean_run_breaks_nothing() -> None:
    timeline = clean()
    verdict = judge(timeline)
    assert verdict.broken == []
    assert verdict.culls == 1
    assert verdict.late["count"] == 0
    assert verdict.notice["announced_min_seconds"] == pytest.approx(140.0 - 115.2)
    assert verdict.notice["given_min_seconds"] == pytest.approx(140.6 - 115.2)
    assert "culls 1" in render(verdict, elapsed=60)


def test_a_server_culled_while_the_hub_knew_it_active_is_a_violation() -> None:
    timeline = clean()
    timeline.warnings[0] = WarningReceived(80.0, ANN, 100.0)
    recull(timeline, ANN, pass_start=100.0)  # 60 s after its last use, timeout 100
    verdict = judge(timeline)
    assert [v["key"] for v in verdict.violations["active"]] == [ANN]
    assert verdict.violations["active"][0]["idle_at_pass"] == pytest.approx(60.0)
    assert broken(timeline) == {"active servers culled"}


def test_activity_the_hub_has_not_folded_in_yet_is_not_held_against_the_culler() -> None:
    timeline = clean()
    # Used at 135: the hub's next poll of the proxy is due by 135 + 10 + 3, after the pass that culls at 140.
    timeline.activities.append(Activity(ANN, 135.0, 135.01))
    assert broken(timeline) == set()
    # Folded in before the pass: the same cull breaks the invariant (and the warning, at 115, came before it).
    timeline.activities.append(Activity(ANN, 126.0, 126.01))
    assert broken(timeline) == {"active servers culled", "culls without a warning in their idle stretch"}


def test_activity_during_a_hub_restart_is_visible_one_interval_after_the_hub_is_back() -> None:
    timeline = clean()
    timeline.faults.append(Fault("hub_restart", 96.0, 150.0, detail={"down_at": 96.0, "up_at": 150.0}))
    timeline.activities.append(Activity(ANN, 95.0, 95.01))
    periods = [(0.0, 96.0), (150.0, math.inf)]
    assert visible_at(Activity(ANN, 95.0, 95.01), periods, [], PARAMS) == pytest.approx(163.0)
    # The pass at 140 could not know (the hub was down): no violation.
    assert "active servers culled" not in broken(timeline, planned_faults=["hub_restart"])
    recull(timeline, ANN, pass_start=170.0)
    assert "active servers culled" in broken(timeline)


def test_activity_the_proxy_lost_in_a_restart_never_counts_nor_does_the_restored_routes_stamp() -> None:
    timeline = clean()
    timeline.activities.append(Activity(ANN, 95.0, 95.01))
    # The proxy restarts before the hub's poll (due by 108): the 95 s request is lost with it ...
    timeline.faults.append(Fault("proxy_restart", 100.0, 104.0))
    assert visible_at(Activity(ANN, 95.0, 95.01), [(0.0, math.inf)], [100.0], PARAMS) == math.inf
    # ... and the stamp the proxy puts on the route the hub adds back (100-104) is nobody's use of the server:
    # a cull at 140 culls a server its user left at 40, and breaks nothing ...
    assert broken(timeline) == set()
    # ... while a request of its user's at that time would have made the same cull a violation.
    timeline.activities.append(Activity(ANN, 110.0, 110.01))
    assert "active servers culled" in broken(timeline)


def test_the_restored_routes_stamp_still_excuses_a_late_cull() -> None:
    timeline = clean()
    timeline.faults.append(Fault("proxy_restart", 100.0, 104.0))
    # The stamp at 100-104 restarted the hub's idle clock: a cull at 210, 170 s after its user left, is not late.
    recull(timeline, ANN, pass_start=210.0)
    timeline.warnings[0] = WarningReceived(180.0, ANN, 210.0)
    verdict = judge(timeline, planned_faults=["proxy_restart"])
    assert verdict.violations["active"] == []
    assert verdict.late["count"] == 0
    # Without the restart, the same cull is late.
    timeline.faults = []
    assert judge(timeline).late["count"] == 1


def test_an_exempt_server_culled_is_a_violation() -> None:
    timeline = clean()
    timeline.starts.append(DriverStart("vip/", 10.0, 11.0))
    timeline.warnings.append(WarningReceived(115.0, "vip/", 140.0))
    cull(timeline, "vip/", pass_start=300.0)
    assert broken(timeline) == {"exempt servers culled"}


def test_a_rule_with_a_longer_timeout_is_applied() -> None:
    timeline = clean()
    timeline.starts.append(DriverStart("lena/", 10.0, 11.0))
    timeline.activities.append(Activity("lena/", 40.0, 40.01))
    timeline.warnings.append(WarningReceived(115.0, "lena/", 140.0))
    cull(timeline, "lena/", pass_start=140.0)  # 100 s idle: past the global timeout, within lena's 200
    assert broken(timeline) == {"active servers culled"}


def test_a_server_culled_while_its_kernel_was_busy_is_a_violation() -> None:
    timeline = clean()
    timeline.busy.append(Busy(ANN, 50.0, 300.0))
    assert broken(timeline) == {"servers culled while a kernel was busy"}
    # A kernel that finished before the pass listed protects nothing.
    timeline.busy[0] = Busy(ANN, 50.0, 139.0)
    assert broken(timeline) == set()


def test_a_server_restarted_after_its_listing_is_a_race_measured_and_an_invariant_with_the_guard() -> None:
    timeline = clean()
    timeline.stops.append(DriverStop(ANN, 140.1, "restart"))
    timeline.starts.append(DriverStart(ANN, 140.2, 140.3))
    verdict = judge(timeline)
    assert [race["key"] for race in verdict.races] == [ANN]
    assert verdict.violations["active"] == []  # the new instance is not held against the listing
    assert verdict.broken == []
    guarded = dataclasses.replace(timeline, params=dataclasses.replace(PARAMS, features=("race_guard",)))
    assert broken(guarded) == {"culls of a server started after its listing"}


def test_a_delete_of_a_stopped_server_culls_nothing() -> None:
    timeline = clean()
    timeline.stops.append(DriverStop(ANN, 130.0))  # the user logged out before the culler's DELETE
    verdict = judge(timeline)
    assert (verdict.culls, verdict.noop_deletes) == (0, 1)
    assert broken(timeline) == {"servers culled (the run exercised culling)"}


def test_a_cull_without_a_warning_in_its_idle_stretch_is_a_violation() -> None:
    timeline = clean()
    timeline.warnings.clear()
    timeline.warnings.append(WarningReceived(35.0, ANN, 60.0))  # warned, then used again at 40
    assert broken(timeline) == {"culls without a warning in their idle stretch"}


def test_a_cull_before_the_announced_time_is_a_violation() -> None:
    timeline = clean()
    timeline.warnings[0] = WarningReceived(115.2, ANN, 150.0)
    assert broken(timeline) == {"culls before the time their warning announced"}


def test_a_late_cull_is_counted_and_a_fault_explains_it() -> None:
    timeline = clean()
    recull(timeline, ANN, pass_start=200.0)  # due at 140, bound 20 s
    late = judge(timeline).late
    assert (late["count"], late["unexplained"], late["worst_seconds"]) == (1, 1, pytest.approx(60.59))
    timeline.faults.append(Fault("hub_503", 150.0, 160.0))
    late = judge(timeline).late
    assert (late["count"], late["unexplained"]) == (1, 0)
    assert late["examples"][0]["explained_by"] == ["hub_503"]


def test_an_idle_server_never_culled_is_late() -> None:
    timeline = clean()
    timeline.deletes.clear()
    late = judge(timeline).late
    assert (late["not_culled"], late["examples"][0]["outcome"]) == (1, "still running")


def test_error_lines_only_a_fault_explains_are_excused() -> None:
    timeline = clean()
    timeline.log_lines.append(LogLine(300.0, "error", "Pass not run: the hub could not be reached"))
    assert broken(timeline) == {"ERROR lines no injected fault explains"}
    timeline.faults.append(Fault("hub_restart", 280.0, 290.0, detail={"down_at": 280.0, "up_at": 290.0}))
    assert broken(timeline) == set()
    timeline.log_lines.append(LogLine(285.0, "error", "Unexpected error handling user ann"))
    assert broken(timeline) == {"ERROR lines no injected fault explains"}
    timeline.log_lines.pop()
    timeline.log_lines.append(LogLine(285.0, "unparsed", "Traceback (most recent call last):"))
    assert broken(timeline) == {"ERROR lines no injected fault explains"}


def test_an_error_about_one_user_is_explained_by_a_fault_on_that_user_only() -> None:
    timeline = clean()
    timeline.faults.append(Fault("hang", 280.0, 290.0, targets=("bob/",)))
    timeline.log_lines.append(LogLine(285.0, "error", "Failed to stop server bob", user="bob"))
    assert broken(timeline) == set()
    timeline.log_lines.append(LogLine(285.0, "error", "Failed to stop server ann", user="ann"))
    assert broken(timeline) == {"ERROR lines no injected fault explains"}


def test_status_failures_count_outside_the_windows_when_the_hub_or_proxy_was_down() -> None:
    timeline = clean()
    timeline.status.append(StatusProbe(300.0, 5.0, None, False))
    assert broken(timeline) == {"status page failures outside fault windows"}
    timeline.faults.append(Fault("proxy_restart", 298.0, 299.0))
    assert broken(timeline) == set()
    verdict = judge(timeline)
    assert verdict.status["api"]["failed"] == 1
    assert verdict.status["api"]["failed_outside_faults"] == 0


def test_resources_growing_after_warm_up_break_the_bound() -> None:
    timeline = clean()
    timeline.samples = [Sample(float(t), 50.0 + t / 10, 20 + t // 40, 30, 1) for t in range(0, 400, 10)]
    verdict = judge(timeline)
    assert verdict.resources["rss_mib"]["slope_per_hour"] == pytest.approx(360.0)
    assert broken(timeline) == {"RSS growth after warm-up (MiB)", "open FDs growth after warm-up"}


def test_a_spike_during_warm_up_is_left_out_of_the_fit() -> None:
    timeline = clean()
    timeline.params = dataclasses.replace(PARAMS, warmup=100)
    timeline.samples = [Sample(float(t), 500.0 if t < 100 else 50.0, 20, 30, 1) for t in range(0, 400, 10)]
    verdict = judge(timeline)
    assert verdict.resources["rss_mib"]["growth"] == pytest.approx(0.0)
    assert verdict.resources["rss_mib"]["peak"] == 500.0
    assert broken(timeline) == set()


def test_fit_growth_is_least_squares() -> None:
    slope, growth = fit_growth([(0.0, 1.0), (1800.0, 3.0), (3600.0, 2.0)]) or (0.0, 0.0)
    assert slope == pytest.approx(1.0)
    assert growth == pytest.approx(1.0)
    assert fit_growth([(0.0, 1.0), (1.0, 2.0)]) is None


def test_a_culler_restarted_or_gone_breaks_the_run() -> None:
    timeline = clean()
    timeline.culler_pids.append(4343)
    assert broken(timeline) == {"one culler process throughout"}
    timeline.culler_pids.pop()
    timeline.culler_died_at = 200.0
    assert broken(timeline) == {"one culler process throughout"}


def test_a_planned_fault_that_never_ran_breaks_the_run() -> None:
    assert broken(clean(), planned_faults=["hang"]) == {"planned faults that did not run"}
    timeline = clean()
    timeline.faults.append(Fault("hang", 10.0, 10.0, detail={"skipped": "no real server running"}))
    assert broken(timeline, planned_faults=["hang"]) == {"planned faults that did not run"}
    timeline.faults.append(Fault("hang", 20.0, 40.0, targets=("real-0/",)))
    assert broken(timeline, planned_faults=["hang"]) == set()


def test_the_culler_token_at_a_user_server_is_an_invariant_with_per_server_tokens() -> None:
    timeline = clean()
    timeline.inspections.append(Inspection(139.0, ANN, "normal", culler_token=True))
    assert broken(timeline) == set()
    timeline.params = dataclasses.replace(PARAMS, features=("tokens",))
    assert broken(timeline) == {"culler's token sent to a user's server"}


def test_a_timeline_survives_json() -> None:
    timeline = clean()
    timeline.faults.append(Fault("hang", 1.0, 2.0, targets=("bob/",), detail={"pid": 7}))
    timeline.params = dataclasses.replace(PARAMS, features=("tokens",))
    again = Timeline.from_json(timeline.to_json())
    assert again == timeline


def test_while_the_run_goes_on_culls_whose_pass_is_not_written_yet_wait() -> None:
    timeline = clean()
    timeline.passes = [p for p in timeline.passes if p.time < 140.0]  # the culling pass has not ended yet
    assert judge(timeline, final=False).culls == 0
    assert judge(timeline, final=False).violations["unknown_pass"] == []
    assert "culls whose pass the log does not show" in broken(timeline)


def test_a_keep_counts_at_once_the_culler_reads_it_itself() -> None:
    timeline = clean()
    timeline.activities.append(Activity(ANN, 139.0, 139.01, "keep"))  # a ping then would not be visible yet
    assert "active servers culled" in broken(timeline)


def test_a_status_probe_that_straddles_the_start_of_a_fault_is_excused() -> None:
    timeline = clean()
    timeline.status.append(StatusProbe(299.5, 1.0, 502, False, "oauth"))
    assert broken(timeline) == {"status page failures outside fault windows"}
    timeline.faults.append(Fault("hub_restart", 300.0, 310.0, detail={"down_at": 300.0, "up_at": 310.0}))
    assert broken(timeline) == set()


def test_a_fault_on_one_server_explains_late_culls_of_others() -> None:
    # A hung server holds its pass until the inspection's deadline: every cull due meanwhile comes late.
    timeline = clean()
    recull(timeline, ANN, pass_start=200.0)
    timeline.faults.append(Fault("hang", 130.0, 190.0, targets=("real-0/",)))
    late = judge(timeline).late
    assert (late["count"], late["unexplained"]) == (1, 0)


def test_notice_shorter_than_warn_before_is_measured_and_an_invariant_with_full_notice() -> None:
    timeline = clean()
    timeline.warnings[0] = WarningReceived(135.0, ANN, 140.0)  # five seconds of notice, 25 promised
    verdict = judge(timeline)
    assert verdict.notice["shorter_than_warn_before"] == 1
    assert verdict.notice["given_min_seconds"] == pytest.approx(5.6)
    assert verdict.broken == []
    timeline.params = dataclasses.replace(PARAMS, features=("full_notice",))
    assert broken(timeline) == {"culls less than --warn-before after their warning"}


def test_with_webhook_events_each_cull_has_its_culled_event() -> None:
    timeline = clean()
    timeline.params = dataclasses.replace(PARAMS, features=("events",))
    timeline.warnings[0] = WarningReceived(115.2, ANN, 140.0, "warning", "s1")
    assert broken(timeline) == {"culls without a culled event at the webhook"}
    timeline.warnings.append(WarningReceived(140.8, ANN, None, "culled", "s1"))
    timeline.warnings.append(WarningReceived(100.0, "bob/", None, "cancelled", "s0"))
    assert broken(timeline) == set()
    assert judge(timeline).warnings_by_event == {"cancelled": 1, "culled": 1, "warning": 1}


def test_a_pass_line_that_names_its_start_is_dated_from_it() -> None:
    """The summary line comes after the pass's stops are confirmed and its unused tokens revoked: the start the
    line names, not its own time less the duration, dates the culls of the pass."""
    timeline = Timeline(params=PARAMS, started=0.0, ended=10.0, hub_up_at=0.0)
    tailer = LogTailer(Path("/nonexistent"), timeline)
    line = {
        "time": "2026-12-06T07:00:20.000Z",
        "level": "info",
        "message": "Pass done in 3.00s: ...",
        "event": "pass",
        "started": "2026-12-06T07:00:10.000Z",
        "duration_seconds": 3.0,
    }
    tailer.parse(json.dumps(line))
    ended = datetime(2026, 12, 6, 7, 0, 20, tzinfo=UTC).timestamp()
    assert timeline.passes[0].started == pytest.approx(ended - 10.0, abs=0.01)
    del line["started"]  # a line without it (an older culler's): its own time less the duration
    tailer.parse(json.dumps(line))
    assert timeline.passes[1].started == pytest.approx(ended - 3.0, abs=0.01)


def test_the_cullers_own_pass_line_dates_its_pass_from_its_start() -> None:
    """The line as the culler writes it (its summary, through its JSON formatter), not one written by hand: a
    pass of 3 s that began 10 s before its line (7 s of stops confirmed and tokens revoked after it) is dated
    from its start. The two-hour run's culler dropped the start from its JSON line, and the oracle dated 44 culls
    before their pass."""
    began = datetime.now(UTC) - timedelta(seconds=10)
    report = PassRecorder(started=began, started_at=100.0, dry_run=False).finish(103.0)
    with json_lines() as stream:
        publish(report, [])
    (line,) = stream.getvalue().splitlines()
    timeline = Timeline(params=PARAMS, started=0.0, ended=10.0, hub_up_at=0.0)
    LogTailer(Path("/nonexistent"), timeline).parse(line)
    (pass_end,) = timeline.passes
    assert pass_end.started == pytest.approx(began.timestamp(), abs=0.01)
    assert pass_end.time - pass_end.started == pytest.approx(10.0, abs=1.0)
