"""The three stages' work on a batch of events, apart from Faust's agents: validation, the pure state
transitions, and what each event sends on (an update, a re-keyed record, or a dead letter). The agents in
`stages.agents` feed batches in; tests call these methods directly with plain events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust

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
    apply_fraud_label,
    apply_terminal_event,
    apply_user_event,
    is_duplicate_user_event,
    is_new_user_event,
    label_delay_days,
    sequence_update,
)
from streamproc.core.window_codec import WindowEncodings
from streamproc.kafka.output_producer import OutputProducer
from streamproc.observability.metrics import Metrics
from streamproc.stages.write_behind import StateCache


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def required(raw: bytes | None, what: str) -> bytes:
    """A record's key or value where it always has one: internal topics are written only by this worker,
    and a click is handled only once it is keyed by its user."""
    if raw is None:
        raise ValueError(f"a record without a {what} on a topic that always has one")
    return raw


def lineage_of(event: faust.EventT) -> Lineage:
    msg = event.message
    return Lineage(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))


@dataclass
class StageBatches:
    """What the three stages do with a batch: `route_batch` (transactions and fraud labels, re-keyed by
    terminal), `terminal_batch` (terminal velocity, passed on keyed by user), `user_batch` (the user's
    window and velocity, one sequence update per event)."""

    settings: Settings
    metrics: Metrics
    clocks: EventTimeClocks
    windows: WindowEncodings  # each user's last window JSON, for updates and states

    def send_dead_letter(self, out: OutputProducer, event: faust.EventT, error: InvalidEvent) -> None:
        """The message to the dead letters, whole, or reduced (size, hash, prefix) when it is too large to keep
        or when Kafka refuses the whole one."""
        msg = event.message
        self.metrics.dead_letters.labels(msg.topic, error.reason).inc()
        value, reduced = dead_letters(
            msg.value,
            msg.key,
            msg.topic,
            msg.partition,
            msg.offset,
            error,
            wall_clock_ms(),
            self.settings.max_input_bytes,
        )
        out.produce(
            self.settings.dead_letter_topic,
            msg.key if value is not reduced else None,
            value,
            fallback=None if value is reduced else reduced,
        )

    def validated(self, kind: str, event: faust.EventT, now_ms: int) -> ValidEvent:
        """A click or transaction, checked for size, contract and event time (the partition's clock moves on)."""
        msg = event.message
        check_size(msg.value, self.settings.max_input_bytes)
        valid = validate(kind, msg.value)
        self.clocks.admit(msg.topic, msg.partition, valid.ts_ms, now_ms)
        return valid

    def route_batch(self, out: OutputProducer, events: Sequence[faust.EventT]) -> None:
        """Validate transactions and fraud labels and re-key the valid ones by terminal; dead-letter the rest."""
        events_in: Counter[str] = Counter()
        now_ms = wall_clock_ms()
        for event in events:
            msg = event.message
            events_in[msg.topic] += 1
            payload: dict[str, Any]
            try:
                if msg.topic == self.settings.fraud_labels_topic:
                    check_size(msg.value, self.settings.max_input_bytes)
                    label = validate_fraud_label(msg.value)
                    terminal, payload = label.terminal_id, {"fraud_label": label.as_dict()}
                else:
                    valid = self.validated("transaction", event, now_ms)
                    terminal, payload = (
                        valid.record["item_id"],
                        {"record": valid.record, "label": valid.label},
                    )
            except InvalidEvent as error:
                self.send_dead_letter(out, event, error)
                continue
            payload["lineage"] = lineage_of(event).as_dict()
            out.produce(self.settings.tx_by_terminal_topic, terminal.encode(), encode(payload))
        for topic, count in events_in.items():
            self.metrics.events_in.labels(topic).inc(count)

    def terminal_batch(self, out: OutputProducer, states: StateCache, events: Sequence[faust.EventT]) -> None:
        """Fold transactions into their terminal's velocity state and pass them on keyed by user; count fraud labels."""
        for event in events:
            msg = event.message
            payload = decode(required(msg.value, "value"))
            if "fraud_label" in payload:  # counted by outcome, not as an accepted event (events get scores)
                self.metrics.fraud_labels.labels(
                    self.label_terminal(states, event, FraudLabel.from_dict(payload["fraud_label"]))
                ).inc()
                continue
            state = states.get_for_update(required(msg.key, "key"), event)
            record = payload["record"]
            origin = payload["lineage"]  # the input transaction: re-sent copies and redeliveries share it
            source = f"{origin['topic']}:{origin['partition']}"
            payload["terminal"] = apply_terminal_event(
                state, record, payload.pop("label"), source, origin["offset"]
            )
            out.produce(self.settings.user_events_topic, record["user_id"].encode(), encode(payload))

    def label_terminal(self, states: StateCache, event: faust.EventT, label: FraudLabel) -> str:
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
                self.metrics.fraud_label_delay.observe(delay)
        return outcome

    def user_batch(self, out: OutputProducer, states: StateCache, events: Sequence[faust.EventT]) -> None:
        """Fold clicks and routed transactions into the user's window and emit one sequence update each."""
        clicks_in, updates = 0, 0
        max_events, max_age_ms = self.settings.window_max_events, self.settings.window_max_age_ms
        accepted: Counter[str] = Counter()  # counted once per batch: a metric's lock and labels cost per call
        duplicates: Counter[str] = Counter()
        now_ms = wall_clock_ms()
        for event in events:
            msg = event.message
            if msg.topic == self.settings.clicks_topic:
                clicks_in += 1
                try:
                    valid = self.validated("click", event, now_ms)
                except InvalidEvent as error:
                    self.send_dead_letter(out, event, error)
                    continue
                record, lineage, terminal = valid.record, lineage_of(event), {}
                user_key = record["user_id"].encode()
                if (
                    msg.key != user_key
                ):  # keyed by something else: re-key so the user's state stays in one partition
                    rekeyed = {"record": record, "lineage": lineage.as_dict(), "terminal": {}}
                    out.produce(self.settings.user_events_topic, user_key, encode(rekeyed))
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
            update = sequence_update(record, window, customer | terminal, lineage, wall_clock_ms())
            out.produce(self.settings.sequence_updates_topic, user_key, self.windows.update(user_key, update))
            updates += 1
        if clicks_in:
            self.metrics.events_in.labels(self.settings.clicks_topic).inc(clicks_in)
        for topic, count in accepted.items():
            self.metrics.events_accepted.labels(topic).inc(count)
        for topic, count in duplicates.items():
            self.metrics.duplicate_events.labels(topic).inc(count)
        if updates:
            self.metrics.sequence_updates.inc(updates)
