"""One event, one line: names, hub text and exception messages cannot forge log lines, in either format.

Through the real command line (``python -m trio_culler --once``) against a FakeHub in another process whose users
have hostile names, and through a ``cull_arbiter_hook`` whose exception quotes one (a traceback); then the
formatters themselves, character by character. Every output is read with ``str.splitlines``, the strictest
reader: it breaks lines at ``\\r``, ``\\x85`` and ``\\u2028`` as well as at ``\\n``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from trio_culler._logging import CONTINUATION, JsonFormatter, TextFormatter, escape_controls

from .support.processes import run_culler, running_hub

FORGED = "[I 2026-11-25 10:00:00.000 trio_culler] Culling server admin (inactive for 99:00:00)"
#: A user name for each way of breaking a line or a terminal, and how the text format must show it.
HOSTILE = {
    "nl\n" + FORGED: "nl\\n" + FORGED,
    "cr\r" + FORGED: "cr\\r" + FORGED,
    "red\x1b[31mALERT\x1b[0m": "red\\x1b[31mALERT\\x1b[0m",
    "nel\x85" + FORGED: "nel\\x85" + FORGED,
    "ls\u2028" + FORGED: "ls\\u2028" + FORGED,
}
RECORD = re.compile(r"^\[[DIWEC] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [\w.]+\] ")
#: A forged record: one that says the culler culled the admin.
FORGED_RECORD = re.compile(r"^\[I [^\]]*\] Culling server admin ")
#: What no output may carry raw, newlines between lines aside.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202e]")
TIMEOUT = "--timeout=3600"

HOOK = """
def hook(inactive, inactive_limit, server):
    # User code quoting the hub's data in its error, as user code does.
    raise RuntimeError("cannot judge " + server["full_name"])
c.IdleCuller.cull_arbiter_hook = hook
"""


def test_text_lines_escape_control_characters_in_names(tmp_path: Path) -> None:
    with running_hub(users=2, idle=0.0, names=list(HOSTILE)) as hub:
        result = run_culler("--once", f"--url={hub.url}", TIMEOUT, cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert sorted(stats["stops_completed"]) == sorted(HOSTILE), "every hostile user's server was culled"
    lines = result.stderr.splitlines()
    assert all(RECORD.match(line) for line in lines), lines
    assert not any(FORGED_RECORD.match(line) for line in lines), lines
    assert RAW.search(result.stderr) is None
    for escaped in HOSTILE.values():
        culls = [line for line in lines if f"] Culling server {escaped} (inactive for " in line]
        assert len(culls) == 1, (escaped, lines)


def test_json_lines_carry_the_exact_names_one_object_a_line(tmp_path: Path) -> None:
    with running_hub(users=2, idle=0.0, names=list(HOSTILE)) as hub:
        result = run_culler("--once", f"--url={hub.url}", TIMEOUT, "--log-format=json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert RAW.search(result.stderr) is None
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    culled = sorted(entry["user"] for entry in entries if entry.get("action") == "stop")
    assert culled == sorted(HOSTILE), "the names decode to exactly what the hub holds"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_traceback_quoting_a_hostile_name_forges_no_line(tmp_path: Path, log_format: str) -> None:
    (tmp_path / "idle_culler_config.py").write_text(HOOK, encoding="utf-8")
    name = "hook\n" + FORGED + " \x1b[31m"
    with running_hub(users=0, names=[name]) as hub:
        result = run_culler("--once", f"--url={hub.url}", TIMEOUT, f"--log-format={log_format}", cwd=tmp_path)
    assert result.returncode == 1, "a failing hook is an error of the pass"
    assert RAW.search(result.stderr) is None
    lines = result.stderr.splitlines()
    if log_format == "json":
        (failure,) = [json.loads(line) for line in lines if "cull_arbiter_hook failed" in line]
        assert failure["exception"].endswith(f"RuntimeError: cannot judge {name}/"), "the exact message"
        return
    # A traceback keeps its lines, each one indented: only records start in the first column.
    assert all(RECORD.match(line) or line.startswith(CONTINUATION) for line in lines), lines
    assert not any(FORGED_RECORD.match(line) for line in lines), lines
    start = next(i for i, line in enumerate(lines) if "cull_arbiter_hook failed for hook\\n[I " in line)
    traceback = lines[
        start + 1 : start + 1 + next(i for i, line in enumerate(lines[start + 1 :]) if RECORD.match(line))
    ]
    assert traceback[0] == CONTINUATION + "Traceback (most recent call last):"
    assert traceback[-2:] == [
        CONTINUATION + "RuntimeError: cannot judge hook",
        CONTINUATION + FORGED + " \\x1b[31m/",
    ]


# -- the formatters, character by character -------------------------------------------------------------------


def _record(message: str, *args: object, exc_info: bool = False, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("trio_culler", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    if exc_info:
        try:
            raise ValueError("bad\nline\u2028two")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\t", "\\t"),
        ("\x00", "\\x00"),
        ("\x1b", "\\x1b"),
        ("\x1f", "\\x1f"),
        ("\x7f", "\\x7f"),
        ("\x85", "\\x85"),
        ("\x9f", "\\x9f"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
    ],
)
def test_each_unsafe_character_is_escaped_in_text_and_json(char: str, shown: str) -> None:
    text = TextFormatter().format(_record("Culling server %s", f"a{char}b"))
    assert text.endswith(f"] Culling server a{shown}b")
    assert len(text.splitlines()) == 1
    line = JsonFormatter().format(_record("Culling server %s", f"a{char}b", user=f"a{char}b"))
    assert len(line.splitlines()) == 1
    assert json.loads(line)["user"] == f"a{char}b"
    assert json.loads(line)["message"] == f"Culling server a{char}b"


def test_ordinary_text_is_shown_as_it_is() -> None:
    for name in ("ü ser", "名前", "a\\nb", "emoji \U0001f469\u200d\U0001f52c", "x y"):
        assert escape_controls(name) == name
        assert TextFormatter().format(_record("%s", name)).endswith(f"] {name}")


def test_a_traceback_in_text_is_indented_and_escaped_line_by_line() -> None:
    text = TextFormatter().format(_record("Unexpected error", exc_info=True))
    first, *rest = text.split("\n")
    assert first.endswith("] Unexpected error")
    assert rest[0] == CONTINUATION + "Traceback (most recent call last):"
    assert rest[-2:] == [CONTINUATION + "ValueError: bad", CONTINUATION + "line\\u2028two"]
    assert all(line.startswith(CONTINUATION) for line in rest)
    assert len(text.splitlines()) == len(text.split("\n")), "no line break but the traceback's own"
