"""Pure write-behind bookkeeping: which per-key states changed since the last flush, which unchanged
ones stay decoded in memory (bounded, least recently used first out), and when a flush is due.

No Faust, Kafka or clock in here: `streamproc.write_behind` does the I/O and passes the time in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Where = TypeVar("Where")  # what a dirty key remembers about its last change (the Faust event)
State = Any


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """Flush when the oldest held input has waited `interval_ms`, or `max_events` inputs are held.

    interval_ms=0 flushes after every batch (no coalescing across batches).
    """

    interval_ms: int
    max_events: int

    def due(self, now_ms: float, held_since_ms: float | None, held_events: int) -> bool:
        if held_since_ms is None or held_events == 0:
            return False
        return now_ms - held_since_ms >= self.interval_ms or held_events >= self.max_events


class StateCache(Generic[Where]):
    """Dirty states (changed since the last flush, never evicted) and up to `max_clean` clean ones."""

    def __init__(self, max_clean: int) -> None:
        self.max_clean = max_clean
        self.dirty: dict[bytes, tuple[State, Where]] = {}
        self._clean: OrderedDict[bytes, State] = OrderedDict()

    def lookup(self, key: bytes) -> State | None:
        """The key's state if it is in memory (dirty or clean), else None (read it from the store)."""
        entry = self.dirty.get(key)
        if entry is not None:
            return entry[0]
        return self._clean.get(key)

    def mark_dirty(self, key: bytes, state: State, where: Where) -> None:
        """`state` (the object now held for `key`) changed in the context of `where`."""
        self._clean.pop(key, None)
        self.dirty[key] = (state, where)

    def take_dirty(self) -> dict[bytes, tuple[State, Where]]:
        """Hand over the dirty states for writing; they stay in memory as clean, most recent last."""
        dirty, self.dirty = self.dirty, {}
        for key, (state, _where) in dirty.items():
            self._clean[key] = state
            self._clean.move_to_end(key)
        while len(self._clean) > self.max_clean:
            self._clean.popitem(last=False)
        return dirty

    def clear(self) -> None:
        """Forget everything, dirty states included (their inputs were never acknowledged)."""
        self.dirty.clear()
        self._clean.clear()

    def __len__(self) -> int:
        return len(self.dirty) + len(self._clean)
