"""JupyterHub configuration for the integration tests.

Loaded by ``jupyterhub -f`` in a subprocess started by ``hubtools.start_hub``, which passes every
per-run value (ports, tokens, working directory) in ``TRIO_CULLER_IT_*`` environment variables, so one
config file serves any number of hubs side by side.
"""

import os
import sys
from pathlib import Path

# traitlets' config loader injects get_config() into this file's namespace.
c = get_config()  # type: ignore[name-defined]  # noqa: F821

env = os.environ
workdir = Path(env["TRIO_CULLER_IT_DIR"])

# Everything listens on loopback only, on ports the fixture found free.
c.JupyterHub.bind_url = f"http://127.0.0.1:{env['TRIO_CULLER_IT_PROXY_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env['TRIO_CULLER_IT_HUB_PORT']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['TRIO_CULLER_IT_PROXY_API_PORT']}"
# The hub starts chp itself; an absolute path avoids depending on the hub's PATH.
c.ConfigurableHTTPProxy.command = [env["TRIO_CULLER_IT_CHP"]]
# Its pid file lets the fixture kill chp even if the hub dies without cleaning up (chp runs in its
# own session, so killing the hub's process group does not reach it).
c.ConfigurableHTTPProxy.pid_file = str(workdir / "jupyterhub-proxy.pid")

# Private state for this hub only.
c.JupyterHub.db_url = f"sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(workdir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(workdir / "jupyterhub.pid")

# Users are created through the REST API only; nobody logs in.
c.JupyterHub.authenticator_class = "null"

# The proxy's route activity is folded into last_activity every last_activity_interval seconds.
# Tests decide who is idle by posting activity themselves, so keep that periodic update out of the way
# for longer than any test session runs.
c.JupyterHub.last_activity_interval = 3600

# slow_stop_timeout is a tornado setting (read by BaseHandler.slow_stop_timeout): how long a
# DELETE .../server waits for the stop before answering 202.  "slow*" users take longer than this
# to stop (hub_spawner.SLOW_STOP_SECONDS); every other fake server stops at once.
c.JupyterHub.tornado_settings = {"slow_stop_timeout": float(env["TRIO_CULLER_IT_SLOW_STOP_TIMEOUT"])}

# Named servers, with room for the tests that give a user several.
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 20
# The bulk test starts 500+ servers; the hub throttles (429) beyond concurrent_spawn_limit pending
# spawns, so lift it above the tests' own bounded concurrency rather than test hub throttling.
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0

c.JupyterHub.services = [
    # The service under test: exactly the token a deployment would give the culler.
    {"name": "culler", "api_token": env["TRIO_CULLER_IT_CULLER_TOKEN"]},
    # The tests' own hand on the hub (create users, start servers, post activity).  A service, not an
    # admin *user*, so a --cull-users pass can never delete the tests' driver.
    {"name": "test-driver", "api_token": env["TRIO_CULLER_IT_ADMIN_TOKEN"], "admin": True},
]
c.JupyterHub.load_roles = [
    {
        "name": "culler-role",
        # Exactly the scopes the culler documents as needed, admin:users included for --cull-users and tokens
        # for --inspect-kernels (each server's own token is minted with it); never access:servers.
        "scopes": [
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers",
            "admin:users",
            "tokens",
        ],
        "services": ["culler"],
    }
]

# The spawner lives next to this file; naming it by import string keeps this config free of imports
# that mypy or the pytest collector would try to resolve.
sys.path.insert(0, str(Path(__file__).resolve().parent))
c.JupyterHub.spawner_class = "hub_spawner.IntegrationSpawner"

# For "real-*" users only (hub_spawner runs SimpleLocalProcessSpawner for them):
c.IntegrationSpawner.home_dir_template = str(workdir / "home" / "{username}")
# Same interpreter as the hub, so no dependence on jupyterhub-singleuser being on PATH.
c.IntegrationSpawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
# CI runs as root, and jupyter_server refuses to run as root without this.
c.IntegrationSpawner.args = ["--allow-root"]
c.IntegrationSpawner.ip = "127.0.0.1"
c.IntegrationSpawner.environment = {
    # The single-user server would otherwise report its own activity to the hub (once at start, then
    # every 300 s); the tests must be the only source of activity.
    "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
}
# LocalProcessSpawner puts each server in its own session; keep it in the hub's process group instead
# so the fixture's killpg() of that group also reaps single-user servers if the hub dies uncleanly.
c.IntegrationSpawner.popen_kwargs = {"start_new_session": False}
# Real servers start in a few seconds; fail fast rather than hang a test run.
c.IntegrationSpawner.start_timeout = 60
c.IntegrationSpawner.http_timeout = 60

# A test module's own additions (hubtools.start_hub(extra_config=...)), read last so they win.
_extra = env.get("TRIO_CULLER_IT_EXTRA_CONFIG")
if _extra:
    exec(compile(Path(_extra).read_text(), _extra, "exec"), {"c": c, "env": env, "workdir": workdir})
