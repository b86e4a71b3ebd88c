"""Log output for the command line: JupyterHub-like text lines, or one JSON object per line.

Text: ``[I 2026-11-25 10:00:00.123 trio_culler] Culling server alice (inactive for 01:02:03)``.
JSON: ``{"time": "...Z", "level": "info", "logger": "trio_culler", "message": "...", "user": "alice", ...}``
with the structured fields each log call passes as ``extra`` (user, server, action, reason, inactive_seconds,
age_seconds, event, ...). Every record, errors and tracebacks included, goes through one formatter.

Lines about single culls (records with an ``action``) are written in small batches, at most a quarter of a
second late (a timer writes a batch that no later line comes to flush): stderr is line-buffered, so each line
would otherwise be a write call of its own, which waits on whoever reads the pipe (the hub, for a managed
service), and a pass that culls thousands of servers would spend its time there (figures in
``benchmarks/RESULTS.md``, "Measured by hand"). Every other record, and anything at WARNING or above, flushes
the batch at once, so the pass summary, errors and shutdown lines are never held back, and logging's exit hook
flushes the rest.

A filter on the handler replaces the API token wherever it appears in a finished line: the culler never logs it
on purpose, and this makes sure no library does by accident either.

One event is one line, whatever users, the hub or their servers put into names and messages. The text format
escapes every C0 and C1 control, DEL, the Unicode line separators and the bidirectional marks (``\\n``,
``\\x1b``, ``\\u2028``): a user named ``x\\n[I ...] Culling server admin`` forges no line. Backslashes are
not doubled: the text is for people, the JSON is exact. A traceback keeps its lines, each indented by
:data:`CONTINUATION`, so that only a record starts with ``[`` in the first column. The JSON escapes the C0
controls itself and the rest of the set as ``\\uXXXX``, so that even a reader splitting at ``\\u2028`` gets
one object a line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from ._redact import make_redactor
from ._time import iso_utc

__all__ = ["CONTINUATION", "LOG_FIELDS", "JsonFormatter", "TextFormatter", "configure_logging", "escape_controls"]

#: The ``extra`` keys the culler uses; the JSON formatter copies exactly these. An allow-list, not "every attribute
#: logging did not set": a record also carries logging's own attributes (``msg``, ``args``, ``pathname``...), and
#: whatever a library adds to its records (hypercorn, the status page's server, logs to ``trio_culler.web.server``)
#: would otherwise become fields an operator's log pipeline starts to depend on. The price is that a field missing
#: here is dropped without a word: tests/test_log_fields.py reads every log call's ``extra`` from the source and
#: fails on a name this list lacks. Each name is documented in the README ("Logs and metrics").
LOG_FIELDS = (
    "event",
    "user",
    "server",
    # A decision (a cull, a dry run's, a kept server): trio_culler._act.decision_fields.
    "action",
    "reason",
    "rule",
    "matched_rule",
    "inactive_seconds",
    "age_seconds",
    "signal",
    "hub_inactive_seconds",
    "busy_seconds",
    "judged_started",
    # Why a server could not be inspected, or its user's notice not delivered.
    "inspection_failure",
    "credential_failure",
    "notice_failure",
    # A warning's events (warning, cancelled, culled): the webhook payload's names, its ``id`` as ``warning_id``.
    "warning_id",
    "cull_at",
    "detail",
    "kept_at",
    "error",
    "offset",
    "passes_not_run",
    "lifetime_seconds",
    # The pass summary (PassReport.log_fields) and the progress line.
    "started",
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
    "warnings_sent",
    "warnings_failed",
    "warning_events",
    "notices_delivered",
    "notices_failed",
    "notices_without_extension",
    "keeps",
    "servers_inspected",
    "inspection_failures",
    "rereads",
    "culls_prevented",
)


#: What no line carries raw: C0 and C1 controls, DEL, the line and paragraph separators, the bidirectional marks,
#: embeddings, overrides and isolates.
_UNSAFE = "\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_TEXT = re.compile(f"[{_UNSAFE}]")
#: The part of it that json.dumps(ensure_ascii=False) leaves as it is (it escapes the C0 controls itself).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: What starts every continuation line of a record (a traceback's lines): never ``[``, which starts a record.
CONTINUATION = "    "


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every character of the unsafe set escaped (see the module docstring): one line, shown as
    it is."""
    # Most lines have none: one search, and the text is returned as it is.
    return _UNSAFE_IN_TEXT.sub(_escape, text) if _UNSAFE_IN_TEXT.search(text) else text


def _continuation_lines(text: str) -> str:
    return "\n".join(CONTINUATION + escape_controls(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The formatted second, kept while it does not change: a busy pass writes thousands of lines a second.
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")
            self._second = second
        millis = int(record.msecs)
        message = escape_controls(record.getMessage())
        text = f"[{record.levelname[:1]} {self._stamp}.{millis:03d} {record.name}] {message}"
        if record.exc_info:
            text += "\n" + _continuation_lines(self.formatException(record.exc_info))
        if record.stack_info:
            text += "\n" + _continuation_lines(self.formatStack(record.stack_info))
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_utc(datetime.fromtimestamp(record.created, UTC), timespec="milliseconds"),
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
        text = json.dumps(entry, ensure_ascii=False, default=str)
        # Outside its strings a JSON text is ASCII: an escape here is an escape inside a string.
        return _UNSAFE_IN_JSON.sub(_json_escape, text) if _UNSAFE_IN_JSON.search(text) else text


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class _RedactingFormatter(logging.Formatter):
    """Wraps a formatter and removes secrets from its output."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self._inner = inner
        self._redact = make_redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(self._inner.format(record))


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that batches per-cull lines (see the module docstring)."""

    FLUSH_AFTER = 0.25
    MAX_BATCH = 512

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._batch: list[str] = []
        self._batch_started = 0.0
        # Writes a batch that no later record comes to flush (the last culls before a quiet spell).
        self._timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._batch.append(line)
        if record.levelno < logging.WARNING and "action" in record.__dict__:
            if len(self._batch) == 1:
                self._batch_started = record.created
                self._timer = threading.Timer(self.FLUSH_AFTER, self.flush)
                self._timer.daemon = True
                self._timer.start()
            if record.created - self._batch_started < self.FLUSH_AFTER and len(self._batch) < self.MAX_BATCH:
                return
        self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            text = "\n".join(self._batch) + "\n" if self._batch else ""
            self._batch.clear()
            try:
                if text:
                    self.stream.write(text)
                if hasattr(self.stream, "flush"):
                    self.stream.flush()
            except (OSError, ValueError):
                # A closed or broken stderr must not take the culler down with it: logging's own policy.
                if logging.raiseExceptions:
                    sys.stderr.write("trio-culler: could not write log lines\n")
        finally:
            self.release()


def configure_logging(
    *, level: int, json_format: bool, secrets: list[str], stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in the chosen format; returns the handler installed."""
    # What the formatters never print, records need not collect (the logging manual's "Optimization"): the
    # caller's file and line (a walk up the stack per record), thread, process and multiprocessing names.
    # This is the command line's own process; an embedding application configures logging itself.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(stream or sys.stderr)
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
