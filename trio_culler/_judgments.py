"""What a pass decided about a server that only a worker could judge: the record the status page shows its user.

Most servers are judged purely, from the hub's data (:meth:`~._judge.Judge.prejudge`), and the page judges them
again itself when their user looks, with the same function, so the page and the pass agree. A server whose
judgment needs its kernels (``--inspect-kernels``) or the ``cull_arbiter_hook`` is different: the page must not
ask a user's server anything, nor call an operator's hook, because a visitor came by. For those, a pass keeps
one :class:`ServerJudgment` per server it judged (the latest ones, bounded: ``_report.MAX_JUDGED_KEPT`` a pass),
and the status page's per-user record remembers the newest for each server (``_user_record``).

A judgment is a small value, made once per server a worker judged: the verdict's decision and forecast, not the
verdict itself (which holds the server's model and what the server answered about its kernels).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._decide import Decision
    from ._forecast import Due
    from ._judge import Verdict

__all__ = ["ServerJudgment"]


@attrs.frozen(kw_only=True)
class ServerJudgment:
    user: str
    server: str
    #: When the judged server started (the hub's ``started``): a judgment describes that run of it only.
    started: datetime | None
    #: The pass's ``now``: when it was judged.
    judged_at: datetime
    #: What the pass decided (its ``reason`` is worded only when shown: formatting durations is most of what
    #: deciding costs, and a pass judges every server with ``--kernel-activity-only``).
    decision: Decision
    #: When it will be culled if nothing changes (for one culled now: since when it was due).
    due: Due | None
    #: The rule that set the limits (its label); None: the global options.
    rule: str | None
    #: How the pass judged it: ``kernels`` (what the server said about its kernels and terminals), ``hook``
    #: (the cull_arbiter_hook's answer), both, ``kernels unreadable (<kind>)``, or ``hub`` (neither was needed).
    by: str

    @classmethod
    def of(cls, user: str, verdict: Verdict, *, judged_at: datetime, rule: str | None) -> ServerJudgment:
        decision = verdict.decision
        asked = []
        if verdict.inspection is not None:
            asked.append(f"kernels unreadable ({verdict.inspection.kind})")
        if decision.inspected:
            asked.append("kernels")
        if verdict.arbiter is not None:
            asked.append("hook")
        return cls(
            user=user,
            server=verdict.server.name,
            started=verdict.server.started,
            judged_at=judged_at,
            decision=decision,
            due=verdict.due,
            rule=rule,
            by=" and ".join(asked) or "hub",
        )
