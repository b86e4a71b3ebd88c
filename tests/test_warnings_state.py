"""Who was warned, and when, survives a restart: the state file (``--state-file``), written atomically and bounded,
read back at start; what cannot be read is skipped with one WARNING and never acted on."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_culler._warnings_state import (
    FORMAT,
    VERSION,
    WarningRecord,
    read_state_file,
    state_document,
    write_state_file,
)
from trio_culler.testing import FakeKernel, FakeServer

from .support.faults import NOW, TOKEN
from .test_notices import config, idle, make_hub, stops
from .test_notify import Clock, Receiver, at, culler

M = timedelta(minutes=1)


def record(user: str = "ann", **changes: Any) -> WarningRecord:
    values: dict[str, Any] = {
        "user": user,
        "server": "",
        "started": NOW - 180 * M,
        "id": "0123456789abcdef",
        "warned_at": NOW,
        "due": NOW + 10 * M,
        "cull_at": NOW + 15 * M,
        "reason": "idle",
        "baseline": NOW - 50 * M,
        "own": [(NOW, NOW + timedelta(seconds=1))],
    }
    return WarningRecord(**{**values, **changes})


# --- A restart ----------------------------------------------------------------------------------------------------


async def test_a_restart_between_warning_and_cull_keeps_the_full_notice(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Warned by one culler, culled by the next at the time the first announced: one stretch, one warning, one
    id, however overdue the server is when the second culler starts."""
    hub = make_hub(ann=idle(50))  # due at +10; warned at once, cull at +15
    receiver = Receiver()
    cfg = config(state_file=str(tmp_path / "state.json"))
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW + 12 * M)  # past its rule's time: held, not warned again
        assert stops(hub) == set()
        await run(NOW + 15 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    assert len({post["id"] for post in receiver.posts}) == 1
    assert hub.statistics().notice_requests == {"PUT": 1, "GET": 2}, "the GET before the PUT, the read before the cull"


async def test_without_a_state_file_a_restart_warns_again_with_the_same_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the state file is for: a culler that forgot warns again (the full notice again, from now), under the
    same id, derived from the stretch itself."""
    hub = make_hub(ann=idle(50))
    receiver = Receiver()
    cfg = config(state_file=None)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW + 12 * M)
        await run(NOW + 27 * M)
    assert receiver.events() == [("warning", at(15), None), ("warning", at(27), None), ("culled", at(27), None)]
    assert len({post["id"] for post in receiver.posts}) == 1


async def test_a_restart_remembers_a_keep(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """The kernels' clock never shows a keep: the state file keeps it, and the culler after a restart measures
    the next stretch from it, as the one before would have."""
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(kept=idle(1, kernels=kernels))
    receiver = Receiver()
    clock = Clock()
    cfg = config(state_file=str(tmp_path / "state.json"), inspect_kernels=True, kernel_activity_only=True)
    async with culler(hub, cfg, receiver, clock) as run:
        await run(NOW)
        clock.now = NOW + 8 * M
        hub.keep("kept")
        await run(NOW + 15 * M)  # kept: a new stretch from +8, due at +68
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "kept")]
    async with culler(hub, cfg, receiver, clock) as run:
        await run(NOW + 20 * M)
        await run(NOW + 45 * M)
        assert receiver.events()[2:] == [], "not due before +68: the keep was remembered"
        await run(NOW + 50 * M)
        await run(NOW + 68 * M)
    assert receiver.events()[2:] == [("warning", at(68), None), ("culled", at(68), None)]


async def test_a_restart_remembers_the_cullers_own_requests(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The hub shows the notice the first culler delivered as the server's last activity: the culler after a
    restart knows it for its own, and culls at the time announced."""
    hub = make_hub(ann=idle(50))
    hub.proxy_records_activity = True
    receiver = Receiver()
    cfg = config(state_file=str(tmp_path / "state.json"), inspect_kernels=True)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
    assert hub.users["ann"].servers[""].last_activity == NOW
    async with culler(hub, cfg, receiver) as run:
        await run(NOW + 10 * M)
        await run(NOW + 15 * M)
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]


# --- The file itself ---------------------------------------------------------------------------------------------


def test_the_file_is_written_atomically_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    records = [record("ann"), record("bob", server="gpu", started=None, baseline=None, own=[], settled=True)]
    write_state_file(path, state_document(records, [], NOW))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["state.json"], "no temporary file left"
    document = json.loads(path.read_text())
    assert (document["format"], document["version"]) == (FORMAT, VERSION)
    loaded = read_state_file(path)
    assert loaded.problem is None
    assert loaded.writable
    assert list(loaded.warned) == records


def test_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    loaded = read_state_file(tmp_path / "absent.json")
    assert (loaded.warned, loaded.kept, loaded.problem, loaded.writable) == ((), (), None, True)


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b'{"users": ["ann"]}', b"\xff\xfe", b'{"format": "other"}'],
    ids=["empty", "text", "a list", "another program's", "not utf-8", "another format"],
)
def test_a_file_that_is_not_a_state_file_is_neither_read_nor_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    loaded = read_state_file(path)
    assert loaded.warned == ()
    assert not loaded.writable
    assert loaded.problem is not None
    assert "not a trio-culler state file" in loaded.problem


def test_a_newer_version_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION + 1, "warned": []}))
    loaded = read_state_file(path)
    assert not loaded.writable
    assert loaded.problem is not None
    assert "another version" in loaded.problem


def test_records_that_cannot_be_read_are_skipped_and_the_others_kept(tmp_path: Path) -> None:
    good = state_document([record("ann")], [], NOW)["warned"][0]
    bad: list[Any] = [
        "ann",
        {**good, "id": "../../etc"},
        {**good, "warned_at": "yesterday"},
        {**good, "cull_at": "2026-11-25T12:00:00"},  # no zone
        {**good, "cull_at": "2026-11-25T12:05:00Z"},  # before its rule's time: never written by a culler
        {**good, "own": [["2026-11-25T12:00:00Z"]]},
        {**good, "own": [[good["warned_at"], good["warned_at"]]] * 9},  # more windows than ever kept
        {**good, "settled": "no"},
        {**good, "user": 7},
        {**good, "reason": "Idle!"},
    ]
    path = tmp_path / "state.json"
    keeps = [{"user": "bob", "server": "", "started": None, "kept_at": "2026-11-25T12:00:00Z"}, {"user": "x"}]
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "warned": [good, *bad], "kept": keeps}))
    loaded = read_state_file(path)
    assert [r.user for r in loaded.warned] == ["ann"]
    assert [k.user for k in loaded.kept] == ["bob"]
    assert loaded.writable
    assert loaded.problem is not None
    assert f"skipped {len(bad) + 1} record(s)" in loaded.problem


def test_the_file_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trio_culler._warnings_state.MAX_FILE_BYTES", 100)
    path = tmp_path / "state.json"
    write_state_file(path, state_document([record(f"user-{n}") for n in range(10)], [], NOW))
    loaded = read_state_file(path)
    assert loaded.warned == ()
    assert loaded.problem is not None
    assert "larger than 100 bytes" in loaded.problem
    monkeypatch.setattr("trio_culler._warnings_state.MAX_FILE_BYTES", 1 << 20)
    monkeypatch.setattr("trio_culler._warnings_state.MAX_RECORDS", 3)
    loaded = read_state_file(path)
    assert [r.user for r in loaded.warned] == ["user-0", "user-1", "user-2"]


async def test_a_foreign_file_is_not_overwritten_and_warnings_go_on_in_memory(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a culler's\n")
    hub = make_hub(ann=idle(50))
    receiver = Receiver()
    async with culler(hub, config(state_file=str(path)), receiver) as run:
        await run(NOW)
        await run(NOW + 15 * M)
    assert path.read_text() == "my notes, not a culler's\n"
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"Warnings' state: {path} is not a trio-culler state file: not read, and not overwritten",
        "Warnings are kept in memory only: a restart forgets them (give --state-file a path of its own)",
    ]


async def test_a_file_that_cannot_be_written_is_said_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    hub = make_hub(ann=idle(50), bob=idle(40))
    receiver = Receiver()
    async with culler(hub, config(state_file=str(blocker / "state.json")), receiver) as run:
        for minutes in (0, 5, 15, 20):
            await run(NOW + minutes * M)
    assert stops(hub) == {"ann", "bob"}
    failures = [r for r in caplog.records if "Cannot write the warnings' state" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING


def test_the_file_holds_the_keeps(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    hub_server = FakeServer("", started=NOW, last_activity=None)
    document = state_document([], [], NOW)
    document["kept"] = [{"user": "ann", "server": "", "started": "2026-11-25T12:00:00Z", "kept_at": at(3)}]
    write_state_file(path, document)
    (kept,) = read_state_file(path).kept
    assert (kept.user, kept.started, kept.kept_at) == ("ann", hub_server.started, NOW + 3 * M)


async def test_the_last_write_happens_whatever_stops_the_culler(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write still under way when the culler stops is waited for (never left to rename an older state over a
    newer one), and the state as it is then is written after it, whatever cancels the writer (its deliveries'
    deadline passes meanwhile: the autojump clock runs far ahead while the disk is slow)."""
    import time

    real_write = write_state_file
    started: list[str] = []

    def slow_write(path: Any, document: Any) -> None:
        started.append(document["written_at"])
        time.sleep(0.5)  # a slow disk
        real_write(path, document)

    monkeypatch.setattr("trio_culler._deliver.write_state_file", slow_write)
    hub = make_hub(ann=idle(50))
    receiver = Receiver()
    path = tmp_path / "state.json"
    async with culler(hub, config(state_file=str(path)), receiver) as run:
        await run(NOW)  # warned: the state written (slowly) from here
        hub.users["ann"].servers[""].last_activity = NOW + 2 * M
        await run(NOW + 5 * M)  # cancelled: the state is empty again, and the culler stops
    await trio.to_thread.run_sync(time.sleep, 1.5)  # any write left behind would have finished by now
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "used")]
    assert started[0] == at(0), "a write of the warned state was under way"
    assert read_state_file(path).warned == ()
    assert json.loads(path.read_text())["written_at"] == at(5)


async def test_the_file_holds_names_and_times_never_a_token(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Written while per-server tokens are live (the notices' and the inspections'): the file has users, servers,
    ids and times, and neither the culler's token nor any token minted for a server; it is the culler's alone."""
    hub = make_hub(ann=idle(50, kernels=[FakeKernel("k", "idle", NOW - 50 * M)]), bob=idle(50))
    path = tmp_path / "state.json"
    async with culler(hub, config(state_file=str(path), inspect_kernels=True), Receiver()) as run:
        await run(NOW)
        minted = [token.token for token in hub.live_tokens()]
    written = path.read_text()  # written last as the culler stops, with what it held while the tokens lived
    assert len(minted) >= 2, "tokens of both users were live when the file was written"
    assert TOKEN not in written
    for token in minted:
        assert token not in written
    document = json.loads(written)
    assert {record["user"] for record in document["warned"]} == {"ann", "bob"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
