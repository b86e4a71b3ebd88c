"""The status page's warnings, in memory: what they did, the warnings that stand and the keeps (the admin's page and
``api/status``), and, in a user's own view, the warning that stands for each of their servers and their keeps,
nobody else's. The notifier's side (``WarningBook.now``) is taken from real passes on FakeHub; the page's from
reports that carry it, as the service hands them over.

The real hub, extension and browser are in ``tests/integration/test_notice_browser.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import trio
import trio.testing

from trio_culler import Config, PassReport
from trio_culler._credentials import open_server_credentials
from trio_culler._engine import run_pass_with
from trio_culler._history import History
from trio_culler._hub import open_hub_client
from trio_culler._notify import Notifier, open_notifier
from trio_culler._service import Culler
from trio_culler._warning_tally import SHOWN
from trio_culler._warnings_now import KeptServer, StandingWarning, WarningsNow
from trio_culler.testing import FakeHub, FakeServer

from .support.faults import TOKEN as TOKEN_FAULTS
from .test_notices import PUBLIC, config, idle, make_hub
from .test_notify import Clock, Receiver
from .test_status_web import (
    HOSTILE,
    NOW,
    PAGE,
    QUOTES,
    SERVER_MARKUP,
    TOKEN,
    assert_clean,
    culls_history,
    login,
    make_app,
    report,
    two_users_hub,
    user_app,
    user_config,
)

M = timedelta(minutes=1)
H = timedelta(hours=1)


def standing(user: str, server: str = "", *, warned: int = -5, cull: int = 10, **changes: Any) -> StandingWarning:
    """A warning given ``warned`` minutes from NOW, announcing a cull ``cull`` minutes from NOW."""
    values: dict[str, Any] = {
        "user": user,
        "server": server,
        "started": NOW - 2 * H,
        "id": f"id-{user}-{server}"[:16],
        "warned_at": NOW + warned * M,
        "cull_at": NOW + cull * M,
        "reason": "idle",
    }
    values.update(changes)
    return StandingWarning(**values)


def keep(user: str, server: str = "", *, at: int = -3, started: datetime | None = NOW - 2 * H) -> KeptServer:
    return KeptServer(user=user, server=server, started=started, kept_at=NOW + at * M)


def section(page: str, anchor: str, end: str = "<h") -> str:
    return page.split(f'id="{anchor}"', 1)[1].split(end, 1)[0]


def warned_history(cfg: Config, now: WarningsNow, **changes: Any) -> History:
    """The users' history of ``test_status_web`` (their culls), then a pass that left ``now``."""
    history = culls_history(cfg)
    history.observe(report(culls=(), warnings_now=now, **changes))
    return history


# --- The admin's page -------------------------------------------------------------------------------------------


async def test_the_admin_sees_what_the_warnings_did_what_stands_and_the_keeps() -> None:
    cfg = Config(api_token=TOKEN, warn_before=900, warn_url="http://hooks.test/x")
    client, flow, history = make_app(cfg=cfg)
    many = tuple(standing(f"user-{n:03d}", warned=-n, cull=30 - n) for n in range(120))
    hostile = standing(HOSTILE, SERVER_MARKUP, warned=1, id="7f3c2a9e4b1d0c55", kept_at=NOW - 20 * M, no_extension=True)
    history.observe(
        report(warning_events={"warning": 4, "cancelled": 1}, notices_delivered=3, notices_without_extension=2)
    )
    history.observe(
        report(
            warning_events={"warning": 1, "culled": 2},
            notices_delivered=1,
            notices_failed=1,
            keeps=1,
            warnings_now=WarningsNow(
                standing=(*many, hostile),
                kept=(keep("carol", "gpu", at=-30), keep(HOSTILE, QUOTES, at=-2)),
                without_extension=2,
            ),
        )
    )
    async with client:
        await login(client, flow, "admin")
        response = await client.get(PAGE)
        document_response = await client.get(f"{PAGE}api/status")
    page, document = response.text, document_response.json()
    warnings = document["warnings"]
    assert warnings["since_start"] == {
        "events": {"warning": 5, "cancelled": 1, "culled": 2},
        "notices": {"delivered": 4, "failed": 1, "without_extension": 2},
        "keeps": 1,
    }
    assert warnings["last_pass"] == {
        "events": {"warning": 1, "cancelled": 0, "culled": 2},
        "notices": {"delivered": 1, "failed": 1, "without_extension": 0},
        "keeps": 1,
    }
    # Bounded: the 50 most recently warned of 121, newest first; all are counted.
    assert warnings["standing_total"] == 121
    assert len(warnings["standing"]) == SHOWN == 50
    assert [item["user"] for item in warnings["standing"][:3]] == [HOSTILE, "user-000", "user-001"]
    assert warnings["standing"][-1]["user"] == "user-048"
    assert warnings["standing"][0] == {
        "user": HOSTILE,
        "server": SERVER_MARKUP,
        "id": hostile.id,
        "warned_at": "2026-11-25T12:01:00Z",
        "cull_at": "2026-11-25T12:10:00Z",
        "reason": "idle",
        "kept_at": "2026-11-25T11:40:00Z",
        "no_extension": True,
    }
    assert warnings["kept_total"] == 2
    assert [(k["user"], k["server"], k["kept_at"]) for k in warnings["kept"]] == [
        (HOSTILE, QUOTES, "2026-11-25T11:58:00Z"),
        ("carol", "gpu", "2026-11-25T11:30:00Z"),
    ]
    assert (warnings["as_of"], warnings["without_extension"]) == ("2026-11-25T12:00:00Z", 2)

    counts = section(page, "warning-counts", "</table>")
    rows = [row.split("</tr>")[0] for row in counts.split("<tr><td>")[1:]]
    assert rows[0] == 'warning events: a cull announced</td><td class="num">5</td><td class="num">1</td>'
    assert rows[2].endswith('<td class="num">2</td><td class="num">2</td>')  # culled
    assert rows[4].startswith("notices to servers that failed")
    assert rows[5].endswith('<td class="num">2</td><td class="num">0</td>')  # without the extension
    shown = section(page, "standing", "</table>")
    assert "121 stand after the pass of 2026-11-25 12:00:00 UTC: the 50 most recent, newest first." in shown
    assert shown.count("<tr><td>") == 50
    assert "user-048" in shown
    assert "user-049" not in shown
    more = section(page, "standing-more", "</p>")
    assert more == ">and 71 more, not listed (all are counted, and each user sees their own in their view)."
    assert 'id="keeps-more"' not in page, "both keeps are listed"
    # The names are text: escaped, never markup.
    first = shown.split("<tr><td>")[1]
    assert "&lt;img src=x onerror=alert(1)&gt;" in first
    assert "&lt;img src=x onerror=alert(3)&gt;" in first
    assert "<td>2026-11-25 12:10:00 UTC</td>" in first
    assert f"<code>{hostile.id}</code>" in first
    assert "at 2026-11-25 11:40:00 UTC, before this warning" in first
    assert "(no extension: hook and URL only)" in first
    assert '<span class="muted">no</span>' in shown.split("<tr><td>")[2]
    kept = section(page, "keeps", "</table>")
    assert "2 after the pass of 2026-11-25 12:00:00 UTC, newest first." in kept
    assert kept.index("&#34;&amp;&#39;") < kept.index("carol")
    assert "2 running servers have no notice API" in section(page, "without-extension", "</p>")
    assert "<img" not in page
    assert b"<" not in document_response.content.replace(b"\\u003c", b"")
    assert_clean(response)


async def test_before_a_pass_told_and_when_nothing_stands() -> None:
    cfg = Config(api_token=TOKEN, warn_before=900, warn_url="http://hooks.test/x", dry_run=True)
    client, flow, history = make_app(cfg=cfg)
    async with client:
        await login(client, flow, "admin")
        before = (await client.get(PAGE)).text
        history.observe(report(warnings_now=WarningsNow()))
        after = (await client.get(PAGE)).text
    for page in (before, after):
        assert "Dry run: nothing below was sent to anyone" in page
    assert "Known after the first pass." in section(before, "standing")
    assert "Known after the first pass." in section(before, "keeps")
    assert "None stands after the pass of 2026-11-25 12:00:00 UTC." in section(after, "standing")
    assert "None, after the pass of 2026-11-25 12:00:00 UTC." in section(after, "keeps")
    assert 'id="without-extension"' not in after


async def test_the_keeps_beyond_the_bound_are_counted_and_not_listed() -> None:
    cfg = Config(api_token=TOKEN, warn_before=900)
    client, flow, history = make_app(cfg=cfg)
    keeps = tuple(keep(f"keeper-{n:02d}", at=-n) for n in range(SHOWN + 5))
    history.observe(report(warnings_now=WarningsNow(kept=keeps)))
    async with client:
        await login(client, flow, "admin")
        page = (await client.get(PAGE)).text
    kept = section(page, "keeps", "</table>")
    assert "55 after the pass of 2026-11-25 12:00:00 UTC: the 50 most recent, newest first." in kept
    assert "keeper-49" in kept
    assert "keeper-50" not in kept
    assert section(page, "keeps-more", "</p>") == ">and 5 more, not listed."
    assert 'id="standing-more"' not in page


def test_a_pass_without_the_notifiers_word_leaves_what_stands_and_counts_on() -> None:
    """A report without ``warnings_now`` (an embedder's pass, no notifier) changes no list; counts add up."""
    history = History({"warn_before": 900}, size=3)
    now = WarningsNow(standing=(standing("ann"),), kept=(keep("bob"),), without_extension=1)
    history.observe(report(warnings_now=now, warning_events={"warning": 1}))
    later = report(started=NOW + 10 * M, warning_events={"cancelled": 1}, notices_without_extension=1)
    history.observe(later)
    tally = history.snapshot.warnings
    assert (tally.standing, tally.kept, tally.without_extension) == (now.standing, now.kept, 1)
    assert tally.as_of == NOW, "as of the pass that told"
    assert tally.since_start.events == {"warning": 1, "cancelled": 1, "culled": 0}
    assert tally.last_pass.events == {"warning": 0, "cancelled": 1, "culled": 0}
    assert tally.since_start.notices_without_extension == 1
    assert history.snapshot.warnings_of("ann").standing == {"": now.standing[0]}
    # A pass that tells again replaces both lists, and each user's own.
    history.observe(report(started=NOW + 20 * M, warnings_now=WarningsNow()))
    assert (history.snapshot.warnings.standing, history.snapshot.warnings.kept) == ((), ())
    assert history.snapshot.warnings_of("ann").standing == {}
    assert history.snapshot.warnings.as_of == NOW + 20 * M


def test_each_users_own_are_indexed_and_never_in_the_whole_hubs_document() -> None:
    """Beyond the 50 listed, every warning that stands is in its user's own index (the user view needs theirs
    however many others were warned since), and the index is not in ``api/status``."""
    old = standing("zed", "old", warned=-600)
    now = WarningsNow(standing=(old, *(standing(f"u{n}", warned=-n) for n in range(60))), kept=(keep("zed", "k"),))
    history = History({"warn_before": 900}, size=3)
    history.observe(report(warnings_now=now))
    snapshot = history.snapshot
    assert snapshot.warnings_of("zed").standing == {"old": old}
    assert snapshot.warnings_of("zed").kept == {"k": now.kept[0]}
    assert snapshot.warnings_of("u1").kept == {}
    assert snapshot.warnings_of("nobody").standing == {}
    assert "zed" in json.dumps(snapshot.to_json()), "listed among the keeps"
    assert '"old"' not in json.dumps(snapshot.to_json()), "not among the 50 most recent warnings"


# --- From the notifier, through the service ---------------------------------------------------------------------


@asynccontextmanager
async def passes_and_notifier(
    hub: FakeHub, cfg: Config, clock: Clock
) -> AsyncIterator[tuple[Callable[[datetime], Awaitable[PassReport]], Notifier]]:
    """``test_notify.culler``'s passes, and their notifier."""
    hub.clock = clock
    async with (
        hub.running(),
        open_hub_client(cfg, transport=hub.transport()) as client,
        open_server_credentials(client, cfg) as credentials,
        open_notifier(
            cfg, transport=httpx.MockTransport(Receiver()), hub=client, credentials=credentials, clock=clock
        ) as notifier,
    ):
        assert notifier is not None

        async def run(at: datetime) -> PassReport:
            clock.now = at
            credentials.begin_pass()
            report = await run_pass_with(client, cfg, now=at, notifier=notifier, credentials=credentials)
            await hub.wait_stops_done()
            await trio.sleep(5)  # deliveries run beside the passes
            return report

        yield run, notifier


async def test_the_book_gives_what_stands_and_the_keeps_as_a_pass_left_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Real passes on FakeHub: all three are warned at 12:00 for 12:15; plain's server has no extension; ann keeps
    hers at 12:08 and is spared at 12:15, when bob's and plain's are culled; two passes that no longer see plain's
    server forget it."""
    hub = make_hub(ann=idle(50), bob=idle(50), plain=idle(50, notices=False))
    async with passes_and_notifier(hub, config(), Clock()) as (run, notifier):
        await run(NOW)
        await run(NOW + 5 * M)
        warned = notifier.now()
        hub.clock.now = NOW + 8 * M  # type: ignore[attr-defined]
        hub.keep("ann")
        await run(NOW + 15 * M)
        spared = notifier.now()
        await run(NOW + 20 * M)
        missed_once = notifier.now()
        await run(NOW + 30 * M)
        later = notifier.now()
    started = NOW - 3 * H
    assert sorted((w.user, w.server, w.started, w.cull_at, w.reason, w.no_extension) for w in warned.standing) == [
        ("ann", "", started, NOW + 15 * M, "idle", False),
        ("bob", "", started, NOW + 15 * M, "idle", False),
        ("plain", "", started, NOW + 15 * M, "idle", True),
    ]
    assert {w.warned_at for w in warned.standing} == {NOW}
    assert {w.kept_at for w in warned.standing} == {None}
    assert (warned.kept, warned.without_extension) == ((), 1)
    # Culled warnings no longer stand (they wait, settled, for the servers to go); the keep is remembered.
    assert spared.standing == ()
    assert spared.kept == (KeptServer(user="ann", server="", started=started, kept_at=NOW + 8 * M),)
    # One complete pass that does not see plain's server may have missed it (the hub's pages shift under others'
    # starts and stops): the book still counts it; the second in a row forgets that it had no extension.
    assert (missed_once.kept, missed_once.without_extension) == (spared.kept, 1)
    assert (later.kept, later.without_extension) == (spared.kept, 0)


async def test_the_service_publishes_the_notifiers_warnings_in_the_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The real loop (``Culler``) on FakeHub, warnings to the servers alone: after each pass the snapshot holds
    the warnings that stand as the notifier has them; by the second at the latest, it knows plain's server has no
    extension (its notice's PUT runs beside the first pass)."""
    real = datetime.now(UTC)
    hub = FakeHub(token=TOKEN_FAULTS, clock=lambda: datetime.now(UTC), public_url=PUBLIC)
    for name, notices in (("ann", True), ("plain", False)):
        hub.add_user(name, servers={"": FakeServer("", real - 3 * H, real - 59 * M, notices=notices)})
    cfg = config(warn_url=None, cull_every=600)
    history = History(cfg.public_dict(), size=5)
    culler_ = Culler(cfg, transport=hub.transport(), reporters=[history.observe])
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler_.serve)
        await culler_.run_pass_now()
        first = history.snapshot.warnings
        await trio.testing.wait_all_tasks_blocked()
        await culler_.run_pass_now()
        second = history.snapshot
        culler_.stop(grace=0)
    assert sorted(w.user for w in first.standing) == ["ann", "plain"]
    assert first.standing_total == 2
    assert {w.user: w.no_extension for w in second.warnings.standing} == {"ann": False, "plain": True}
    assert second.warnings.without_extension == 1
    assert second.warnings.since_start.notices_without_extension == 1
    (ann,) = second.warnings_of("ann").standing.values()
    assert ann.cull_at >= ann.warned_at + timedelta(seconds=cfg.warn_before)
    assert hub.statistics().stop_requests == {}


# --- A user's own view ------------------------------------------------------------------------------------------

WARNED_CFG: dict[str, Any] = {"warn_before": 900, "warn_url": "https://hooks.example.org/culler"}


def everyones() -> WarningsNow:
    """alice's default server warned at 11:55 for 12:10, her gpu kept at 11:59:30 (after the hub's last activity
    of it, 11:59); bob's and the hostile user's servers warned and kept too."""
    return WarningsNow(
        standing=(
            standing("alice", "", warned=-5, cull=10, id="a1a1a1a1a1a1a1a1"),
            standing("bob", SERVER_MARKUP, started=NOW - H, id="b0b0b0b0b0b0b0b0"),
            standing(HOSTILE, QUOTES, started=NOW - H, id="c3c3c3c3c3c3c3c3"),
        ),
        kept=(
            KeptServer(user="alice", server="gpu", started=NOW - 3 * H, kept_at=NOW - timedelta(seconds=30)),
            keep("bob", SERVER_MARKUP, at=-7, started=NOW - H),
        ),
    )


async def test_a_user_sees_the_warning_that_stands_and_their_keep_and_nobody_elses() -> None:
    cfg = user_config(**WARNED_CFG)
    # bob's too on servers named as alice's, started when hers were: only the user's name tells them apart.
    theirs = everyones()
    now = attrs.evolve(
        theirs,
        standing=(*theirs.standing, standing("bob", "gpu", started=NOW - 3 * H, warned=-7, id="b2b2b2b2b2b2b2b2")),
        kept=(*theirs.kept, keep("bob", "", at=-7)),
    )
    history = warned_history(cfg, now)
    async with user_app(two_users_hub(), cfg, history) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    default, gpu = page.split('<section class="server">')[1:]
    # The time announced holds while the warning stands: not the forecast from the idle time (12:30).
    assert (
        "at <b>2026-11-25 12:10:00 UTC</b> (in 0:10:00), the time announced in the warning you were given, unless "
        "you use it before then. While a warning stands, the time it announced holds, not a forecast"
    ) in default
    assert "12:30:00" not in default.split("</dd>")[1]
    assert "<b>given at 2026-11-25 11:55:00 UTC</b>, for a cull at 2026-11-25 12:10:00 UTC (idleness; warning" in (
        default
    )
    assert "<code>a1a1a1a1a1a1a1a1</code>" in default
    assert "It was also sent to the server itself, where JupyterLab shows it, with Keep running." in default
    assert "Keep running</dt>" not in default
    # gpu: kept at 11:59:30, later than the hub's last activity (11:59): the keep is its latest use, as the pass
    # takes it, so the forecast is 12:59:30, not 12:59:00.
    assert "you asked to keep it at <b>2026-11-25 11:59:30 UTC</b>" in gpu
    assert "0:00:30, since 2026-11-25 11:59:30 UTC (when you asked to keep it)" in gpu
    assert "at <b>2026-11-25 12:59:30 UTC</b> (in 0:59:30) if nothing changes" in gpu
    assert "at 2026-11-25 12:44:30 UTC (0:15:00 before)" in gpu  # not warned yet: when it will be
    by_name = {server["server"]: server for server in document["servers"]}
    assert by_name[""]["cull_at"] == "2026-11-25T12:10:00Z"
    assert (by_name[""]["cull_at_from"], by_name[""]["warn_at"], by_name[""]["kept_at"]) == ("warning", None, None)
    assert by_name[""]["warning"] == {
        "id": "a1a1a1a1a1a1a1a1",
        "warned_at": "2026-11-25T11:55:00Z",
        "cull_at": "2026-11-25T12:10:00Z",
        "reason": "idle",
        "notice": "server",
    }
    assert by_name["gpu"]["warning"] is None
    assert (by_name["gpu"]["cull_at_from"], by_name["gpu"]["kept_at"]) == ("forecast", "2026-11-25T11:59:30Z")
    assert (by_name["gpu"]["cull_at"], by_name["gpu"]["warn_at"]) == ("2026-11-25T12:59:30Z", "2026-11-25T12:44:30Z")
    # Nothing of bob's or the hostile user's warnings and keeps.
    text = json.dumps(document)
    for other in ("b0b0b0", "b2b2b2", "c3c3c3", "alert(", "bob", "11:53:00"):
        assert other not in page, other
        assert other not in text, other


async def test_a_user_whose_server_has_no_extension_hears_where_the_warning_went() -> None:
    now = WarningsNow(standing=(standing("alice", no_extension=True),))
    cases: list[tuple[dict[str, Any], str, str]] = [
        (WARNED_CFG, "no_extension", "It reached only the hub operators' hook or webhook: this server does not run"),
        ({"warn_before": 900}, "no_extension", "It reached you only here: this server does not run"),
        (
            {**WARNED_CFG, "warn_servers": False},
            "off",
            "the culler does not deliver warnings to the servers themselves",
        ),
    ]
    for changes, notice, words in cases:
        cfg = user_config(**changes)
        async with user_app(two_users_hub(), cfg, warned_history(cfg, now)) as (client, flow, _history, _lookup):
            await login(client, flow, "alice")
            page = (await client.get(PAGE)).text
            document = (await client.get(f"{PAGE}api/status")).json()
        assert words in page, changes
        assert document["servers"][0]["warning"]["notice"] == notice


async def test_a_warning_whose_time_has_come_and_one_of_an_earlier_run() -> None:
    cfg = user_config(**WARNED_CFG)
    now = WarningsNow(
        standing=(
            standing("alice", "", warned=-20, cull=-1, reason="max_age"),
            # gpu was warned, then started again: that warning is not this server's.
            standing("alice", "gpu", started=NOW - 5 * H),
        )
    )
    async with user_app(two_users_hub(), cfg, warned_history(cfg, now)) as (client, flow, _history, _lookup):
        await login(client, flow, "alice")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    default, gpu = page.split('<section class="server">')[1:]
    assert (
        "<b>now</b>: the time announced in the warning you were given (2026-11-25 11:59:00 UTC) has come, and the "
        "culler's next pass stops it"
    ) in default
    assert "A server at its maximum age cannot be kept: save your work." in default
    assert "(max age; warning" in default
    assert "the time announced" not in gpu
    assert "at 2026-11-25 12:44:00 UTC (0:15:00 before)" in gpu
    assert [server["warning"] is None for server in document["servers"]] == [False, True]


async def test_a_hub_that_does_not_answer_leaves_the_warnings_the_culler_knows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = two_users_hub()

    async def hang(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/users/bob"):
            await trio.sleep_forever()
        return None

    hub.fault = hang
    cfg = user_config(**WARNED_CFG)
    async with user_app(hub, cfg, warned_history(cfg, everyones())) as (client, flow, _history, _lookup):
        await login(client, flow, "bob")
        page = (await client.get(PAGE)).text
        document = (await client.get(f"{PAGE}api/status")).json()
    assert document["hub"]["read"] is False
    (server,) = document["servers"]
    assert (server["server"], server["state"], server["cull_at"]) == (SERVER_MARKUP, None, "2026-11-25T12:10:00Z")
    assert (server["warning"]["id"], server["kept_at"]) == ("b0b0b0b0b0b0b0b0", "2026-11-25T11:53:00Z")
    assert "&lt;img src=x onerror=alert(3)&gt;" in page
    assert "<img" not in page
    for other in ("a1a1a1", "c3c3c3", "alice"):
        assert other not in page, other


async def test_a_user_named_with_markup_sees_their_warning_as_text() -> None:
    cfg = user_config(**WARNED_CFG)
    async with user_app(two_users_hub(), cfg, warned_history(cfg, everyones())) as (client, flow, _history, _lookup):
        await login(client, flow, HOSTILE)
        response = await client.get(PAGE)
        document = await client.get(f"{PAGE}api/status")
    assert "<code>c3c3c3c3c3c3c3c3</code>" in response.text
    assert "<img" not in response.text
    assert '<span class="server-name">&#34;&amp;&#39;</span>' in response.text
    assert document.json()["servers"][0]["warning"]["id"] == "c3c3c3c3c3c3c3c3"
    assert b"<" not in document.content.replace(b"\\u003c", b"")
    for other in ("a1a1a1", "b0b0b0"):
        assert other not in response.text
