"""What the fake hub saw: every request counted by kind, status, connection and time, for tests to assert on."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

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


@attrs.define
class RequestLog:
    """The running counters behind :class:`FakeHubStatistics`, under the same names; the hub calls one method per
    event."""

    requests_by_kind: collections.Counter[RequestKind] = attrs.Factory(collections.Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    stop_requests: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    stops_completed: list[tuple[str, str]] = attrs.Factory(list)
    users_deleted: list[str] = attrs.Factory(list)
    first_delete_at: float | None = None
    last_list_at: float | None = None
    page_requests: list[PageRequest] = attrs.Factory(list)
    status_codes: collections.Counter[int] = attrs.Factory(collections.Counter)
    connections: set[int] = attrs.Factory(set)
    server_credentials: collections.Counter[str] = attrs.Factory(collections.Counter)
    notice_requests: collections.Counter[str] = attrs.Factory(collections.Counter)

    def snapshot(self, *, tokens_minted: int, tokens_revoked: int, tokens_live: int) -> FakeHubStatistics:
        # Copies (a snapshot must not change under its reader), every kind of request counted, 0 or not.
        values: dict[str, Any] = {name: _copied(value) for name, value in attrs.asdict(self, recurse=False).items()}
        values["requests_by_kind"] = {kind: self.requests_by_kind[kind] for kind in ROUTE_KINDS}
        values["connections"] = len(self.connections)
        return FakeHubStatistics(
            **values, tokens_minted=tokens_minted, tokens_revoked=tokens_revoked, tokens_live=tokens_live
        )

    def list_requested(self, page: PageRequest) -> None:
        self.last_list_at = page.at
        self.page_requests.append(page)

    def delete_requested(self) -> None:
        if self.first_delete_at is None:
            self.first_delete_at = trio.current_time()


def _copied(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    return dict(value) if isinstance(value, dict) else value
