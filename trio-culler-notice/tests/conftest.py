"""A real jupyter_server in the test's own event loop (pytest-jupyter's ``jp_fetch``), with the extension
loaded as an operator's config would load it, and the strictest settings jupyter_server has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from tornado.httpclient import HTTPResponse
from traitlets.config import Config

pytest_plugins = ["pytest_jupyter.jupyter_server"]

#: pytest-jupyter's ``jp_fetch``: path parts, then tornado's ``fetch`` keywords.
Fetch = Callable[..., Awaitable[HTTPResponse]]


@pytest.fixture
def jp_server_config() -> Config:
    return Config(
        {
            "ServerApp": {
                # Terminals off: their websocket handler would trip the check below, which is meant for ours.
                "jpserver_extensions": {"trio_culler_notice": True, "jupyter_server_terminals": False},
                # A handler verb without @web.authenticated warns (an error here) at load time.
                "allow_unauthenticated_access": False,
                # A failing extension fails the test instead of leaving a server without it.
                "reraise_server_extension_failures": True,
            }
        }
    )
