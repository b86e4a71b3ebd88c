"""Rules against a real JupyterHub: groups, name-glob exemptions, a profile's user_options, a TOML rules file,
a token without ``read:users:groups``, a warning webhook before each cull, and ``--explain``.

This module starts its own hub: the culler's role gains ``read:users:groups``, and a second culler service
(``culler-nogroups``) keeps the documented scopes without it.
"""

from __future__ import annotations

import http.server
import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .hubtools import (
    SERVER_START_TIMEOUT,
    HubAPI,
    HubProcess,
    culler_process,
    module_hub,
    run_culler,
    sleep_until_idle,
    start_servers,
    wait_until,
)

pytestmark = pytest.mark.integration

SHORT = 3  # seconds: the short timeouts rules give
LONG = 3600  # the global timeout: nothing is culled by it in these tests

NOGROUPS_TOKEN = secrets.token_hex(32)
EXTRA_CONFIG = """
for role in c.JupyterHub.load_roles:
    if role["name"] == "culler-role":
        role["scopes"] = [*role["scopes"], "read:users:groups"]
c.JupyterHub.services.append({"name": "culler-nogroups", "api_token": env["TRIO_CULLER_IT_NOGROUPS_TOKEN"]})
c.JupyterHub.load_roles.append(
    {
        "name": "culler-nogroups-role",
        # Without admin:users, which implies read:users and so read:users:groups.
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["culler-nogroups"],
    }
)
"""


hub = module_hub("rules-hub", extra_config=EXTRA_CONFIG, extra_env={"TRIO_CULLER_IT_NOGROUPS_TOKEN": NOGROUPS_TOKEN})


def create_group(api: HubAPI, name: str, users: list[str]) -> None:
    response = api.client.post(f"/groups/{name}", json={"users": users})
    if response.status_code == 409:  # left by an earlier test of this module
        response = api.client.post(f"/groups/{name}/users", json={"users": users})
    assert response.status_code in (200, 201), response.text


def start_with_options(api: HubAPI, name: str, options: dict[str, Any], server: str = "") -> None:
    """Start a server with ``options`` as the POST body: the hub keeps them as the server's user_options."""
    response = api.client.post(api.server_path(name, server), json=options, timeout=SERVER_START_TIMEOUT)
    assert response.status_code in (201, 202), response.text

    def ready() -> bool | None:
        model = api.get_user(name) or {}
        return True if model.get("servers", {}).get(server, {}).get("ready") else None

    wait_until(ready, timeout=SERVER_START_TIMEOUT, what=f"{name}/{server} to start")


def write_config(tmp_path: Path, rules: list[dict[str, Any]]) -> Path:
    path = tmp_path / "culler_config.py"
    path.write_text(f"c.IdleCuller.rules = {rules!r}\n", encoding="utf-8")
    return path


def test_a_group_with_a_short_timeout_is_culled_while_others_stay(api: HubAPI, hub: HubProcess, tmp_path: Path) -> None:
    api.create_users(["rg-night-1", "rg-night-2", "rg-other"])
    create_group(api, "rg-short", ["rg-night-1", "rg-night-2"])
    ready_at = start_servers(hub, [("rg-night-1", ""), ("rg-night-2", ""), ("rg-other", "")])
    sleep_until_idle(ready_at, SHORT)
    config = write_config(tmp_path, [{"groups": ["rg-short"], "timeout": SHORT}])
    run = run_culler(hub, f"--timeout={LONG}", f"--config={config}")
    assert run.returncode == 0, run.describe()
    assert api.server_state("rg-night-1") == "stopped", run.describe()
    assert api.server_state("rg-night-2") == "stopped", run.describe()
    assert api.server_state("rg-other") == "running", run.describe()
    assert "rules[0] (groups=rg-short -> timeout=3)" in run.stderr + run.stdout


def test_a_name_glob_exemption_beats_a_later_group_rule(api: HubAPI, hub: HubProcess, tmp_path: Path) -> None:
    api.create_users(["rx-vip-1", "rx-plain"])
    create_group(api, "rx-short", ["rx-vip-1", "rx-plain"])
    ready_at = start_servers(hub, [("rx-vip-1", ""), ("rx-plain", "")])
    sleep_until_idle(ready_at, SHORT)
    config = write_config(
        tmp_path, [{"users": ["rx-vip-*"], "cull": False}, {"groups": ["rx-short"], "timeout": SHORT}]
    )
    run = run_culler(hub, f"--timeout={SHORT}", f"--config={config}")
    assert run.returncode == 0, run.describe()
    assert api.server_state("rx-vip-1") == "running", run.describe()
    assert api.server_state("rx-plain") == "stopped", run.describe()


@pytest.mark.parametrize("form", ["toml", "json", "config"])
def test_a_gpu_profile_gets_the_profiles_timeout(api: HubAPI, hub: HubProcess, tmp_path: Path, form: str) -> None:
    gpu, cpu = f"rp-{form}-gpu", f"rp-{form}-cpu"
    api.create_users([gpu, cpu])
    start_with_options(api, gpu, {"profile": "gpu"})
    start_with_options(api, cpu, {"profile": "cpu"})
    ready_at = time.monotonic()
    model = api.get_user(gpu) or {}
    assert model["servers"][""]["user_options"] == {"profile": "gpu"}  # the hub kept the POST body
    sleep_until_idle(ready_at, SHORT)
    rules = [{"user_options": {"profile": "gpu"}, "timeout": SHORT}]
    if form == "toml":
        path = tmp_path / "rules.toml"
        path.write_text(f'[[rules]]\nuser_options = {{ profile = "gpu" }}\ntimeout = {SHORT}\n', encoding="utf-8")
        args = [f"--rules-file={path}"]
    elif form == "json":
        path = tmp_path / "rules.json"
        path.write_text(json.dumps({"rules": rules}), encoding="utf-8")
        args = [f"--rules-file={path}"]
    else:
        args = [f"--config={write_config(tmp_path, rules)}"]
    run = run_culler(hub, f"--timeout={LONG}", *args)
    assert run.returncode == 0, run.describe()
    assert api.server_state(gpu) == "stopped", run.describe()
    assert api.server_state(cpu) == "running", run.describe()


def test_a_token_without_read_users_groups_gets_the_message_and_culls_nobody(
    api: HubAPI, hub: HubProcess, tmp_path: Path
) -> None:
    api.create_users(["rs-spared", "rs-other"])
    create_group(api, "rs-overnight", ["rs-spared"])
    ready_at = start_servers(hub, [("rs-spared", ""), ("rs-other", "")])
    sleep_until_idle(ready_at, SHORT)
    config = write_config(tmp_path, [{"groups": ["rs-overnight"], "cull": False}])
    run = run_culler(hub, f"--timeout={SHORT}", f"--config={config}", token=NOGROUPS_TOKEN)
    assert run.returncode == 1, run.describe()
    output = run.stderr + run.stdout
    assert "read:users:groups" in output, run.describe()
    # Nobody in the sparing group was culled, and nobody else either: the pass did not run.
    assert api.server_state("rs-spared") == "running", run.describe()
    assert api.server_state("rs-other") == "running", run.describe()
    # The same rules with the culler's own token (which may read groups) cull only the other user.
    run = run_culler(hub, f"--timeout={SHORT}", f"--config={config}")
    assert run.returncode == 0, run.describe()
    assert api.server_state("rs-spared") == "running", run.describe()
    assert api.server_state("rs-other") == "stopped", run.describe()


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[dict[str, Any], dict[str, str]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        type(self).posts.append((body, dict(self.headers.items())))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, Any], dict[str, str]]]]]:
    posts: list[tuple[dict[str, Any], dict[str, str]]] = []
    handler = type("Receiver", (_Receiver,), {"posts": posts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/warn", posts
    finally:
        server.shutdown()
        server.server_close()


def test_a_warning_webhook_gets_one_post_per_server_before_its_cull(
    api: HubAPI, hub: HubProcess, receiver: tuple[str, list[tuple[dict[str, Any], dict[str, str]]]], tmp_path: Path
) -> None:
    url, posts = receiver
    users = ["rw-one", "rw-two"]
    api.create_users([*users, "rw-active"])
    ready_at = start_servers(hub, [("rw-one", ""), ("rw-two", ""), ("rw-two", "lab"), ("rw-active", "")])
    log_path = tmp_path / "culler.log"
    args = [f"--url={hub.api_url}", "--timeout=6", "--cull-every=1", "--warn-before=4", f"--warn-url={url}"]
    with culler_process(hub.culler_token, *args, log_path=log_path) as proc:

        def culled() -> bool | None:
            api.post_activity("rw-active", [""], user=False)
            states = [api.server_state("rw-one"), api.server_state("rw-two"), api.server_state("rw-two", "lab")]
            return True if all(state == "stopped" for state in states) else None

        wait_until(culled, timeout=120, what="the idle servers to be culled")
        # Two more passes, as the log shows them: no second warning may follow (rw-active is still in use).
        passes = log_path.read_text().count("] Pass done")

        def two_more_passes() -> bool:
            api.post_activity("rw-active", [""], user=False)
            return log_path.read_text().count("] Pass done") >= passes + 2

        wait_until(two_more_passes, timeout=60, what="two more passes")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = log_path.read_text()
    assert time.monotonic() > ready_at
    # Each server's idle stretch: a warning, then its cull, under one id (the webhook hears both events).
    warned = sorted((body["user"], body["server"]) for body, _headers in posts if body["event"] == "warning")
    assert warned == [("rw-one", ""), ("rw-two", ""), ("rw-two", "lab")], output
    for user, server in warned:
        events = [body for body, _headers in posts if (body["user"], body["server"]) == (user, server)]
        assert [body["event"] for body in events] == ["warning", "culled"], output
        assert events[0]["id"] == events[1]["id"]
    for body, headers in posts:
        # The first release's keys, and the events' own.
        assert set(body) == {"user", "server", "cull_at", "reason", "idle_seconds"} | {
            "event",
            "id",
            "warned_at",
            "at",
            "detail",
            "kept_at",
        }
        assert body["reason"] == "idle"
        assert "authorization" not in {key.lower() for key in headers}
        assert hub.culler_token not in json.dumps(headers)
    assert api.server_state("rw-active") == "running"
    # Each warning was sent before its server's cull, in the culler's own log order.
    lines = output.splitlines()
    for label in ("rw-one", "rw-two", "rw-two/lab"):
        warn = next(i for i, line in enumerate(lines) if f"Warning the user of server {label}:" in line)
        cull = next(i for i, line in enumerate(lines) if f"Culling server {label} (" in line)
        assert warn < cull, output


def test_explain_prints_the_rule_the_idle_time_and_the_verdict(api: HubAPI, hub: HubProcess, tmp_path: Path) -> None:
    api.create_users(["re-gpu"])
    start_with_options(api, "re-gpu", {"profile": "gpu"})
    ready_at = time.monotonic()
    sleep_until_idle(ready_at, SHORT)
    config = write_config(tmp_path, [{"user_options": {"profile": "gpu"}, "timeout": SHORT, "max_age": 14400}])
    run = run_culler(hub, f"--timeout={LONG}", f"--config={config}", "--explain=re-gpu", once=False)
    assert run.returncode == 0, run.describe()
    assert 'rules[0] (user_options={"profile":"gpu"} -> timeout=3, max_age=14400)' in run.stdout, run.describe()
    assert "by the hub" in run.stdout
    assert "stop: inactive for" in run.stdout
    assert api.server_state("re-gpu") == "running"  # explained, not acted on
    run = run_culler(
        hub, f"--timeout={LONG}", f"--config={config}", "--explain=re-gpu", "--log-format=json", once=False
    )
    assert run.returncode == 0, run.describe()
    [line] = run.stdout.splitlines()
    report = json.loads(line)
    [server] = report["servers"]
    assert server["rule"]["index"] == 0
    assert server["limits"]["timeout_seconds"] == SHORT
    assert server["limits"]["max_age_seconds"] == 14400
    assert server["decision"]["action"] == "stop"
    assert server["signals"]["hub"]["idle_seconds"] >= SHORT
    assert server["cull_rule"] == "idle"
    assert api.server_state("re-gpu") == "running"
    run = run_culler(hub, "--explain=nobody-here", once=False)
    assert run.returncode == 1
    assert "no user 'nobody-here'" in run.stderr
