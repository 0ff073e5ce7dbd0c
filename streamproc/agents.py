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

import asyncio
import json
import time
import weakref
from collections.abc import Awaitable
from typing import Any

import faust
from faust.streams import _current_event

from streamproc.app import Topology
from streamproc.config import Settings
from streamproc.events import InvalidEvent, dead_letter, encode, validate
from streamproc.metrics import Metrics
from streamproc.processing import (
    Lineage,
    State,
    apply_terminal_event,
    apply_user_event,
    new_terminal_state,
    new_user_state,
    sequence_update,
)

TAKE_MAX = 1000
TAKE_WITHIN_S = 0.01


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lineage(event: faust.EventT) -> Lineage:
    msg = event.message
    return Lineage(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))


def write_in_context(table: faust.Table, key: bytes, value: bytes, event: faust.EventT) -> Awaitable[Any]:
    """Store key -> value in the partition of `event` (its own source partition) and send the changelog record.

    Returns the changelog send, which completes when the broker acknowledges it. (Faust's own
    table[key] = value buffers the changelog record and its producer flush may return before the
    buffer is empty, so an offset could be committed ahead of the state it produced.)
    """
    token = _current_event.set(weakref.ref(event))
    try:
        table.data[key] = value
        return table.send_changelog(event.message.partition, key, value)
    finally:
        _current_event.reset(token)


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
            state = json.loads(raw) if raw else self.new_state()
        self.states[key] = (state, event)
        return state

    def write(self) -> list[Awaitable[Any]]:
        sends = [write_in_context(self.table, key, encode(state), event) for key, (state, event) in self.states.items()]
        self.states.clear()
        return sends


def register_agents(topo: Topology, settings: Settings, metrics: Metrics) -> None:
    app = topo.app

    async def settle(sends: list[Awaitable[Any]]) -> None:
        """Flush the producer and wait for every acknowledgement before the batch's offsets are acked."""
        await app.producer.flush()
        await asyncio.gather(*sends)

    async def send_dead_letter(event: faust.EventT, error: InvalidEvent) -> Awaitable[Any]:
        msg = event.message
        metrics.dead_letters.labels(msg.topic, error.reason).inc()
        return await topo.dead_letters.send(
            key=msg.key,
            value=dead_letter(msg.value, msg.key, msg.topic, msg.partition, msg.offset, error, _now_ms()),
        )

    @app.agent(topo.transactions, name="streamproc.route-transactions")
    async def route_transactions(stream: faust.StreamT) -> None:
        events_in = metrics.events_in.labels(settings.transactions_topic)
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            sends: list[Awaitable[Any]] = []
            for event in events:
                events_in.inc()
                try:
                    valid = validate("transaction", event.message.value)
                except InvalidEvent as error:
                    sends.append(await send_dead_letter(event, error))
                    continue
                payload = {"record": valid.record, "label": valid.label, "lineage": _lineage(event).as_dict()}
                sends.append(await topo.tx_by_terminal.send(key=valid.record["item_id"].encode(), value=encode(payload)))
            await settle(sends)

    @app.agent(topo.tx_by_terminal, name="streamproc.terminal-velocity")
    async def terminal_velocity(stream: faust.StreamT) -> None:
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            batch = StateBatch(topo.terminals, new_terminal_state)
            sends = []
            for event in events:
                msg = event.message
                payload = json.loads(msg.value)
                record = payload["record"]
                state = batch.get(msg.key, event)
                payload["terminal"] = apply_terminal_event(
                    state, record, payload.pop("label"), f"{msg.topic}:{msg.partition}", msg.offset
                )
                sends.append(await topo.user_events.send(key=record["user_id"].encode(), value=encode(payload)))
            await settle(sends + batch.write())

    @app.agent(topo.user_inputs, name="streamproc.user-windows")
    async def user_windows(stream: faust.StreamT) -> None:
        clicks_in = metrics.events_in.labels(settings.clicks_topic)
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            batch = StateBatch(topo.users, new_user_state)
            sends = []
            for event in events:
                msg = event.message
                if msg.topic == settings.clicks_topic:
                    clicks_in.inc()
                    try:
                        valid = validate("click", msg.value)
                    except InvalidEvent as error:
                        sends.append(await send_dead_letter(event, error))
                        continue
                    record, lineage, terminal = valid.record, _lineage(event), {}
                    user_key = record["user_id"].encode()
                    if msg.key != user_key:  # keyed by something else: re-key so the user's state stays in one partition
                        sends.append(await topo.user_events.send(
                            key=user_key, value=encode({"record": record, "lineage": lineage.as_dict(), "terminal": {}})
                        ))
                        continue
                else:
                    payload = json.loads(msg.value)
                    record, lineage, terminal = payload["record"], Lineage.from_dict(payload["lineage"]), payload["terminal"]
                state = batch.get(msg.key, event)
                window, customer = apply_user_event(
                    state, record, f"{msg.topic}:{msg.partition}", msg.offset,
                    settings.window_max_events, settings.window_max_age_ms,
                )
                metrics.events_accepted.labels(lineage.topic).inc()
                update = sequence_update(record, window, customer | terminal, lineage, _now_ms())
                sends.append(await topo.sequence_updates.send(key=msg.key, value=encode(update)))
                metrics.sequence_updates.inc()
            await settle(sends + batch.write())

    @app.timer(interval=10.0)
    async def report_table_sizes() -> None:
        for table in (topo.users, topo.terminals):
            metrics.table_keys.labels(table.name).set(len(table))
