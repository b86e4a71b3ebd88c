"""A token with the wrong scopes, against a real JupyterHub: the culler says so in one line and culls nothing.

This module's hub has one service per faulty role (each of the culler's four scopes removed in turn, the
documented four without the ``--cull-users`` ones, ``delete:users`` without ``read:users``), and one with
exactly the scopes the culler asks for: it is the same idle server each of them is pointed at.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from .hubtools import (
    IDLE_TIMEOUT,
    CullerRun,
    HubAPI,
    HubProcess,
    culler_process,
    free_ports,
    module_hub,
    sleep_until_idle,
    start_servers,
    wait_until,
)

pytestmark = pytest.mark.integration

BASE = ("list:users", "read:users:activity", "read:servers", "delete:servers")
#: service name -> its role's scopes
ROLES: dict[str, tuple[str, ...]] = {
    **{f"no-{scope.replace(':', '-')}": tuple(s for s in BASE if s != scope) for scope in BASE},
    "four": BASE,
    "delete-users": (*BASE, "delete:users"),
    "enough": (*BASE, "delete:users", "read:users"),
}
TOKENS = {name: secrets.token_hex(32) for name in ROLES}
TIMEOUT_ARG = f"--timeout={IDLE_TIMEOUT}"


def extra_config() -> str:
    services = [{"name": name, "api_token": TOKENS[name]} for name in ROLES]
    roles = [{"name": f"{name}-role", "scopes": list(scopes), "services": [name]} for name, scopes in ROLES.items()]
    return (
        f"c.JupyterHub.services = [*c.JupyterHub.services, *{services!r}]\n"
        f"c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, *{roles!r}]\n"
    )


hub = module_hub("scopes-hub", extra_config=extra_config())


@pytest.fixture(scope="module")
def idle_user(hub: HubProcess) -> Iterator[str]:
    """One user whose server is idle past the culler's timeout, shared by every refused run."""
    with HubAPI(hub) as api:
        (name,) = api.create_users(["scoped-idle"])
        ready_at = start_servers(hub, [(name, "")])
        sleep_until_idle(ready_at, IDLE_TIMEOUT)
        try:
            yield name
        finally:
            api.cleanup()


def run_as(hub: HubProcess, service: str, *args: str) -> CullerRun:
    with HubAPI(dataclasses.replace(hub, culler_token=TOKENS[service])) as api:
        return api.run_culler(*args)


def errors(run: CullerRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("[E ")]


@pytest.mark.parametrize("removed", BASE)
def test_each_scope_removed_in_turn_refuses_the_pass_and_names_it(
    api: HubAPI, hub: HubProcess, idle_user: str, removed: str
) -> None:
    run = run_as(hub, f"no-{removed.replace(':', '-')}", TIMEOUT_ARG)
    assert run.returncode == 1, run.describe()
    (line,) = errors(run)
    assert f"Pass not run: the culler's token lacks {removed} (culling: to " in line, run.describe()
    assert not any(scope in line.split("lacks", 1)[1].split(".")[0] for scope in set(BASE) - {removed}), line
    assert TOKENS[f"no-{removed.replace(':', '-')}"] not in run.stderr
    assert api.server_state(idle_user) == "running", "nothing is culled on a pass that would lie"


@pytest.mark.parametrize(
    ("service", "named"),
    [("four", ("delete:users", "read:users")), ("delete-users", ("read:users",))],
)
def test_cull_users_without_admin_users_is_refused(
    api: HubAPI, hub: HubProcess, idle_user: str, service: str, named: tuple[str, ...]
) -> None:
    run = run_as(hub, service, TIMEOUT_ARG, "--cull-users")
    assert run.returncode == 1, run.describe()
    (line,) = errors(run)
    for scope in named:
        assert f"{scope} (--cull-users: to " in line, run.describe()
    assert ("delete:users" in line) == ("delete:users" in named)
    assert api.user_exists(idle_user)
    assert api.server_state(idle_user) == "running"


# -- a long-running culler: the metric, and a hub that is not there -----------------------------------------


def read_log(cwd: Path) -> str:
    return (cwd / "culler.log").read_text()


def test_a_long_running_culler_counts_the_refusal_in_its_metrics(
    hub: HubProcess, idle_user: str, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    with culler_process(
        TOKENS["no-delete-servers"],
        f"--url={hub.api_url}",
        TIMEOUT_ARG,
        f"--metrics-port={port}",
        log_path=tmp_path / "culler.log",
    ) as proc:
        wait_until(lambda: "Pass not run" in read_log(tmp_path), timeout=120, what="the refused pass")

        def scope_errors() -> float | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            found = re.search(r'^trio_culler_errors_total\{kind="scope"\} (\S+)$', text, re.MULTILINE)
            return float(found.group(1)) if found and float(found.group(1)) >= 1 else None

        assert wait_until(scope_errors, timeout=30, what="the metric") == 1
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert re.search(r"^trio_culler_hub_up 1\.0$", text, re.MULTILINE), "the hub is up; the role is wrong"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = read_log(tmp_path)
    assert "answered at" in log, "the token was accepted"
    assert re.search(r"^\[E .*Pass not run: the culler's token lacks delete:servers", log, re.MULTILINE), log


def test_a_hub_down_at_start_up_is_reported_at_once_and_sigterm_ends_the_wait(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_ports(1)[0]}/hub/api"
    log_path = tmp_path / "culler.log"
    with culler_process(secrets.token_hex(16), f"--url={url}", "--grace-period=600", log_path=log_path) as proc:
        wait_until(lambda: "Hub not ready" in read_log(tmp_path), timeout=60, what="the first warning")
        proc.send_signal(signal.SIGTERM)
        # With a 600 s grace period, an exit within this bound shows that nothing was waited for.
        assert proc.wait(timeout=60) == 0
    lines = read_log(tmp_path).splitlines()
    assert lines[0].startswith("[I "), lines
    assert "trio-culler" in lines[0], lines
    first = lines[1]
    assert first.startswith("[W "), lines
    assert "Connection refused" in first, first
    assert first.endswith("retrying in 1 s"), first
    # An operator must learn at once why nothing happens: the first warning within 2 s of start-up, read from the
    # log's timestamps (the first attempt fails at once on a closed port; no retries come before the warning).
    started, warned = (datetime.strptime(line[3:26] + "+0000", "%Y-%m-%d %H:%M:%S.%f%z") for line in lines[:2])
    assert (warned - started).total_seconds() <= 2, lines[:2]


def test_the_scopes_the_readme_asks_for_are_enough(api: HubAPI, hub: HubProcess, idle_user: str) -> None:
    # Last in this module: it culls the shared idle user, which the tests above needed running.
    (name,) = api.create_users(["scoped-enough"])
    ready_at = start_servers(hub, [(name, "")])
    sleep_until_idle(ready_at, IDLE_TIMEOUT)
    run = run_as(hub, "enough", TIMEOUT_ARG, "--cull-users")
    assert run.returncode == 0, run.describe()
    assert errors(run) == [], run.describe()
    assert not api.user_exists(name), run.describe()
    assert not api.user_exists(idle_user), run.describe()
