"""FakeHub: an in-memory JupyterHub REST API for tests, demos and fault injection.

FakeHub models the parts of JupyterHub's API that a culler uses (version probe, paged user
listing with ``state`` filters, stopping and removing servers, deleting users) closely enough
that the hub's awkward behaviours are reproduced: live offsets that shift when a stop completes,
``state=ready`` filtered *after* slicing, plain lists silently truncated without the pagination
header, 202 for slow stops, JSON error bodies, single percent-decoding of path segments.

Two ways in, sharing one request handler (:meth:`FakeHub.handle`)::

    hub = FakeHub()
    hub.add_user("alice", servers={"": FakeServer("", started=t0, last_activity=t0)})

    # 1. in memory (works with trio's autojump_clock)
    async with hub.running(), httpx.AsyncClient(transport=hub.transport(),
                                                base_url="http://hub.test/hub/api") as client:
        ...

    # 2. real HTTP/1.1 on a loopback address (optionally TLS)
    async with open_fake_hub(hub) as api_url:   # "http://127.0.0.1:PORT/hub/api"
        ...

Background stops. A stop slower than ``slow_stop_timeout`` answers 202 and finishes later, so it
needs a task that outlives the request: it runs in ``hub.background_nursery``. ``serve()`` (and so
``open_fake_hub``) provides one for as long as it runs; for the MockTransport path use
``async with hub.running():`` (or assign any nursery to ``hub.background_nursery`` yourself).
Leaving ``running()`` waits for stops still in progress. Without a background nursery a stop runs
inline: the request waits the whole latency and then answers 202 if that exceeded
``slow_stop_timeout``. A stop is never undone: if its task is cancelled (client timeout on the
inline path, hub shut down) the server is marked stopped at once.

Fault injection: ``hub.fault`` is awaited first for every request. It may sleep, return a
response (used as is), return None (normal handling), or raise. On the MockTransport path the
exception reaches the client unchanged (raise e.g. ``httpx.ReadError`` to simulate a dropped
connection); on the HTTP path any exception closes the connection without an answer.

One deliberate difference: ``DELETE /users/{name}`` answers 400 while the user has any active
server, where JupyterHub would first stop a running default server itself; a culler must stop
every server before deleting a user, and this catches one that does not.

The package has one module per concept, as ``trio.testing`` does, and re-exports its public names here:
``_fakehub`` (the hub and its request handler), ``_model`` (users and servers), ``_routes``, ``_render``,
``_statistics``, ``_population``, ``_singleuser`` (the single-user servers behind the fake proxy: their
``api/kernels`` and ``api/terminals``), ``_token`` (what the token may do: ``scopes=``, ``reports_scopes=``),
``_loopback`` and ``_h11_server`` (the real-socket way in).
"""

from ._fakehub import FakeHub as FakeHub
from ._loopback import open_fake_hub as open_fake_hub
from ._model import FakeServer as FakeServer
from ._model import FakeUser as FakeUser
from ._population import Population as Population
from ._singleuser import FakeKernel as FakeKernel
from ._singleuser import FakeTerminal as FakeTerminal
from ._statistics import FakeHubStatistics as FakeHubStatistics
from ._statistics import PageRequest as PageRequest

__all__ = [
    "FakeHub",
    "FakeHubStatistics",
    "FakeKernel",
    "FakeServer",
    "FakeTerminal",
    "FakeUser",
    "PageRequest",
    "Population",
    "open_fake_hub",
]
