"""Records as the JSON documents show them (``api/status``, the state file): their fields by name, in their
order, instants as :func:`~._time.iso_utc` writes them. One spelling, so that every document agrees."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from ._time import iso_utc

__all__ = ["record_json"]


def record_json(record: Any, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``record`` (an attrs class or a named tuple) but ``leave_out``, instants in ISO 8601 UTC."""
    fields = attrs.asdict(record, recurse=False) if attrs.has(type(record)) else record._asdict()
    return {
        key: iso_utc(value) if isinstance(value, datetime) else value
        for key, value in fields.items()
        if key not in leave_out
    }
