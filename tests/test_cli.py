"""The command line: every deployment's command line, both syntaxes, the config file, bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_culler.cli import read_settings, run

from .support.cli import ENV, effective

# The culler reads ./idle_culler_config.py from where it runs: every test runs in an empty directory.
pytestmark = pytest.mark.usefixtures("in_empty_dir")


# The command lines real deployments generate (reference/hub-api.md), with the meaning each must have.
DEPLOYMENTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "z2jh default",
        "--url=http://localhost:8081/hub/api --timeout=3600 --cull-every=600 --concurrency=10",
        {"url": "http://localhost:8081/hub/api", "timeout": 3600, "cull_every": 600, "concurrency": 10},
    ),
    (
        "z2jh everything",
        "--url=http://localhost:8081/hub/api --timeout=7200 --cull-every=300 --concurrency=5 --cull-users "
        "--cull-admin-users=false --remove-named-servers --max-age=86400",
        {
            "timeout": 7200,
            "cull_every": 300,
            "concurrency": 5,
            "cull_users": True,
            "cull_admin_users": False,
            "remove_named_servers": True,
            "max_age": 86400,
        },
    ),
    (
        "tljh",
        "--timeout=600 --cull-every=60 --concurrency=5 --max-age=0",
        {"url": ENV["JUPYTERHUB_API_URL"], "timeout": 600, "cull_every": 60, "concurrency": 5, "max_age": 0},
    ),
    (
        "tljh users",
        "--timeout=600 --cull-every=60 --concurrency=5 --max-age=0 --cull-users --remove-named-servers",
        {"cull_users": True, "remove_named_servers": True, "cull_admin_users": True},
    ),
    (
        "binderhub",
        "--url=http://localhost:8081/hub/api --timeout=3600 --cull-every=600 --concurrency=10 --cull-users",
        {"cull_users": True, "timeout": 3600},
    ),
    (
        "mybinder.org",
        "--url=http://localhost:8081/hub/api --timeout=600 --cull-every=660 --concurrency=10 --cull-users "
        "--max-age=21600",
        {"timeout": 600, "cull_every": 660, "cull_users": True, "max_age": 21600},
    ),
    (
        "nebari",
        "--url=http://localhost:8081/hub/api --timeout=1800 --cull-every=600 --concurrency=10",
        {"timeout": 1800, "cull_every": 600},
    ),
    ("jupyterhub docs", "--timeout=3600", {"timeout": 3600, "cull_every": 1800, "cull_users": False}),
]


@pytest.mark.parametrize(("name", "line", "expected"), DEPLOYMENTS, ids=[d[0] for d in DEPLOYMENTS])
def test_deployment_command_lines(name: str, line: str, expected: dict[str, Any]) -> None:
    values = effective(line.split())
    for key, value in expected.items():
        assert values[key] == value, key


def test_defaults_are_the_originals() -> None:
    values = effective([], {"JUPYTERHUB_API_TOKEN": "t"})
    assert values["url"] == "http://127.0.0.1:8081/hub/api"
    assert values["timeout"] == 600
    assert values["cull_every"] == 300  # 0 means timeout/2
    assert values["max_age"] == 0
    assert values["cull_users"] is False
    assert values["cull_admin_users"] is True
    assert values["remove_named_servers"] is False
    assert values["cull_default_servers"] is True
    assert values["cull_named_servers"] is True
    assert values["concurrency"] == 10
    assert values["api_page_size"] == 0
    assert values["ssl_enabled"] is False
    assert values["internal_certs_location"] == "internal-ssl"
    assert values["request_timeout"] == 60


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout=60"],
        ["--timeout", "60"],
        ["--IdleCuller.timeout=60"],
        ["--IdleCuller.timeout", "60"],
        ["-timeout=60"],
    ],
)
def test_value_syntaxes(argv: list[str]) -> None:
    assert effective(argv)["timeout"] == 60


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cull-users"], True),
        (["--cull_users"], True),
        (["--cull-users=true"], True),
        (["--cull-users=True"], True),
        (["--cull-users=YES"], True),
        (["--cull-users=on"], True),
        (["--cull-users=1"], True),
        (["--cull-users", "true"], True),
        (["--cull-users=false"], False),
        (["--cull-users=False"], False),
        (["--cull-users=0"], False),
        (["--cull-users=no"], False),
        (["--cull-users=Off"], False),
        (["--cull-users", "false"], False),
        (["--IdleCuller.cull_users=True"], True),
        (["--cull-users", "--no-cull-users"], False),
    ],
)
def test_boolean_syntaxes(argv: list[str], expected: bool) -> None:
    assert effective(argv)["cull_users"] is expected


def test_flag_followed_by_another_option() -> None:
    values = effective(["--cull-users", "--remove-named-servers", "--timeout", "5"])
    assert values["cull_users"] is True
    assert values["remove_named_servers"] is True
    assert values["timeout"] == 5


def test_underscore_spellings_of_the_1x_generation() -> None:
    values = effective(["--cull_every=60", "--max_age=100", "--api_page_size=50", "--remove_named_servers=true"])
    assert (values["cull_every"], values["max_age"], values["api_page_size"]) == (60, 100, 50)
    assert values["remove_named_servers"] is True


def test_log_level_spellings() -> None:
    assert effective(["--log-level=DEBUG"])["log_level"] == "DEBUG"
    assert effective(["--debug"])["log_level"] == "DEBUG"
    assert effective(["--logging=warning"])["log_level"] == "WARNING"


def test_request_timeout_from_the_environment() -> None:
    assert effective([], {**ENV, "JUPYTERHUB_REQUEST_TIMEOUT": "5"})["request_timeout"] == 5


def test_command_line_url_wins_over_environment() -> None:
    assert effective(["--url=http://127.0.0.2:9/hub/api"])["url"] == "http://127.0.0.2:9/hub/api"


def test_config_file_in_the_original_format(tmp_path: Path) -> None:
    path = tmp_path / "culler.py"
    path.write_text(
        "c = get_config()\n"
        "c.IdleCuller.timeout = 120\n"
        "c.IdleCuller.cull_users = True\n"
        "c.IdleCuller.max_age = 500\n"
        "def keep_gpus(inactive, inactive_limit, server):\n"
        "    return inactive.total_seconds() >= inactive_limit\n"
        "c.IdleCuller.cull_arbiter_hook = keep_gpus\n"
    )
    settings = read_settings([f"--config={path}", "--max-age=900"], ENV)
    assert settings.config.timeout == 120
    assert settings.config.cull_users is True
    assert settings.config.max_age == 900, "the command line overrides the file"
    assert settings.config.cull_arbiter_hook is not None
    assert settings.public_dict()["cull_arbiter_hook"] == "keep_gpus"


def test_default_config_file_is_loaded_when_present(tmp_path: Path) -> None:
    (tmp_path / "idle_culler_config.py").write_text("c.IdleCuller.timeout = 42\n")
    assert effective([])["timeout"] == 42


def test_generate_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--generate-config"], ENV) == 0
    text = capsys.readouterr().out
    assert "# c.IdleCuller.timeout = 600" in text
    path = tmp_path / "generated.py"
    # Uncomment every assignment: the result must load and give the defaults back.
    path.write_text("\n".join(line[2:] if line.startswith("# c.") else line for line in text.splitlines()))
    assert effective([f"--config={path}"]) == effective([])


def test_show_config_needs_no_token_and_never_shows_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--show-config", "--cull-users"], {}) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cull_users"] is True
    assert shown["api_token_set"] is False
    assert run(["--show-config"], ENV) == 0
    out = capsys.readouterr().out
    assert ENV["JUPYTERHUB_API_TOKEN"] not in out
    assert json.loads(out)["api_token_set"] is True


BAD_INPUT = [
    (["--frobnicate"], "--frobnicate"),
    (["--cul-users"], "did you mean --cull-users"),
    (["--timeout=abc"], "--timeout"),
    (["--timeout=-5"], "--timeout"),
    (["--timeout", "-5"], "--timeout"),
    (["--concurrency=-1"], "--concurrency"),
    (["--concurrency=2.5"], "--concurrency"),
    (["--api-page-size=ten"], "--api-page-size"),
    (["--cull-users=maybe"], "--cull-users"),
    (["--timeout"], "--timeout needs a value"),
    (["--url=ftp://hub"], "--url"),
    # Request paths are appended to the URL: what would end up inside them, or no host at all, is refused.
    (["--url=http://hub:8081/hub/api?x=1"], "--url"),
    (["--url=http://hub:8081/hub/api#top"], "--url"),
    (["--url=http://hub:8081/hub api"], "--url"),
    (["--url=http:///hub/api"], "--url"),
    (["--url=http://hub:99999/hub/api"], "--url"),
    (["--url=http://hub:port/hub/api"], "--url"),
    (["--log-format=xml"], "--log-format"),
    (["stray"], "stray"),
    (["--config=/nonexistent/culler.py"], "--config"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUT)
def test_bad_input_is_one_line_naming_the_option(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv, ENV) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("c.IdleCuller.timeout = 'soon'\n", "timeout"),
        ("c.IdleCuller.no_such_option = 1\n", "no_such_option"),
        ("c.IdleCuller.cull_users = 3\n", "cull_users"),
        ("c.IdleCuller.cull_arbiter_hook = 5\n", "cull_arbiter_hook"),
        ("def broken(:\n", "culler.py:1"),
        ("raise RuntimeError('boom')\n", "boom"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "culler.py"
    path.write_text(content)
    assert run([f"--config={path}"], ENV) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "culler.py"
    path.mkdir()  # a directory cannot be read as a file, even by root
    assert run([f"--config={path}"], ENV) == 2
    # Named the way every other error about the file names it: by its path first.
    assert f"error: {path}: cannot read it: Is a directory" in capsys.readouterr().err


def test_missing_token_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--once"], {}) == 2
    assert "JUPYTERHUB_API_TOKEN" in capsys.readouterr().err


def test_help_lists_every_original_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], {}) == 0
    text = capsys.readouterr().out
    for option in (
        "--api-page-size",
        "--concurrency",
        "--config",
        "--cull-admin-users",
        "--cull-every",
        "--cull-default-servers",
        "--cull-named-servers",
        "--cull-users",
        "--internal-certs-location",
        "--max-age",
        "--remove-named-servers",
        "--ssl-enabled",
        "--timeout",
        "--url",
        "--generate-config",
    ):
        assert option in text


def test_module_entry_point_and_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_culler", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("trio-culler ")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("trio-culler")
    result = subprocess.run(
        [str(script) if script.exists() else "trio-culler", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr


def test_log_level_reaches_logging() -> None:
    assert read_settings(["--debug"], ENV).log_level == logging.DEBUG
