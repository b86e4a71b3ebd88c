"""End to end through the real command line: ``python -m trio_culler`` in a subprocess, against a simulated hub
in another process (tests/support/hubproc.py), both on 127.0.0.1.

What an operator relies on, each shown by running it: ``--dry-run`` sends no DELETE; ``--once`` exit statuses;
the text and JSON log formats; Prometheus metrics scraped from a running culler; progress lines during a slow
pass; and every recipe in docs/ (its options accepted, its examples run as written).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trio_culler import Config, ConfigError
from trio_culler._scopes import grants, missing_scopes, needed_scopes
from trio_culler.cli import read_settings

from .support.docs import (
    DOCS,
    code_blocks,
    culler_argvs,
    dashed_literals,
    doc_files,
    exec_hub_config,
    inline_options,
    load_yaml,
    marked_block,
    module_args,
)
from .support.net import dead_port
from .support.processes import (
    REPO,
    TOKEN,
    HubProcess,
    child_env,
    run_culler,
    running_culler,
    running_hub,
    running_process,
)

TEXT_LINE = re.compile(r"^\[[DIWEC] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} trio_culler\] ")
CULLING = re.compile(r"\] Culling server (\S+) \((inactive for \d\d+:\d\d:\d\d)\)$")
WOULD_CULL_SERVER = re.compile(r"\] Would cull server (\S+) \((inactive for \d\d+:\d\d:\d\d)\) \[dry run\]$")
WOULD_CULL_USER = re.compile(r"\] Would cull user (\S+) \((inactive for \d\d+:\d\d:\d\d)\) \[dry run\]$")
PROGRESS = re.compile(
    r"\] Pass in progress: (\d+) users seen \(hub lists (\d+)\), (\d+) servers culled, (\d+) users deleted, "
    r"(\d+) errors$"
)
#: Between the simulated hub's active servers (last activity within a minute) and its idle ones (two hours+).
TIMEOUT = "--timeout=3600"


def server_label(entry: Mapping[str, Any]) -> str:
    return f"{entry['user']}/{entry['server']}" if entry.get("server") else str(entry["user"])


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line parsed as one JSON object, with the keys every line has."""
    entries = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        assert entry["level"] in ("debug", "info", "warning", "error", "critical"), line
        stamp = datetime.fromisoformat(entry["time"])
        assert stamp.utcoffset() == UTC.utcoffset(None), f"UTC: {line}"
        entries.append(entry)
    return entries


def assert_text_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line), f"not a JupyterHub-like log line: {line!r}"
    return lines


# --------------------------------------------------------------------------------------------- --once, --dry-run


def test_once_stops_exactly_the_idle_servers_and_exits_0(tmp_path: Path) -> None:
    with running_hub(users=30, idle=0.4, named=0.2) as hub:
        result = run_culler("--once", f"--url={hub.url}", TIMEOUT, cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = assert_text_lines(result.stderr)
    culled = [match.group(1) for line in lines if (match := CULLING.search(line))]
    assert sorted(culled) == sorted(hub.idle)
    assert stats["stop_requests"] == dict.fromkeys(hub.idle, 1), "one DELETE per idle server, none for the others"
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)
    assert set(stats["running"]) == hub.servers - hub.idle
    n = len(hub.idle)
    assert f"culled {n} servers ({n} stopped, 0 still stopping)" in lines[-1]
    assert TOKEN not in result.stderr


def test_dry_run_logs_every_decision_and_sends_no_delete(tmp_path: Path) -> None:
    with running_hub(users=30, idle=0.4, named=0.2) as hub:
        result = run_culler("--once", "--dry-run", "--cull-users", f"--url={hub.url}", TIMEOUT, cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert stats["deletes"] == 0
    assert stats["stop_requests"] == {}
    assert not any(code in stats["status_codes"] for code in ("202", "204"))
    assert set(stats["running"]) == hub.servers, "nothing stopped"
    lines = assert_text_lines(result.stderr)
    assert "DRY RUN" in lines[0]
    would_stop = {match.group(1): match.group(2) for line in lines if (match := WOULD_CULL_SERVER.search(line))}
    assert set(would_stop) == hub.idle, "every idle server, with its reason"
    would_delete = {match.group(1) for line in lines if (match := WOULD_CULL_USER.search(line))}
    assert would_delete == hub.idle_users
    assert not any(CULLING.search(line) for line in lines)
    assert f"would cull {len(hub.idle)} servers" in lines[-1]
    assert f"would delete {len(hub.idle_users)} users" in lines[-1]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_once_exits_1_when_the_hub_cannot_be_reached(tmp_path: Path, log_format: str) -> None:
    url = f"http://127.0.0.1:{dead_port()}/hub/api"
    result = run_culler("--once", f"--url={url}", "--max-retries=1", f"--log-format={log_format}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    if log_format == "json":
        errors = [entry["message"] for entry in json_lines(result.stderr) if entry["level"] == "error"]
    else:
        errors = [line for line in assert_text_lines(result.stderr) if line.startswith("[E ")]
    assert any("could not be reached" in error and url in error for error in errors), result.stderr


def test_once_exits_1_when_a_delete_failed(tmp_path: Path) -> None:
    with running_hub(users=12, idle=0.5) as hub:
        victim = min(hub.idle)
        hub.fail(victim)
        result = run_culler("--once", f"--url={hub.url}", TIMEOUT, "--max-retries=1", cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 1, result.stderr
    assert stats["stop_requests"][victim] == 2, "a 500 is retried (once, with --max-retries=1)"
    assert sorted(stats["stops_completed"]) == sorted(hub.idle - {victim}), "the other users are not held up"
    lines = assert_text_lines(result.stderr)
    failures = [line for line in lines if f"Failed to stop server {victim}: " in line]
    assert failures
    assert all(line.startswith("[E ") and "-> 500" in line for line in failures)
    assert ", 1 error," in lines[-1]


# --------------------------------------------------------------------------------------------- --log-format=json


def test_json_log_lines_carry_the_decision_fields(tmp_path: Path) -> None:
    with running_hub(users=24, idle=0.5, named=0.25) as hub:
        victim = min(hub.idle_users)
        hub.fail(victim)
        args = ["--once", "--log-format=json", "--cull-users", "--max-retries=0", f"--url={hub.url}", TIMEOUT]
        result = run_culler(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    entries = json_lines(result.stderr)
    stops = [entry for entry in entries if entry["message"].startswith("Culling server ")]
    assert {server_label(entry) for entry in stops} == hub.idle
    for entry in stops:
        assert entry["level"] == "info"
        assert entry["action"] == "stop"
        assert entry["rule"] == "idle"
        assert entry["reason"].startswith("inactive for ")
        assert entry["reason"] in entry["message"]
        assert isinstance(entry["inactive_seconds"], int | float)
        assert entry["inactive_seconds"] >= 3600
        assert isinstance(entry["age_seconds"], int | float)
        assert entry["age_seconds"] >= entry["inactive_seconds"]
    deletions = [entry for entry in entries if entry["message"].startswith("Culling user ")]
    assert {entry["user"] for entry in deletions} == hub.idle_users - {victim}
    assert all(entry["action"] == "delete_user" and "inactive_seconds" in entry for entry in deletions)
    errors = [entry for entry in entries if entry["level"] == "error"]
    assert errors
    assert all(entry["user"] == victim and entry["error"] == "status" for entry in errors)
    assert entries[-1]["message"].startswith("Pass done")


@pytest.mark.parametrize("case", ["no token", "metrics port taken"])
def test_json_format_covers_startup_errors_too(tmp_path: Path, case: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if case == "no token":
            result = run_culler("--once", "--log-format=json", token="", cwd=tmp_path)
            expected = "JUPYTERHUB_API_TOKEN"
        else:
            port = taken.getsockname()[1]
            result = run_culler("--once", "--log-format=json", f"--metrics-port={port}", cwd=tmp_path)
            expected = "--metrics-port"
    assert result.returncode == 2
    (entry,) = json_lines(result.stderr)
    assert entry["level"] == "error"
    assert expected in entry["message"]


def test_once_json_summary_carries_the_pass_counts(tmp_path: Path) -> None:
    """A CronJob's log parser gets the same fields from a --once pass as from a periodic one."""
    with running_hub(users=10, idle=0.5) as hub:
        result = run_culler("--once", "--log-format=json", f"--url={hub.url}", TIMEOUT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stderr)[-1]
    assert summary["message"].startswith("Pass done")
    assert summary.get("event") == "pass"
    assert summary.get("users_seen") == len(hub.users)
    assert summary.get("servers_culled") == len(hub.idle)
    assert summary.get("errors") == 0


# --------------------------------------------------------------------------------------------- metrics


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(url, timeout=10, trust_env=False)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_scraped_from_a_running_culler(tmp_path: Path) -> None:
    port = dead_port()
    with running_hub(users=40, idle=0.5, named=0.25) as hub:
        victim = min(hub.idle_users)
        victim_servers = {server for server in hub.idle if server.split("/")[0] == victim}
        hub.fail(victim)
        before = time.time()
        args = [f"--url={hub.url}", TIMEOUT, "--cull-every=600", "--cull-users", "--max-retries=0"]
        with running_culler(*args, f"--metrics-port={port}", cwd=tmp_path) as culler:
            served = culler.wait_for_match(r"Serving Prometheus metrics on (http://\S+/metrics)$").group(1)
            assert served == f"http://127.0.0.1:{port}/metrics", "loopback unless --metrics-address says otherwise"
            culler.wait_for_match(r"\] Pass done in ")
            metrics = scrape(served)
            after = time.time()
            status = culler.stop(signal.SIGTERM)
            culler.wait_for_match(r"\] Received SIGTERM")
            culler.wait_for_match(r"\] Stopped$")
    assert status == 0, culler.text()

    def value(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in metrics, f"{name}{labels or ''} not exported; have {sorted(k[0] for k in metrics)}"
        return metrics[key]

    # A stop the hub failed is an error, not a cull.
    assert value("trio_culler_servers_culled_total", reason="idle") == len(hub.idle) - len(victim_servers)
    assert value("trio_culler_servers_culled_total", reason="max_age") == 0, "exported from the start"
    assert value("trio_culler_errors_total", kind="scope") == 0, "exported from the start"
    assert value("trio_culler_hub_up") == 1
    assert value("trio_culler_users_culled_total") == len(hub.idle_users) - 1, "all idle users but the failing one"
    # Passes are counted by outcome: one that read every user ran, whatever failed for one of them.
    assert value("trio_culler_passes_total", outcome="ran") == 1
    assert value("trio_culler_passes_total", outcome="hub_down") == 0, "exported from the start"
    assert value("trio_culler_last_successful_pass_timestamp_seconds") == value(
        "trio_culler_last_pass_timestamp_seconds"
    )
    assert value("trio_culler_pass_duration_seconds_count") == 1
    assert 0 < value("trio_culler_pass_duration_seconds_sum") < after - before
    assert before <= value("trio_culler_last_pass_timestamp_seconds") <= after
    assert value("trio_culler_last_pass_success") == 0
    assert value("trio_culler_errors_total", kind="status") == len(victim_servers)
    assert value("trio_culler_users_seen") == len(hub.users)
    assert value("trio_culler_servers_seen") == len(hub.servers)


# --------------------------------------------------------------------------------------------- progress


def test_a_slow_pass_logs_its_progress(tmp_path: Path) -> None:
    # 12 idle servers, 0.4 s per stop, 2 at a time: the pass takes about 2.4 s.
    with running_hub(users=24, idle=0.5, stop_latency=0.4) as hub:
        args = ["--once", "--progress-interval=0.5", "--concurrency=2", f"--url={hub.url}", TIMEOUT]
        result = run_culler(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = assert_text_lines(result.stderr)
    progress = [[int(n) for n in match.groups()] for line in lines if (match := PROGRESS.search(line))]
    assert len(progress) >= 3, result.stderr
    assert all(total == len(hub.users) for _seen, total, _culled, _deleted, _errors in progress)
    seen = [row[0] for row in progress]
    culled = [row[2] for row in progress]
    assert seen == sorted(seen), "counts only grow"
    assert culled == sorted(culled), "counts only grow"
    assert culled[0] < len(hub.idle)
    assert culled[-1] <= len(hub.idle)
    assert all(line.startswith("[I ") for line in lines if PROGRESS.search(line))


# --------------------------------------------------------------------------------------------- docs/


def test_every_option_in_the_docs_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray idle_culler_config.py
    # A --rules-file named in the docs lives on the deployment's machine; the rules examples themselves are
    # read by tests/test_rules.py.
    monkeypatch.setattr("trio_culler.cli.load_rules_file", lambda _path: ())
    env = {"JUPYTERHUB_API_TOKEN": TOKEN}
    command_lines = 0
    for path in [*doc_files(), REPO / "README.md"]:
        for block in code_blocks(path):
            argvs = culler_argvs(block)
            in_commands = {word for argv in argvs for word in argv}
            for literal in dashed_literals(block):
                assert literal in in_commands, f"{block.where}: {literal} is outside any culler command line"
            for argv in argvs:
                try:
                    read_settings(argv, env)
                except ConfigError as error:
                    pytest.fail(f"{block.where}: {shlex.join(argv)}: {error}")
                command_lines += 1
        for option in inline_options(path) if path.parent == DOCS else ():
            if option.startswith("--config="):  # a placeholder path: the option is what is checked
                (tmp_path / "config.py").write_text("c = get_config()\n")
                option = f"--config={tmp_path / 'config.py'}"
            try:
                read_settings([option], env)
            except ConfigError as error:
                if "needs a value" not in str(error):  # `--timeout` named in prose
                    pytest.fail(f"{path.name}: `{option}`: {error}")
    assert command_lines >= 10, "the extractor found too few command lines: is it still reading the docs?"


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^#+\s+(.*)$", line):
            text = match.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_docs_links_resolve() -> None:
    readme = REPO / "README.md"
    readme_text = readme.read_text(encoding="utf-8")
    assert "docs/recipes.md" in readme_text, "the README links the docs"
    assert "docs/migration.md" in readme_text, "the README links the docs"
    for path in [readme, *doc_files()]:
        text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # an external address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.name}: link to a missing file: {target}"
            if anchor:
                assert anchor in heading_anchors(linked), f"{path.name}: no heading for #{anchor} in {linked.name}"


def run_service(command: list[str], hub: HubProcess, cwd: Path, *extra: str) -> dict[str, Any]:
    """Start a service command as JupyterHub would (token and API URL in the environment), for one pass."""
    assert command[0] == sys.executable or Path(command[0]).name.startswith("python"), command
    argv = [*command[1:], "--once", *extra]
    assert argv[:2] == ["-m", "trio_culler"], argv
    result = run_culler(*argv[2:], env={"JUPYTERHUB_API_URL": hub.url}, cwd=cwd)
    assert result.returncode == 0, result.stderr
    stats = hub.stats()
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)
    return stats


def assert_least_privilege(service: str, roles: Iterable[Mapping[str, Any]], args: list[str]) -> None:
    mine = [role for role in roles if service in role.get("services", ())]
    assert mine, f"no role is assigned to the service {service!r}"
    scopes = {scope for role in mine for scope in role["scopes"]}
    config = Config(api_token="unused", cull_users="--cull-users" in args)
    assert missing_scopes(scopes, config) == (), "the role grants every scope the culler checks for"
    needed = {need.scope for need in needed_scopes(config)}
    for scope in scopes:
        assert needed & grants([scope]).keys(), f"{scope} grants nothing the culler needs"


@pytest.mark.parametrize("marker", ["hub-managed-service", "tljh-config"])
def test_hub_managed_service_recipes(tmp_path: Path, marker: str) -> None:
    hub_config = exec_hub_config(marked_block(marker))
    (service,) = hub_config.services
    assert "admin" not in service, "a role, not admin rights"
    args = module_args(service["command"])
    assert args is not None
    assert not any(arg.startswith("--url") for arg in args), "the hub gives the URL"
    assert_least_privilege(service["name"], hub_config.load_roles, args)
    with running_hub(users=16, idle=0.5) as hub:
        run_service(service["command"], hub, tmp_path)


@pytest.mark.parametrize(("marker", "key"), [("z2jh-values", None), ("binderhub-values", "jupyterhub")])
def test_helm_chart_values(tmp_path: Path, marker: str, key: str | None) -> None:
    values = load_yaml(marked_block(marker).text)
    if key is not None:  # BinderHub's chart holds Zero to JupyterHub's under one key
        values = values[key]
    assert values["cull"]["enabled"] is False, "the chart's own culler is turned off"
    ((name, service),) = values["hub"]["services"].items()
    # The chart names services and roles after their keys.
    roles = [{"name": key, **role} for key, role in values["hub"]["loadRoles"].items()]
    args = module_args(service["command"])
    assert args is not None
    assert_least_privilege(service.get("name", name), roles, args)
    with running_hub(users=16, idle=0.5) as hub:
        stats = run_service(service["command"], hub, tmp_path, f"--url={hub.url}")  # the chart's URL, at ours
    if "--cull-users" in args:
        assert sorted(stats["users_deleted"]) == sorted(hub.idle_users)


def test_standalone_recipe(tmp_path: Path) -> None:
    hub_config = exec_hub_config(marked_block("standalone-service"))
    (service,) = hub_config.services
    assert service["api_token"] == TOKEN, "the token comes from the environment, not the file"
    assert "command" not in service
    command_block = marked_block("standalone-command")
    (args,) = culler_argvs(command_block)
    assert_least_privilege(service["name"], hub_config.load_roles, args)
    assert 'export JUPYTERHUB_API_TOKEN="$TRIO_CULLER_TOKEN"' in command_block.text
    with running_hub(users=16, idle=0.5) as hub:
        result = run_culler(*args, f"--url={hub.url}", "--once", cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)


def test_cronjob_recipe(tmp_path: Path) -> None:
    manifest = load_yaml(marked_block("cronjob").text)
    assert manifest["kind"] == "CronJob"
    assert manifest["spec"]["concurrencyPolicy"] == "Forbid"
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure")
    # Kubernetes can check this only because the image's USER is numeric (tests/test_container_install.py).
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert "command" not in container, "the image's ENTRYPOINT runs trio-culler"
    args = [str(arg) for arg in container["args"]]
    assert "--once" in args
    env = {variable["name"]: variable for variable in container["env"]}
    assert "value" not in env["JUPYTERHUB_API_TOKEN"], "the token comes from a Secret"
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]
    with running_hub(users=16, idle=0.5) as hub:
        result = run_culler(*args, env={"JUPYTERHUB_API_URL": hub.url}, cwd=tmp_path)
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)
    if "--log-format=json" in args:
        json_lines(result.stderr)


def test_embedding_recipe_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "embed.py"
    script.write_text(marked_block("embedding").text, encoding="utf-8")
    with running_hub(users=20, idle=0.5) as hub:
        env = child_env(JUPYTERHUB_API_URL=hub.url)
        with running_process([sys.executable, str(script)], cwd=tmp_path, env=env) as app:
            match = app.wait_for_match(r"^pass: (\d+) users seen, (\d+) servers culled, (\d+) errors$")
            assert match.groups() == (str(len(hub.users)), str(len(hub.idle)), "0")
            status = app.stop(signal.SIGTERM)
        stats = hub.stats()
    assert status == 0, app.text()
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)
