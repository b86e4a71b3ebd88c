"""A user revokes the per-server token the culler shows their server, as their token page lets them: a real
JupyterHub, a real jupyter_server single-user server, the culler running with --inspect-kernels.

The culler's per-server token is its user's, listed with its note on their token page. A real jupyter_server
refuses a revoked token (403, once what it remembers of the token expired), and the culler then revokes it
(already gone), mints another and asks again in the same pass: the server is judged, not kept as uninspectable
for the passes until the token's renewal.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from .hubtools import HubAPI, HubProcess, culler_process, module_hub, quote_segment, start_servers, wait_until

pytestmark = pytest.mark.integration

# jupyterhub-singleuser remembers what the hub said of a token for HubAuth.cache_max_age (300 s by default; 0
# is forever): a revoked token still opens its own server that long, and only its own. Here the servers ask
# again after a second, so the revocation shows at the culler's next pass rather than five minutes later.
hub = module_hub(
    "hub-revoked-token",
    extra_config='c.IntegrationSpawner.args = [*c.IntegrationSpawner.args, "--HubOAuth.cache_max_age=1"]',
)

SUMMARY = re.compile(r"Pass done in .*?(\d+) servers inspected \((\d+) could not be\)")


def culler_tokens(hub: HubProcess, user: str) -> list[dict[str, Any]]:
    """The user's tokens the culler minted, as the user's token page lists them (read with the admin's token)."""
    with httpx.Client(headers={"Authorization": f"token {hub.admin_token}"}, timeout=60, trust_env=False) as admin:
        response = admin.get(f"{hub.api_url}/users/{quote_segment(user)}/tokens")
    assert response.status_code == 200, response.text
    return [token for token in response.json()["api_tokens"] if "trio-culler" in (token.get("note") or "")]


def test_a_per_server_token_its_user_revokes_is_replaced_and_the_pass_goes_on(
    api: HubAPI, hub: HubProcess, tmp_path: Path
) -> None:
    (user,) = api.create_users(["real-revoker"])
    start_servers(hub, [(user, "")], concurrency=1)
    log_path = tmp_path / "culler.log"
    with culler_process(
        hub.culler_token,
        f"--url={hub.api_url}",
        "--timeout=3600",  # nothing is culled: the server is inspected at every pass and its token kept
        "--cull-every=2",
        "--inspect-kernels",
        "--kernel-activity-only",
        f"--public-url={hub.proxy_url}",
        log_path=log_path,
    ) as proc:

        def summaries() -> list[tuple[int, int]]:
            return [(int(a), int(b)) for a, b in SUMMARY.findall(log_path.read_text())]

        wait_until(lambda: len(summaries()) >= 1, timeout=120, what="a first pass to inspect the server")
        (first,) = culler_tokens(hub, user)
        # The user revokes it, as their token page does (a DELETE of their own token).
        with httpx.Client(headers={"Authorization": f"token {hub.admin_token}"}, timeout=60, trust_env=False) as c:
            revoked = c.delete(f"{hub.api_url}/users/{quote_segment(user)}/tokens/{first['id']}")
        assert revoked.status_code == 204, revoked.text
        passes_before = len(summaries())
        wait_until(lambda: len(summaries()) >= passes_before + 2, timeout=120, what="two more passes")
        tokens = culler_tokens(hub, user)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = log_path.read_text()
    # A new token in place of the revoked one (sqlite may give it the same id: its creation tells them apart).
    assert len(tokens) == 1, (tokens, log)
    assert tokens[0]["created"] > first["created"], (first, tokens)
    after = summaries()[passes_before:]
    assert after, log
    assert all(summary == (1, 0) for summary in after), f"every pass inspected the server:\n{log}"
    assert "Cannot inspect server" not in log, log
    assert hub.culler_token not in log
    assert api.server_state(user) == "running"
