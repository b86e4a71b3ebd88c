"""JupyterHub configuration for the soak (``jupyterhub -f soak_hub_config.py``).

Every per-run value comes from ``SOAK_*`` environment variables set by ``soak_procs.Hub``: ports, the services and
roles (JSON, built by the harness from ``soak_settings``), the light server's URL. What matters for the soak:

- the proxy is *external* (``should_start = False``): the soak starts and restarts configurable-http-proxy itself,
  so a restart of the hub leaves the proxy, its routes and its record of traffic alone, and a restart of the proxy
  is one the hub must notice (it re-adds the routes at its next activity poll);
- ``cleanup_servers = False``: a hub that stops leaves the single-user servers running, and the next hub finds them
  in its database (the soak's spawner keeps a light server's state there too);
- ``last_activity_interval`` is short, so that hours hold many culling cycles;
- the single-user servers do not report activity themselves: the proxy is the one source of activity, so the
  soak's oracle knows all of it.
"""

import json
import os
import sys
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821

env = os.environ
workdir = Path(env["SOAK_DIR"])

c.JupyterHub.bind_url = f"http://127.0.0.1:{env['SOAK_PROXY_PORT']}"
c.JupyterHub.public_url = f"http://127.0.0.1:{env['SOAK_PROXY_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env['SOAK_HUB_PORT']}"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['SOAK_PROXY_API_PORT']}"
# The auth token comes from CONFIGPROXY_AUTH_TOKEN, which the proxy gets too.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False

c.JupyterHub.db_url = f"sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(workdir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(workdir / "jupyterhub.pid")

# A login form for the status page's OAuth check; everyone else is created through the API.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = env["SOAK_PASSWORD"]
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"soak-admin"}

c.JupyterHub.last_activity_interval = int(float(env["SOAK_ACTIVITY_INTERVAL"]))
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 5
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0

c.JupyterHub.services = json.loads(env["SOAK_SERVICES"])
c.JupyterHub.load_roles = json.loads(env["SOAK_ROLES"])

sys.path.insert(0, str(Path(__file__).resolve().parent))
c.JupyterHub.spawner_class = "soak_spawner.SoakSpawner"
c.SoakSpawner.home_dir_template = str(workdir / "home" / "{username}")
c.SoakSpawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.SoakSpawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.SoakSpawner.ip = "127.0.0.1"
c.SoakSpawner.environment = {
    "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
    # Marks every process of this run, so that the harness can end what a hub left behind, and nothing else.
    "SOAK_RUN": env["SOAK_RUN"],
}
c.SoakSpawner.start_timeout = 120
c.SoakSpawner.http_timeout = 120
