"""FakeHub: an in-memory JupyterHub REST API for tests, demos and fault injection.

FakeHub models the parts of JupyterHub's API that a culler uses (version probe, paged user
listing with ``state`` filters, stopping and removing servers, deleting users, minting and revoking
users' tokens, the single-user servers' kernels and terminals behind the proxy) closely enough
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

Tokens. ``POST /users/{name}/tokens`` mints a token owned by that user with JupyterHub's checks (the
requester needs ``tokens``; the scopes asked for must be within the owner's own, ``FakeUser.scopes``;
``token_expires_in_max_seconds`` caps ``expires_in``), ``DELETE /users/{name}/tokens/{id}`` revokes it,
and ``GET /user`` with it names its owner and scopes. The single-user servers behind the fake proxy answer
only a token whose scopes reach them: a server's own token, or the culler's only if ``scopes`` holds
``access:servers``. ``statistics().server_credentials`` counts whose credentials they were shown.

Notices. The single-user servers answer trio-culler-notice's API (``api/trio-culler/v1/notice`` and ``keep``,
docs/notice-api.md) unless ``FakeServer(notices=False)``; ``hub.keep(user, server)`` is the user's "Keep
running", and ``hub.proxy_records_activity = True`` makes every request a server answers (below 300, or with a
body) move its ``last_activity``, as configurable-http-proxy and the hub's folding of its record do; the proxy
keeps only each route's latest request, and with ``hub.folds_at_once = False`` the hub folds it in only at
``hub.fold_activity()``. ``hub.use(user, server)`` is the user's own request: the server's own last activity
(``api/status``, the notice API's state) moves with it, the culler's requests never move that.

The package has one module per job, as ``trio.testing`` does, and re-exports its public names here.
Dependencies run one way: ``_fakehub`` (the hub: settings, ways in, routing) uses every other module
and none uses it back::

    _fakehub -> _listing (GET /users)      -> _statistics -> _routes
             -> _stops (DELETE servers, users)
             -> _tokens (mint, revoke)     -> _permissions (who may do what) -> _render -> _state
             -> _singleuser (kernels, terminals, and whom a server answers) -> _notices (the notice API)
             -> _population (many users at once, through add_user)
             -> _loopback (a real socket) -> _h11_server, _nursery
"""

from ._fakehub import FakeHub as FakeHub
from ._loopback import open_fake_hub as open_fake_hub
from ._population import Population as Population
from ._state import FakeKernel as FakeKernel
from ._state import FakeServer as FakeServer
from ._state import FakeTerminal as FakeTerminal
from ._state import FakeUser as FakeUser
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
