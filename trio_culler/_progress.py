"""A progress bar for ``--once`` on a terminal: redrawn in place on stderr while the pass runs.

Only drawn when stderr is a terminal (a CronJob's log must not fill with carriage returns); the periodic
progress log lines (``--progress-interval``) cover every other case.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TextIO

from trio_util import periodic

from ._report import PassRecorder, count

__all__ = ["draw_progress_bar", "render_progress_bar"]

BAR_WIDTH = 30
REDRAW_INTERVAL = 0.2


def render_progress_bar(recorder: PassRecorder, width: int = BAR_WIDTH) -> str:
    seen, total = recorder.users_seen, recorder.listing_total
    culled = sum(recorder.servers_culled.values())
    if total:
        filled = min(width, seen * width // max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        counts = f"{seen}/{count(total, 'user')}"
    else:
        bar = "-" * width
        counts = count(seen, "user")
    return f"[{bar}] {counts}, {count(culled, 'server')} culled, {count(recorder.users_deleted, 'user')} deleted"


async def draw_progress_bar(recorder: PassRecorder, stream: TextIO) -> None:
    """Redraw until cancelled; the caller cancels it when the pass ends (and a final newline is written)."""
    try:
        # aclosing: periodic() is an async generator, and a cancelled one must be closed in this task.
        async with aclosing(periodic(REDRAW_INTERVAL)) as redraws:
            async for _ in redraws:
                stream.write("\r" + render_progress_bar(recorder) + "\x1b[K")
                stream.flush()
    finally:
        stream.write("\r" + render_progress_bar(recorder) + "\x1b[K\n")
        stream.flush()
