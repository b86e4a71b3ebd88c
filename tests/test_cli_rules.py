"""The command line of rules, warnings and --explain: what is read, and bad input in one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_culler.cli import run

from .support.cli import ENV, effective

# The culler reads ./idle_culler_config.py from where it runs: every test runs in an empty directory.
pytestmark = pytest.mark.usefixtures("in_empty_dir")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_rules_from_the_config_file_and_from_a_rules_file(tmp_path: Path) -> None:
    config = tmp_path / "culler_config.py"
    config.write_text('c.IdleCuller.rules = [{"groups": ["overnight"], "timeout": 86400}]\n')
    assert effective([f"--config={config}"])["rules"] == [{"groups": ["overnight"], "timeout": 86400}]
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nservers = ["scratch-*"]\nremove = true\n')
    assert effective([f"--rules-file={rules}"])["rules"] == [{"servers": ["scratch-*"], "remove": True}]
    assert effective([])["rules"] == []


def test_rules_in_both_places_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "culler_config.py"
    config.write_text('c.IdleCuller.rules = [{"users": ["a"], "cull": False}]\n')
    rules = tmp_path / "rules.json"
    rules.write_text('{"rules": []}')
    assert run([f"--config={config}", f"--rules-file={rules}", "--show-config"], ENV) == 2
    assert "not from both" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('c.IdleCuller.rules = [{"users": ["a"], "timeout": "600"}]\n', "rules[0].timeout: expected a number"),
        ('c.IdleCuller.rules = [{"users": ["a"]}, {"user": ["b"]}]\n', "rules[1]: unknown key user"),
        ('c.IdleCuller.rules = {"users": ["a"]}\n', "expected a list of rules"),
        ("c.IdleCuller.warn_hook = 5\n", "culler_config.py: c.IdleCuller.warn_hook: must be callable"),
    ],
)
def test_bad_rules_in_the_config_file_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    config = tmp_path / "culler_config.py"
    config.write_text(content)
    assert run([f"--config={config}", "--show-config"], ENV) == 2
    line = one_error_line(capsys)
    assert expected in line
    if "rules" in expected:
        assert "c.IdleCuller.rules" in line


def test_a_bad_rules_file_exits_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nusers = ["[z-a]"]\n')
    assert run([f"--rules-file={rules}", "--show-config"], ENV) == 2
    line = one_error_line(capsys)
    assert f"--rules-file {rules}: rules[0].users[0]" in line
    assert run([f"--rules-file={tmp_path / 'missing.toml'}", "--show-config"], ENV) == 2
    assert "cannot read it" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # Alone, --warn-before warns through the servers themselves (trio-culler-notice); without them, nobody.
        (["--warn-before=60", "--no-warn-servers"], "--warn-before needs --warn-url"),
        (["--warn-url=http://127.0.0.1:9/"], "need --warn-before"),
        (["--warn-before=60", "--warn-url=http://127.0.0.1:9/", "--once"], "not with --once"),
        (["--warn-before=60", "--warn-url=mailto:x"], "--warn-url must be an http"),
        (["--warn-before=-1", "--warn-url=http://127.0.0.1:9/"], "--warn-before"),
        (["--explain-server=lab"], "--explain-server needs --explain"),
    ],
)
def test_bad_warning_and_explain_options(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert run([*argv, "--show-config"], ENV) == 2
    assert expected in one_error_line(capsys)


def test_warning_options_are_read() -> None:
    values = effective(["--warn-before=900", "--warn-url=http://127.0.0.1:9/warn"])
    assert values["warn_before"] == 900
    assert values["warn_url"] == "http://127.0.0.1:9/warn"
    assert values["warn_hook"] is None
