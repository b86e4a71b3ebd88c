"""Which pages of users to ask for, in which order, streamed into a memory channel.

Offset pages are not a snapshot: when a server stops, its user leaves the ``ready`` set and every later offset
moves down by one. A pager walking forward while workers stop servers would therefore skip users. This one:

1. reads the first page (offset 0, which also gives the total and the hub's page size) and hands its users to
   the workers at once, so culling starts with the first page;
2. walks from the LAST page back to the second. Stops of already-read users move unread users only towards
   lower offsets, which the walk has yet to read: the window read at offset ``o`` after ``k`` stops covers the
   users who were at ``o + k ...`` when the pass began, and ``k`` only grows, so consecutive windows overlap
   and never leave a gap;
3. reads the first page once more: the only users the walk can miss are those that stops on the first page
   moved below the second page's offset, into the first page's range, and that is where they are found.

One extra page request per listing buys a first stop after one request instead of after the whole listing
(the original's way), with nobody skipped.

Users the pass has nothing to do for (every server active, no deletion possible) are counted but not sent:
``triage`` is a pure function built by the engine from the judge's pure first step, which turns a user into the
work item a worker gets, or None. It is told when the page was asked for (how old its data is when a worker
acts on it) and whether this is the user's first reading in the pass (so its forecast is counted once). Most
users of a large hub need nothing, and handing each of them to a worker would cost a channel send and a task
switch apiece, for nothing.

A user can still appear twice when *someone else* stops a server mid-pass (offsets shift down under us); names
are de-duplicated within a pass, so nobody is handled twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs
import trio

from ._errors import HubAuthError, HubError
from ._hub import HubClient, HubInfo, Page
from ._models import User
from ._report import PassRecorder

__all__ = ["page_offsets", "stream_users"]

log = logging.getLogger("trio_culler")

#: What the workers receive for a user (the engine's work item).
W = TypeVar("W")


def page_offsets(total: int, limit: int) -> range:
    """Offsets of every page after the first, from the last to the second."""
    if total <= limit:
        return range(0)
    last = (total - 1) // limit * limit
    return range(last, 0, -limit)


async def stream_users(
    hub: HubClient,
    info: HubInfo,
    *,
    cull_users: bool,
    page_size: int,
    send: trio.MemorySendChannel[W],
    recorder: PassRecorder,
    draining: trio.Event,
    triage: Callable[[User, float, bool], W | None],
    vet: Callable[[User], None] | None = None,
) -> None:
    """Send ``triage(user, ...)`` for every user it does not turn into None, each user once; closes ``send`` when
    done.

    ``vet`` sees every user of a page before any of them is sent, and may raise to end the pass (a model that
    lacks a field a decision or a rule needs: the token lacks a scope) before anything is culled."""
    seen: set[str] = set()
    async with send:
        if info.has_state_filter:
            # Users with no running server only matter for deletion. They come first, as in the original, so
            # that users whose servers this pass stops do not join the inactive listing while it is walked.
            states: list[str | None] = ["inactive", "ready"] if cull_users else ["ready"]
        else:
            states = [None]
        for state in states:
            await _stream_listing(hub, info, state, page_size, _Sink(send, recorder, draining, seen, triage, vet))


@attrs.define
class _Sink(Generic[W]):
    """Where the users of fetched pages go: de-duplicated, counted, triaged, then sent to the workers."""

    send: trio.MemorySendChannel[W]
    recorder: PassRecorder
    draining: trio.Event
    seen: set[str]
    triage: Callable[[User, float, bool], W | None]
    vet: Callable[[User], None] | None = None

    async def put_page(self, page: Page, listed_at: float, *, counted: frozenset[str] = frozenset()) -> None:
        """Count and pass on a page's users, asked for at ``listed_at`` (trio's clock); those named in
        ``counted`` were counted by an earlier read."""
        recorder = self.recorder
        if self.vet is not None:
            for user in page.users:
                self.vet(user)
        for item in page.skipped:
            if item.label in counted:
                continue
            recorder.skipped += 1
            log.warning("Skipping user %s: unreadable model (%s)", item.label, item.problem, extra={"user": item.label})
        for user in page.users:
            if self.draining.is_set():
                return
            work = self.triage(user, listed_at, user.name not in counted)
            if work is None:
                # Nothing to do for this user: seeing it twice would be harmless, so it is not remembered
                # (memory then grows with the users acted on, not with the hub).
                if user.name not in counted:
                    recorder.users_seen += 1
                    recorder.servers_seen += len(user.servers)
                    recorder.count_triaged()
                continue
            if user.name in self.seen:
                if user.name not in counted:
                    recorder.duplicates += 1
                    log.debug("User %s listed twice in this pass; handled once", user.name, extra={"user": user.name})
                continue
            self.seen.add(user.name)
            recorder.users_seen += 1
            recorder.servers_seen += len(user.servers)
            await self.send.send(work)


async def _stream_listing(hub: HubClient, info: HubInfo, state: str | None, page_size: int, sink: _Sink[W]) -> None:
    recorder = sink.recorder
    asked = trio.current_time()
    first = await _fetch(hub, info, state, 0, page_size or None, recorder)
    if first is None:
        return
    recorder.listing_total = first.total
    await sink.put_page(first, asked)
    if first.total is None or first.limit is None or first.total <= first.limit:
        return  # one page held everyone: nobody unread can have moved
    # Consecutive windows overlap by the stops that completed between the two reads (step 2 above), and the
    # re-read overlaps the first page and the last page walked: what one read counted, the next must not.
    previous: frozenset[str] = frozenset()
    for offset in page_offsets(first.total, first.limit):
        if sink.draining.is_set():
            return
        asked = trio.current_time()
        page = await _fetch(hub, info, state, offset, first.limit, recorder)
        if page is not None:
            await sink.put_page(page, asked, counted=previous)
        previous = _labels(page) if page is not None else frozenset()
    if sink.draining.is_set():
        return
    asked = trio.current_time()
    again = await _fetch(hub, info, state, 0, first.limit, recorder)
    if again is not None:
        await sink.put_page(again, asked, counted=_labels(first) | previous)


def _labels(page: Page) -> frozenset[str]:
    return frozenset(user.name for user in page.users) | frozenset(item.label for item in page.skipped)


async def _fetch(
    hub: HubClient, info: HubInfo, state: str | None, offset: int, limit: int | None, recorder: PassRecorder
) -> Page | None:
    try:
        page = await hub.list_users(state=state, offset=offset, limit=limit, paginate=info.has_pagination)
    except HubAuthError:
        raise
    except HubError as error:
        # One lost page loses only its users for this pass; the rest of the listing goes on.
        recorder.pages_failed += 1
        subject = f"page state={state or 'any'} offset={offset}"
        recorder.error(subject, error)
        log.error("Could not fetch %s: %s", subject, error, extra={"event": "page_failed", "offset": offset})
        return None
    recorder.pages += 1
    return page
