"""trio-culler: stop idle JupyterHub servers (and users) through the hub's REST API, on trio.

The public API, for applications that embed the culler in their own trio program::

    config = trio_culler.Config(api_token=token, url="http://127.0.0.1:8081/hub/api", timeout=3600)
    async with trio.open_nursery() as nursery:
        culler = await nursery.start(trio_culler.serve, config)
        report = await culler.run_pass_now()
"""

from ._config import Config
from ._decide import Action, Decision, decide_server, decide_user
from ._errors import (
    ConfigError,
    CullerError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTimeout,
    HubUnavailable,
)
from ._inspect import Kernel, ServerActivity, Terminal
from ._models import Server, User
from ._policy import Policy
from ._report import PassError, PassReport
from ._service import Culler, CullerStatistics, CullerStopped, open_culler, run_pass, serve
from ._version import __version__

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "Culler",
    "CullerError",
    "CullerStatistics",
    "CullerStopped",
    "Decision",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTimeout",
    "HubUnavailable",
    "Kernel",
    "PassError",
    "PassReport",
    "Policy",
    "Server",
    "ServerActivity",
    "Terminal",
    "User",
    "__version__",
    "decide_server",
    "decide_user",
    "open_culler",
    "run_pass",
    "serve",
]
