"""One pass: the probe (version, token, scopes), then a pager streaming users to a pool of workers (the
pipeline is drawn in ``trio_culler/__init__.py``).

Every HTTP request, page or DELETE, borrows one token of the hub client's CapacityLimiter, so at most
``concurrency`` requests are in flight whatever the number of workers. Memory is bounded by the page being
handed over plus one user per worker (and the names of users acted on, for de-duplication), not by the number
of users on the hub.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import attrs
import trio
from trio_util import run_and_cancelling

from ._act import Outcome, decision_fields, delete_user, stop_server
from ._config import Config
from ._decide import Action, Decision, decide_server, decide_user, effective_idle_time, server_idle_time
from ._errors import HubAuthError, HubError, HubStatusError, HubTimeout, HubUnavailable, first_leaf
from ._forecast import Upcoming, cull_time
from ._groups import GroupCheck
from ._hub import HubClient
from ._inspect import InspectionFailed, ServerActivity, inspect_server, inspected_every_pass
from ._models import Server, User
from ._notify import CullWarning, Notifier
from ._outage import unreachable
from ._pager import stream_users
from ._policy import Policy
from ._probe import Probe, check_scopes, probe_hub
from ._report import MAX_UPCOMING_KEPT, PassRecorder, PassReport
from ._rules import MissingFieldError
from ._scopes import FIELDS, MissingScopes, missing_fields, needed_scopes
from ._time import as_number, iso_utc

__all__ = ["inspect_through", "run_pass_with"]

log = logging.getLogger("trio_culler")

_PROBE_BACKOFF_FIRST = 0.5
_PROBE_BACKOFF_CAP = 15.0
_PROBE_RETRY_CAP = 60.0

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
    group_check: GroupCheck | None = None,
) -> PassReport:
    """Run one pass against ``hub``. Never raises for hub trouble: the report says what happened.

    ``now`` is the instant idleness is measured from (default: the wall clock at the start of the pass).
    Setting ``draining`` stops fetching pages and taking new users; what is in flight finishes.
    ``notifier`` (a long-running culler's) warns users before their servers are culled.
    ``probe``: a probe made just before (the start-up one), instead of this pass's own.
    ``group_check``: says which group names in the rules the hub does not have, once the hub answered.
    """
    now = datetime.now(UTC) if now is None else now
    draining = trio.Event() if draining is None else draining
    if recorder is None:
        recorder = PassRecorder(started=now, started_at=trio.current_time(), dry_run=config.dry_run)
    if recorder.upcoming is None:
        # A hook's verdict on idleness cannot be foreseen; max-age still can.
        recorder.upcoming = Upcoming(
            config.policy,
            now,
            MAX_UPCOMING_KEPT,
            idle_foreseeable=config.cull_arbiter_hook is None,
            rules=config.rule_table,
            inspect_kernels=config.inspect_kernels,
        )
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
    missing, degraded = check_scopes(probe, config)
    for item in degraded:
        log.warning(
            "The culler's token lacks %s (%s: to %s): servers are decided from the hub's data alone",
            item.scope,
            item.feature,
            item.why,
            extra={"event": "scope_degraded"},
        )
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
                    triage=_triage(config, now, recorder),
                    vet=_vet_predicate(config),
                )
            )
            async with receive:
                for _ in range(workers):
                    nursery.start_soon(_worker, hub, config, now, receive.clone(), recorder, draining, notifier)
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
        recorder.warnings_sent, recorder.warnings_failed = notifier.end_pass(complete=complete)
        statistics = notifier.statistics()
        recorder.warnings_pending = statistics.queued + statistics.delivering
    return recorder.finish(trio.current_time())


@attrs.frozen
class Work:
    """A user handed to a worker, with the decision about each of its servers when the pager could make it."""

    user: User
    #: server name -> decision; None when a cull_arbiter_hook must be awaited first (the worker decides).
    decisions: Mapping[str, Decision] | None


def _triage(config: Config, now: datetime, recorder: PassRecorder) -> Callable[[User], Work | None]:
    """What the pager sends the workers: users with a server to cull or about to enter its warning window, or
    (where a rule lets users be deleted) none left to run; None for the others, which only get counted.

    Each server is decided here, once, under the rule that matches it, and the worker acts on that decision.
    Every user goes to the workers when a cull_arbiter_hook must judge each server (it is awaited, so only a
    worker can ask it), or when DEBUG logging wants the workers to explain every server they keep."""
    table = config.rule_table
    hook = config.cull_arbiter_hook is not None
    explain = log.isEnabledFor(logging.DEBUG)
    warn_before = timedelta(seconds=config.warn_before)
    inspect_kernels = config.inspect_kernels

    def entering_warning(server: Server, policy: Policy) -> bool:
        # A server about to enter its warning window must reach a worker too, which warns its user.
        if not warn_before:
            return False
        due = cull_time(server, policy=policy)
        return due is not None and due[0] - now <= warn_before

    def triage(user: User) -> Work | None:
        if hook:
            return Work(user, None)
        decisions: dict[str, Decision] = {}
        wanted = explain
        for name, server in user.servers.items():
            policy = table.for_server(user, server).policy
            decision = decisions[name] = decide_server(server, policy=policy, now=now)
            wanted = (
                wanted
                or decision.acts
                or entering_warning(server, policy)
                or (inspect_kernels and inspected_every_pass(server, policy))
            )
        if wanted or (not decisions and table.for_user(user).policy.cull_users):
            return Work(user, decisions)
        # Kept whole: its servers count as kept, by their codes, once the pager counts the user.
        recorder.triaged(decisions.values())
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
    attempt = 0
    while True:
        try:
            return await probe_hub(hub, retries=0)
        except HubError as error:
            if not error.transient or attempt >= config.max_retries:
                raise
            delay = _probe_delay(attempt, error)
            attempt += 1
            # DEBUG: a pass the hub does not answer says so in one line, its summary (_outage).
            log.debug(
                "Hub not ready at %s: %s; retrying in %g s (%d of %d)",
                config.url,
                error,
                delay,
                attempt,
                config.max_retries,
                extra={"event": "probe_retry", "error": error.kind},
            )
        await trio.sleep(delay)


def _probe_delay(attempt: int, error: HubError) -> float:
    # One request, not a herd of workers: the client's doubling without its jitter, so the log line is exact.
    if isinstance(error, HubStatusError) and error.retry_after is not None:
        return min(error.retry_after, _PROBE_RETRY_CAP)
    return float(min(_PROBE_BACKOFF_CAP, _PROBE_BACKOFF_FIRST * 2**attempt))


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


async def _worker(
    hub: HubClient,
    config: Config,
    now: datetime,
    receive: trio.MemoryReceiveChannel[Work],
    recorder: PassRecorder,
    draining: trio.Event,
    notifier: Notifier | None,
) -> None:
    async with receive:
        async for work in receive:
            if draining.is_set():
                # Handed over just before the drain began: a stop is a stop, so no new request now.
                continue
            user = work.user
            try:
                await _handle_user(hub, config, now, work, recorder, notifier)
            except (HubAuthError, trio.Cancelled):
                raise
            except Exception as error:
                # A bug must not cost the other users their pass; it is logged with its traceback.
                recorder.error(user.name, error)
                log.exception("Unexpected error handling user %s", user.name, extra={"user": user.name})


async def _handle_user(
    hub: HubClient, config: Config, now: datetime, work: Work, recorder: PassRecorder, notifier: Notifier | None
) -> None:
    user = work.user
    # The pager vetted the whole page already; a worker still never decides with a rule it cannot evaluate.
    config.rule_table.check_visible(user)
    servers = list(user.servers.values())
    outcomes: list[Outcome] = []

    async def one(server: Server) -> None:
        decided = None if work.decisions is None else work.decisions[server.name]
        outcomes.append(await _handle_server(hub, config, now, user, server, decided, recorder, notifier))

    if len(servers) == 1:
        await one(servers[0])
    elif servers:
        # A user's servers are independent: stop them together, as the original does; the limiter still
        # bounds the requests.
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(one, server)
    table = config.rule_table
    if not table.may_cull_users:
        return
    servers_left = sum(1 for outcome in outcomes if not outcome.server_down)
    decision = decide_user(user, policy=table.for_user(user).policy, now=now, servers_left=servers_left)
    if decision.action is Action.DELETE_USER:
        await delete_user(hub, user.name, decision, dry_run=config.dry_run, recorder=recorder)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("Not culling user %s (%s)", user.name, decision.reason, extra={"user": user.name})


async def _handle_server(
    hub: HubClient,
    config: Config,
    now: datetime,
    user: User,
    server: Server,
    decided: Decision | None,
    recorder: PassRecorder,
    notifier: Notifier | None,
) -> Outcome:
    # The rule is matched again (cheap), not decided again: the pager's decision used this same rule.
    matched = config.rule_table.for_server(user, server)
    policy = matched.policy
    label = f"{user.name}/{server.name}" if server.name else user.name
    decision = decided
    # With --kernel-activity-only the hook judges the kernels' idle time, so it is asked once, after the
    # inspection: asking it first about the hub's idle time too would call an operator's hook (which may page
    # someone, or cost a request of its own) twice for one server, the first time about the wrong clock.
    hook_after_inspection = decision is None and config.inspect_kernels and policy.kernel_activity_only
    if decision is None and not hook_after_inspection:
        decision = await _decide_with_hook(config, now, user, server, policy, recorder)
        if decision is None:
            return Outcome.FAILED
    activity: ServerActivity | None = None
    if config.inspect_kernels:
        # Whether the kernels could change anything is judged from the hub's data (the hook's verdict aside).
        hub_only = decision if decision is not None else decide_server(server, policy=policy, now=now)
        worth = _worth_inspecting(hub_only, policy)
        activity = await _inspect(hub, config, user.name, label, server, recorder) if worth else None
        if hook_after_inspection:
            # The kernels' idle time when they could be read, else the hub's (as without --inspect-kernels).
            decision = await _decide_with_hook(config, now, user, server, policy, recorder, activity)
            if decision is None:
                return Outcome.FAILED
        elif activity is not None:
            # Measured from the hub, the hook (if any) already said "idle" to reach this point (a server it
            # spared is not worth inspecting): its verdict stands, only the kernels can still spare it.
            verdict = True if config.cull_arbiter_hook is not None else None
            decision = decide_server(server, policy=policy, now=now, arbiter_says_cull=verdict, activity=activity)
    assert decision is not None  # decided, or decided just above (a hook that failed has returned)
    inspected = config.inspect_kernels and (policy.kernel_activity_only or activity is not None)
    if inspected and recorder.upcoming is not None and not decision.acts:
        # What the pager could not forecast: see _forecast.Upcoming.observe_inspected.
        recorder.upcoming.observe_inspected(user, server, matched, activity)
    # A busy kernel keeps its server whatever the hub's clock says: no warning of a cull that is not coming.
    warn = notifier is not None and not policy.exempt and decision.rule != "kernel_busy"
    if warn and notifier is not None and _warned_first(notifier, user, server, policy, decision, now):
        recorder.kept("warned")
        return Outcome.KEPT
    if not decision.acts:
        recorder.kept(decision.rule)
        # A server spared by a busy kernel is worth an INFO line: the hub's data would have culled it, and that
        # is what --inspect-kernels is for. Every other kept server is DEBUG, as before.
        level = logging.INFO if decision.rule == "kernel_busy" else logging.DEBUG
        if log.isEnabledFor(level):
            fields = {**decision_fields(decision, user.name, server.name), "matched_rule": matched.index}
            log.log(level, "Not culling server %s (%s; %s)", label, decision.reason, matched.label, extra=fields)
        return Outcome.KEPT
    return await stop_server(
        hub,
        user.name,
        server.name,
        decision,
        dry_run=config.dry_run,
        recorder=recorder,
        matched=matched,
        user_culling=config.rule_table.for_user(user).policy.cull_users,
    )


async def _decide_with_hook(
    config: Config,
    now: datetime,
    user: User,
    server: Server,
    policy: Policy,
    recorder: PassRecorder,
    activity: ServerActivity | None = None,
) -> Decision | None:
    """decide_server() with the cull_arbiter_hook's verdict; None (keep the server) when the hook failed. The
    hook judges the idle time the rules use (the kernels' with --kernel-activity-only and ``activity``)."""
    verdict = None
    hook = config.cull_arbiter_hook
    if hook is not None and not server.pending and server.is_ready and not policy.exempt:
        inactive, _age = effective_idle_time(server, now, policy=policy, activity=activity)
        if inactive is not None:
            limit = as_number(policy.timeout.total_seconds())
            try:
                if config.arbiter_takes_user:
                    result = hook(inactive, limit, server.model, user.model)
                else:
                    result = hook(inactive=inactive, inactive_limit=limit, server=server.model)
                verdict = bool(await result) if inspect.isawaitable(result) else bool(result)
            except Exception as error:
                # A hook that fails cannot vouch for culling: keep the server, say why.
                recorder.error(f"{user.name}/{server.name}", error)
                log.exception("cull_arbiter_hook failed for %s; not culling it", user.name)
                return None
    return decide_server(server, policy=policy, now=now, arbiter_says_cull=verdict, activity=activity)


def _worth_inspecting(decision: Decision, policy: Policy) -> bool:
    """Whether the server's own kernels could change the hub-only ``decision``. Max-age culls whatever the
    kernels do; a server the hub's data keeps is culled only by --kernel-activity-only."""
    max_age = policy.max_age
    if max_age is not None and decision.age is not None and decision.age >= max_age:
        return False
    if decision.rule == "idle":
        return True
    return policy.kernel_activity_only and decision.rule == "active"


def _warned_first(
    notifier: Notifier, user: User, server: Server, policy: Policy, decision: Decision, now: datetime
) -> bool:
    """Warn the user of a server entering its warning window; True when a cull must wait for the notice the
    warning promised (the server is kept this pass)."""
    due = cull_time(server, policy=policy)
    if due is None and not decision.acts:
        return False
    # An arbiter hook may cull a server with no cull time by the timeout: then it is due now.
    at, rule = (due[0], due[1]) if due is not None else (now, decision.rule)
    # An inspected server's idle time is the one its rule used (its kernels', with --kernel-activity-only).
    inactive = decision.inactive if decision.inspected else server_idle_time(server, now)[0]
    warning = CullWarning(
        user=user.name,
        server=server.name,
        cull_at=at,
        reason=decision.rule if decision.acts else rule,
        idle_seconds=None if inactive is None else inactive.total_seconds(),
        user_model=user.model,
        server_model=server.model,
    )
    wait = notifier.hold(warning, due=at, now=now, culling=decision.acts)
    if wait is None:
        return False
    label = f"{user.name}/{server.name}" if server.name else user.name
    log.info(
        "Not culling server %s before %s: its user was warned",
        label,
        iso_utc(wait),
        extra={"user": user.name, "server": server.name, "event": "cull_deferred"},
    )
    return True


async def inspect_through(hub: HubClient, server: Server, config: Config) -> ServerActivity:
    """Ask ``server`` about its kernels (and terminals, with --kernel-activity-only) through ``hub``'s client:
    its limiter, deadline, retries and redaction. Raises InspectionFailed, with the client's errors as kinds."""

    async def fetch(url: str) -> tuple[int, bytes]:
        try:
            response = await hub.get_elsewhere("inspect", url)
        except HubAuthError as error:  # pragma: no cover - get_elsewhere returns 401/403 as statuses
            raise InspectionFailed("forbidden", str(error)) from None
        except HubTimeout as error:
            raise InspectionFailed("timeout", str(error)) from None
        except HubUnavailable as error:
            raise InspectionFailed("unreachable", str(error)) from None
        except HubStatusError as error:
            raise InspectionFailed("status", str(error)) from None
        except HubError as error:
            raise InspectionFailed("unreadable", str(error)) from None
        return response.status_code, response.content

    return await inspect_server(
        server, public_url=config.public_url, fetch=fetch, terminals=config.kernel_activity_only
    )


async def _inspect(
    hub: HubClient, config: Config, server_user: str, label: str, server: Server, recorder: PassRecorder
) -> ServerActivity | None:
    """What the server says it is doing, or None (logged once per pass per kind, counted) when it cannot say."""

    try:
        activity = await inspect_through(hub, server, config)
    except InspectionFailed as failed:
        if recorder.inspection_failed(failed.kind):
            log.warning(
                "Cannot inspect server %s (%s); deciding it and any other server failing this way in this pass "
                "from the hub's data",
                label,
                failed,
                extra={"user": server_user, "server": server.name, "inspection_failure": failed.kind},
            )
        else:
            log.debug("Cannot inspect server %s (%s)", label, failed)
        return None
    recorder.servers_inspected += 1
    return activity
