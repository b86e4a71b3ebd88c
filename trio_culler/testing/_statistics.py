"""What the fake hub saw: every request counted by kind, status, connection and time, for tests to assert on."""

from __future__ import annotations

import collections
from collections.abc import Mapping

import attrs
import trio

from ._routes import ROUTE_KINDS, RequestKind

__all__ = ["FakeHubStatistics", "PageRequest", "RequestLog"]


@attrs.frozen
class PageRequest:
    """One ``GET /users`` as the hub interpreted it (after defaults and clamping)."""

    offset: int
    limit: int | None  # None: an old hub (paginate=False) returned everything
    state: str | None
    paginated: bool  # the client sent the pagination Accept header
    at: float  # trio.current_time() on arrival


@attrs.frozen
class FakeHubStatistics:
    requests_by_kind: Mapping[RequestKind, int]
    in_flight: int
    max_in_flight: int
    stop_requests: Mapping[tuple[str, str], int]  # DELETEs per (user, server), stop or remove
    stops_completed: tuple[tuple[str, str], ...]  # in completion order
    users_deleted: tuple[str, ...]
    first_delete_at: float | None  # trio.current_time() of the first DELETE of a server or a user
    last_list_at: float | None  # trio.current_time() of the last GET /users
    page_requests: tuple[PageRequest, ...]
    status_codes: Mapping[int, int]  # status -> count, fault responses included
    connections: int  # distinct loopback connections that carried a request
    tokens_minted: int = 0  # POST /users/{name}/tokens answered 201
    tokens_revoked: int = 0  # DELETE /users/{name}/tokens/{id} answered 204
    tokens_live: int = 0  # minted, not revoked, and not seen expired (an expired one is dropped when next used)
    #: The credentials single-user servers were shown, by whose they were: ``own`` (a token of the server's
    #: user), ``hub`` (the culler's own token), ``other`` (another user's, unknown, revoked or expired), ``none``.
    server_credentials: Mapping[str, int] = attrs.field(factory=dict)
    #: Requests to the notice API of single-user servers, by method (PUT, GET, DELETE, POST).
    notice_requests: Mapping[str, int] = attrs.field(factory=dict)


class RequestLog:
    """The running counters behind :class:`FakeHubStatistics`; the hub calls one method per event."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[RequestKind] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.stop_requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.stops_completed: list[tuple[str, str]] = []
        self.users_deleted: list[str] = []
        self.first_delete_at: float | None = None
        self.last_list_at: float | None = None
        self.pages: list[PageRequest] = []
        self.status_codes: collections.Counter[int] = collections.Counter()
        self.connections: set[int] = set()
        self.server_credentials: collections.Counter[str] = collections.Counter()
        self.notice_requests: collections.Counter[str] = collections.Counter()

    def snapshot(self, *, tokens_minted: int, tokens_revoked: int, tokens_live: int) -> FakeHubStatistics:
        return FakeHubStatistics(
            requests_by_kind={kind: self.by_kind[kind] for kind in ROUTE_KINDS},
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            stop_requests=dict(self.stop_requests),
            stops_completed=tuple(self.stops_completed),
            users_deleted=tuple(self.users_deleted),
            first_delete_at=self.first_delete_at,
            last_list_at=self.last_list_at,
            page_requests=tuple(self.pages),
            status_codes=dict(self.status_codes),
            connections=len(self.connections),
            tokens_minted=tokens_minted,
            tokens_revoked=tokens_revoked,
            tokens_live=tokens_live,
            server_credentials=dict(self.server_credentials),
            notice_requests=dict(self.notice_requests),
        )

    def list_requested(self, page: PageRequest) -> None:
        self.last_list_at = page.at
        self.pages.append(page)

    def delete_requested(self) -> None:
        if self.first_delete_at is None:
            self.first_delete_at = trio.current_time()
