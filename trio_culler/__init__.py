"""trio-culler: stop idle JupyterHub servers (and users) through the hub's REST API, on trio.

The public API, for applications that embed the culler in their own trio program::

    config = trio_culler.Config(api_token=token, url="http://127.0.0.1:8081/hub/api", timeout=3600)
    async with trio.open_nursery() as nursery:
        culler = await nursery.start(trio_culler.serve, config)
        report = await culler.run_pass_now()

The pipeline, drawn here once (each module's docstring tells its own part)::

    cli (argv, environment, config file, signals) --> Config --> Culler.serve (_service: a pass every cull_every)
      --> run_pass_with (_engine): probe the hub (_probe: version, token, scopes)
            pager (_pager: pages from the last to the first) --zero-buffer channel, back-pressure--> N workers
              worker: decide (_decide, pure; the rule from _rules; the kernels from _inspect, when asked)
                      --> warn first (_notify, never waits) --> act (_act: one DELETE) --> PassRecorder
      --> PassReport (_report): the one summary line, then each reporter: metrics (_metrics), the status page's
          history (_history, read by web/)

Only ``_hub`` (and ``_transport`` under it) talks to the hub; every request borrows one token of its
CapacityLimiter, so at most ``concurrency`` requests are in flight whatever the number of workers.
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
