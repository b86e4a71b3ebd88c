"""The --inspect-kernels options on the command line, in a config file, and refused combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_culler.cli import read_settings, run

from .support.cli import ENV, effective

# The culler reads ./idle_culler_config.py from where it runs: every test runs in an empty directory.
pytestmark = pytest.mark.usefixtures("in_empty_dir")


def test_defaults_leave_inspection_off() -> None:
    values = effective([])
    assert values["inspect_kernels"] is False
    assert values["max_busy"] == 0
    assert values["kernel_activity_only"] is False
    assert values["public_url"] is None


def test_options_on_the_command_line() -> None:
    values = effective(
        [
            "--inspect-kernels",
            "--max-busy=7200",
            "--kernel-activity-only",
            "--public-url=https://hub.example.org/",
        ]
    )
    assert values["inspect_kernels"] is True
    assert values["max_busy"] == 7200
    assert values["kernel_activity_only"] is True
    assert values["public_url"] == "https://hub.example.org/"
    config = read_settings(["--inspect-kernels", "--max-busy=7200", "--public-url=http://h"], ENV).config
    assert config.policy.max_busy is not None
    assert config.policy.max_busy.total_seconds() == 7200


def test_public_url_defaults_to_the_variable_a_hub_gives_its_services() -> None:
    values = effective(["--inspect-kernels"], {**ENV, "JUPYTERHUB_PUBLIC_URL": "https://jupyter.example.org/"})
    assert values["public_url"] == "https://jupyter.example.org/"
    values = effective(
        ["--inspect-kernels", "--public-url=http://127.0.0.1:8000"],
        {**ENV, "JUPYTERHUB_PUBLIC_URL": "https://jupyter.example.org/"},
    )
    assert values["public_url"] == "http://127.0.0.1:8000"


def test_inspect_kernels_starts_without_public_url() -> None:
    """A hub with a public_url gives every server a full_url: the address is decided per server, so the
    option alone is accepted (a server with neither is decided from the hub's data, said once per pass)."""
    settings = read_settings(["--inspect-kernels", "--kernel-activity-only"], ENV)
    assert settings.config.inspect_kernels is True
    assert settings.config.public_url is None


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "culler.py"
    path.write_text(
        "c.IdleCuller.inspect_kernels = True\n"
        "c.IdleCuller.max_busy = 3600\n"
        "c.IdleCuller.kernel_activity_only = True\n"
        "c.IdleCuller.public_url = 'http://127.0.0.1:8000'\n"
    )
    values = effective([f"--config={path}"])
    assert (values["inspect_kernels"], values["max_busy"], values["kernel_activity_only"]) == (True, 3600, True)
    assert values["public_url"] == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--kernel-activity-only"], "--inspect-kernels"),
        (["--max-busy=60"], "--inspect-kernels"),
        (["--inspect-kernels", "--public-url=ftp://hub"], "--public-url"),
        (["--inspect-kernels", "--public-url=http://hub?x=1"], "--public-url"),
        (["--inspect-kernels", "--public-url=http://hub:99999"], "--public-url"),
        (["--inspect-kernels", "--public-url=http://h", "--max-busy=-1"], "--max-busy"),
    ],
)
def test_refused_at_start_up_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv, ENV) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_help_says_every_ready_server_is_inspected(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], {}) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--inspect-kernels", "--max-busy", "--kernel-activity-only", "--public-url"):
        assert option in text
    assert "Every ready server is then inspected" in text
    assert "access:servers" in text
    assert "counts as idle" in text
