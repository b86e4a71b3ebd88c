"""The decision codes' table: every code has its row, labels keep today's strings, and what culls is foreseeable."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from trio_culler import Action, Decision, Policy, Server, decide_server
from trio_culler._codes import CODES, PAGE_WORDING, DecisionCode
from trio_culler._forecast import cull_time
from trio_culler._inspect import ServerActivity
from trio_culler._metrics import CULL_REASONS

from .support import strategies
from .support.strategies import NOW


def test_every_code_has_its_row() -> None:
    assert set(CODES) == set(DecisionCode)
    assert set(PAGE_WORDING) == {code.value for code in DecisionCode}


def test_labels_and_the_json_rule_keep_todays_strings() -> None:
    """Dashboards and alerts key on these: a code renamed in the enum must not rename a label silently."""
    assert set(CULL_REASONS) == {"idle", "max_age", "busy_expired", "kernels_idle"}
    for code, info in CODES.items():
        assert info.metric == code.value
        assert code == code.value  # a StrEnum: JSON lines and counters keyed by code see the string


def test_the_codes_that_cull_are_the_forecasts_events_and_have_page_wording() -> None:
    culling = {code for code, info in CODES.items() if info.event is not None}
    assert culling == {DecisionCode.IDLE, DecisionCode.MAX_AGE, DecisionCode.BUSY_EXPIRED, DecisionCode.KERNELS_IDLE}
    for code in culling:
        wording = CODES[code].page
        assert wording.due_for
        assert wording.measured
        assert wording.option.startswith("--")


def test_every_reason_formats_and_the_old_wording_stays() -> None:
    for code in DecisionCode:
        decision = Decision(Action.KEEP, code, timedelta(hours=1), timedelta(hours=2), "x", timedelta(0), None, True)
        assert "{" not in decision.reason
    minute = timedelta(minutes=1)
    assert Decision(Action.STOP, DecisionCode.IDLE, 61 * minute).reason == "inactive for 01:01:00"
    assert Decision(Action.STOP, DecisionCode.IDLE, 61 * minute, inspected=True).reason == (
        "inactive for 01:01:00, no kernel busy"
    )
    assert Decision(Action.KEEP, DecisionCode.PENDING, detail="spawn").reason == "pending spawn"
    busy = Decision(Action.STOP, DecisionCode.BUSY_EXPIRED, 90 * minute, detail="01:00:00", busy=70 * minute)
    assert busy.reason == "kernel busy for 01:10:00, over max-busy 01:00:00, inactive for 01:30:00"
    assert Decision(Action.KEEP, DecisionCode.KERNEL_BUSY, busy=minute).signal == "kernel_busy"
    assert Decision(Action.STOP, DecisionCode.KERNELS_IDLE).signal == "kernel_activity"
    assert Decision(Action.STOP, DecisionCode.IDLE).signal == "hub"
    assert busy.rule == "busy_expired", "the old attribute name still reads the code"


@given(
    strategies.servers(),
    strategies.kernel_policies(),
    st.none() | strategies.activities(),
    st.none() | st.booleans(),
)
def test_only_codes_with_an_event_cull_and_forecasts_name_them(
    server: Server, policy: Policy, activity: ServerActivity | None, verdict: bool | None
) -> None:
    decision = decide_server(server, policy=policy, now=NOW, activity=activity, arbiter_says_cull=verdict)
    assert decision.acts == (CODES[decision.code].event is not None), decision
    due = cull_time(server, policy=policy, activity=activity)
    if due is not None:
        assert CODES[due.code].event is not None
