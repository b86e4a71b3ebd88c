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

from trio_culler._standby import interval_in_force, salvage, standby_applies
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


# --- a configuration error never takes the hub down -----------------------------------------------------------

RULES_TYPO = '[[rules]]\ngrups = ["overnight"]\ntimeout = 86400\n'
RULES_ERROR = (
    "--rules-file rules.toml: rules[0]: unknown key grups (a rule has: users, groups, servers, admin, "
    "user_options, timeout, max_age, cull, remove, cull_users)"
)


def test_a_managed_service_with_a_url_waits_with_its_configuration_error(tmp_path: Path) -> None:
    """A typo in the rules file: the page answers (anonymous visitors still go to the hub's login), the error
    is logged at once and again every pass interval (here 1 s, the --cull-every that could be read), no pass
    runs; SIGTERM ends it with status 2."""
    (tmp_path / "rules.toml").write_text(RULES_TYPO)
    port = free_port()
    env = {
        **{k: v for k, v in MANAGED.items() if k != "JUPYTERHUB_API_TOKEN"},
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
    }
    with running_culler("--rules-file=rules.toml", "--cull-every=1", token=TOKEN, env=env, cwd=tmp_path) as culler:
        first = culler.wait_for(lambda text: "Configuration error:" in text)
        second = culler.wait_for(lambda text: "Configuration error:" in text, since=culler.mark())
        assert 0.5 < second.at - first.at < 5
        answer = httpx.get(f"http://127.0.0.1:{port}/services/culler/", timeout=10, trust_env=False)
        assert answer.status_code == 302
        assert answer.headers["location"].startswith("/hub/api/oauth2/authorize?")
        anonymous = httpx.get(f"http://127.0.0.1:{port}/services/culler/metrics", timeout=10, trust_env=False)
        assert anonymous.status_code == 401
        status = culler.stop(signal.SIGTERM)
    assert status == 2
    output = culler.text()
    assert first.text.endswith(
        f"] Configuration error: {RULES_ERROR}. No pass runs until it is fixed and the culler restarted "
        "(the status page says so too); check a fix with --show-config"
    )
    assert "the configuration cannot be used; serving the error on the status page, running no pass" in output
    assert "Pass" not in output
    assert " answered at " not in output
    assert TOKEN not in output


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        # Standalone: no url from a hub.
        (["--rules-file=rules.toml"], MANAGED),
        (["--rules-file=rules.toml", "--status-bind=127.0.0.1:0"], MANAGED),
        # One-shot asks, even from a managed service with a url.
        (["--rules-file=rules.toml", "--once"], {**MANAGED, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:9"}),
        (["--rules-file=rules.toml", "--show-config"], {**MANAGED, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:9"}),
    ],
)
def test_elsewhere_a_configuration_error_exits_2_with_one_line(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    Path("rules.toml").write_text(RULES_TYPO)
    assert run(argv, env) == 2
    assert capsys.readouterr().err == f"trio-culler: error: {RULES_ERROR}\n"


def test_the_interval_in_force_is_read_as_far_as_it_can_be() -> None:
    assert interval_in_force(salvage(["--cull-every=42", "--bogus"])) == 42
    assert interval_in_force(salvage(["--timeout=100", "--rules-file=missing.toml"])) == 50
    assert interval_in_force(salvage(["--nonsense"])) == 300, "the default: --timeout=600 / 2"
    Path("idle_culler_config.py").write_text("c.IdleCuller.cull_every = 7\nc.IdleCuller.rules = [{'bad': 1}]\n")
    assert interval_in_force(salvage(["--rules-file=x.toml"])) == 7
    assert interval_in_force(salvage(["--rules-file=x.toml", "--cull-every=9"])) == 9
    Path("idle_culler_config.py").write_text("c.IdleCuller.cull_every = 'soon'\n")
    assert interval_in_force(salvage([])) == 300


def test_standby_applies_to_a_managed_service_with_a_url_only() -> None:
    with_url = {**MANAGED, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101"}
    assert standby_applies(["--typo"], with_url)
    assert standby_applies([], with_url)
    assert not standby_applies([], MANAGED)
    for one_shot in ("--once", "--show-config", "--explain=ann", "--help", "--version", "--generate-config"):
        assert not standby_applies([one_shot, "--typo"], with_url), one_shot


def test_a_metrics_port_in_use_keeps_a_managed_service_up_too(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in MANAGED.items() if k != "JUPYTERHUB_API_TOKEN"},
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        }
        with running_culler(f"--metrics-port={metrics_port}", token=TOKEN, env=env, cwd=tmp_path) as culler:
            line = culler.wait_for(lambda text: "Configuration error:" in text)
            assert (
                httpx.get(f"http://127.0.0.1:{port}/services/culler/", timeout=10, trust_env=False).status_code == 302
            )
            assert culler.stop(signal.SIGTERM) == 2
    assert f"Configuration error: --metrics-port={metrics_port}: Address already in use." in line.text


def test_the_public_url_shown_is_the_hubs_not_the_services_own() -> None:
    """A hub with a public_url gives a service with a url its own address as JUPYTERHUB_PUBLIC_URL, and its own
    pages' as JUPYTERHUB_PUBLIC_HUB_URL."""
    env = {
        **MANAGED,
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101",
        "JUPYTERHUB_PUBLIC_URL": "https://hub.example.org/services/culler/",
        "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/jhub/hub/",
    }
    settings = read_settings([], env)
    assert settings.config.public_url == "https://hub.example.org/jhub/"
    served = _status_page(settings, env)
    assert served is not None
    assert served.history.snapshot.config["public_url"] == "https://hub.example.org/jhub/"
    assert read_settings(["--public-url=https://other.example.org"], env).config.public_url == (
        "https://other.example.org"
    )
    # No hub public_url: nothing, rather than the service's own address.
    no_hub_url = {k: v for k, v in env.items() if k != "JUPYTERHUB_PUBLIC_HUB_URL"}
    assert read_settings([], no_hub_url).config.public_url is None
    # A standalone culler's operator may still set JUPYTERHUB_PUBLIC_URL for the hub's.
    standalone = {**MANAGED, "JUPYTERHUB_PUBLIC_URL": "https://hub.example.org"}
    assert read_settings([], standalone).config.public_url == "https://hub.example.org"
