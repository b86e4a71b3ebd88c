"""The pass summary as ``--log-format=json`` writes it: every structured field of the pass, when it began among
them. The line comes after what follows a pass (its stops confirmed, its unused tokens revoked), seconds after
the pass's end at times, so its own time less its duration is no start a reader of the log can date culls by."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
import trio.testing

from trio_culler import Config, PassReport, open_culler
from trio_culler.testing import FakeHub, FakeServer

from .support.logs import json_lines

TOKEN = "pass-line-test-token"


def pass_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [entry for entry in entries if entry.get("event") == "pass"]


async def test_the_json_pass_line_names_when_its_pass_began_and_every_field_of_its_summary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = FakeHub(token=TOKEN)
    old = datetime.now(UTC) - timedelta(hours=3)
    for i in range(3):
        hub.add_user(f"idle-{i}", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    config = Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api", timeout=600, cull_every=10)
    reports: list[PassReport] = []
    with json_lines() as stream:
        async with hub.running(), open_culler(config, transport=hub.transport(), reporters=[reports.append]) as culler:
            await trio.sleep(25)
            culler.stop()
    lines = pass_lines(stream)
    assert len(lines) == len(reports) == 3
    assert sum(report.servers_stopped for report in reports) == 3
    for line, report in zip(lines, reports, strict=True):
        assert datetime.fromisoformat(line["started"]) == report.started
        # Every field the summary names reaches the line, the warnings' and notices' counts the README promises
        # included (a formatter that copies a fixed list of names dropped them).
        fields = report.log_fields()
        assert {key: line.get(key) for key in fields} == fields
