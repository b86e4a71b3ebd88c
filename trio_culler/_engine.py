"""One pass: the probe (version, token, scopes), then a pager streaming users to a pool of workers (the
whole pipeline is drawn in ``trio_culler/__init__.py``).

::

    pager --triage: Judge.prejudge (pure)--> zero-buffer channel (back-pressure) --> N workers
    worker: Judge.judge (hook, inspection) --> warn --> re-read if the listing is old --> act (DELETE) --> recorder

Every HTTP request, page or DELETE, borrows one token of the hub client's CapacityLimiter, so at most
``concurrency`` requests are in flight whatever the number of workers. Memory is bounded by the page being
handed over plus one user per worker (and the names of users acted on, for de-duplication), not by the number
of users on the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import trio
from trio_util import run_and_cancelling

from ._config import Config
from ._credentials import ServerCredentials, open_server_credentials
from ._errors import HubAuthError, HubError, HubStatusError, HubTimeout, HubUnavailable, caused_by, first_leaf
from ._forecast import Upcoming
from ._groups import GroupCheck
from ._hub import HubClient
from ._inspect import MAX_ANSWER_BYTES, InspectionFailed, ServerActivity, inspect_server, server_base_url
from ._judge import Inspect, Judge, Verdict
from ._models import Server, User
from ._notice import NoticeClient
from ._notify import Notifier
from ._outage import unreachable
from ._pager import stream_users
from ._probe import Probe, check_scopes, probe_hub
from ._redact import make_redactor
from ._report import MAX_UPCOMING_KEPT, PassRecorder, PassReport
from ._retry import Backoff, retry
from ._rules import MissingFieldError
from ._scopes import FIELDS, MissingScopes, holds, missing_fields, needed_scopes, risky_scopes
from ._work import UserWork, Work

__all__ = ["inspect_through", "inspector", "run_pass_with"]

log = logging.getLogger("trio_culler")

#: One request, not a herd of workers: the hub client's doubling without its jitter, so the log line is exact.
PROBE_BACKOFF = Backoff(first=0.5, cap=15.0, asked_cap=60.0)

#: Workers when ``--concurrency=0`` (no bound on requests): enough to keep a hub busy without a task per user.
UNBOUNDED_WORKERS = 64


async def run_pass_with(
    hub: HubClient,
    config: Config,
    *,
    now: datetime | None = None,
    draining: trio.Event | None = None,
    recorder: PassRecorder | None = None,
    notifier: Notifier | None = None,
    probe: Probe | None = None,
    credentials: ServerCredentials | None = None,
    group_check: GroupCheck | None = None,
) -> PassReport:
    """Run one pass against ``hub``. Never raises for hub trouble: the report says what happened.

    ``now`` is the instant idleness is measured from (default: the wall clock at the start of the pass).
    Setting ``draining`` stops fetching pages and taking new users; what is in flight finishes.
    ``notifier`` (a long-running culler's) warns users before their servers are culled.
    ``probe``: a probe made just before (the start-up one), instead of this pass's own.
    ``credentials``: the per-server tokens a long-running culler keeps between passes; without, this pass
    mints its own and revokes them when it ends.
    ``group_check``: says which group names in the rules the hub does not have, once the hub answered.
    """
    own = credentials is None
    tokens = open_server_credentials(hub, config) if credentials is None else nullcontext(credentials)
    async with tokens as credentials:
        if own:
            credentials.begin_pass()
        now = datetime.now(UTC) if now is None else now
        draining = trio.Event() if draining is None else draining
        if recorder is None:
            recorder = PassRecorder(started=now, started_at=trio.current_time(), dry_run=config.dry_run)
        if recorder.upcoming is None:
            recorder.upcoming = Upcoming(now, MAX_UPCOMING_KEPT)
        if probe is None:
            try:
                probe = await _probe_unless_draining(hub, config, draining)
            except HubError as error:
                recorder.error("probe", error)
                # Not logged here: the pass summary carries `aborted`, and an operator should read it once per pass.
                recorder.aborted = _abort_message(error, config)
                return _finish(recorder, notifier)
            if probe is None:
                recorder.interrupted = True
                return _finish(recorder, notifier)
        info = probe.info
        recorder.hub_up = True
        recorder.hub_version = info.version
        missing = check_scopes(probe, config)
        for scope, why in risky_scopes(probe.scopes or ()):
            # Every pass, as long as the role holds it: a token that opens every user's server is worth a reminder.
            log.warning("The culler's role holds %s: remove it (%s)", scope, why, extra={"event": "risky_scope"})
        if missing is not None:
            # The pass would lie ("0 servers", "active"): it is not run; every pass checks again.
            recorder.error("scopes", missing)
            recorder.aborted = _abort_message(missing, config)
            return _finish(recorder, notifier)
        if group_check is not None:
            await group_check.run(hub)
        if not info.has_pagination:
            log.debug("Hub %s has no pagination: reading the user list in one request", info.version)
        workers = config.concurrency or UNBOUNDED_WORKERS
        inspect = inspector(hub, config, credentials)
        read_keep = None
        if notifier is not None:
            notices = _notices_allowed(probe, config, notifier)
            notifier.begin_pass(notices=notices)
            # The culler's own requests to a warned server are not its user's activity (see _notify).
            inspect = notifier.recording(inspect)
            if notices:
                # On the notifier's clock, as its other records of the culler's own requests are.
                read_keep = NoticeClient(
                    hub, config, credentials, own_request=notifier.own_request, clock=notifier.clock
                ).read_keep
        judge = Judge.for_config(config, inspect, read_keep=read_keep)
        work = UserWork(hub, config, judge, now, recorder, notifier, credentials)
        send, receive = trio.open_memory_channel[Work](0)
        try:
            async with (
                run_and_cancelling(_report_progress, recorder, config.progress_interval),
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(
                    lambda: stream_users(
                        hub,
                        info,
                        cull_users=config.rule_table.may_cull_users,
                        page_size=config.api_page_size,
                        send=send,
                        recorder=recorder,
                        draining=draining,
                        triage=_triage(config, judge, now, work),
                        vet=_vet_predicate(config),
                    )
                )
                async with receive:
                    for _ in range(workers):
                        nursery.start_soon(_worker, work, receive.clone(), draining)
        except* HubAuthError as group:
            auth_error = first_leaf(group)
            assert isinstance(auth_error, HubAuthError)
            if isinstance(auth_error, MissingFieldError):
                recorder.error("scopes", auth_error)
                recorder.aborted = str(auth_error)
            else:
                recorder.error("scopes" if isinstance(auth_error, MissingScopes) else "authorization", auth_error)
                recorder.aborted = _abort_message(auth_error, config)
        if draining.is_set():
            recorder.interrupted = True
        return _finish(recorder, notifier)


def _finish(recorder: PassRecorder, notifier: Notifier | None) -> PassReport:
    if notifier is not None:
        # Only a pass that saw every user may forget the warned servers it did not see.
        complete = recorder.aborted is None and not recorder.interrupted and not recorder.pages_failed
        counts = notifier.end_pass(complete=complete)
        recorder.warnings_sent, recorder.warnings_failed = counts.sent, counts.failed
        recorder.warning_events.update(counts.events)
        recorder.notices_delivered = counts.notices_delivered
        recorder.notices_failed = counts.notices_failed
        recorder.notices_without_extension = counts.notices_without_extension
        recorder.keeps = counts.keeps
        statistics = notifier.statistics()
        recorder.warnings_pending = statistics.queued + statistics.delivering
    return recorder.finish(trio.current_time())


def _notices_allowed(probe: Probe, config: Config, notifier: Notifier) -> bool:
    """Whether this pass may deliver notices to servers: their credentials need ``tokens``. Where warnings also
    go to a hook or a URL, a role without it costs the notices alone, said once per pass (``tokens`` is
    blocking only for a culler whose sole channel the servers are: ``_scopes.NEEDS``)."""
    if not config.warn_servers or probe.scopes is None or holds(probe.scopes, "tokens"):
        return config.warn_servers
    log.warning(
        "The culler's token lacks tokens: warnings are not delivered to the servers themselves in this pass "
        "(their users' keeps are not read either); add tokens to the culler's role, or pass --no-warn-servers",
        extra={"event": "notices_skipped"},
    )
    return False


def _triage(config: Config, judge: Judge, now: datetime, work: UserWork) -> Callable[[User, float, bool], Work | None]:
    """What the pager sends the workers: users with a server to cull, to judge further (a hook to ask, a server
    to inspect) or about to enter its warning window, or (where a rule lets users be deleted) none left to run;
    None for the others, which only get counted.

    Each server is judged here, purely, under the rule that matches it (:meth:`Judge.prejudge`, the first step
    of the judgment a worker would make), and its forecast counted when this is the user's first reading in
    the pass; the worker acts on that verdict. Every user goes to the workers when DEBUG logging wants them to
    explain every server they keep."""
    table = config.rule_table
    explain = log.isEnabledFor(logging.DEBUG)
    # A server due within one pass interval of its warning window is warned now: the next pass would be late.
    warn_until = now + timedelta(seconds=config.warn_before + config.interval) if config.warn_before else None
    upcoming = work.recorder.upcoming
    notifier = work.notifier

    def triage(user: User, listed_at: float, first_reading: bool) -> Work | None:
        verdicts: dict[str, Verdict | None] = {}
        wanted = explain
        for name, server in user.servers.items():
            if notifier is not None and notifier.known(user.name, name):
                # Warned, or kept by its user: only a worker knows how to judge it (see _notify).
                verdicts[name] = None
                wanted = True
                continue
            matched = table.for_server(user, server)
            verdict = verdicts[name] = judge.prejudge(server, matched.policy, now)
            if verdict is None or verdict.decision.acts:
                wanted = True
                continue
            due = verdict.due
            if due is None:
                continue
            # A server about to enter its warning window must reach a worker too, which warns its user (and
            # foresees its cull at the time the warning announces).
            warned = warn_until is not None and due.at <= warn_until
            wanted = wanted or warned
            if first_reading and upcoming is not None and not warned:
                upcoming.add(user.name, name, due, None if matched.rule is None else matched.label)
        if wanted or (not verdicts and table.for_user(user).policy.cull_users):
            return Work(user, verdicts, listed_at)
        # Kept whole: its servers count as kept, by their codes, once the pager counts the user.
        work.recorder.triaged(verdict.decision for verdict in verdicts.values() if verdict is not None)
        return None

    return triage


def _vet_predicate(config: Config) -> Callable[[User], None]:
    """What every user is checked with before any user of its page is handed to a worker. A model that lacks a
    field a decision needs means the token lacks a scope (the hub hides what a token may not read): MissingScopes.
    A model without a field some rule matches on: MissingFieldError. Either ends the pass before anything is
    culled on what the token could not see."""
    needed = frozenset(field.key for field in FIELDS if field.applies(config))
    table = config.rule_table
    rules_check = table.check_visible if table.needed_fields else None

    def vet(user: User) -> None:
        if user.hidden and not user.hidden.isdisjoint(needed):
            raise MissingScopes(missing_fields(user.hidden, config))
        if rules_check is not None:
            rules_check(user)

    return vet


async def _probe_unless_draining(hub: HubClient, config: Config, draining: trio.Event) -> Probe | None:
    """This pass's probe, or None if a stop came first: nothing is in flight then that deserves a grace period."""
    result: Probe | None = None
    failure: HubError | None = None
    async with trio.open_nursery() as nursery:

        async def cancel_on_drain() -> None:
            await draining.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_drain)
        try:
            result = await _probe_with_retries(hub, config)
        except HubError as error:
            failure = error  # raised below as itself, not wrapped in the nursery's ExceptionGroup
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _probe_with_retries(hub: HubClient, config: Config) -> Probe:
    """The probe, retried here rather than inside the hub client so that each failure is logged at once with
    its reason and the true wait (``--once`` against a hub that is down says so in its first second)."""

    def announce(error: HubError, wait: float, retry_number: int) -> None:
        # DEBUG: a pass the hub does not answer says so in one line, its summary (_outage).
        log.debug(
            "Hub not ready at %s: %s; retrying in %g s (%d of %d)",
            config.url,
            error,
            wait,
            retry_number,
            config.max_retries,
            extra={"event": "probe_retry", "error": error.kind},
        )

    return await retry(
        lambda: probe_hub(hub, retries=0),
        failure=HubError,
        backoff=PROBE_BACKOFF,
        retries=config.max_retries,
        retryable=lambda error: error.transient,
        asked=lambda error: error.retry_after if isinstance(error, HubStatusError) else None,
        before_wait=announce,
    )


def _abort_message(error: HubError, config: Config) -> str:
    if isinstance(error, MissingScopes):
        return str(error)
    if isinstance(error, HubAuthError):
        scopes = [need.scope for need in needed_scopes(config)]
        return (
            f"the hub refused the culler's token ({error}). Check JUPYTERHUB_API_TOKEN and that the culler's "
            f"role has the scopes {', '.join(scopes)}"
        )
    return unreachable(error, config.url, attempts=config.max_retries + 1 if error.transient else 1)


async def _report_progress(recorder: PassRecorder, interval: float) -> None:
    # Not trio_util.periodic(): that one yields at once, and the first line is due after one interval.
    while True:
        await trio.sleep(interval)
        log.info(recorder.progress_line(), extra={"event": "progress", "users_seen": recorder.users_seen})


async def _worker(work: UserWork, receive: trio.MemoryReceiveChannel[Work], draining: trio.Event) -> None:
    async with receive:
        async for item in receive:
            if draining.is_set():
                # Handed over just before the drain began: a stop is a stop, so no new request now.
                continue
            try:
                await work.handle(item)
            except (HubAuthError, trio.Cancelled):
                raise
            except Exception as error:
                # A bug must not cost the other users their pass; it is logged with its traceback.
                name = item.user.name
                work.recorder.error(name, error)
                log.exception("Unexpected error handling user %s", name, extra={"user": name})


#: What the proxy answers when nothing serves behind a route (502, 503, after the client's retries), and the
#: hub when the proxy has no route and sends the request to it (424, "not running"; 503 with
#: use_legacy_stopped_server_status_code): the server is not serving, as for a refused connection.
NOT_SERVING_STATUSES = frozenset({424, 502, 503})


async def inspect_through(hub: HubClient, server: Server, config: Config, *, token: str) -> ServerActivity:
    """Ask ``server`` about its kernels (and terminals, with --kernel-activity-only) through ``hub``'s request
    engine (its limiter, a deadline of its own, retries and redaction), showing it ``token``, its user's own
    credential for it, and never the culler's. Raises InspectionFailed, with the engine's errors as kinds:
    ``unreachable`` only when nothing serves there (see ``_judge.DECIDED_FROM_HUB_DATA``)."""
    if server_base_url(server, config.public_url) is None:
        raise InspectionFailed("no_url", "no full_url from the hub and no --public-url: no address for the server")

    def redact(text: str) -> str:
        # What the server answers may quote what it was sent: its own token is the one it could echo. Built only
        # for a message (a new token is a new pattern to compile).
        return make_redactor([token])(text)

    async def fetch(url: str) -> tuple[int, bytes]:
        try:
            status, body = await hub.get_elsewhere("inspect", url, credential=token, max_body=MAX_ANSWER_BYTES)
        except HubAuthError as error:  # pragma: no cover - get_elsewhere returns 401/403 as statuses
            raise InspectionFailed("forbidden", redact(str(error))) from None
        except HubTimeout as error:
            raise InspectionFailed("timeout", redact(str(error))) from None
        except HubUnavailable as error:
            # A connection refused is a dead server; a connection that broke mid-answer, a TLS or a name failure
            # (the culler's configuration) are no answer, and no reason to cull.
            kind = "unreachable" if caused_by(error, ConnectionRefusedError) else "unreadable"
            raise InspectionFailed(kind, redact(str(error))) from None
        except HubStatusError as error:
            kind = "unreachable" if error.status in NOT_SERVING_STATUSES else "status"
            raise InspectionFailed(kind, redact(str(error))) from None
        except HubError as error:
            # An answer over its cap, compressed, or otherwise unreadable: what the server said cannot be read.
            raise InspectionFailed("unreadable", redact(str(error))) from None
        if status in NOT_SERVING_STATUSES:
            raise InspectionFailed("unreachable", f"GET {url.split('?', 1)[0]}: {status}, not running")
        return status, body

    # The server's own last activity (api/status) is read on the hub's clock's terms: not with
    # --kernel-activity-only, whose clock is the kernels'.
    only_kernels = config.kernel_activity_only
    return await inspect_server(
        server, public_url=config.public_url, fetch=fetch, terminals=only_kernels, status=not only_kernels
    )


def inspector(hub: HubClient, config: Config, credentials: ServerCredentials) -> Inspect:
    """How the judge asks a user's server about its kernels: with a token minted for that server's own user
    (``credentials``), never the culler's. The one place a pass and --explain both take it from."""

    async def inspect(user: User, server: Server) -> ServerActivity:
        if server_base_url(server, config.public_url) is None:
            # No address: nothing to mint a token for.
            raise InspectionFailed("no_url", "no full_url from the hub and no --public-url: no address for the server")
        # CredentialUnavailable (an InspectionFailed) when no token of the user's can be had: the judge keeps
        # the server, never culls it on a failure to look.
        token = await credentials.for_server(user.name, server.name)
        try:
            return await inspect_through(hub, server, config, token=token)
        except InspectionFailed as failed:
            if failed.kind != "forbidden":
                raise
        # The token is its user's, on their token page: revoked there (or by an admin), it would keep the server
        # from being judged until its renewal, passes later, and a user revoking each new one would keep an idle
        # server forever. One new token, once; a server that refuses that one too is kept like any refusal.
        token = await credentials.for_server(user.name, server.name, refused=token)
        return await inspect_through(hub, server, config, token=token)

    return inspect
