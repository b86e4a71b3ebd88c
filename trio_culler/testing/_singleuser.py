"""The single-user servers behind FakeHub's fake proxy: what ``--inspect-kernels`` asks them, and whom they
answer.

FakeHub answers, on the same origin as its API (it plays the proxy too), ``GET /user/<name>/api/kernels`` and
``/api/terminals`` (and ``/user/<name>/<server>/api/...`` for named servers) the way jupyter_server 2.x does:
lists of models with ``last_activity`` and, for kernels, ``execution_state``, and ``/api/status`` with the server's
own ``last_activity`` (``FakeServer.reported_activity``). Like jupyter_server, a server
answers only a token whose scopes reach it (jupyter_server asks the hub): a token minted for its user with
``access:servers!server=<name>/<server>`` (or wider, for that user), or the culler's own token when its scopes
hold ``access:servers``; anything else is 403. Every credential a server is shown is counted by whose it is
(:func:`credential_kind`): ``own`` (a token of the server's user), ``hub`` (the culler's token), ``other``
(another user's token, or an unknown, revoked or expired one) or ``none``.

What a test can vary:

- each :class:`~trio_culler.testing.FakeServer`'s ``kernels`` and ``terminals`` (:class:`FakeKernel`,
  :class:`FakeTerminal`), or ``kernels=None``: a server that is not a jupyter_server (404);
- ``FakeHub.server_latency``: seconds every such request waits before its answer (the benchmark's 50 ms);
- ``FakeHub.server_access``: False makes every server answer 403, whatever it is shown;
- ``FakeHub.scopes``: with ``access:servers`` the servers accept the culler's own token, as real ones would.
"""

from __future__ import annotations

from typing import Literal

import httpx

from ._permissions import covers
from ._render import error, isoformat, kernel_model, terminal_model
from ._routes import SingleUserRoute
from ._state import FakeServer, FakeToken

__all__ = ["CredentialKind", "answer", "credential_kind", "presented_token", "reaches"]

CredentialKind = Literal["own", "hub", "other", "none"]


def presented_token(request: httpx.Request) -> str | None:
    """The token in the request's ``Authorization`` header (``token`` or ``bearer``), or None."""
    header: str = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not token.strip():
        return None
    return token.strip()


def credential_kind(route: SingleUserRoute, is_hub_token: bool, minted: FakeToken | None) -> CredentialKind:
    if is_hub_token:
        return "hub"
    if minted is None:
        return "other"
    return "own" if minted.user == route.user else "other"


def reaches(route: SingleUserRoute, scopes: frozenset[str]) -> bool:
    return covers(scopes, f"access:servers!server={route.user}/{route.server}")


def answer(server: FakeServer | None, route: SingleUserRoute, method: str, allowed: bool) -> httpx.Response:
    """jupyter_server's answer for ``server`` (None: the proxy has no route for it); ``allowed``: whether the
    credential reaches it."""
    if server is None or not server.ready:
        # The proxy has no route for it: the hub's "not running" page.
        return error(404, "Not Found")
    if server.kernels is None or route.endpoint in ("unknown", "notice", "keep"):
        # Not a jupyter_server, a path it does not serve, or the notice API of a server without the extension.
        return error(404, "Not Found")
    if method != "GET":
        return error(405, "Method Not Allowed")
    if not allowed:
        return error(403, "Forbidden")
    if route.endpoint == "kernels":
        return httpx.Response(200, json=[kernel_model(kernel) for kernel in server.kernels])
    if route.endpoint == "terminals":
        return httpx.Response(200, json=[terminal_model(terminal) for terminal in server.terminals])
    # api/status: jupyter_server's own last activity, which the culler's requests never move.
    status = {"started": isoformat(server.started), "last_activity": isoformat(server.reported_activity)}
    return httpx.Response(200, json={**status, "kernels": len(server.kernels)})
