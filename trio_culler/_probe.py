"""The probe that opens every pass (and the culler's start-up): which hub this is, and what the token may do.

One probe per pass: a hub can be upgraded, and a role fixed, between two passes; the culler picks both up
without a restart. The start-up probe is handed to the first pass rather than repeated.

::

    GET {api}/       (no token)  -> the version: which API features the pager may use
    GET {api}/user   (the token) -> 401/403: the token is refused; else the owner's model, whose ``scopes``
                                    (JupyterHub 2+) say what the token may do
"""

from __future__ import annotations

import attrs

from ._config import Config
from ._hub import HubClient, HubInfo
from ._scopes import MissingScopes, missing_scopes, parse_scopes

__all__ = ["Probe", "check_scopes", "probe_hub"]


@attrs.frozen
class Probe:
    info: HubInfo
    #: The token's scopes as the hub reported them; None when it did not say (older hubs, an unreadable
    #: ``scopes``): then the user models are checked as they arrive (``_scopes.FIELDS``).
    scopes: frozenset[str] | None


async def probe_hub(hub: HubClient, *, retries: int | None = None) -> Probe:
    """Probe the hub; raises the HubError of the first request that fails (HubAuthError: the token is refused).

    ``retries=0`` makes each request one attempt, for a caller that retries (and says so) itself."""
    info = await hub.get_info(retries=retries)
    owner = await hub.get_token_owner(retries=retries)
    return Probe(info, parse_scopes(owner.get("scopes")) if owner is not None else None)


def check_scopes(probe: Probe, config: Config) -> MissingScopes | None:
    """The error that stops the pass when the token lacks what ``config`` needs, else None."""
    if probe.scopes is None:
        return None
    missing = missing_scopes(probe.scopes, config)
    return MissingScopes(missing) if missing else None
