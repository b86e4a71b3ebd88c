"""trio-culler-notice: tells a Jupyter server's users when trio-culler will stop it, and lets them keep it.

A jupyter_server extension (the notice API of docs/notice-api.md, under the server's base URL) and a JupyterLab
4 / Notebook 7 extension (a notification with a countdown and a "Keep running" action). It shares nothing with
the culler but that HTTP API.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._board import NoticeBoard
from ._handlers import handlers

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

try:
    __version__ = version("trio-culler-notice")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "trio-culler-notice"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "trio_culler_notice"}]


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", handlers(base_url, NoticeBoard()))  # type: ignore[no-untyped-call]
    serverapp.log.info("trio-culler-notice %s: the culler's notices are served below %s", __version__, base_url)
