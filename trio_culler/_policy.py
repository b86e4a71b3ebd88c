"""What the decision functions need to know about the options: a frozen projection of the configuration.

A leaf: the configuration builds one (``Config.policy``), the rules table derives one per rule, and the decision
and forecast functions read them, without any of these needing each other to name the type.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from ._time import seconds

__all__ = ["Policy"]


@attrs.frozen(kw_only=True)
class Policy:
    """What the decision functions need to know; a projection of :class:`~trio_culler.Config`."""

    timeout: timedelta
    max_age: timedelta | None
    cull_users: bool
    cull_admin_users: bool
    cull_default_servers: bool
    cull_named_servers: bool
    remove_named_servers: bool
    #: Never cull, never delete (a rule with ``cull = false``); no global option sets it.
    exempt: bool = False
    #: With --inspect-kernels: how long a busy kernel protects its server (None: as long as it is busy).
    max_busy: timedelta | None = None
    #: With --inspect-kernels: idle time from the server's kernels and terminals, not the hub's last_activity.
    kernel_activity_only: bool = False

    def limits_json(self) -> dict[str, Any]:
        """The limits in seconds (None: no limit), as ``api/status`` and ``--explain``'s JSON show them."""
        return {
            "timeout_seconds": seconds(self.timeout),
            "max_age_seconds": seconds(self.max_age),
            "max_busy_seconds": seconds(self.max_busy),
            "exempt": self.exempt,
        }
