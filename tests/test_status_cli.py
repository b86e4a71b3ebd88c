"""The status page from the command line: when it is served, bad settings, and listening before the hub answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from trio_culler.cli import _status_page, read_settings, run

# The culler reads ./idle_culler_config.py from where it runs: every test runs in an empty directory.
pytestmark = pytest.mark.usefixtures("in_empty_dir")

REPO = Path(__file__).resolve().parent.parent
TOKEN = "status-cli-token-0123456789abcdef"
# What a hub gives a managed service with a url (the hub's API itself is unreachable here: port 9).
MANAGED = {
    "JUPYTERHUB_API_TOKEN": TOKEN,
    "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
    "JUPYTERHUB_SERVICE_NAME": "culler",
    "JUPYTERHUB_CLIENT_ID": "service-culler",
    "JUPYTERHUB_SERVICE_PREFIX": "/services/culler/",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/culler/oauth_callback",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_served_only_where_the_hub_gives_a_url_or_a_bind_is_given() -> None:
    env = {**MANAGED, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101"}
    served = _status_page(read_settings([], env), env)
    assert served is not None
    assert (served.settings.bind_port, served.history.size) == (10101, 100)
    assert _status_page(read_settings(["--status-history=7"], env), env).history.size == 7  # type: ignore[union-attr]
    assert _status_page(read_settings(["--status-page=false"], env), env) is None
    assert _status_page(read_settings(["--once"], env), env) is None
    # A managed service without url (the common deployment): no page, nothing else changes.
    assert _status_page(read_settings([], MANAGED), MANAGED) is None
    bound = _status_page(read_settings(["--status-bind=127.0.0.1:9999"], MANAGED), MANAGED)
    assert bound is not None
    assert bound.settings.bind_port == 9999
    assert read_settings([], MANAGED).public_dict()["status_page"] is True


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--status-bind=nonsense"], MANAGED, "--status-bind"),
        (["--status-bind=127.0.0.1:1", "--status-history=0"], MANAGED, "--status-history"),
        (["--status-bind=127.0.0.1:1"], {"JUPYTERHUB_API_TOKEN": TOKEN}, "JUPYTERHUB_CLIENT_ID"),
    ],
)
def test_bad_status_settings_are_bad_input(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv, env) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert TOKEN not in err


def test_a_port_in_use_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run([f"--status-bind=127.0.0.1:{port}"], MANAGED) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_the_page_listens_before_the_hub_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """JupyterHub waits at start-up for a managed service's URL: the page must answer while the culler still
    waits for the hub's API (here: never)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")},
        **MANAGED,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_culler", "--timeout=60"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while answer is None:
            assert process.poll() is None, process.communicate()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/services/culler/", timeout=5)
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the status page never listened"
                time.sleep(0.1)
        assert answer.status_code == 302
        assert answer.headers["location"].startswith("/hub/api/oauth2/authorize?")
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Status page listening on http://127.0.0.1:" in err
    assert " answered at " not in err  # the culler never got past waiting for the hub
    assert TOKEN not in err
