"""The soak (benchmarks/soak.py) in three minutes: the same script and oracle as the hours-long run, smaller numbers.

A real JupyterHub with configurable-http-proxy, 30 users on the soak's light spawner and 2 real jupyter_server
single-user servers with ipykernel; the culler (timeout 30 s, a pass every 5 s) with its status page, rules,
warnings, kernel inspection and metrics; every fault once (the hub and the proxy restarted, a burst of 503, the
restart race provoked, a server hung, hostile answers of every kind, small). The test fails when the soak exits
non-zero, that is when any invariant of the oracle breaks (benchmarks/soak_oracle.py; each one is shown detected
on synthetic timelines in tests/test_soak_oracle.py), and checks that the run exercised what it claims to.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent.parent
SOAK = ROOT / "benchmarks" / "soak.py"
FAULTS = {"hub_restart", "proxy_restart", "hub_503", "race", "hang", "hostile"}


def test_three_minutes_of_soak_break_no_invariant(tmp_path: Path) -> None:
    if shutil.which("configurable-http-proxy") is None:
        pytest.skip("configurable-http-proxy is not on PATH (bash scripts/install-integration-deps.sh)")
    argv = [
        sys.executable,
        str(SOAK),
        "--duration=180",
        "--timeout=30",
        "--cull-every=5",
        "--warn-before=12",
        "--activity-interval=3",
        "--users=30",
        "--real-servers=2",
        "--hostile-bytes=200000",
        "--hostile-items=5000",
        "--hostile-depth=5000",
        "--drip-seconds=20",
        # Connections in flight make a few minutes' fit of open FDs noisier than hours' (see SOAK.md).
        "--max-fd-growth=16",
        "--max-rss-growth=32",
        f"--work-dir={tmp_path / 'work'}",
        f"--out-dir={tmp_path}",
        "--no-plot",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    output = done.stdout[-12000:] + "\n--- stderr ---\n" + done.stderr[-4000:]
    assert done.returncode == 0, f"the soak exited {done.returncode}:\n{output}"
    results = json.loads((tmp_path / "soak.json").read_text())
    verdict = results["verdict"]
    assert verdict["ok"], output
    assert all(invariant["ok"] for invariant in verdict["invariants"])
    # What the run must have exercised for its verdict to mean anything.
    assert {fault["kind"] for fault in results["faults"]} == FAULTS
    assert verdict["culls"] >= 10, output
    assert verdict["counts"]["servers_started"] >= 40, output
    assert verdict["counts"]["inspections"].get("normal", 0) >= 1, output
    assert verdict["counts"]["busy_cells"] >= 1, output
    assert verdict["status"]["api"]["probes"] >= 60, output
    assert verdict["status"]["oauth"]["probes"] >= 1, output
    assert len(results["run"]["culler_pids"]) == 1
    # The culler ran with the environment a hub gives a managed service with a url (learnt from the hub itself).
    names = set(json.loads((tmp_path / "work" / "culler-env-names.json").read_text()))
    assert {
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_API_URL",
        "JUPYTERHUB_SERVICE_NAME",
        "JUPYTERHUB_SERVICE_URL",
        "JUPYTERHUB_SERVICE_PREFIX",
        "JUPYTERHUB_CLIENT_ID",
        "JUPYTERHUB_OAUTH_CALLBACK_URL",
    } <= names
