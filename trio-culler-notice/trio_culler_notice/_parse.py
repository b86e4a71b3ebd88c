"""Request bodies and query values, read strictly: anything but what docs/notice-api.md describes is refused
with a one-line reason, before any of it is kept.

The culler and the browser are both authenticated, but a body is still read as untrusted bytes: bounded in
size, duplicate keys, non-finite numbers and deep nesting refused, every key and type checked.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta

from ._board import Notice

__all__ = ["MAX_ACTIVITY", "MAX_BODY", "InvalidRequest", "parse_id", "parse_keep", "parse_notice"]

#: The largest body accepted, in bytes.
MAX_BODY = 16 * 1024
#: The longest ``activity`` text accepted, in characters.
MAX_ACTIVITY = 500
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Decision and limit codes: the culler may add codes that this extension does not know yet; it shows them
# generically rather than refusing the notice.
_CODE = re.compile(r"[a-z_]{1,32}")
_MAX_TIME_TEXT = 40


class InvalidRequest(ValueError):
    """A request that does not follow the API; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidRequest("duplicate keys in the JSON object")
    return result


def _no_constant(name: str) -> object:
    raise InvalidRequest(f"{name} is not a number")


def _json_object(body: bytes) -> dict[str, object]:
    if len(body) > MAX_BODY:
        raise InvalidRequest(f"body larger than {MAX_BODY} bytes", status=413)
    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        if isinstance(error, InvalidRequest):
            raise
        raise InvalidRequest("body is not JSON in UTF-8") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body is not a JSON object")
    return value


def _check_keys(value: dict[str, object], expected: tuple[str, ...]) -> None:
    unknown = sorted(key for key in value if key not in expected)
    if unknown:
        raise InvalidRequest(f"unknown key {unknown[0][:40]!r}")
    missing = [key for key in expected if key not in value]
    if missing:
        raise InvalidRequest(f"missing key {missing[0]!r}")


def parse_id(value: object, field: str = "id") -> str:
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidRequest(f"{field} must be 1 to 64 of A-Z, a-z, 0-9, _ and -")
    return value


def _time(value: object, field: str) -> datetime:
    if not isinstance(value, str) or len(value) > _MAX_TIME_TEXT:
        raise InvalidRequest(f"{field} must be an ISO 8601 time in UTC")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be an ISO 8601 time in UTC") from None
    if moment.utcoffset() != timedelta(0):
        raise InvalidRequest(f"{field} must be in UTC (Z or +00:00)")
    return moment


def _code(value: object, field: str) -> str:
    if not isinstance(value, str) or _CODE.fullmatch(value) is None:
        raise InvalidRequest(f"{field} must be a code of 1 to 32 of a-z and _")
    return value


def _seconds(value: object, field: str) -> int | float:
    # bool is an int to Python, not a number to JSON.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{field} must be a number of seconds, 0 or more")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    return value


def _activity(value: object, field: str) -> str:
    text = _text(value, field)
    if len(text) > MAX_ACTIVITY:
        raise InvalidRequest(f"{field} must be at most {MAX_ACTIVITY} characters")
    return text


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field} must be true or false")
    return value


_NOTICE_KEYS = (
    "id",
    "warned_at",
    "cull_at",
    "idle_since",
    "reason",
    "limit",
    "limit_seconds",
    "rule",
    "activity",
    "keepable",
)


def parse_notice(body: bytes) -> Notice:
    """The body of ``PUT notice``."""
    value = _json_object(body)
    _check_keys(value, _NOTICE_KEYS)
    idle_since, rule = value["idle_since"], value["rule"]
    return Notice(
        id=parse_id(value["id"]),
        warned_at=_time(value["warned_at"], "warned_at"),
        cull_at=_time(value["cull_at"], "cull_at"),
        idle_since=None if idle_since is None else _time(idle_since, "idle_since"),
        reason=_code(value["reason"], "reason"),
        limit=_code(value["limit"], "limit"),
        limit_seconds=_seconds(value["limit_seconds"], "limit_seconds"),
        rule=None if rule is None else _text(rule, "rule"),
        activity=_activity(value["activity"], "activity"),
        keepable=_flag(value["keepable"], "keepable"),
    )


def parse_keep(body: bytes) -> str | None:
    """The body of ``POST keep``: the id of the notice the page showed, or null."""
    value = _json_object(body)
    _check_keys(value, ("notice_id",))
    notice_id = value["notice_id"]
    return None if notice_id is None else parse_id(notice_id, "notice_id")
