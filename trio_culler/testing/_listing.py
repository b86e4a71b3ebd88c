"""``GET /users`` as JupyterHub answers it: ordered by id, paged with live offsets, ``state=ready`` filtered after
slicing, and a plain list silently truncated without the pagination header (or everything, for a hub < 2.0)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import httpx
import trio

from .._hub import PAGINATION_MEDIA_TYPE
from ._render import Json, error
from ._state import FakeUser, is_ready
from ._statistics import PageRequest, RequestLog

__all__ = ["Listing"]


@attrs.frozen
class Listing:
    """How one hub pages its users (FakeHub's settings at the time of the request)."""

    paginate: bool  # False: a JupyterHub < 2.0, which ignores offset/limit
    default_page_size: int
    max_page_size: int
    latency: float

    async def answer(
        self,
        request: httpx.Request,
        users: Mapping[str, FakeUser],
        render: Callable[[FakeUser], Json],
        log: RequestLog,
    ) -> httpx.Response:
        """The answer to ``request`` over ``users`` (read after the latency: a slow listing reflects the hub's
        state when it answers)."""
        params = request.url.params
        state = params.get("state") or None
        if state not in (None, "active", "ready", "inactive"):
            return error(400, f"Unrecognized state filter: {state!r}")
        accepts = {s.strip().lower() for s in request.headers.get("accept", "").split(",")}
        paginated = PAGINATION_MEDIA_TYPE in accepts
        now = trio.current_time()
        if not self.paginate:
            log.list_requested(PageRequest(0, None, state, paginated, now))
            await trio.sleep(self.latency)
            everyone = [u for u in _filtered(users, state) if state != "ready" or is_ready(u)]
            return httpx.Response(200, json=[render(u) for u in everyone])
        # Without the header the real hub defaults to the *max* limit, and truncates silently.
        default_limit = self.default_page_size if paginated else self.max_page_size
        try:
            offset = abs(int(params.get("offset", 0)))
            limit = min(max(abs(int(params.get("limit", default_limit))), 1), self.max_page_size)
        except ValueError:
            return error(400, "Invalid argument type, offset and limit must be integers")
        log.list_requested(PageRequest(offset, limit, state, paginated, now))
        await trio.sleep(self.latency)
        matching = _filtered(users, state)
        page = matching[offset : offset + limit]
        if state == "ready":
            # As in JupyterHub: page over *active* users, then drop the ones not ready.
            page = [u for u in page if is_ready(u)]
        items = [render(u) for u in page]
        if not paginated:
            return httpx.Response(200, json=items)
        next_offset = offset + limit
        next_page = None
        if next_offset < len(matching):
            url = request.url.copy_merge_params({"offset": next_offset, "limit": limit})
            next_page = {"offset": next_offset, "limit": limit, "url": str(url)}
        pagination = {"offset": offset, "limit": limit, "total": len(matching), "next": next_page}
        return httpx.Response(200, json={"items": items, "_pagination": pagination})


def _filtered(users: Mapping[str, FakeUser], state: str | None) -> list[FakeUser]:
    ordered = sorted(users.values(), key=lambda u: u.id)
    if state in ("active", "ready"):
        return [u for u in ordered if u.servers]
    if state == "inactive":
        return [u for u in ordered if not u.servers]
    return ordered
