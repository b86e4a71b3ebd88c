"""The HTTP side of the notice board, under the server's base URL (docs/notice-api.md).

Authentication, XSRF and authorization are jupyter_server's own: every verb is ``@web.authenticated`` and
``@authorized`` on the resource ``trio-culler-notice``, which gives a token-authenticated request (the culler's,
with a token the hub minted for this server alone) and a browser's cookie with its XSRF header the same access
as the rest of the server's API, and nobody else any.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ._board import NoticeBoard, format_time
from ._parse import InvalidRequest, parse_id, parse_keep, parse_notice

__all__ = ["API_PATH", "AUTH_RESOURCE", "KeepHandler", "NoticeHandler", "handlers"]

API_PATH = "api/trio-culler/v1"
AUTH_RESOURCE = "trio-culler-notice"


class _BoardHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, board: NoticeBoard) -> None:
        self.board = board

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # The state changes under the page's feet: never from a cache.
        self.set_header("Cache-Control", "no-store")

    def write_state(self) -> None:
        self.finish(json.dumps(self.board.state(datetime.now(UTC), self.server_last_activity())))

    def server_last_activity(self) -> datetime | None:
        """jupyter_server's own last activity (its user's API requests, kernels, terminals), as ``api/status``
        answers it: what the culler's requests, all untracked, never move. None outside a jupyter_server."""
        last_activity = getattr(self.application, "last_activity", None)
        if not callable(last_activity):
            return None
        moment = last_activity()
        return moment if isinstance(moment, datetime) else None

    def refuse(self, problem: InvalidRequest) -> None:
        """Answers with the one-line reason; a refused request is not the user's activity."""
        self._track_activity = False
        self.set_status(problem.status)
        self.finish(json.dumps({"message": str(problem)}))


class NoticeHandler(_BoardHandler):
    """``GET``, ``PUT`` and ``DELETE notice``: the culler's verbs, and the page's poll. None of them is the
    user's activity: an idle server must not be kept alive by the culler's visits or by an open tab. The state
    they answer carries the server's own last activity, which they therefore never move."""

    _track_activity = False

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_state()

    @web.authenticated
    @authorized
    def put(self) -> None:
        try:
            notice = parse_notice(self.request.body)
        except InvalidRequest as problem:
            self.refuse(problem)
            return
        replaced = self.board.notice
        self.board.put(notice)
        if replaced is None or replaced.id != notice.id:
            self.log.info(
                "trio-culler notice %s: this server will be stopped at %s", notice.id, format_time(notice.cull_at)
            )
        self.write_state()

    @web.authenticated
    @authorized
    def delete(self) -> None:
        ids = self.get_query_arguments("id")
        try:
            if len(ids) != 1:
                raise InvalidRequest("one id=ID in the query, please")
            notice_id = parse_id(ids[0])
        except InvalidRequest as problem:
            self.refuse(problem)
            return
        if self.board.withdraw(notice_id):
            self.log.info("trio-culler notice %s withdrawn", notice_id)
        self.set_status(204)
        self.finish()


class KeepHandler(_BoardHandler):
    """``POST keep``: the user asks to keep the server running. It counts as the user's activity, as any API
    request does, so the server's last activity moves and JupyterHub hears of it too."""

    @web.authenticated
    @authorized
    def post(self) -> None:
        try:
            notice_id = parse_keep(self.request.body)
        except InvalidRequest as problem:
            self.refuse(problem)
            return
        self.board.record_keep(notice_id, datetime.now(UTC))
        self.log.info("The user asked to keep this server running (trio-culler notice %s)", notice_id)
        self.write_state()


def handlers(base_url: str, board: NoticeBoard) -> list[tuple[str, type[_BoardHandler], dict[str, object]]]:
    """The routes, below the server's base URL (``/user/alice/`` under JupyterHub)."""
    settings: dict[str, object] = {"board": board}
    return [
        (url_path_join(base_url, API_PATH, "notice"), NoticeHandler, settings),
        (url_path_join(base_url, API_PATH, "keep"), KeepHandler, settings),
    ]
