"""Thin Faust agents: decode -> validate -> pure state transition -> table -> emit update or dead letter.

Three stages, each keyed so that a table key always lives in the partition of the events that
change it:
  transactions (any key)      -> validate -> streamproc.transactions-by-terminal (key terminal)
  by-terminal                 -> terminal velocity table -> streamproc.user-events (key user)
  clicks + user-events        -> user window + velocity table -> sequence-updates (key user)
Events are taken in batches; each key's state is written once per batch (coalesced changelog
writes) in the context of that key's own last event, and the producer is flushed before the
batch's offsets are acknowledged (at-least-once; redelivered offsets change no state twice).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP

from streamproc.app import Topology
from streamproc.config import Settings
from streamproc.events import InvalidEvent, dead_letter, decode, encode, validate
from streamproc.metrics import Metrics
from streamproc.output_producer import OutputProducer
from streamproc.processing import (
    Lineage,
    State,
    apply_terminal_event,
    apply_user_event,
    new_terminal_state,
    new_user_state,
    sequence_update,
)

TAKE_MAX = 4000  # events per batch: more events per key per batch, fewer changelog records
TAKE_WITHIN_S = 0.01


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lineage(event: faust.EventT) -> Lineage:
    msg = event.message
    return Lineage(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))


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


@contextmanager
def acked_only_when_settled(events: list[faust.EventT]) -> Iterator[None]:
    """Hold each event's message until the body completes, so that an exception or a cancellation leaves
    the batch unacknowledged (redelivered after a restart) rather than committed with its work undone.

    `take_events` acknowledges every event of a batch in its `finally`, also when the agent body raised
    or was cancelled (SIGTERM mid-batch). One extra reference per message makes that acknowledgement
    final only after the body has released it, which it does only on success.
    """
    for event in events:
        event.message.incref()
    yield
    for event in events:
        event.message.decref()


class StateBatch:
    """The states a batch touches, loaded once from the table and written back once per key."""

    def __init__(self, table: faust.Table, new_state: Any) -> None:
        self.table = table
        self.new_state = new_state
        self.states: dict[bytes, tuple[State, faust.EventT]] = {}

    def get(self, key: bytes, event: faust.EventT) -> State:
        if key in self.states:
            state = self.states[key][0]
        else:
            raw = self.table.get(key)
            state = decode(raw) if raw else self.new_state()
        self.states[key] = (state, event)
        return state

    def write(self, out: OutputProducer) -> None:
        """Write each touched key once: to RocksDB, and to the changelog partition of its source partition.

        The changelog record goes through the librdkafka producer (Faust's own would send it through
        aiokafka, half the worker's time here); `persist_offsets` then records what was acknowledged.
        """
        changelog = self.table.changelog_topic.get_topic_name()
        for key, (state, event) in self.states.items():
            value = encode(state)
            with in_context_of(event):
                self.table.data[key] = value
            out.produce(changelog, key, value, partition=event.message.partition, track=True)
        self.states.clear()

    def persist_offsets(self, out: OutputProducer) -> None:
        """After the acknowledgements: remember the changelog offset each RocksDB partition has reached."""
        changelog = self.table.changelog_topic.get_topic_name()
        for (topic, partition), offset in out.acked.items():
            if topic == changelog:
                self.table.data.set_persisted_offset(TP(topic, partition), offset)
        out.acked.clear()


def register_agents(topo: Topology, settings: Settings, metrics: Metrics) -> None:
    app = topo.app

    async def settle(out: OutputProducer, batch: StateBatch | None = None) -> None:
        """Write the batch's states, then wait for every output and changelog acknowledgement before
        the batch's input offsets are acknowledged."""
        if batch is not None:
            batch.write(out)
        await out.settle()
        if batch is not None:
            batch.persist_offsets(out)

    def send_dead_letter(out: OutputProducer, event: faust.EventT, error: InvalidEvent) -> None:
        msg = event.message
        metrics.dead_letters.labels(msg.topic, error.reason).inc()
        out.produce(settings.dead_letter_topic, msg.key,
                    dead_letter(msg.value, msg.key, msg.topic, msg.partition, msg.offset, error, _now_ms()))

    def route_batch(out: OutputProducer, events: list[faust.EventT]) -> None:
        """Validate transactions and re-key the valid ones by terminal; dead-letter the rest."""
        events_in = metrics.events_in.labels(settings.transactions_topic)
        for event in events:
            events_in.inc()
            try:
                valid = validate("transaction", event.message.value)
            except InvalidEvent as error:
                send_dead_letter(out, event, error)
                continue
            payload = {"record": valid.record, "label": valid.label, "lineage": _lineage(event).as_dict()}
            out.produce(settings.tx_by_terminal_topic, valid.record["item_id"].encode(), encode(payload))

    def terminal_batch(out: OutputProducer, batch: StateBatch, events: list[faust.EventT]) -> None:
        """Fold transactions into their terminal's velocity state and pass them on keyed by user."""
        for event in events:
            msg = event.message
            payload = decode(msg.value)
            record = payload["record"]
            state = batch.get(msg.key, event)
            origin = payload["lineage"]  # the input transaction: re-sent copies and redeliveries share it
            source = f"{origin['topic']}:{origin['partition']}"
            payload["terminal"] = apply_terminal_event(state, record, payload.pop("label"), source, origin["offset"])
            out.produce(settings.user_events_topic, record["user_id"].encode(), encode(payload))

    def user_batch(out: OutputProducer, batch: StateBatch, events: list[faust.EventT]) -> None:
        """Fold clicks and routed transactions into the user's window and emit one sequence update each."""
        clicks_in = metrics.events_in.labels(settings.clicks_topic)
        for event in events:
            msg = event.message
            if msg.topic == settings.clicks_topic:
                clicks_in.inc()
                try:
                    valid = validate("click", msg.value)
                except InvalidEvent as error:
                    send_dead_letter(out, event, error)
                    continue
                record, lineage, terminal = valid.record, _lineage(event), {}
                user_key = record["user_id"].encode()
                if msg.key != user_key:  # keyed by something else: re-key so the user's state stays in one partition
                    rekeyed = {"record": record, "lineage": lineage.as_dict(), "terminal": {}}
                    out.produce(settings.user_events_topic, user_key, encode(rekeyed))
                    continue
            else:
                payload = decode(msg.value)
                record, lineage, terminal = payload["record"], Lineage.from_dict(payload["lineage"]), payload["terminal"]
            state = batch.get(msg.key, event)
            window, customer = apply_user_event(
                state, record, f"{msg.topic}:{msg.partition}", msg.offset,
                settings.window_max_events, settings.window_max_age_ms,
            )
            metrics.events_accepted.labels(lineage.topic).inc()
            update = sequence_update(record, window, customer | terminal, lineage, _now_ms())
            out.produce(settings.sequence_updates_topic, msg.key, encode(update))
            metrics.sequence_updates.inc()

    @app.agent(topo.transactions, name="streamproc.route-transactions")
    async def route_transactions(stream: faust.StreamT) -> None:
        out = OutputProducer(settings, "route-transactions")
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                route_batch(out, events)
                await settle(out)

    @app.agent(topo.tx_by_terminal, name="streamproc.terminal-velocity")
    async def terminal_velocity(stream: faust.StreamT) -> None:
        out = OutputProducer(settings, "terminal-velocity")
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                batch = StateBatch(topo.terminals, new_terminal_state)
                terminal_batch(out, batch, events)
                await settle(out, batch)

    @app.agent(topo.user_inputs, name="streamproc.user-windows")
    async def user_windows(stream: faust.StreamT) -> None:
        out = OutputProducer(settings, "user-windows")
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                batch = StateBatch(topo.users, new_user_state)
                user_batch(out, batch, events)
                await settle(out, batch)

    @app.timer(interval=10.0)
    async def report_table_sizes() -> None:
        for table in (topo.users, topo.terminals):
            metrics.table_keys.labels(table.name).set(len(table))
