"""A bounded map whose entries expire: the one memory the culler keeps of what visitors of its page sent.

Whatever a stranger can make the culler remember (a session it checked, a token the hub accepted or refused,
a login it saw through, a reader's pace) is kept here, so that each such memory has the same two limits:

- **time**: an entry is never returned at or after its expiry (``until``, on the map's clock), and expired
  entries at the old end are dropped as new ones come in, so a quiet map empties itself;
- **size**: at most ``size`` entries; a put beyond that drops the entry put least recently, expired or not.

Order is the order of ``put`` (putting a key again moves it to the new end); ``get`` changes nothing, so
reading an entry never protects it from eviction: what a map's owner must keep, it sizes the map for.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ExpiringMap"]

K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    def __init__(self, *, size: int, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``lifetime``: seconds an entry lives unless ``put`` says otherwise; ``clock``: what ``until`` is
        measured on (``time.time`` when expiries come from wall-clock timestamps, such as a signed cookie's)."""
        if size < 1:
            raise ValueError("an ExpiringMap holds at least one entry")
        self.size = size
        self.lifetime = lifetime
        self._clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value put for ``key``, or None when there is none, or it expired, or it was evicted (values
        are never None themselves)."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def __contains__(self, key: K) -> bool:
        item = self._items.get(key)
        return item is not None and item[1] > self._clock()

    def put(self, key: K, value: V, *, until: float | None = None) -> None:
        """Remember ``value`` for ``key`` until ``until`` (default: ``lifetime`` from now)."""
        now = self._clock()
        self._items.pop(key, None)
        self._items[key] = (value, now + self.lifetime if until is None else until)
        items = self._items
        while items:
            _value, oldest_until = next(iter(items.values()))
            if len(items) <= self.size and oldest_until > now:
                break
            items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value if it had one that had not expired."""
        item = self._items.pop(key, None)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]
