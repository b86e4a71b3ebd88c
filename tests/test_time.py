"""The one spelling of durations and instants in the culler's JSON, logs and hook arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from trio_culler._time import as_number, iso_utc, seconds


def test_whole_seconds_are_ints_and_the_rest_is_kept_to_the_millisecond() -> None:
    assert as_number(3600.0) == 3600
    assert type(as_number(3600.0)) is int
    assert as_number(0.5) == 0.5
    assert seconds(timedelta(hours=1)) == 3600
    assert type(seconds(timedelta(hours=1))) is int
    assert seconds(timedelta(seconds=12.345678)) == 12.346
    assert type(seconds(timedelta(seconds=0.0004))) is int, "rounded to 0 ms: a whole number"
    assert seconds(None) is None


def test_instants_are_utc_with_a_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert iso_utc(datetime(2026, 11, 25, 14, 0, tzinfo=plus_two)) == "2026-11-25T12:00:00Z"
    assert iso_utc(datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)) == "2026-11-25T12:00:00.123456Z"
    stamp = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    assert iso_utc(stamp, timespec="milliseconds") == "2026-11-25T12:00:00.123Z"
    assert iso_utc(None) is None
