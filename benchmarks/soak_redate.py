"""Dating the passes of a saved run again from the hub's log, for a culler whose JSON pass line did not name when
its pass began (its formatter dropped the ``started`` field: every culler before the fix, the two-hour run's
included).

Such a line carries only its own time and the pass's duration, and it is written after what follows the pass
(its stops confirmed, its unused tokens revoked): its time less the duration can be seconds after the pass
began, and a cull early in the pass then looks to the oracle as if it came before its pass. The hub's log has
the start the culler's log lacks: each pass begins with the culler's ``GET /hub/api/`` (its probe), which the hub
writes when it answered, with how long it took. A pass begins after the line of the one before it (the culler
runs them one after another) and before its own probe, so its start is the earlier of its first probe after the
previous line and the line's time less its duration. A pass whose probe the hub never saw (the hub down, or a
503 from the front) keeps the line's own date, and so does the first (it uses the culler's start-up probe, made
before it).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from soak_timeline import PassEnd

__all__ = ["probe_starts", "redate_passes"]

#: ``[I 2026-12-06 08:06:02.731 JupyterHub log:192] 200 GET /hub/api/ (culler@127.0.0.1) 7.98ms``
_REQUEST = re.compile(
    r"^\[\w (?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) JupyterHub log:\d+\] \d{3} GET /hub/api/ "
    r"\((?P<who>[^@)]*)@[^)]*\) (?P<ms>\d+(?:\.\d+)?)ms\s*$"
)


def probe_starts(lines: Iterable[str], service: str) -> list[float]:
    """When each ``GET /hub/api/`` of ``service`` reached the hub (its answer's time less its duration), sorted.
    The hub writes its log in the machine's local time, as a naive datetime is read."""
    starts = []
    for line in lines:
        match = _REQUEST.match(line)
        if match is None or match["who"] != service:
            continue
        answered = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S.%f").astimezone().timestamp()
        starts.append(answered - float(match["ms"]) / 1000.0)
    return sorted(starts)


def redate_passes(passes: Sequence[PassEnd], probes: Sequence[float]) -> tuple[list[PassEnd], int]:
    """``passes`` with each start moved back to its first probe where the hub saw one, and how many moved."""
    redated: list[PassEnd] = []
    moved = 0
    previous_line: float | None = None
    for end in sorted(passes, key=lambda p: p.time):
        index = len(probes) if previous_line is None else bisect.bisect_right(probes, previous_line)
        previous_line = end.time
        if index < len(probes) and probes[index] < end.started:
            redated.append(PassEnd(end.time, end.time - probes[index], end.aborted))
            moved += 1
        else:
            redated.append(end)
    return redated, moved
