"""Who was warned, and when: the records the warnings keep, and the small file that carries them across a restart.

A restart must not shorten a notice the culler already gave, nor announce the same cull twice, nor forget that a
user asked to keep their server. So the warnings' state is written to ``--state-file`` (default
``trio-culler-state.json`` in the working directory; ``Config.state_file`` in code, where it is off unless
set) after every pass that changed it, and read back at start::

    {"format": "trio-culler-warnings", "version": 1, "written_at": "...",
     "warned": [{"user": ..., "server": ..., "started": ..., "id": ..., "warned_at": ..., "due": ...,
                 "cull_at": ..., "reason": ..., "baseline": ..., "own": [[start, end], ...],
                 "settled": false}],
     "kept": [{"user": ..., "server": ..., "started": ..., "kept_at": ...}]}

Written atomically (a temporary file beside it, flushed to disk, then renamed over it; mode 0600), bounded (at
most :data:`MAX_RECORDS` records of each kind, :data:`MAX_OWN` windows each: a few tens of MiB for the largest
hubs) and read within :data:`MAX_FILE_BYTES`. What cannot be read is never acted on: a file that is not this
format (or a newer version of it) is left alone (not read, never overwritten: ``--state-file`` may name the
wrong file) and the warnings live in memory only; a record that cannot be read is skipped. Either is said in
one WARNING. A record can only delay a cull (up to its own ``cull_at``) or spare a server once, as its user's
keep would; it names its server by the start time too, so a record about another hub's server, or a server
since restarted, matches nothing and is forgotten after the first complete pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import attrs

from ._inspect import reported_time
from ._records import record_json
from ._time import iso_utc

__all__ = [
    "FORMAT",
    "MAX_FILE_BYTES",
    "MAX_OWN",
    "MAX_RECORDS",
    "VERSION",
    "KeepRecord",
    "LoadedState",
    "WarningRecord",
    "read_state_file",
    "state_document",
    "write_state_file",
]

FORMAT: Final = "trio-culler-warnings"
VERSION: Final = 1
#: Records of each kind kept (in memory and in the file) at most; the oldest go first.
MAX_RECORDS: Final = 100_000
#: The culler's own request windows remembered per warned server (see ``_notify``: they are what tells the
#: proxy's record of the culler's own requests from its user's activity).
MAX_OWN: Final = 8
#: The largest file read: MAX_RECORDS records of a few hundred bytes each, with room.
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CODE = re.compile(r"[a-z_]{1,32}")


@attrs.define
class WarningRecord:
    """One server whose user was warned, for one idle stretch."""

    user: str
    server: str
    #: The server's start: a server started again is another server, whose warnings start afresh.
    started: datetime | None
    #: Names the stretch in every event about it (``_notify.stretch_id``).
    id: str
    warned_at: datetime
    #: When the server's rule would cull it, as judged when warned: a different time is a different stretch.
    due: datetime
    #: When it may be culled: the time the warning announced (never before ``warned_at + --warn-before``).
    cull_at: datetime
    #: The code of the cull announced (``idle``, ``kernels_idle``, ``busy_expired``, ``max_age``).
    reason: str
    #: The server's ``last_activity`` as the hub showed it to the judgment that warned (None: none yet).
    baseline: datetime | None = None
    #: ``[start, end]`` of the culler's own requests to the server since (the culler's clock).
    own: list[tuple[datetime, datetime]] = attrs.Factory(list)
    #: The stretch ended (culled, or the cancellation said): nothing more to tell, waiting to be forgotten.
    settled: bool = False

    def explains(self, last_activity: datetime, tolerance: float) -> bool:
        """Whether ``last_activity`` (the hub's) is when one of the culler's own requests reached the server."""
        return any(
            (start - last_activity).total_seconds() <= tolerance and (last_activity - end).total_seconds() <= tolerance
            for start, end in self.own
        )

    def add_own(self, start: datetime, end: datetime) -> None:
        self.own.append((start, end))
        del self.own[:-MAX_OWN]


@attrs.define
class KeepRecord:
    """A server its user asked to keep: their keep counts as activity at ``kept_at`` until the clock the rules
    use shows later activity, or the server is gone."""

    user: str
    server: str
    started: datetime | None
    kept_at: datetime


@attrs.frozen
class LoadedState:
    warned: tuple[WarningRecord, ...] = ()
    kept: tuple[KeepRecord, ...] = ()
    #: Why some or all of the file was not used (one WARNING), or None.
    problem: str | None = None
    #: False when the file must not be written (it is not ours, or a newer culler's).
    writable: bool = True


# -- reading ----------------------------------------------------------------------------------------------------


class _Bad(ValueError):
    pass


def _text(value: Any, what: str, limit: int = 1024) -> str:
    if type(value) is not str or len(value) > limit:
        raise _Bad(what)
    return value


def _time(value: Any, what: str) -> datetime:
    # A time the culler wrote reads as a time a server reports: ISO 8601 with a zone, at most 40 characters.
    moment = reported_time(value)
    if moment is None:
        raise _Bad(what)
    return moment


def _optional_time(value: Any, what: str) -> datetime | None:
    return None if value is None else _time(value, what)


def _matching(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise _Bad(what)
    return value


def _warning(item: Any) -> WarningRecord:
    if type(item) is not dict:
        raise _Bad("not an object")
    own = item.get("own", [])
    if type(own) is not list or len(own) > MAX_OWN:
        raise _Bad("own")
    windows = []
    for window in own:
        if type(window) is not list or len(window) != 2:
            raise _Bad("own")
        windows.append((_time(window[0], "own"), _time(window[1], "own")))
    settled = item.get("settled", False)
    if type(settled) is not bool:
        raise _Bad("settled")
    record = WarningRecord(
        user=_text(item.get("user"), "user"),
        server=_text(item.get("server"), "server"),
        started=_optional_time(item.get("started"), "started"),
        id=_matching(item.get("id"), _ID, "id"),
        warned_at=_time(item.get("warned_at"), "warned_at"),
        due=_time(item.get("due"), "due"),
        cull_at=_time(item.get("cull_at"), "cull_at"),
        reason=_matching(item.get("reason"), _CODE, "reason"),
        baseline=_optional_time(item.get("baseline"), "baseline"),
        own=windows,
        settled=settled,
    )
    # What the culler would never have written: a cull announced before the rule's time, or before the warning.
    if record.cull_at < record.due or record.cull_at < record.warned_at:
        raise _Bad("cull_at")
    return record


def _keep(item: Any) -> KeepRecord:
    if type(item) is not dict:
        raise _Bad("not an object")
    return KeepRecord(
        user=_text(item.get("user"), "user"),
        server=_text(item.get("server"), "server"),
        started=_optional_time(item.get("started"), "started"),
        kept_at=_time(item.get("kept_at"), "kept_at"),
    )


def read_state_file(path: str | os.PathLike[str]) -> LoadedState:
    """The records in ``path``; a missing file is an empty state. Never raises for what the file holds."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return LoadedState()
    except OSError as error:
        return LoadedState(problem=f"cannot read the state file {where}: {error.strerror or error}")
    if len(raw) > MAX_FILE_BYTES:
        return LoadedState(problem=f"the state file {where} is larger than {MAX_FILE_BYTES} bytes: not read")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    if type(document) is not dict or document.get("format") != FORMAT:
        return LoadedState(
            problem=f"{where} is not a trio-culler state file: not read, and not overwritten", writable=False
        )
    if document.get("version") != VERSION:
        return LoadedState(
            problem=f"{where} is a state file of another version ({str(document.get('version'))[:20]}): not read, "
            "and not overwritten",
            writable=False,
        )
    warned, skipped_warned = _records(document.get("warned"), _warning)
    kept, skipped_kept = _records(document.get("kept"), _keep)
    skipped = skipped_warned + skipped_kept
    problem = None
    if skipped:
        problem = f"skipped {skipped} record(s) of the state file {where} that could not be read"
    return LoadedState(tuple(warned), tuple(kept), problem)


def _records(items: Any, read: Any) -> tuple[list[Any], int]:
    if items is None:
        return [], 0
    if type(items) is not list:
        return [], 1
    found, skipped = [], max(0, len(items) - MAX_RECORDS)
    for item in items[:MAX_RECORDS]:
        try:
            found.append(read(item))
        except _Bad:
            skipped += 1
    return found, skipped


# -- writing ----------------------------------------------------------------------------------------------------


def _warning_json(record: WarningRecord) -> dict[str, Any]:
    # Every field as it is, but the windows, which are pairs of instants.
    return {**record_json(record), "own": [[iso_utc(start), iso_utc(end)] for start, end in record.own]}


def state_document(warned: Iterable[WarningRecord], kept: Iterable[KeepRecord], now: datetime) -> dict[str, Any]:
    """The file's document for these records: plain values, made on the event loop (the records change under a
    running pass), encoded and written in a thread by :func:`write_state_file`."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "written_at": iso_utc(now),
        "warned": [_warning_json(record) for record in warned],
        "kept": [record_json(record) for record in kept],
    }


def write_state_file(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Replace ``path`` with ``document`` atomically: readers see the old file or the new one, never a part.
    Raises OSError."""
    content = json.dumps(document, separators=(",", ":")).encode()
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):
        # The rename itself, on disk: a crash now leaves the new file, not an empty directory entry.
        directory = os.open(target.parent or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
