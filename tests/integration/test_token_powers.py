"""What the tokens of --inspect-kernels can do, on a real JupyterHub (with a real jupyter_server where a server
is needed).

- The culler's own token, with ``tokens``, mints for a user any token that user could have: for an admin user,
  an admin's. Filtered (``tokens!group=...``), it reaches only that group's users.
- The per-server token is its user's, listed with its note on their token page. A user revokes it: a real
  jupyter_server refuses it (403, once what it remembers of the token expired), and the culler then revokes it
  (already gone), mints another and asks again in the same pass: the server is judged, not kept as
  uninspectable for the passes until the token's renewal.
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

KERNELS_CULLER_TOKEN = "k" * 32 + "1" * 32
GROUP_CULLER_TOKEN = "g" * 32 + "2" * 32
CULLING = ["list:users", "read:users:activity", "read:servers", "delete:servers"]

# jupyterhub-singleuser remembers what the hub said of a token for HubAuth.cache_max_age (300 s by default; 0
# is forever): a revoked token still opens its own server that long, and only its own. Here the servers ask
# again after a second, so the revocation shows at the culler's next pass rather than five minutes later.
hub = module_hub(
    "hub-token-powers",
    extra_config=f"""
c.IntegrationSpawner.args = [*c.IntegrationSpawner.args, "--HubOAuth.cache_max_age=1"]
c.JupyterHub.services = [
    *c.JupyterHub.services,
    {{"name": "kernels-culler", "api_token": "{KERNELS_CULLER_TOKEN}"}},
    {{"name": "group-culler", "api_token": "{GROUP_CULLER_TOKEN}"}},
]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {{"name": "kernels-culler", "scopes": [*{CULLING!r}, "tokens"], "services": ["kernels-culler"]}},
    {{
        "name": "group-culler",
        "scopes": [*(scope + "!group=students" for scope in {CULLING!r}), "tokens!group=students"],
        "services": ["group-culler"],
    }},
]
""",
)


def as_token(token: str) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"token {token}"}, timeout=60, trust_env=False)


def test_the_cullers_token_with_tokens_mints_an_admins_token_unless_filtered(api: HubAPI, hub: HubProcess) -> None:
    """The documented role of --inspect-kernels (the culling scopes and ``tokens``) can mint, for an admin user,
    a token with ``admin:users``: the culler's token is worth an admin's. ``tokens!group=students`` reaches the
    students alone."""
    (boss,) = api.create_users(["boss-admin"], admin=True)
    (student,) = api.create_users(["pupil"])
    with as_token(hub.admin_token) as admin:
        made = admin.post(f"{hub.api_url}/groups/students", json={"users": [student]})
        assert made.status_code == 201, made.text
    try:
        wanted = {"scopes": ["admin:users"], "expires_in": 300, "note": "test: what tokens can mint"}
        with as_token(KERNELS_CULLER_TOKEN) as culler:
            minted = culler.post(f"{hub.api_url}/users/{boss}/tokens", json=wanted)
            assert minted.status_code == 201, minted.text
            assert "admin:users" in minted.json()["scopes"]
        with as_token(minted.json()["token"]) as as_boss:
            whoami = as_boss.get(f"{hub.api_url}/user")
            assert whoami.json()["name"] == boss
            assert "admin:users" in whoami.json()["scopes"], "an admin's power, from the culler's token"
            assert as_boss.get(f"{hub.api_url}/users").status_code == 200
        with as_token(KERNELS_CULLER_TOKEN) as culler:
            assert culler.delete(f"{hub.api_url}/users/{boss}/tokens/{minted.json()['id']}").status_code == 204
        with as_token(GROUP_CULLER_TOKEN) as filtered:
            refused = filtered.post(f"{hub.api_url}/users/{boss}/tokens", json=wanted)
            assert refused.status_code == 403, refused.text
            own = {"scopes": [f"access:servers!server={student}/"], "expires_in": 300, "note": "test"}
            allowed = filtered.post(f"{hub.api_url}/users/{student}/tokens", json=own)
            assert allowed.status_code == 201, allowed.text
            assert filtered.delete(f"{hub.api_url}/users/{student}/tokens/{allowed.json()['id']}").status_code == 204
    finally:
        with as_token(hub.admin_token) as admin:
            admin.delete(f"{hub.api_url}/groups/students")


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
