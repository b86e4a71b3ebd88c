"""Which of the culler's own requests to a user's server does the hub count as that server's activity?

configurable-http-proxy records activity on a route for the requests it passes, and the hub folds that record
into the server's ``last_activity`` every ``last_activity_interval``. This script starts the integration-test
JupyterHub (configurable-http-proxy on 127.0.0.1) with the interval at 2 s and one real ``jupyterhub-singleuser``
(with trio-culler-notice when it is installed), then, one at a time, sends the requests the culler sends a
server, each with a token the hub minted for that server alone, and reads ``last_activity`` after the next fold:
did it move, and to when (next to the request's own start and end)?

    python benchmarks/proxy_activity.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.hubtools import HubAPI, HubProcess, missing_tools, start_hub, start_servers, stop_hub

EXTRA_CONFIG = """
c.JupyterHub.last_activity_interval = 2
"""
USER = "real-proxy-activity"


def notice(now: datetime) -> dict[str, object]:
    return {
        "id": "proxy-activity",
        "warned_at": now.isoformat(),
        "cull_at": (now + timedelta(minutes=5)).isoformat(),
        "idle_since": None,
        "reason": "idle",
        "limit": "timeout",
        "limit_seconds": 60,
        "rule": None,
        "activity": "measuring",
        "keepable": True,
    }


def main() -> None:
    reason = missing_tools()
    if reason is not None:
        sys.exit(f"proxy_activity: {reason}")
    with tempfile.TemporaryDirectory() as workdir:
        hub = start_hub(Path(workdir), extra_config=EXTRA_CONFIG)
        try:
            measure(hub)
        finally:
            stop_hub(hub)


def measure(hub: HubProcess) -> None:
    api = HubAPI(hub)
    api.create_users([USER])
    start_servers(api.hub, [(USER, "")])

    def last_activity() -> datetime:
        model = api.get_user(USER)
        assert model is not None
        return datetime.fromisoformat(model["servers"][""]["last_activity"])

    minted = api.client.post(
        f"/users/{USER}/tokens", json={"scopes": [f"access:servers!server={USER}/"], "expires_in": 600}
    )
    headers = {"Authorization": f"token {minted.json()['token']}"}
    base = f"{api.hub.proxy_url}/user/{USER}/"
    requests: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
        ("GET notice", lambda c: c.get("api/trio-culler/v1/notice")),
        ("PUT notice", lambda c: c.put("api/trio-culler/v1/notice", json=notice(datetime.now(UTC)))),
        ("DELETE notice?id=", lambda c: c.delete("api/trio-culler/v1/notice", params={"id": "proxy-activity"})),
        ("GET api/kernels?no_track_activity=1", lambda c: c.get("api/kernels", params={"no_track_activity": "1"})),
        ("GET a path answered 404", lambda c: c.get("api/no-such-thing")),
    ]
    print("| request | status | last_activity moved | to a time within the request |")
    print("|---|---|---|---|")
    with httpx.Client(base_url=base, headers=headers, timeout=60, trust_env=False) as client:
        time.sleep(5)  # the server's own start, folded
        for label, send in requests:
            before = last_activity()
            start = datetime.now(UTC)
            status = send(client).status_code
            end = datetime.now(UTC)
            time.sleep(5)  # two folds
            after = last_activity()
            # The proxy's timestamps are whole milliseconds.
            within = start - timedelta(milliseconds=1) <= after <= end + timedelta(milliseconds=1)
            print(f"| {label} | {status} | {'yes' if after > before else 'no'} | {'yes' if within else 'no'} |")


if __name__ == "__main__":
    main()
