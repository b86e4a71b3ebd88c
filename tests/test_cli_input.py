"""Never a traceback for bad input: each kind of mistake an operator makes (a value out of range, a config file
that is not UTF-8 or assigns an unknown key, a bad rules file, ...) with the one line it must print, the 2.0
config keys a drop-in must accept, and Hypothesis feeding random argv and random config-file bytes to the real
entry point."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_culler._options import OPTIONS
from trio_culler.cli import main, read_settings, run

# The culler reads ./idle_culler_config.py from where it runs: every test runs in an empty directory.
pytestmark = pytest.mark.usefixtures("in_empty_dir")

ENV = {"JUPYTERHUB_API_TOKEN": "cli-input-token", "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api"}
#: A 2.0 config file as ``jupyterhub-idle-culler==2.0.0 --generate-config`` writes it, uncommented (the values
#: are 2.0's defaults; the culler's own options keep theirs).
GENERATED_BY_2_0 = """\
c = get_config()  #noqa
c.Application.log_datefmt = '%Y-%m-%d %H:%M:%S'
c.Application.log_format = '[%(name)s]%(highlevel)s %(message)s'
c.Application.log_level = 30
c.Application.logging_config = {}
c.Application.show_config = False
c.Application.show_config_json = False
c.IdleCuller.api_page_size = 0
c.IdleCuller.concurrency = 10
c.IdleCuller.config_file = 'idle_culler_config.py'
c.IdleCuller.cull_admin_users = True
c.IdleCuller.cull_default_servers = True
c.IdleCuller.cull_every = 0
c.IdleCuller.cull_named_servers = True
c.IdleCuller.cull_users = False
c.IdleCuller.generate_config = False
c.IdleCuller.internal_certs_location = 'internal-ssl'
c.IdleCuller.log_datefmt = '%Y-%m-%d %H:%M:%S'
c.IdleCuller.log_format = '[%(name)s]%(highlevel)s %(message)s'
c.IdleCuller.log_level = 30
c.IdleCuller.logging_config = {}
c.IdleCuller.max_age = 0
c.IdleCuller.remove_named_servers = False
c.IdleCuller.show_config = False
c.IdleCuller.show_config_json = False
c.IdleCuller.ssl_enabled = False
c.IdleCuller.timeout = 600
c.IdleCuller.url = None
"""


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    environ.update(ENV if env is None else env)
    return subprocess.run(
        [sys.executable, "-m", "trio_culler", *argv],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- one mistake of each kind, through the real process ------------------------------------------------------


def test_a_port_out_of_range_is_one_line_naming_the_option() -> None:
    line = one_error_line(cli("--metrics-port=99999", "--once"))
    assert line == "trio-culler: error: --metrics-port: expected a port number from 0 to 65535, not '99999'"


def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "culler_config.py"
    path.write_bytes(b"c.IdleCuller.timeout = 60  # \xe9t\xe9\n")
    line = one_error_line(cli(f"--config={path}"))
    assert line == f"trio-culler: error: {path}: not UTF-8 text (byte 29: invalid continuation byte)"


def test_a_bad_value_in_a_config_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "culler_config.py").write_text("c.IdleCuller.timeout = 'soon'\n")
    line = one_error_line(cli("--config=culler_config.py"))
    assert line == "trio-culler: error: culler_config.py: c.IdleCuller.timeout: expected a number, not 'soon'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("c.IdleCuller.tmeout = 5\n", "c.IdleCuller.tmeout: unknown option (did you mean c.IdleCuller.timeout?)"),
        ("c.IdleCuller.url = 'ftp://hub'\n", "c.IdleCuller.url: must be an http:// or https:// URL, not 'ftp://hub'"),
        ("c.IdleCuller.concurrency = 2.5\n", "c.IdleCuller.concurrency: expected a whole number, not 2.5"),
        ("c.IdleCuller.cull_users = 'perhaps'\n", "c.IdleCuller.cull_users: expected True or False, not 'perhaps'"),
        ("c.IdleCuller.metrics_port = 70000\n", "c.IdleCuller.metrics_port: expected a port number from 0 to 65535"),
        ("c.IdleCuller.timeout = [1]\n", "c.IdleCuller.timeout: expected a number, not [1]"),
        ("c.timeout = 5\n", "c.timeout: assign options as c.IdleCuller.timeout = ..."),
        ("import sys\nsys.exit(3)\n", "raised SystemExit: 3"),
        ("x = '\0'\n", "culler_config.py"),
    ],
)
def test_config_file_errors_name_the_file_and_the_key(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "culler_config.py").write_text(content)
    with captured() as (_out, err):
        assert run(["--config=culler_config.py"], ENV) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trio-culler: error: culler_config.py"), lines
    assert message in lines[0]


def test_show_config_into_a_closed_pipe_exits_quietly() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already gone: the first write gets EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "trio_culler", "--show-config"],
            env=environ,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0
    assert done.stderr == ""


def test_show_config_piped_into_head_prints_its_first_line() -> None:
    shell = subprocess.run(
        f"{sys.executable} -m trio_culler --show-config | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")},
    )
    assert shell.stdout == "{\n"
    assert shell.stderr == ""


def test_an_unresolvable_metrics_address_names_the_address() -> None:
    line = one_error_line(cli("--metrics-address=not.a.host", "--metrics-port=19999", "--once"))
    assert line.startswith("[E ")
    assert "--metrics-address=not.a.host: not an address of this machine" in line
    assert "--metrics-port" not in line


# -- drop-in: what 2.0 writes, trio-culler reads ------------------------------------------------------------


def test_a_config_file_generated_by_2_0_loads(tmp_path: Path) -> None:
    (tmp_path / "idle_culler_config.py").write_text(GENERATED_BY_2_0)
    settings = read_settings([], ENV)
    assert settings.config.timeout == 600
    assert settings.log_level == logging.WARNING, "c.Application.log_level = 30, as 2.0 means it"
    assert settings.log_format == "text", "2.0's format string is its own logging's; ours is kept"
    assert not settings.show_config
    assert any("log_format" in note and "not used" in note for note in settings.notes)
    assert not any("logging_config" in note for note in settings.notes), "an empty dict is the default"


def test_the_notes_are_logged_once_logging_is_set_up(tmp_path: Path) -> None:
    (tmp_path / "idle_culler_config.py").write_text(GENERATED_BY_2_0)
    result = cli("--once", "--max-retries=0", "--log-level=WARNING", env={**ENV, "JUPYTERHUB_REQUEST_TIMEOUT": "5"})
    notes = [line for line in result.stderr.splitlines() if "2.0's logging setting is not used" in line]
    assert notes, result.stderr
    assert all(line.startswith("[W ") for line in notes)


@pytest.mark.parametrize("key", ["show_config", "show_config_json"])
@pytest.mark.parametrize("section", ["Application", "IdleCuller"])
def test_show_config_from_the_config_file(tmp_path: Path, key: str, section: str) -> None:
    (tmp_path / "idle_culler_config.py").write_text(f"c.{section}.{key} = True\n")
    assert read_settings([], ENV).show_config


def test_other_sections_are_noted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "idle_culler_config.py").write_text("c.JupyterHub.admin_users = {'x'}\nc.IdleCuller.timeout = 60\n")
    settings = read_settings([], ENV)
    assert settings.config.timeout == 60
    assert settings.notes == ("idle_culler_config.py: c.JupyterHub.admin_users is not a culler option (ignored)",)


# -- Hypothesis: random argv and random config-file bytes to the real entry point ----------------------------


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def entry_point(argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """``main()`` as the console script runs it, with its own stdout/stderr; returns (status, stderr)."""
    with captured() as (_out, err), pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", environ)
        try:
            main(argv)
        except SystemExit as done:
            status = done.code
        else:  # pragma: no cover - main() always exits
            raise AssertionError("main() returned")
    assert isinstance(status, int)
    return status, err.getvalue()


# --demo runs a pass and --metrics-port opens a port: both are exercised elsewhere; everything else is drawn.
_NAMES = sorted(
    {name for name in OPTIONS if name not in ("demo", "metrics-port")}
    | {"IdleCuller.timeout", "cull_every", "no-cull-users", "no-such-option", "Application.log_level"}
)
_VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "99999", "1e999", "nan", "true", "off", "abc", "http://hub/api", "ftp://x"]),
    st.text(max_size=12),
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    tokens: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["eq", "space", "bare", "junk"]))
        name = draw(st.sampled_from(_NAMES))
        if kind == "eq":
            tokens.append(f"--{name}={draw(_VALUES)}")
        elif kind == "space":
            tokens += [f"--{name}", draw(_VALUES)]
        elif kind == "bare":
            tokens.append(f"--{name}")
        else:
            tokens.append(draw(st.text(max_size=10)))
    # Without a token, nothing can start a culler: every run ends in an action (0) or an error (2).
    return tokens


def assert_clean(status: int, err: str) -> None:
    assert "Traceback" not in err, err
    assert status in (0, 2), (status, err)
    if status == 2:
        assert err.count("\n") <= 1, err


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(argv=argvs())
def test_random_argv_never_gives_a_traceback(argv: list[str]) -> None:
    status, err = entry_point([a.replace("\0", "") for a in argv], {})
    assert_clean(status, err)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda key, value: f"c.IdleCuller.{key} = {value}\n".encode(),
            st.sampled_from([*(o.dest for o in OPTIONS.values()), "nope", "log_format", "logging_config"]),
            st.sampled_from(
                ["1", "-1", "2.5", "'x'", "None", "True", "[1]", "{}", "'%(message)s'", "1e999", "object()"]
            ),
        ),
    ),
    action=st.sampled_from([[], ["--show-config"], ["--once"]]),
)
def test_random_config_file_bytes_never_give_a_traceback(tmp_path: Path, content: bytes, action: list[str]) -> None:
    path = tmp_path / "random_config.py"
    path.write_bytes(content)
    status, err = entry_point([f"--config={path}", *action], {})
    assert_clean(status, err)
