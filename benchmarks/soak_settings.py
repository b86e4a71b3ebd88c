"""A soak run's settings, and the one place that says how the culler is deployed in it: its role's scopes, its
command line, its rules.

Features of the culler that other work adds switch on here (``--features``), each in one spot:

=============  =====================================================================================================
``tokens``     per-server credentials: the culler's role gets ``tokens`` instead of ``access:servers``, and the
               culler's own token reaching a user's server becomes an invariant (today it is only counted).
``notices``    notices delivered to servers: the light single-user server speaks the notice API (without it, it
               answers 404 there, as a server without the extension does), and some users keep their server.
``events``     webhook bodies with an ``event`` field (``warning``, ``cancelled``, ``culled``): the receiver takes
               both bodies anyway; with this feature the oracle expects one ``culled`` event per cull.
``full_notice`` a warning always announces at least ``--warn-before``: an invariant (today measured).
``race_guard`` no cull of a server restarted after the listing that judged it: an invariant (today measured).
=============  =====================================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FEATURES", "HOSTILE_KINDS", "SoakSettings", "culler_argv", "culler_scopes", "rules_toml"]

FEATURES = ("tokens", "notices", "events", "full_notice", "race_guard")
#: Hostile answers a user's server gives the culler's inspection (see soak_apps.LightServer).
HOSTILE_KINDS = ("huge", "items", "nonjson", "drip", "deep")
#: How often each fault comes, in seconds, in a long run (a short run gets each at least once).
FAULT_PERIODS = {
    "hub_restart": 1200.0,
    "proxy_restart": 900.0,
    "hub_503": 600.0,
    "race": 600.0,
    "hang": 900.0,
    "hostile": 600.0,
}


@dataclass(frozen=True)
class SoakSettings:
    duration: float = 7200.0
    seed: int = 20261201
    #: Users on the light spawner (no process each), and users with a real jupyter_server and kernels.
    users: int = 300
    real_servers: int = 4
    #: Shares of the light users that also have a named server, and that are in the group with a longer timeout.
    named_share: float = 0.1
    long_share: float = 0.1
    #: Users exempt by a rule (``vip-*``), started once and never used.
    exempt: int = 3
    timeout: float = 120.0
    cull_every: float = 15.0
    warn_before: float = 45.0
    #: The hub's last_activity_interval (it also re-adds missing proxy routes at that pace).
    activity_interval: float = 10.0
    concurrency: int = 10
    faults: tuple[str, ...] = tuple(FAULT_PERIODS)
    hostile_kinds: tuple[str, ...] = HOSTILE_KINDS
    #: Sizes of the hostile answers: the whole body of ``huge``, the items of ``items``, the depth of ``deep``, and
    #: how long ``drip`` takes to send its body (one byte a second).
    hostile_bytes: int = 64 * 1024 * 1024
    hostile_items: int = 1_000_000
    hostile_depth: int = 100_000
    drip_seconds: float = 90.0
    features: frozenset[str] = frozenset()
    #: Extra arguments for the culler (``--config=...`` to break it on purpose, say).
    culler_args: tuple[str, ...] = ()
    work_dir: Path = Path(__file__).resolve().parent / ".work" / "soak"
    out_dir: Path = Path(__file__).resolve().parent
    plot: bool = True
    sample_every: float = 5.0
    status_every: float = 2.0
    oauth_every: float = 300.0
    report_every: float = 60.0
    late_slack: float = 10.0
    max_rss_growth_mib: float = 16.0
    max_fd_growth: float = 8.0
    max_task_growth: float = 8.0
    fault_periods: dict[str, float] = field(default_factory=lambda: dict(FAULT_PERIODS))

    @property
    def long_timeout(self) -> float:
        return 2 * self.timeout

    @property
    def warmup(self) -> float:
        """Resource samples before this are warm-up (imports, the first passes, caches filling)."""
        return max(60.0, min(600.0, self.duration / 6))

    @property
    def fault_tail(self) -> float:
        """No fault starts this close to the end: its effects must be judged too."""
        return self.timeout + 2 * self.cull_every + self.late_slack

    def light_users(self) -> list[str]:
        return [f"u{index:03d}" for index in range(self.users)]

    def real_users(self) -> list[str]:
        return [f"real-{index}" for index in range(self.real_servers)]

    def exempt_users(self) -> list[str]:
        return [f"vip-{index}" for index in range(self.exempt)]


def culler_scopes(settings: SoakSettings) -> list[str]:
    """The culler's role: what the README's table asks for the features in use (rules on groups, inspection)."""
    scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers", "read:users:groups"]
    scopes.append("tokens" if "tokens" in settings.features else "access:servers")
    return scopes


def culler_argv(settings: SoakSettings, *, api_url: str, warn_url: str, metrics_port: int, rules: Path) -> list[str]:
    """The culler's command line (after ``python -m trio_culler``)."""
    return [
        f"--url={api_url}",
        f"--timeout={settings.timeout:g}",
        f"--cull-every={settings.cull_every:g}",
        f"--concurrency={settings.concurrency}",
        f"--rules-file={rules}",
        f"--warn-before={settings.warn_before:g}",
        f"--warn-url={warn_url}",
        "--inspect-kernels",
        f"--metrics-port={metrics_port}",
        "--log-format=json",
        *settings.culler_args,
    ]


def rules_toml(settings: SoakSettings) -> str:
    """The rules: the ``vip-*`` users exempt, the group ``long`` with twice the timeout."""
    exempt = '[[rules]]\nusers = ["vip-*"]\ncull = false\n'
    return f'{exempt}\n[[rules]]\ngroups = ["long"]\ntimeout = {settings.long_timeout:g}\n'
