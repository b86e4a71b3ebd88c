"""Durations and instants as the culler writes them: in JSON log fields, ``api/status``, ``--explain``, the
webhook's payload, and the numbers it hands the arbiter hook. One spelling each, so that every output agrees.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["as_number", "iso_utc", "seconds"]


def as_number(value: float) -> float | int:
    """A number of seconds as the original's options and hooks have it: ``3600``, not ``3600.0``."""
    return int(value) if float(value).is_integer() else value


def seconds(delta: timedelta | None) -> float | int | None:
    """A duration in seconds, to the millisecond (whole seconds as an int); None (unknown) stays None."""
    return None if delta is None else as_number(round(delta.total_seconds(), 3))


def iso_utc(when: datetime | None, *, timespec: str = "auto") -> str | None:
    """An aware instant in ISO 8601, in UTC, with ``Z``: ``2026-11-25T12:00:00Z``; None stays None."""
    return None if when is None else when.astimezone(UTC).isoformat(timespec=timespec).removesuffix("+00:00") + "Z"
