"""The soak harness's pure parts (benchmarks/soak_faults.py, soak_apps.py, soak_settings.py): the fault schedule,
the paths the light server and the front read, the culler's deployment in one place."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

# benchmarks/ is a folder of scripts, not a package: its modules import each other by their bare names.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak_apps import delete_key, split_user_path
from soak_schedule import plan_faults
from soak_settings import FAULT_PERIODS, SoakSettings, culler_argv, culler_scopes, rules_toml


@pytest.mark.parametrize("duration", [180.0, 1800.0, 7200.0])
def test_every_fault_kind_is_planned_inside_the_run_and_the_plan_follows_the_seed(duration: float) -> None:
    settings = SoakSettings(duration=duration, timeout=30.0 if duration < 600 else 120.0, cull_every=5.0)
    plan = plan_faults(settings, random.Random(7))
    assert {fault.kind for fault in plan} == set(FAULT_PERIODS)
    assert all(0 < fault.at < duration - settings.fault_tail for fault in plan)
    assert [fault.at for fault in plan] == sorted(fault.at for fault in plan)
    assert plan == plan_faults(settings, random.Random(7))
    assert plan != plan_faults(settings, random.Random(8))
    if duration >= 7200:
        # Two hours: each kind comes again, at its period.
        assert sum(1 for fault in plan if fault.kind == "hub_503") == int(
            (duration - settings.fault_tail - settings.warmup) // FAULT_PERIODS["hub_503"]
        )


def test_a_short_run_gets_every_hostile_answer_at_once() -> None:
    plan = plan_faults(SoakSettings(duration=180, timeout=30, cull_every=5), random.Random(1))
    (hostile,) = [fault for fault in plan if fault.kind == "hostile"]
    assert sorted(hostile.params["kinds"]) == sorted(SoakSettings().hostile_kinds)


def test_only_the_chosen_faults_are_planned() -> None:
    plan = plan_faults(SoakSettings(duration=600, faults=("hub_restart",)), random.Random(1))
    assert {fault.kind for fault in plan} == {"hub_restart"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/user/alice/api/kernels", ("alice", "", "api/kernels")),
        ("/user/alice/extra/api/kernels", ("alice", "extra", "api/kernels")),
        ("/user/alice/", ("alice", "", "")),
        ("/user/a%40b/api/status", ("a@b", "", "api/status")),
        ("/hub/api/users", None),
        ("/user/", None),
    ],
)
def test_the_light_server_reads_user_and_server_from_the_path(path: str, expected: tuple[str, str, str] | None) -> None:
    assert split_user_path(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/hub/api/users/alice/server", "alice/"),
        ("/hub/api/users/alice/servers/extra", "alice/extra"),
        ("/hub/api/users/a%2Fb/servers/x%20y", "a/b/x y"),
        ("/hub/api/users/alice", None),
        ("/hub/api/users/alice/tokens/a1", None),
    ],
)
def test_the_front_knows_which_server_a_delete_stops(path: str, expected: str | None) -> None:
    assert delete_key(path) == expected


def test_the_culler_deployment_follows_the_features() -> None:
    today = SoakSettings()
    assert "access:servers" in culler_scopes(today)
    assert "tokens" not in culler_scopes(today)
    later = SoakSettings(features=frozenset({"tokens"}))
    assert "tokens" in culler_scopes(later)
    assert "access:servers" not in culler_scopes(later)
    argv = culler_argv(
        SoakSettings(culler_args=("--config=x.py",)),
        api_url="http://127.0.0.1:1/hub/api",
        warn_url="http://127.0.0.1:2/warn",
        metrics_port=3,
        rules=Path("rules.toml"),
    )
    assert {"--inspect-kernels", "--log-format=json", "--metrics-port=3", "--config=x.py"} <= set(argv)
    assert "timeout = 240" in rules_toml(today)
