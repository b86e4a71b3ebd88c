"""docs/alerts.yml, the Prometheus alerting rules shipped for the culler's metrics: valid (``promtool check
rules``), firing when they should and not otherwise (``promtool test rules`` on tests/alerts/alerts_test.yml),
and about metrics the culler exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_culler._metrics import Metrics

from .support.docs import load_yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "docs" / "alerts.yml"
ALERT_TESTS = REPO / "tests" / "alerts" / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/test.sh installs it with Debian's prometheus package")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_promtool_tests_show_each_alert_firing_when_it_should() -> None:
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_and_every_metric_it_reads_is_exported() -> None:
    rules = [rule for group in load_yaml(ALERTS.read_text())["groups"] for rule in group["rules"]]
    tested = {
        test["alertname"] for case in load_yaml(ALERT_TESTS.read_text())["tests"] for test in case["alert_rule_test"]
    }
    assert {rule["alert"] for rule in rules} == tested
    exported = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
        for sample in family.samples
    }
    for rule in rules:
        for name in re.findall(r"\b(?:trio_culler|process)_[a-z_]+", rule["expr"]):
            assert name in exported, f"{rule['alert']} reads {name}, which the culler does not export"


def test_the_readme_names_every_alert() -> None:
    readme = (REPO / "README.md").read_text()
    for rule in (rule for group in load_yaml(ALERTS.read_text())["groups"] for rule in group["rules"]):
        assert f"`{rule['alert']}`" in readme, rule["alert"]
