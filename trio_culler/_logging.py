"""Log output for the command line: JupyterHub-like text lines, or one JSON object per line.

Text: ``[I 2026-11-25 10:00:00.123 trio_culler] Culling server alice (inactive for 01:02:03)``.
JSON: ``{"time": "...Z", "level": "info", "logger": "trio_culler", "message": "...", "user": "alice", ...}``
with the structured fields each log call passes as ``extra`` (user, server, action, reason, inactive_seconds,
age_seconds, event, ...). Every record, errors and tracebacks included, goes through one formatter.

A filter on the handler replaces the API token wherever it appears in a finished line: the culler never logs it
on purpose, and this makes sure no library does by accident either.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["LOG_FIELDS", "JsonFormatter", "TextFormatter", "configure_logging"]

#: The ``extra`` keys the culler uses; the JSON formatter copies exactly these.
LOG_FIELDS = (
    "event",
    "user",
    "server",
    "action",
    "reason",
    "rule",
    "inactive_seconds",
    "age_seconds",
    "error",
    "offset",
    "duration_seconds",
    "users_seen",
    "servers_seen",
    "servers_culled",
    "servers_stopped",
    "servers_pending",
    "users_deleted",
    "skipped",
    "errors",
    "dry_run",
)
REDACTED = "[redacted]"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        millis = int(record.msecs)
        text = f"[{record.levelname[:1]} {stamp}.{millis:03d} {record.name}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _RedactingFormatter(logging.Formatter):
    """Wraps a formatter and removes secrets from its output."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        text = self._inner.format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def configure_logging(
    *, level: int, json_format: bool, secrets: list[str], stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in the chosen format; returns the handler installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    inner: logging.Formatter = JsonFormatter() if json_format else TextFormatter()
    handler.setFormatter(_RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO and httpcore its internals at DEBUG: one line per request would bury
    # the culler's own, and is not what an operator asked for with --debug.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
