"""Table states kept in memory, written to RocksDB and the changelog once per batch or once per commit.

Faust writes a changelog record for every table write; with one write per event that record
stream was most of the worker's time. Here an agent reads and updates states in a `StateCache`
and marks them dirty; `WriteBehind.flush` writes each dirty key once (RocksDB, then a changelog
record to the partition of the key's events) and waits for every output and changelog record to be
acknowledged. `streamproc.compat.faust_commit_hook` runs that flush inside Faust's commit, after the
offsets to commit are chosen and before they are committed, as Kafka Streams and Quix Streams
flush their stores. So a committed offset is always covered by durable state and outputs; state
ahead of the committed offsets is harmless, because states skip events they have already applied.
With state_flush="batch" (the default is "commit") each agent runs `flush_stage` after every batch instead,
before the batch is acknowledged, and the commit's flush finds nothing left to write.

Under exactly-once (`hold_writes`), the changelog records go into the commit's Kafka transaction and the
RocksDB writes are held back until it has committed (`apply_held`, from `stages.transactions`), so that
RocksDB never holds a state the changelog does not: a crash before the commit leaves both at the last one.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import faust
from faust.streams import _current_event
from faust.types import TP, TableT
from rocksdict import WriteBatch

from streamproc.core.events import decode, encode
from streamproc.kafka.output_producer import OutputProducer

if TYPE_CHECKING:
    from streamproc.stages.transactions import StageTransactions

State = dict[str, Any]
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


def put_all(store: Any, writes: list[tuple[faust.EventT, bytes, bytes]]) -> None:
    """Write each (event, key, value) to the store's database for the event's partition.

    Faust's RocksDB store (rocksdict) gets one write batch per partition, as Faust's own changelog
    recovery writes; a put per key cost about as much as encoding the state. Any other store (the
    in-memory one, tests' fakes) gets one `store[key] = value` per key in its event's context.
    """
    db_for_partition = getattr(store, "_db_for_partition", None)
    if db_for_partition is None or not getattr(store, "use_rocksdict", False):
        for event, key, value in writes:
            with in_context_of(event):
                store[key] = value
        return
    batches: dict[int, WriteBatch] = {}
    for event, key, value in writes:
        partition = event.message.partition
        raw_key = store._encode_key(key)
        batch = batches.get(partition)
        if batch is None:
            batch = batches[partition] = WriteBatch(raw_mode=True)
        batch.put(raw_key, store._encode_value(value))
        store._key_index[raw_key] = partition  # what Faust's _set records: the partition _get reads first
    for partition, batch in batches.items():
        db_for_partition(partition).write(batch)


class StateCache:
    """One table's states: read through from RocksDB, updated in memory, written back by `write_dirty`.

    Dirty states stay until written; clean ones are kept for re-use, least recently used first out,
    up to `max_clean_keys`.
    """

    def __init__(
        self,
        table: TableT,
        new_state: Callable[[], State],
        out: OutputProducer,
        max_clean_keys: int,
        encode_state: Callable[[bytes, State], bytes] | None = None,
        hold_writes: bool = False,
    ) -> None:
        self.table = table
        self.encode_state = encode_state or (
            lambda _key, state: encode(state)
        )  # (key, state) -> stored bytes
        self.new_state = new_state
        self.out = out
        self.max_clean_keys = max_clean_keys
        self._dirty: dict[bytes, tuple[State, faust.EventT]] = {}
        self._clean: OrderedDict[bytes, State] = OrderedDict()
        self.hold_writes = hold_writes  # RocksDB written by apply_held, once the changelog records committed
        self._held: dict[bytes, tuple[faust.EventT, bytes, State]] = {}  # key -> (event, stored bytes, state)
        self.lookups = {"dirty": 0, "clean": 0, "table": 0}

    def __len__(self) -> int:
        return len(self._dirty) + len(self._clean)

    @property
    def dirty_keys(self) -> int:
        return len(self._dirty)

    def get_for_update(self, key: bytes, event: faust.EventT) -> State:
        """The key's state, to be mutated by the caller on behalf of `event` (a message of the key's partition)."""
        state = self.peek(key, event)
        if state is None:
            state = self.new_state()
        self.mark_dirty(key, state, event)
        return state

    def peek(self, key: bytes, event: faust.EventT) -> State | None:
        """The key's state, or None if it has none; not marked dirty (a change must be `mark_dirty`-ed)."""
        entry = self._dirty.get(key)
        if entry is not None:
            self.lookups["dirty"] += 1
            return entry[0]
        held = self._held.get(key)  # written to the changelog, not yet to RocksDB: newer than the table
        if held is not None:
            self.lookups["dirty"] += 1
            return held[2]
        state = self._clean.get(key)
        if state is not None:
            self.lookups["clean"] += 1
            self._clean.move_to_end(key)
            return state
        self.lookups["table"] += 1
        with in_context_of(event):
            raw = self.table.get(key)
        if not raw:
            return None
        state = self._clean[key] = decode(raw)
        return state

    def mark_dirty(self, key: bytes, state: State, event: faust.EventT) -> None:
        """Have the key's state (changed by the caller) written, in the context of `event`."""
        self._clean.pop(key, None)
        self._dirty[key] = (state, event)

    def write_dirty(self) -> int:
        """Write each dirty key once: to the changelog partition of its events, and to RocksDB (held back until
        `apply_held` with hold_writes); return how many."""
        changelog = self.table.changelog_topic.get_topic_name()
        written = len(self._dirty)
        writes: list[tuple[faust.EventT, bytes, bytes]] = []
        for key, (state, event) in self._dirty.items():
            value = self.encode_state(key, state)
            if self.hold_writes:
                self._held[key] = (event, value, state)
            else:
                writes.append((event, key, value))
            self.out.produce(changelog, key, value, partition=event.message.partition, track=True)
            self._clean[key] = state
            self._clean.move_to_end(key)
        if writes:
            put_all(self.table.data, writes)
        self._dirty.clear()
        while len(self._clean) > self.max_clean_keys:
            self._clean.popitem(last=False)
        return written

    def apply_held(self) -> int:
        """The changelog records written since the last call committed: write their states to RocksDB."""
        held, self._held = self._held, {}
        if held:
            put_all(self.table.data, [(event, key, value) for key, (event, value, _state) in held.items()])
        return len(held)

    def persist_offsets(self) -> None:
        """After the acknowledgements: remember the changelog offset each RocksDB partition has reached."""
        changelog = self.table.changelog_topic.get_topic_name()
        for (topic, partition), offset in list(self.out.acked.items()):
            if topic == changelog:
                store: Any = self.table.data  # a RocksDB store (StoreT has no set_persisted_offset)
                store.set_persisted_offset(TP(topic, partition), offset)
                del self.out.acked[(topic, partition)]

    def forget(self) -> None:
        """Drop every state held in memory (after a rebalance another worker may have changed them)."""
        self._dirty.clear()
        self._held.clear()
        self._clean.clear()


class WriteBehind:
    """The worker's state caches and output producers, flushed together before each offset commit."""

    def __init__(self, on_flush: Callable[[str, int, float], None] | None = None) -> None:
        self.caches: list[StateCache] = []
        self.producers: list[OutputProducer] = []
        self.on_flush = on_flush
        self.transactions: StageTransactions | None = None  # exactly-once: commits replace flushes

    def producer(self, out: OutputProducer) -> OutputProducer:
        if out not in self.producers:
            self.producers.append(out)
        return out

    def cache(self, cache: StateCache) -> StateCache:
        self.caches.append(cache)
        return cache

    async def flush(self) -> None:
        """Make everything processed so far durable: dirty states written, every output acknowledged.

        The writes run without an await in between, so no agent mutates a state half-written;
        agents go on processing while the acknowledgements arrive. Faust runs one commit at a time.
        """
        started = time.perf_counter()
        written = [cache.write_dirty() for cache in self.caches]
        generations = [out.cut() for out in self.producers]
        for out, generation in zip(self.producers, generations, strict=True):
            await out.settle_through(generation)
        for cache in self.caches:
            cache.persist_offsets()
        if self.on_flush is not None:
            elapsed = time.perf_counter() - started
            for cache, count in zip(self.caches, written, strict=True):
                self.on_flush(cache.table.name, count, elapsed)

    async def flush_stage(self, out: OutputProducer, cache: StateCache | None) -> None:
        """One stage's flush: its dirty states written, and every record its producer sent acknowledged."""
        started = time.perf_counter()
        written = cache.write_dirty() if cache is not None else 0
        await out.settle()
        if cache is not None:
            cache.persist_offsets()
            if self.on_flush is not None:
                self.on_flush(cache.table.name, written, time.perf_counter() - started)

    def forget_states(self) -> None:
        for cache in self.caches:
            cache.forget()
