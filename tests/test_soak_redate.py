"""Dating a saved run's passes again from the hub's log (benchmarks/soak_redate.py), for a culler whose JSON pass
line did not name its start. The hub-log lines are the two-hour run's own (work/hub.log, 2026-12-06)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak_oracle import judge
from soak_redate import probe_starts, redate_passes
from soak_timeline import PassEnd

from .test_soak_oracle import ANN, clean

HUB_LOG = """\
[I 2026-12-06 08:05:47.742 JupyterHub log:192] 200 GET /hub/api/ (culler@127.0.0.1) 7.10ms
[I 2026-12-06 08:06:02.731 JupyterHub log:192] 200 GET /hub/api/ (culler@127.0.0.1) 7.98ms
[I 2026-12-06 08:06:02.771 JupyterHub log:192] 200 GET /hub/api/user (culler@127.0.0.1) 23.50ms
[W 2026-12-06 08:06:02.986 JupyterHub log:192] 403 GET /hub/api/groups?offset=0&limit=200 (culler@127.0.0.1) 51.50ms
[I 2026-12-06 08:06:03.078 JupyterHub log:192] 200 GET /hub/api/users?state=[secret]&offset=0 (culler@127.0.0.1) 63.88ms
[I 2026-12-06 08:06:05.000 JupyterHub log:192] 200 GET /hub/api/ (announcer@127.0.0.1) 2.00ms
[I 2026-12-06 08:06:07.335 JupyterHub log:192] 204 DELETE /hub/api/users/u083/server (culler@127.0.0.1) 900.68ms
[I 2026-12-06 08:06:08.858 JupyterHub log:192] 204 DELETE /hub/api/users/u067/tokens/a7302 (culler@127.0.0.1) 273.69ms
[I 2026-12-06 08:06:17.728 JupyterHub log:192] 200 GET /hub/api/ (culler@127.0.0.1) 8.00ms
"""


def local(text: str) -> float:
    """A hub-log time as the hub wrote it: the machine's local time."""
    return datetime.strptime(f"2026-12-06 {text}", "%Y-%m-%d %H:%M:%S.%f").astimezone().timestamp()


def test_the_cullers_probes_are_read_with_the_time_they_reached_the_hub() -> None:
    probes = probe_starts(HUB_LOG.splitlines(), "culler")
    expected = [local("08:05:47.742") - 0.0071, local("08:06:02.731") - 0.00798, local("08:06:17.728") - 0.008]
    assert probes == pytest.approx(expected, abs=1e-6)


def test_a_pass_line_written_after_its_pass_is_dated_from_the_passs_probe() -> None:
    """The pass of 08:06:03 in the two-hour run: its line came at 08:06:08.864 with a duration of 4.691 s (its
    time less the duration, 08:06:04.173, is after its culls of 08:06:03.247 and 08:06:03.450), the hub saw its
    probe at 08:06:02.723."""
    probes = probe_starts(HUB_LOG.splitlines(), "culler")
    passes = [
        PassEnd(local("08:05:50.052"), 1.993),  # the first: dated by its line (the start-up probe came before it)
        PassEnd(local("08:06:08.864"), 4.691),
        PassEnd(local("08:06:17.750"), 0.1),  # its probe (08:06:17.720) came after its line less its duration
        PassEnd(local("08:06:47.735"), 15.5, aborted=True),  # the hub never saw its probe (a 503 at the front)
    ]
    redated, moved = redate_passes(passes, probes)
    assert moved == 1
    assert [p.time for p in redated] == [p.time for p in passes]
    assert redated[1].started == pytest.approx(local("08:06:02.731") - 0.00798, abs=1e-6)
    assert redated[1].started < local("08:06:03.247")
    assert [redated[i] for i in (0, 2, 3)] == [passes[i] for i in (0, 2, 3)]


def test_a_cull_the_late_line_put_before_its_pass_is_dated_once_the_pass_is() -> None:
    """The oracle's side: ann's cull at 140.5, in the pass that began at 140 and whose line came at 143 with a
    duration of 1 s, is a cull whose pass the log does not show, until the pass is dated from its probe."""
    timeline = clean()
    timeline.passes = [PassEnd(143.0, 1.0) if p.time == 141.0 else p for p in timeline.passes]
    assert [record["key"] for record in judge(timeline).violations["unknown_pass"]] == [ANN]
    timeline.passes, moved = redate_passes(timeline.passes, [140.0])
    assert moved == 1
    verdict = judge(timeline)
    assert verdict.violations["unknown_pass"] == []
    assert verdict.broken == []
