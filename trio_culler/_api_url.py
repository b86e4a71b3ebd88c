"""Where the hub's REST API is, from a ``--url`` that is not it: the suggestion an error about it makes.

The API is at ``<base_url>hub/api`` of the hub (``http://127.0.0.1:8081/hub/api``; ``.../jhub/hub/api`` for a hub
with ``base_url = "/jhub/"``). A ``--url`` without the API's path gets a redirect from the hub, into its own
prefix (``/`` to ``/hub/``, ``/jhub/`` to ``/jhub/hub/``, ``/hub/`` to ``/hub/login``), and that redirect says
where the hub's prefix, and so its API, is.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

__all__ = ["suggest_api_url"]


def suggest_api_url(url: str, location: str = "") -> str:
    """The API URL the operator most likely meant by ``url``, given the ``Location`` of the hub's redirect (if
    any): the hub's prefix taken from the redirect, else from ``url`` itself (``/hub`` gets ``/api``, anything
    else ``/hub/api``). The origin is always ``url``'s: the one the culler can reach."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if location:
        target = urlsplit(urljoin(url.rstrip("/") + "/", location)).path
        cut = target.rfind("/hub/")
        if cut >= 0:
            return f"{origin}{target[:cut]}/hub/api"
    path = parts.path.rstrip("/")
    return f"{origin}{path}/api" if path.endswith("/hub") else f"{origin}{path}/hub/api"
