"""``Expiring``: an in-process memory of one value per key, each for ``ttl``, bounded to
``limit`` keys (the oldest goes first), safe across worker threads. What a worker learns
about a target ("import cannot work here", "its data plane did not answer") is kept in
one, so later jobs do not pay the same refusal again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from replicator.domain.model import utcnow

V = TypeVar("V")


class Expiring(Generic[V]):
    def __init__(
        self, ttl: timedelta, *, limit: int, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._items: OrderedDict[str, tuple[datetime, V]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: V) -> datetime:
        """Keep ``value`` for ``key`` (replacing what was there); answers its expiry."""
        until = self.clock() + self.ttl
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (until, value)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return until

    def get(self, key: str) -> tuple[datetime, V] | None:
        """(expiry, value) while it holds; an expired entry is dropped."""
        now = self.clock()
        with self._lock:
            found = self._items.get(key)
            if found is not None and found[0] <= now:
                del self._items[key]
                return None
            return found

    def forget(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def values(self) -> tuple[V, ...]:
        """Every value that still holds, oldest first."""
        now = self.clock()
        with self._lock:
            return tuple(value for until, value in self._items.values() if until > now)
