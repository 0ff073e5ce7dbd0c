"""Write-behind state and held acknowledgements for one Faust agent (Kafka Streams' record cache and
commit interval, in Faust).

Between flushes an agent reads and changes per-key states in memory and produces its outputs at once;
its input messages stay unacknowledged. A flush writes each changed key once (RocksDB and its
changelog partition), waits until the broker has acknowledged every output and changelog record, and
only then acknowledges the held inputs. A key that changes k times between flushes costs one write,
not k; a state read is a dict lookup instead of a RocksDB read and a JSON decode.

At-least-once: after a crash the held inputs are redelivered and applied to the last flushed state,
whose per-partition offsets make each event count once (their outputs may be sent twice). A flush is
due after `interval_ms` or `max_events` held inputs, at the end of a batch or from a timer when the
input goes quiet, and at once when Faust pauses its consumer for a rebalance or a shutdown (both wait
for held inputs, `Consumer.wait_empty`, before they go on). A batch or flush that fails leaves the
in-memory states suspect: the worker then stops at once (`on_fatal`) without acknowledging anything
more, and restarts from the last flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP

from streamproc.events import decode, encode
from streamproc.output_producer import OutputProducer
from streamproc.state_cache import FlushPolicy, State, StateCache

log = logging.getLogger(__name__)


@contextmanager
def in_context_of(event: faust.EventT) -> Iterator[None]:
    """Make `event` the current event, so that the RocksDB store reads and writes its partition's database.

    Inside `take_events` the current event of the agent's task is not the event at hand, and a key
    must always be read and written in the partition of the events that change it.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class WriteBehind:
    """One agent's output producer, held input events and (when it has a table) its state cache."""

    def __init__(
        self,
        out: OutputProducer,
        policy: FlushPolicy,
        table: faust.Table | None = None,
        new_state: Callable[[], State] | None = None,
        cache_keys: int = 0,
        on_flush: Callable[[float, int], None] | None = None,
        on_lookup: Callable[[bool], None] | None = None,
        clock_ms: Callable[[], float] = _monotonic_ms,
    ) -> None:
        self.out = out
        self.policy = policy
        self.table = table
        self.new_state = new_state
        self.cache: StateCache[faust.EventT] = StateCache(cache_keys)
        self.lock = asyncio.Lock()  # a batch and a flush never interleave
        self.failed: BaseException | None = None
        self._held: list[faust.EventT] = []
        self._held_since_ms: float | None = None
        self._on_flush = on_flush
        self._on_lookup = on_lookup
        self._clock_ms = clock_ms

    # -- inside a batch ---------------------------------------------------------------------------

    def hold(self, events: list[faust.EventT]) -> None:
        """Keep `events` unacknowledged until the flush that makes everything they caused durable.

        One extra reference per message: `take_events` acknowledges each batch in its `finally`, also
        when the body raised, and that acknowledgement only releases Faust's own reference.
        """
        if self.failed is not None:
            raise RuntimeError("write-behind failed earlier; nothing more is processed") from self.failed
        for event in events:
            event.message.incref()
        if events and not self._held:
            self._held_since_ms = self._clock_ms()
        self._held.extend(events)

    def state(self, key: bytes, event: faust.EventT) -> State:
        """The key's current state, to be changed in place; it is written at the next flush."""
        assert self.table is not None and self.new_state is not None
        state = self.cache.lookup(key)
        if self._on_lookup is not None:
            self._on_lookup(state is not None)
        if state is None:
            with in_context_of(event):
                raw = self.table.get(key)
            state = decode(raw) if raw else self.new_state()
        self.cache.mark_dirty(key, state, event)
        return state

    @property
    def held_events(self) -> int:
        return len(self._held)

    def due(self, urgent: bool = False) -> bool:
        """A flush is due by the policy, or now if `urgent` and anything is held."""
        if self.failed is not None or not self._held:
            return False
        return urgent or self.policy.due(self._clock_ms(), self._held_since_ms, len(self._held))

    # -- flush ------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the changed states, wait for every acknowledgement, then acknowledge the held inputs."""
        started = time.perf_counter()
        dirty = self.cache.take_dirty()
        if self.table is not None and dirty:
            changelog = self.table.changelog_topic.get_topic_name()
            for key, (state, event) in dirty.items():
                value = encode(state)
                with in_context_of(event):
                    self.table.data[key] = value
                self.out.produce(changelog, key, value, partition=event.message.partition, track=True)
        await self.out.settle()
        if self.table is not None:
            self._persist_changelog_offsets()
        held, self._held, self._held_since_ms = self._held, [], None
        for event in held:
            event.ack()
        if self._on_flush is not None:
            self._on_flush(time.perf_counter() - started, len(dirty))

    def _persist_changelog_offsets(self) -> None:
        """Remember the changelog offset each RocksDB partition has reached (read back on recovery)."""
        assert self.table is not None
        changelog = self.table.changelog_topic.get_topic_name()
        for (topic, partition), offset in self.out.acked.items():
            if topic == changelog:
                self.table.data.set_persisted_offset(TP(topic, partition), offset)
        self.out.acked.clear()

    def fail(self, error: BaseException) -> None:
        """Never acknowledge or write anything again: states in memory may hold a half-applied batch."""
        self.failed = error
        self.cache.clear()
        self._held, self._held_since_ms = [], None

    def forget_states(self) -> None:
        """After a rebalance: another worker may have changed these keys meanwhile; read them again."""
        if self.cache.dirty:  # only if a revocation did not wait for the flush (a stopping consumer)
            log.warning("dropping %d unflushed states; their inputs were never acknowledged", len(self.cache.dirty))
            self._held, self._held_since_ms = [], None
        self.cache.clear()


async def flush_when_due(
    writer: WriteBehind,
    tick_s: float,
    on_fatal: Callable[[BaseException], Any],
    urgent: Callable[[], bool] = lambda: False,
) -> None:
    """Flush on time while the input is quiet (no batch to flush at its end), until cancelled; at once
    while `urgent()` (Faust has paused its consumer for a rebalance or a shutdown and waits for acks)."""
    while True:
        await asyncio.sleep(tick_s)
        if not writer.due(urgent()):
            continue
        async with writer.lock:
            if not writer.due(urgent()):
                continue
            try:
                await writer.flush()
            except Exception as error:  # noqa: BLE001 - any failure here is fatal to the worker
                writer.fail(error)
                on_fatal(error)
