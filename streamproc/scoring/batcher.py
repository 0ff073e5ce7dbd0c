"""Pure micro-batch policy: flush at max_size items or max_wait_ms after the first, whichever comes first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class MicroBatcher(Generic[T]):
    """Collects items; the caller passes the clock (now_ms) in, so tests never sleep."""

    max_size: int
    max_wait_ms: int
    _items: list[T] = field(default_factory=list)
    _first_ms: int | None = None

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now_ms: int) -> None:
        if not self._items:
            self._first_ms = now_ms
        self._items.append(item)

    def room(self) -> int:
        """How many more items fit before the batch is full."""
        return self.max_size - len(self._items)

    def is_due(self, now_ms: int) -> bool:
        """True when the batch should be flushed now: full, or its oldest item has waited max_wait_ms."""
        if not self._items:
            return False
        assert self._first_ms is not None
        return len(self._items) >= self.max_size or now_ms - self._first_ms >= self.max_wait_ms

    def wait_ms(self, now_ms: int, idle_ms: int) -> int:
        """How long the caller may block waiting for more input: until the deadline, or idle_ms when empty."""
        if not self._items:
            return idle_ms
        assert self._first_ms is not None
        return max(0, self._first_ms + self.max_wait_ms - now_ms)

    def drain(self) -> list[T]:
        """Take every item out, oldest first."""
        items, self._items, self._first_ms = self._items, [], None
        return items
