"""The benchmark's rule for a pass's requests (benchmarks/run.py): what the pass needs, re-reads by design, and
nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ is a folder of scripts, not a package: its modules import each other by their bare names.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from run import request_counts

NEEDED = {"version": 1, "token_owner": 1, "list": 41, "delete_server": 1000}


def test_the_requests_a_pass_needs_pass() -> None:
    counts = request_counts(NEEDED, 40, 1000, 0)
    assert counts["requests_as_expected"]
    assert (counts["page_requests"], counts["delete_requests"], counts["other_requests"]) == (41, 1000, 0)


def test_a_few_re_reads_of_stale_listings_pass_and_are_counted_apart() -> None:
    counts = request_counts(NEEDED | {"get_user": 10}, 40, 1000, 0)
    assert counts["requests_as_expected"]
    assert (counts["other_requests"], counts["reread_requests"]) == (0, 10)


def test_re_reads_beyond_one_in_a_hundred_stops_fail() -> None:
    assert not request_counts(NEEDED | {"get_user": 11}, 40, 1000, 0)["requests_as_expected"]


def test_any_other_request_fails() -> None:
    for extra in ({"kernels": 1}, {"delete_user": 0, "groups": 1}):
        counts = request_counts(NEEDED | extra, 40, 1000, 0)
        assert not counts["requests_as_expected"], extra


def test_a_missing_stop_or_a_page_too_many_fails() -> None:
    assert not request_counts(NEEDED | {"delete_server": 999}, 40, 1000, 0)["requests_as_expected"]
    assert not request_counts(NEEDED | {"list": 42}, 40, 1000, 0)["requests_as_expected"]
    assert not request_counts(NEEDED, 40, 1000, 1)["requests_as_expected"]
