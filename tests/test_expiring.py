"""The bounded expiring map, against a model of what it promises: never more than ``size`` entries, never an
expired value, and every one of the ``size`` keys put last kept until it expires."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from trio_culler._expiring import ExpiringMap

KEYS = st.integers(min_value=0, max_value=7)


class ExpiringMapMachine(RuleBasedStateMachine):
    """The model keeps what was put (value, expiry) and the order of the puts; it does not re-implement the
    eviction: where the promise leaves a choice (an entry older than the last ``size`` puts), either answer
    passes, and the bound on the size is checked apart."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.values: dict[int, tuple[str, float]] = {}
        # Distinct keys, least recently put first; a popped key keeps its place (it was put all the same).
        self.order: list[int] = []
        self.map: ExpiringMap[int, str] = ExpiringMap(size=1, lifetime=1.0)

    @initialize(size=st.integers(min_value=1, max_value=5), lifetime=st.floats(min_value=0.5, max_value=20))
    def make(self, size: int, lifetime: float) -> None:
        self.map = ExpiringMap(size=size, lifetime=lifetime, clock=lambda: self.now)

    @rule(key=KEYS, value=st.text(max_size=3), ttl=st.none() | st.floats(min_value=-5, max_value=30))
    def put(self, key: int, value: str, ttl: float | None) -> None:
        if ttl is None:
            self.map.put(key, value)
            until = self.now + self.map.lifetime
        else:
            until = self.now + ttl
            self.map.put(key, value, until=until)
        self.values[key] = (value, until)
        if key in self.order:
            self.order.remove(key)
        self.order.append(key)

    def _check(self, key: int, answer: str | None) -> None:
        if key not in self.values:
            assert answer is None
            return
        value, until = self.values[key]
        if until <= self.now:
            assert answer is None, "an expired value was returned"
        elif key in self.order[-self.map.size :]:
            assert answer == value, "one of the last `size` keys put was lost before it expired"
        else:
            assert answer in (None, value)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        answer = self.map.get(key)
        self._check(key, answer)
        assert (key in self.map) == (answer is not None)

    @rule(key=KEYS)
    def pop(self, key: int) -> None:
        self._check(key, self.map.pop(key))
        self.values.pop(key, None)
        assert self.map.get(key) is None

    @rule(seconds=st.floats(min_value=0, max_value=15))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.values))
    @rule()
    def everything_expires(self) -> None:
        self.now = max(until for _value, until in self.values.values()) + 1
        for key in list(self.values):
            assert self.map.get(key) is None

    @invariant()
    def bounded(self) -> None:
        assert len(self.map) <= self.map.size


TestExpiringMap = ExpiringMapMachine.TestCase


def test_a_quiet_map_empties_itself_as_new_entries_come_in() -> None:
    now = [0.0]
    memory: ExpiringMap[str, int] = ExpiringMap(size=100, lifetime=10, clock=lambda: now[0])
    for index in range(50):
        memory.put(f"old-{index}", index)
    now[0] = 11.0
    memory.put("new", 1)
    assert len(memory) == 1  # the 50 expired ones went with the first put after their expiry


def test_the_least_recently_put_goes_first_and_reading_does_not_protect() -> None:
    now = [0.0]
    memory: ExpiringMap[str, int] = ExpiringMap(size=2, lifetime=10, clock=lambda: now[0])
    memory.put("a", 1)
    memory.put("b", 2)
    assert memory.get("a") == 1
    memory.put("c", 3)
    assert (memory.get("a"), memory.get("b"), memory.get("c")) == (None, 2, 3)
    memory.put("b", 4)  # put again: now the newest
    memory.put("d", 5)
    assert (memory.get("b"), memory.get("c"), memory.get("d")) == (4, None, 5)


def test_an_entry_expires_at_its_time_exactly() -> None:
    now = [0.0]
    memory: ExpiringMap[str, int] = ExpiringMap(size=2, lifetime=10, clock=lambda: now[0])
    memory.put("a", 1)
    now[0] = 9.999
    assert memory.get("a") == 1
    now[0] = 10.0
    assert memory.get("a") is None
    assert "a" not in memory


def test_a_map_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ExpiringMap(size=0, lifetime=1)
