"""Thin Faust agents: decode -> validate -> pure state transition -> table -> emit update or dead letter.

Three stages, each keyed so that a table key always lives in the partition of the events that
change it:
  transactions, fraud-labels (any key) -> validate -> streamproc.transactions-by-terminal (key terminal)
  by-terminal                 -> terminal velocity table -> streamproc.user-events (key user; transactions only)
  clicks + user-events        -> user window + velocity table -> sequence-updates (key user)
Events are taken in batches and their states updated in memory (streamproc.stages.write_behind); each
changed key is written to RocksDB and its changelog once per batch (state_flush="batch") or once
per commit (state_flush="commit"), in the context of that key's own last event, and every output
is acknowledged before the offsets are acknowledged or committed (at-least-once; redelivered
offsets change no state twice).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import faust
from faust.types import TableT

from streamproc.config import Settings
from streamproc.core.event_time import EventTimeClocks
from streamproc.core.events import (
    FraudLabel,
    InvalidEvent,
    ValidEvent,
    check_size,
    dead_letters,
    decode,
    encode,
    validate,
    validate_fraud_label,
)
from streamproc.core.processing import (
    Lineage,
    State,
    apply_fraud_label,
    apply_terminal_event,
    apply_user_event,
    is_duplicate_user_event,
    is_new_user_event,
    label_delay_days,
    new_terminal_state,
    new_user_state,
    sequence_update,
)
from streamproc.core.window_codec import WindowEncodings
from streamproc.kafka.output_producer import OutputProducer
from streamproc.observability.metrics import Metrics
from streamproc.stages.app import Topology
from streamproc.stages.table_size import install_table_size_reporter
from streamproc.stages.write_behind import StateCache, WriteBehind

TAKE_MAX = 4000  # events per batch: more events per key per batch, fewer changelog records
TAKE_WITHIN_S = 0.01


def _now_ms() -> int:
    return int(time.time() * 1000)


def required(raw: bytes | None, what: str) -> bytes:
    """A record's key or value where it always has one: internal topics are written only by this worker,
    and a click is handled only once it is keyed by its user."""
    if raw is None:
        raise ValueError(f"a record without a {what} on a topic that always has one")
    return raw


def _lineage(event: faust.EventT) -> Lineage:
    msg = event.message
    return Lineage(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))


@contextmanager
def acked_only_when_settled(events: Sequence[faust.EventT]) -> Iterator[None]:
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


def register_agents(topo: Topology, settings: Settings, metrics: Metrics) -> None:
    """The three agents and their table states; `app.write_behind` holds the states and producers."""
    app = topo.app

    def count_flush(table: str, written: int, seconds: float) -> None:
        metrics.state_writes.labels(table).inc(written)
        metrics.state_flush.observe(seconds)

    write_behind = WriteBehind(on_flush=count_flush)
    app.write_behind = write_behind  # type: ignore[attr-defined]  # flushed in Faust's commit (compat.faust_commit_hook)

    def new_producer(name: str) -> OutputProducer:
        return write_behind.producer(OutputProducer(settings, name))

    def new_cache(
        table: TableT,
        new_state: Callable[[], State],
        out: OutputProducer,
        encode_state: Callable[[bytes, State], bytes] | None = None,
    ) -> StateCache:
        return write_behind.cache(StateCache(table, new_state, out, settings.state_cache_keys, encode_state))

    route_out = new_producer("route-transactions")
    terminal_out = new_producer("terminal-velocity")
    terminal_states = new_cache(topo.terminals, new_terminal_state, terminal_out)
    user_out = new_producer("user-windows")
    windows = WindowEncodings(
        settings.state_cache_keys
    )  # each user's last window JSON, for updates and states
    user_states = new_cache(topo.users, new_user_state, user_out, windows.state)

    clocks = EventTimeClocks(settings.max_event_ahead_ms)

    def send_dead_letter(out: OutputProducer, event: faust.EventT, error: InvalidEvent) -> None:
        """The message to the dead letters, whole, or reduced (size, hash, prefix) when it is too large to keep
        or when Kafka refuses the whole one."""
        msg = event.message
        metrics.dead_letters.labels(msg.topic, error.reason).inc()
        value, reduced = dead_letters(
            msg.value,
            msg.key,
            msg.topic,
            msg.partition,
            msg.offset,
            error,
            _now_ms(),
            settings.max_input_bytes,
        )
        out.produce(
            settings.dead_letter_topic,
            msg.key if value is not reduced else None,
            value,
            fallback=None if value is reduced else reduced,
        )

    def validated(kind: str, event: faust.EventT, now_ms: int) -> ValidEvent:
        """A click or transaction, checked for size, contract and event time (the partition's clock moves on)."""
        msg = event.message
        check_size(msg.value, settings.max_input_bytes)
        valid = validate(kind, msg.value)
        clocks.admit(msg.topic, msg.partition, valid.ts_ms, now_ms)
        return valid

    def route_batch(out: OutputProducer, events: Sequence[faust.EventT]) -> None:
        """Validate transactions and fraud labels and re-key the valid ones by terminal; dead-letter the rest."""
        events_in: Counter[str] = Counter()
        now_ms = _now_ms()
        for event in events:
            msg = event.message
            events_in[msg.topic] += 1
            payload: dict[str, Any]
            try:
                if msg.topic == settings.fraud_labels_topic:
                    check_size(msg.value, settings.max_input_bytes)
                    label = validate_fraud_label(msg.value)
                    terminal, payload = label.terminal_id, {"fraud_label": label.as_dict()}
                else:
                    valid = validated("transaction", event, now_ms)
                    terminal, payload = (
                        valid.record["item_id"],
                        {"record": valid.record, "label": valid.label},
                    )
            except InvalidEvent as error:
                send_dead_letter(out, event, error)
                continue
            payload["lineage"] = _lineage(event).as_dict()
            out.produce(settings.tx_by_terminal_topic, terminal.encode(), encode(payload))
        for topic, count in events_in.items():
            metrics.events_in.labels(topic).inc(count)

    def terminal_batch(out: OutputProducer, states: StateCache, events: Sequence[faust.EventT]) -> None:
        """Fold transactions into their terminal's velocity state and pass them on keyed by user; count fraud labels."""
        for event in events:
            msg = event.message
            payload = decode(required(msg.value, "value"))
            if "fraud_label" in payload:  # counted by outcome, not as an accepted event (events get scores)
                metrics.fraud_labels.labels(
                    label_terminal(states, event, FraudLabel.from_dict(payload["fraud_label"]))
                ).inc()
                continue
            state = states.get_for_update(required(msg.key, "key"), event)
            record = payload["record"]
            origin = payload["lineage"]  # the input transaction: re-sent copies and redeliveries share it
            source = f"{origin['topic']}:{origin['partition']}"
            payload["terminal"] = apply_terminal_event(
                state, record, payload.pop("label"), source, origin["offset"]
            )
            out.produce(settings.user_events_topic, record["user_id"].encode(), encode(payload))

    def label_terminal(states: StateCache, event: faust.EventT, label: FraudLabel) -> str:
        """Apply a fraud label to its terminal's state; a terminal without transactions gets no state."""
        key = required(event.message.key, "key")
        state = states.peek(key, event)
        if state is None:
            return "unmatched"
        outcome = apply_fraud_label(state, label)
        if outcome in ("counted", "retracted"):
            states.mark_dirty(key, state, event)
        if outcome == "counted":
            delay = label_delay_days(state, label)
            if delay is not None:
                metrics.fraud_label_delay.observe(delay)
        return outcome

    def user_batch(out: OutputProducer, states: StateCache, events: Sequence[faust.EventT]) -> None:
        """Fold clicks and routed transactions into the user's window and emit one sequence update each."""
        clicks_in, updates = 0, 0
        max_events, max_age_ms = settings.window_max_events, settings.window_max_age_ms
        accepted: Counter[str] = Counter()  # counted once per batch: a metric's lock and labels cost per call
        duplicates: Counter[str] = Counter()
        now_ms = _now_ms()
        for event in events:
            msg = event.message
            if msg.topic == settings.clicks_topic:
                clicks_in += 1
                try:
                    valid = validated("click", event, now_ms)
                except InvalidEvent as error:
                    send_dead_letter(out, event, error)
                    continue
                record, lineage, terminal = valid.record, _lineage(event), {}
                user_key = record["user_id"].encode()
                if (
                    msg.key != user_key
                ):  # keyed by something else: re-key so the user's state stays in one partition
                    rekeyed = {"record": record, "lineage": lineage.as_dict(), "terminal": {}}
                    out.produce(settings.user_events_topic, user_key, encode(rekeyed))
                    continue
            else:
                payload = decode(required(msg.value, "value"))
                record, lineage, terminal = (
                    payload["record"],
                    Lineage.from_dict(payload["lineage"]),
                    payload["terminal"],
                )
            user_key = required(msg.key, "key")
            state = states.get_for_update(user_key, event)
            source = f"{msg.topic}:{msg.partition}"
            if is_duplicate_user_event(state, record, source, msg.offset):  # the same event id sent again
                duplicates[lineage.topic] += 1
                continue
            is_new = is_new_user_event(state, record, source, msg.offset)
            if is_new:  # a redelivery (the same offset, after a crash) is scored again, not counted
                accepted[lineage.topic] += 1
            window, customer = apply_user_event(
                state, record, source, msg.offset, max_events, max_age_ms, is_new
            )
            update = sequence_update(record, window, customer | terminal, lineage, _now_ms())
            out.produce(settings.sequence_updates_topic, user_key, windows.update(user_key, update))
            updates += 1
        if clicks_in:
            metrics.events_in.labels(settings.clicks_topic).inc(clicks_in)
        for topic, count in accepted.items():
            metrics.events_accepted.labels(topic).inc(count)
        for topic, count in duplicates.items():
            metrics.duplicate_events.labels(topic).inc(count)
        if updates:
            metrics.sequence_updates.inc(updates)

    async def after_batch(out: OutputProducer, states: StateCache | None = None) -> None:
        """Per batch (state_flush="batch"): write the states and wait for every record before the batch is
        acknowledged. Write-behind (state_flush="commit"): serve delivery callbacks, and write the states
        early only when too many keys are dirty (memory bound); the commit flushes the rest."""
        if settings.state_flush == "batch":
            await write_behind.flush_stage(out, states)
            return
        out.poll()
        if states is not None and states.dirty_keys > settings.state_cache_keys:
            states.write_dirty()

    @app.agent(topo.tx_inputs, name="streamproc.route-transactions")
    async def route_transactions(stream: faust.StreamT) -> None:
        out = route_out
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                route_batch(out, events)
                await after_batch(out)

    @app.agent(topo.tx_by_terminal, name="streamproc.terminal-velocity")
    async def terminal_velocity(stream: faust.StreamT) -> None:
        out, states = terminal_out, terminal_states
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                terminal_batch(out, states, events)
                await after_batch(out, states)

    @app.agent(topo.user_inputs, name="streamproc.user-windows")
    async def user_windows(stream: faust.StreamT) -> None:
        out, states = user_out, user_states
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with acked_only_when_settled(events):
                user_batch(out, states, events)
                await after_batch(out, states)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's receiver type rejects coroutines
    async def forget_states(app: faust.App, revoked: set, **kwargs: Any) -> None:
        """Revocation committed (and so flushed) what it could; another worker may now change these states."""
        write_behind.forget_states()
        windows.forget()

    install_table_size_reporter(
        app, (topo.users, topo.terminals), lambda table, keys: metrics.table_keys.labels(table).set(keys)
    )
