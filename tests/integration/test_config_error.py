"""A culler never takes its hub down: on a real JupyterHub, the culler as a managed service with a ``url`` and a
rules file with a typo. The hub starts; an admin's browser (Debian's Chromium) sees the error on the status page;
no server is culled; ``trio_culler_config_error`` is 1. The file fixed and the service restarted (its process
stopped: the hub starts it again), culling resumes.

The same hub answers two questions about messages: what a ``--url`` without the API's path is told, and what
a culler says of a rule on a group the hub does not have.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .browser import browser_login, launched_chromium
from .hubtools import (
    HubAPI,
    HubProcess,
    free_ports,
    missing_tools,
    run_culler,
    start_hub,
    start_servers,
    stop_hub,
    wait_until,
)

pytestmark = pytest.mark.integration

SERVICE = "idle-culler"
PREFIX = f"/services/{SERVICE}/"
PASSWORD = secrets.token_urlsafe(12)
PROMETHEUS_TOKEN = secrets.token_hex(32)
ADMIN = "boss"
TYPO = '[[rules]]\ngrups = ["overnight"]\ntimeout = 86400\n'
FIXED = '[[rules]]\ngroups = ["overnight"]\ntimeout = 86400\n'
ERROR = "rules[0]: unknown key grups (a rule has: users, groups, servers, admin, user_options, timeout, max_age"


class ConfigErrorHub:
    def __init__(self, hub: HubProcess, rules: Path, service_url: str) -> None:
        self.hub = hub
        self.rules = rules
        self.service_url = service_url

    def log(self) -> str:
        return self.hub.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        response = httpx.get(
            f"{self.hub.proxy_url}{PREFIX}metrics", headers={"Authorization": f"Bearer {PROMETHEUS_TOKEN}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
        raise AssertionError(f"{name} is not served")

    def culler_pids(self) -> list[int]:
        """The service's processes, found by the URL the hub gave it."""
        needle = f"JUPYTERHUB_SERVICE_URL={self.service_url}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids


@pytest.fixture(scope="module")
def typo_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigErrorHub]:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(f"real-JupyterHub integration tests need their tools: {reason}")
    (service_port,) = free_ports(1)
    service_url = f"http://127.0.0.1:{service_port}"
    workdir = tmp_path_factory.mktemp("config-error-hub")
    rules = workdir / "rules.toml"
    rules.write_text(TYPO)
    extra_config = f"""
import sys
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{{ADMIN!r}}}
c.JupyterHub.services.append({{
    "name": {SERVICE!r},
    "url": {service_url!r},
    "oauth_no_confirm": True,
    "command": [sys.executable, "-m", "trio_culler", "--timeout=3", "--cull-every=2", "--rules-file={rules}"],
    "environment": {{"PYTHONPATH": {str(Path(__file__).resolve().parents[2])!r}}},
}})
c.JupyterHub.services.append({{"name": "prometheus", "api_token": {PROMETHEUS_TOKEN!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "culler-metrics", "scopes": ["access:services!service={SERVICE}"], "services": ["prometheus"]}}
)
c.JupyterHub.load_roles.append({{
    "name": "idle-culler-role",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", "read:users:groups"],
    "services": [{SERVICE!r}],
}})
# The tests' own culler (service "culler") may list groups: its group names are checked.
for role in c.JupyterHub.load_roles:
    if role["name"] == "culler-role":
        role["scopes"] = [*role["scopes"], "list:groups"]
"""
    hub = start_hub(workdir, extra_config=extra_config)
    try:
        yield ConfigErrorHub(hub, rules, service_url)
    finally:
        stop_hub(hub)
        for pid in ConfigErrorHub(hub, rules, service_url).culler_pids():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


def test_a_typo_in_the_rules_leaves_the_hub_up_shows_the_error_and_culls_nothing_until_fixed(
    typo_hub: ConfigErrorHub, chromium: Any
) -> None:
    hub = typo_hub.hub
    # The hub started with the culler's URL answering: it routes to the service once that answered. (A culler
    # that exits 2 here, as before, gets "[C] Service idle-culler exited with status 2", and the hub stops.)
    wait_until(
        lambda: httpx.get(f"{hub.proxy_url}{PREFIX}", timeout=30).status_code != 404,
        timeout=60,
        what="the proxy route to the service",
    )
    assert hub.proc.poll() is None, hub.log_tail()
    assert "exited with status" not in typo_hub.log()
    with HubAPI(hub) as api:
        (name,) = api.create_users(["idle-ivy"])
        start_servers(hub, [(name, "")])
        # Idle for its 3 s timeout, and then two more of the culler's 2 s intervals: a working culler would have
        # culled it by now; this one logged its error (again) instead.
        errors_before = typo_hub.log().count("Configuration error:")
        wait_until(
            lambda: typo_hub.log().count("Configuration error:") >= errors_before + 3,
            timeout=60,
            what="the error logged at every pass interval",
        )
        assert api.server_state(name) == "running"
        assert f"--rules-file {typo_hub.rules}: {ERROR}" in typo_hub.log()

        # The page, to an admin, is the error; the metric says so.
        context, page, _dialogs = browser_login(chromium, f"{hub.proxy_url}{PREFIX}", ADMIN, PASSWORD)
        try:
            assert urlsplit(page.url).path == PREFIX, page.url
            alarm = page.locator("#config-error").inner_text()
            assert "The culler is not running: its configuration cannot be used" in alarm
            assert ERROR in alarm
            assert "Recent culls" not in page.inner_text("body")
        finally:
            context.close()
        anonymous = httpx.get(f"{hub.proxy_url}{PREFIX}", timeout=30)
        assert anonymous.status_code == 302
        assert urlsplit(anonymous.headers["location"]).path == "/hub/api/oauth2/authorize"
        assert typo_hub.metric("trio_culler_config_error") == 1

        # Fixed, and restarted: the hub starts a managed service again when its process exits.
        typo_hub.rules.write_text(FIXED)
        (pid,) = typo_hub.culler_pids()
        os.kill(pid, signal.SIGTERM)
        wait_until(
            lambda: f"Service {SERVICE} exited with status 2" in typo_hub.log(),
            timeout=60,
            what="the hub noticing the culler's exit",
        )
        wait_until(lambda: api.server_state(name) in ("stopped", "absent"), timeout=120, what="idle-ivy culled")
        assert typo_hub.metric("trio_culler_config_error") == 0
        assert hub.proc.poll() is None


def test_a_url_without_the_api_path_is_told_the_api_url(typo_hub: ConfigErrorHub) -> None:
    hub = typo_hub.hub
    run = run_culler(hub, f"--url={hub.hub_url}/", "--max-retries=0")
    assert run.returncode == 1, run.describe()
    assert f"--url must be the hub's API URL, e.g. {hub.hub_url}/hub/api)" in run.stderr, run.describe()


def test_a_group_the_hub_does_not_have_is_named(typo_hub: ConfigErrorHub, tmp_path: Path) -> None:
    hub = typo_hub.hub
    rules = tmp_path / "groups.toml"
    rules.write_text('[[rules]]\ngroups = ["no-such-group"]\ntimeout = 86400\n')
    with HubAPI(hub) as api:
        api.client.post("/groups/real-group", json={"users": []}).raise_for_status()
        (user,) = api.create_users(["gina"])
        listed = run_culler(hub, f"--rules-file={rules}", "--timeout=3600")
        assert listed.returncode == 0, listed.describe()
        assert (
            "Rules: the rules name a group the hub does not have: 'no-such-group' (rules[0]); no user can match a "
            "rule through it, so the users meant for it fall to the next rule that matches them, or the global "
            "options"
        ) in listed.stderr
        explained = run_culler(hub, f"--rules-file={rules}", f"--explain={user}", once=False)
        assert explained.returncode == 0, explained.describe()
        assert "  note:     the rules name a group the hub does not have: 'no-such-group'" in explained.stdout
