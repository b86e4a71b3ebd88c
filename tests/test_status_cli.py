"""The status page from the command line: when it is served, bad settings, and listening before the hub answers."""

from __future__ import annotations

import json
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

from .support.processes import running_culler, running_hub

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


# --- no secret of --warn-url is shown, except by --show-config -----------------------------------------------

WARN_SECRETS = ("hookuser", "hookpass", "SECRETPATH", "QUERYSECRET", "FRAGSECRET")


def warn_url(port: int) -> str:
    return f"http://hookuser:hookpass@127.0.0.1:{port}/services/SECRETPATH?token=QUERYSECRET#FRAGSECRET"


def test_show_config_prints_the_webhooks_url_whole_and_the_page_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--show-config is the operator's own check on their own terminal: it prints what they configured. The
    page and api/status, read by others, show scheme, host and port."""
    argv = ["--warn-before=600", f"--warn-url={warn_url(8000)}", "--status-bind=127.0.0.1:9999"]
    assert run([*argv, "--show-config"], MANAGED) == 0
    assert warn_url(8000) in capsys.readouterr().out
    served = _status_page(read_settings(argv, MANAGED), MANAGED)
    assert served is not None
    assert served.history.snapshot.config["warn_url"] == "http://127.0.0.1:8000"
    assert not any(secret in json.dumps(served.history.snapshot.to_json()) for secret in WARN_SECRETS)


@pytest.mark.parametrize(
    ("log_format", "webhook"),
    [
        ("text", "hub"),  # a webhook that answers 404: "... answered HTTP 404"
        ("json", "closed"),  # a port nothing listens on: "...: ConnectError: ... after 3 attempts"
    ],
)
def test_a_failed_delivery_logs_the_webhook_without_its_secrets(log_format: str, webhook: str) -> None:
    """The real command line against a FakeHub of idle servers, with --warn-url full of secrets: the warnings
    fail, and neither the line that says so nor any other line (start-up, page, passes) shows them."""
    with running_hub(users=3, idle=1.0, token=TOKEN) as hub:
        hub_url = hub.url
        port = int(hub_url.split(":")[2].split("/")[0]) if webhook == "hub" else free_port()
        argv = [
            f"--url={hub_url}",
            "--timeout=3600",
            "--warn-before=900",
            f"--warn-url={warn_url(port)}",
            f"--log-format={log_format}",
            f"--status-bind=127.0.0.1:{free_port()}",
        ]
        page_env = {k: v for k, v in MANAGED.items() if k.startswith("JUPYTERHUB_") and "API" not in k}
        with running_culler(*argv, token=TOKEN, env=page_env) as culler:
            failed = culler.wait_for(lambda text: "Could not warn the user" in text, timeout=60)
            culler.popen.send_signal(signal.SIGTERM)
            assert culler.wait(60) == 0, culler.text()
            output = culler.text()
    assert "Status page listening on" in output
    if log_format == "json":
        line = json.loads(failed.text)
        assert line["event"] == "warning_failed"
        message = line["message"]
    else:
        message = failed.text
    assert f"http://127.0.0.1:{port}" in message
    assert ("answered HTTP 404" if webhook == "hub" else "after 3 attempts") in message
    for secret in (*WARN_SECRETS, TOKEN):
        assert secret not in output
