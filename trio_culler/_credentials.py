"""Per-server credentials: to ask a user's server about its kernels, the culler shows it a token owned by that
server's user and scoped to that server alone, never its own.

A single-user server runs its user's code. A user who replaces jupyter-server with a listener of their own
receives whatever the culler sends it; the culler's own token (which lists every user and stops every server)
would let that user act as anyone. So the hub mints, for each server the culler inspects, a token of its user's
(``POST {api}/users/{name}/tokens``, scope ``access:servers!server={name}/{server}``): the most a user can do
with it is what they could already do, reach their own server. The culler's role needs ``tokens`` for that, and
no ``access:servers`` at all.

::

    for_server(user, server) -> a held token, while it has more than ``renew_before`` seconds to live
                              -> else mint one (one mint per server at a time; the others wait for it)
      ..., refused=token     -> the server refused that token (its user revoked it): revoke it, mint another
    release(user, server)    -> revoke it now: its server was culled
    end_pass(complete=True)  -> revoke every token the pass did not use (its server is gone, or no longer
                                asked): only a pass that saw every user may conclude that
    open_server_credentials  -> revokes every token left on the way out, within REVOKE_ON_STOP seconds even
                                when the hub is slow or down (what is left expires on its own)

Lifetime: a few passes (:data:`PASSES_PER_TOKEN` intervals plus the renewal margin), so a server that stays a
candidate is minted for once every few passes, within [:data:`MIN_LIFETIME`, :data:`MAX_LIFETIME`]. It is not an
option: it only trades hub requests for how long a token the culler failed to revoke stays valid, and a token
that can only reach its own user's server is worth nothing to anyone else. A hub that caps lifetimes
(``JupyterHub.token_expires_in_max_seconds``) answers a longer request with 400: the culler then asks once for
the hub's own maximum (``expires_in: null``), reads the lifetime granted from the answer (``expires_at -
created``), says so in one WARNING line and mints for that long from then on. A hub that answers ``null`` with a
token that never expires has no maximum, so its 400 was about the scopes: that token is revoked at once.

Tokens live in memory only (at most :data:`MAX_TOKENS`, least recently used first out, revoked) and are never
logged; what a server answers could quote the one token it was shown, and ``_engine.inspect_through`` redacts
that token from every message it makes of the answer.
Every request goes through the hub client: its limiter, deadline, retries and error mapping.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs
import trio

from ._config import Config
from ._errors import HubAuthError, HubError, HubStatusError, HubTimeout, HubUnavailable
from ._hub import HubClient, MintedToken
from ._inspect import InspectionFailed

__all__ = [
    "MAX_LIFETIME",
    "MAX_TOKENS",
    "MIN_LIFETIME",
    "PASSES_PER_TOKEN",
    "REVOKE_ON_STOP",
    "CredentialStatistics",
    "CredentialUnavailable",
    "ServerCredentials",
    "default_lifetime",
    "open_server_credentials",
    "server_scope",
]

log = logging.getLogger("trio_culler")

#: Passes a token serves (at ``--cull-every``) before it is renewed.
PASSES_PER_TOKEN = 3
#: Bounds of the lifetime asked for, in seconds.
MIN_LIFETIME = 300
MAX_LIFETIME = 86400
#: Tokens held at once; beyond it the least recently used is revoked (a hub with more servers inspected per
#: pass mints the surplus again each pass). About half a kilobyte each.
MAX_TOKENS = 20_000
#: Seconds the culler spends revoking its tokens when it stops; the hub may be slow or already gone.
REVOKE_ON_STOP = 5.0
#: What the hub shows the user beside the token (their token list, its audit log).
NOTE = "trio-culler: read this server's kernels and terminals (--inspect-kernels); revoked when done"


def server_scope(user: str, server: str) -> str:
    """The one scope a server's credential carries: access to that server (``""``: the default one)."""
    return f"access:servers!server={user}/{server}"


def default_lifetime(config: Config) -> tuple[int, float]:
    """``(lifetime, renew_before)`` in seconds for ``config``: a token is used until it has less than
    ``renew_before`` left, which covers one inspection (two requests, each with its deadline) and a margin."""
    renew_before = 2 * config.request_timeout + 60
    lifetime = PASSES_PER_TOKEN * config.interval + renew_before
    return int(min(MAX_LIFETIME, max(MIN_LIFETIME, lifetime))), renew_before


class CredentialUnavailable(HubError, InspectionFailed):
    """No credential could be had for a server: the server is not culled for idleness this pass (max-age still
    applies), and the pass counts an error of kind ``credential``. ``reason`` groups them for the log:
    ``refused`` (400: the hub will not give the user this scope, e.g. their role does not reach their own
    server), ``forbidden`` (403: the culler's role lacks ``tokens`` for this user), ``too_broad`` (the hub
    granted more than that one server), ``unavailable``, ``timeout``, ``status``, ``unreadable``."""

    kind = "credential"

    def __init__(self, reason: str, message: str) -> None:
        InspectionFailed.__init__(self, self.kind, message)
        self.reason = reason


@attrs.define
class CredentialStatistics:
    minted: int = 0
    reused: int = 0
    revoked: int = 0
    revoke_failed: int = 0
    #: Servers for which no credential could be had.
    refused: int = 0
    #: Tokens held now.
    held: int = 0


@attrs.define
class _Held:
    minted: MintedToken
    renew_at: float
    used_in_pass: int


@attrs.define
class _Minting:
    done: trio.Event = attrs.Factory(trio.Event)
    error: CredentialUnavailable | None = None


_Key = tuple[str, str]


class ServerCredentials:
    """The per-server tokens of one culler. Create it with :func:`open_server_credentials`."""

    def __init__(
        self,
        hub: HubClient,
        *,
        lifetime: int,
        renew_before: float,
        workers: int = 16,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self._hub = hub
        self._lifetime = lifetime
        self._renew_before = renew_before
        self._workers = max(1, workers)
        self._max_tokens = max_tokens
        #: False until the hub refused a lifetime and granted its maximum instead (then it is that maximum).
        self._capped = False
        #: Set while one task learns the hub's maximum after a 400; the others wait for what it learns.
        self._learning: trio.Event | None = None
        self._held: dict[_Key, _Held] = {}
        self._minting: dict[_Key, _Minting] = {}
        self._pass = 0
        self._stats = CredentialStatistics()

    @property
    def lifetime(self) -> int:
        return self._lifetime

    def statistics(self) -> CredentialStatistics:
        return attrs.evolve(self._stats, held=len(self._held))

    # -- the pass's view -------------------------------------------------------------------------------------

    def begin_pass(self) -> None:
        """A pass starts: what it uses is kept by its :meth:`end_pass`."""
        self._pass += 1

    async def for_server(self, user: str, server: str, *, refused: str | None = None) -> str:
        """A token that reaches ``user``'s server ``server`` and nothing else, or CredentialUnavailable.

        ``refused``: a token the server just refused. It is its user's, on their token page: they (or an admin)
        may have revoked it. Held, it is dropped and revoked, and a new one minted in its place."""
        key = (user, server)
        if refused is not None:
            stale = self._held.get(key)
            if stale is not None and stale.minted.token == refused:
                del self._held[key]
                await self._revoke(user, stale.minted)
        while True:
            held = self._held.get(key)
            if held is not None and trio.current_time() < held.renew_at:
                # Most recently used last: the first entry is the one to drop when the store is full.
                del self._held[key]
                self._held[key] = held
                held.used_in_pass = self._pass
                self._stats.reused += 1
                await trio.lowlevel.checkpoint()
                return held.minted.token
            minting = self._minting.get(key)
            if minting is None:
                break
            # Another task is minting for this server: its token (or its failure) is this one's too.
            await minting.done.wait()
            if minting.error is not None:
                raise minting.error
        minting = self._minting[key] = _Minting()
        try:
            minted = await self._mint(user, server)
        except CredentialUnavailable as error:
            self._stats.refused += 1
            minting.error = error
            raise
        finally:
            del self._minting[key]
            minting.done.set()
        retired = self._held.pop(key, None)
        renew_after = max(0.0, self._lifetime - self._renew_before)
        self._held[key] = _Held(minted, trio.current_time() + renew_after, self._pass)
        if retired is not None:
            await self._revoke(user, retired.minted)
        if len(self._held) > self._max_tokens:
            (old_user, _old_server), oldest = next(iter(self._held.items()))
            del self._held[old_user, _old_server]
            await self._revoke(old_user, oldest.minted)
        return minted.token

    async def release(self, user: str, server: str) -> None:
        """Revoke the token of a server that was culled (none held: nothing to do)."""
        held = self._held.pop((user, server), None)
        if held is not None:
            await self._revoke(user, held.minted)

    async def end_pass(self, *, complete: bool) -> None:
        """After a pass: when it saw every user, revoke the tokens it did not use (their servers are gone, or
        were not worth inspecting this time: a later pass mints again if needed)."""
        if not complete:
            return
        unused = [(key, held) for key, held in self._held.items() if held.used_in_pass != self._pass]
        for key, _held in unused:
            del self._held[key]
        failed = await self._revoke_many((user, held.minted) for (user, _server), held in unused)
        if failed:
            log.warning(
                "%d per-server tokens could not be revoked; each expires within %d s",
                failed,
                self._lifetime,
                extra={"event": "credentials_revoke_failed"},
            )

    async def revoke_all(self) -> int:
        """Revoke every token held (the culler stops); returns how many could not be. The caller bounds the
        time: what is not revoked by then expires on its own."""
        held = list(self._held.items())
        self._held.clear()
        return await self._revoke_many((user, entry.minted) for (user, _server), entry in held)

    # -- the hub's side ----------------------------------------------------------------------------------------

    async def _mint(self, user: str, server: str) -> MintedToken:
        label = f"{user}/{server}" if server else user
        scope = server_scope(user, server)
        asked = self._lifetime
        try:
            try:
                minted = await self._hub.mint_token(user, scopes=[scope], expires_in=asked, note=NOTE)
            except HubStatusError as error:
                if error.status != 400:
                    raise
                minted = await self._after_refusal(user, scope, asked, error)
        except HubAuthError as error:
            raise CredentialUnavailable(
                "forbidden", f"the hub refused to mint a token for {label} ({error}): the culler's role needs tokens"
            ) from None
        except HubStatusError as error:
            reason = "refused" if error.status == 400 else "status"
            raise CredentialUnavailable(reason, f"the hub refused to mint a token for {label} ({error})") from None
        except (HubTimeout, HubUnavailable) as error:
            reason = "timeout" if isinstance(error, HubTimeout) else "unavailable"
            raise CredentialUnavailable(reason, f"no token for {label}: {error}") from None
        except HubError as error:
            raise CredentialUnavailable("unreadable", f"no token for {label}: {error}") from None
        self._stats.minted += 1
        broader = _beyond(minted.scopes, user, server)
        if broader:
            # A hub that ignored the scopes asked for (or granted more) made a token that could reach more than
            # this server: it is never shown to the server.
            await self._revoke(user, minted)
            raise CredentialUnavailable(
                "too_broad", f"the hub granted a token for {label} more than its server: {', '.join(broader)[:300]}"
            )
        return minted

    async def _after_refusal(self, user: str, scope: str, asked: int, refusal: HubStatusError) -> MintedToken:
        """A 400: the lifetime may be over the hub's maximum (then learn it, once for every task), or the scopes
        are not the user's to have (then the refusal stands)."""
        while self._learning is not None:
            await self._learning.wait()
        if self._lifetime < asked:
            # Learned by another task meanwhile: ask again within it.
            return await self._hub.mint_token(user, scopes=[scope], expires_in=self._lifetime, note=NOTE)
        if self._capped:
            raise refusal  # the lifetime was the hub's own maximum: the scopes were refused
        learning = self._learning = trio.Event()
        try:
            return await self._mint_within_hub_maximum(user, scope, refusal)
        finally:
            self._learning = None
            learning.set()

    async def _mint_within_hub_maximum(self, user: str, scope: str, refusal: HubStatusError) -> MintedToken:
        """After a 400: the same request with the hub's own maximum lifetime. Only a hub with a maximum can have
        refused the lifetime; from then on the culler asks for that maximum."""
        minted = await self._hub.mint_token(user, scopes=[scope], expires_in=None, note=NOTE)
        if minted.expires_at is None or minted.created is None:
            # No maximum (or no way to tell): the 400 was about the scopes, and this token must not stay.
            await self._revoke(user, minted)
            raise refusal
        granted = int((minted.expires_at - minted.created).total_seconds())
        log.warning(
            "The hub refused per-server tokens living %d s (its token_expires_in_max_seconds is lower); "
            "they live %d s from now on%s",
            self._lifetime,
            granted,
            "" if granted > self._renew_before else ", so a server gets a new one each time it is inspected",
            extra={"event": "credentials_lifetime", "lifetime_seconds": granted},
        )
        self._lifetime = max(granted, 1)
        self._capped = True
        return minted

    async def _revoke(self, user: str, minted: MintedToken) -> bool:
        try:
            await self._hub.revoke_token(user, minted.id)
        except HubError as error:
            self._stats.revoke_failed += 1
            log.debug("Could not revoke a per-server token of %s: %s", user, error)
            return False
        self._stats.revoked += 1
        return True

    async def _revoke_many(self, items: Iterable[tuple[str, MintedToken]]) -> int:
        """Revoke concurrently (the hub client's limiter bounds the requests); returns the failures."""
        todo = list(items)
        pending = iter(todo)
        failed = 0

        async def worker() -> None:
            nonlocal failed
            # One shared iterator: trio runs one task at a time, and next() never waits.
            for user, minted in pending:
                if not await self._revoke(user, minted):
                    failed += 1

        async with trio.open_nursery() as nursery:
            for _ in range(min(self._workers, len(todo))):
                nursery.start_soon(worker)
        return failed


def _beyond(granted: frozenset[str] | None, user: str, server: str) -> list[str]:
    """The granted scopes that reach past ``user``'s own identity and server ``server`` (None: unknown, which
    is past)."""
    if granted is None:
        return ["(the answer lists no scopes)"]
    own = {f"user={user}", f"server={user}/{server}"}
    return sorted(scope for scope in granted if scope.partition("!")[2] not in own)


@asynccontextmanager
async def open_server_credentials(
    hub: HubClient, config: Config, *, lifetime: int | None = None
) -> AsyncIterator[ServerCredentials]:
    """The per-server credentials of a culler (or of one pass, or one ``--explain``) using ``hub``; every token
    left is revoked on the way out, within :data:`REVOKE_ON_STOP` seconds whatever cancelled the block."""
    default, renew_before = default_lifetime(config)
    credentials = ServerCredentials(
        hub,
        lifetime=default if lifetime is None else lifetime,
        renew_before=renew_before,
        workers=config.concurrency or 64,
    )
    try:
        yield credentials
    finally:
        held = credentials.statistics().held
        if held:
            revoked_before = credentials.statistics().revoked
            # Shielded: a stop cancels the culler's scope, and this is the one thing it still has to do.
            with trio.CancelScope(deadline=trio.current_time() + REVOKE_ON_STOP, shield=True):
                await credentials.revoke_all()
            failed = held - (credentials.statistics().revoked - revoked_before)
            if failed:
                log.warning(
                    "Revoked %d of %d per-server tokens on the way out; the others expire within %d s",
                    held - failed,
                    held,
                    credentials.lifetime,
                    extra={"event": "credentials_revoke_failed"},
                )
            else:
                log.info("Revoked %d per-server tokens", held, extra={"event": "credentials_revoked"})
