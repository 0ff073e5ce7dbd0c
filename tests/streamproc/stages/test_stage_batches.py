"""The three stages' batch work, called directly: what a batch of events sends on and counts (no Faust,
no Kafka: the producer and the state cache are stand-ins that record what they are given)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streamproc.config import Settings
from streamproc.core.event_time import EventTimeClocks
from streamproc.core.processing import new_terminal_state, new_user_state
from streamproc.core.window_codec import WindowEncodings
from streamproc.feed.fraud_labels import label_message
from streamproc.observability.metrics import create_metrics
from streamproc.stages.batches import StageBatches

TS = 1_735_689_600_000  # 2025-01-01


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = TS / 1000


@dataclass
class Event:
    message: Message


def event(topic: str, offset: int, key: str | None, value: dict[str, Any]) -> Event:
    return Event(Message(topic, 0, offset, key.encode() if key else None, json.dumps(value).encode()))


@dataclass
class RecordingProducer:
    sent: list[tuple[str, bytes | None, dict[str, Any]]] = field(default_factory=list)

    def produce(self, topic: str, key: bytes | None, value: bytes, **_: Any) -> None:
        self.sent.append((topic, key, json.loads(value)))

    def to(self, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
        return [(key, value) for t, key, value in self.sent if t == topic]


@dataclass
class DictStates:
    new_state: Any
    states: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)

    def get_for_update(self, key: bytes, _event: Any) -> dict[str, Any]:
        self.dirty.add(key)
        return self.states.setdefault(key, self.new_state())

    def peek(self, key: bytes, _event: Any) -> dict[str, Any] | None:
        return self.states.get(key)

    def mark_dirty(self, key: bytes, state: dict[str, Any], _event: Any) -> None:
        self.states[key] = state
        self.dirty.add(key)


def stages() -> tuple[StageBatches, Settings, Any]:
    settings = Settings()
    metrics = create_metrics()
    batches = StageBatches(
        settings, metrics, EventTimeClocks(settings.max_event_ahead_ms), WindowEncodings(100)
    )
    return batches, settings, metrics.registry


def transaction(event_id: str, ts: int = TS) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "u1",
        "amount": 20.5,
        "currency": "EUR",
        "terminal_id": "t7",
        "ts": ts,
        "label": 0,
    }


def click(event_id: str, ts: int = TS) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u1", "item_id": "i3", "action": "view", "ts": ts}


def test_routing_rekeys_valid_transactions_by_terminal_and_dead_letters_the_rest() -> None:
    batches, settings, registry = stages()
    out = RecordingProducer()
    batch = [
        event(settings.transactions_topic, 0, "u1", transaction("tx1")),
        event(settings.transactions_topic, 1, "u1", {**transaction("tx2"), "amount": -5}),
        event(settings.fraud_labels_topic, 0, "t7", label_message("tx1", "t7", TS)),
    ]
    batches.route_batch(out, batch)  # type: ignore[arg-type]
    routed = out.to(settings.tx_by_terminal_topic)
    assert [key for key, _ in routed] == [b"t7", b"t7"]
    assert routed[0][1]["record"]["event_id"] == "tx1"
    lineage = {"topic": settings.transactions_topic, "partition": 0, "offset": 0, "ingest_ts_ms": TS}
    assert routed[0][1]["lineage"] == lineage
    assert routed[1][1]["fraud_label"]["transaction_id"] == "tx1"
    ((_, dead),) = out.to(settings.dead_letter_topic)
    assert (dead["source_topic"], dead["offset"], dead["reason"]) == (
        settings.transactions_topic,
        1,
        "bad_amount",
    )
    assert (
        registry.get_sample_value(
            "streamproc_dead_letters_total", {"topic": settings.transactions_topic, "reason": "bad_amount"}
        )
        == 1.0
    )


def test_a_routed_transaction_folds_into_its_terminal_and_goes_on_keyed_by_its_user() -> None:
    batches, settings, _ = stages()
    routed, out = RecordingProducer(), RecordingProducer()
    batches.route_batch(routed, [event(settings.transactions_topic, 5, "u1", transaction("tx1"))])  # type: ignore[list-item]
    ((_, key, payload),) = routed.sent
    states = DictStates(new_terminal_state)
    batches.terminal_batch(out, states, [event(settings.tx_by_terminal_topic, 0, key.decode(), payload)])  # type: ignore[arg-type, union-attr]
    ((user_key, passed),) = out.to(settings.user_events_topic)
    assert user_key == b"u1" and passed["record"]["event_id"] == "tx1"
    assert passed["terminal"]["terminal_recent_nb_tx_7d"] == 1.0
    assert states.dirty == {b"t7"}


def test_a_click_updates_its_users_window_once_even_when_its_id_is_sent_twice() -> None:
    batches, settings, registry = stages()
    out = RecordingProducer()
    states = DictStates(new_user_state)
    first, again = click("c1"), click("c1")
    batches.user_batch(out, states, [  # type: ignore[arg-type]
        event(settings.clicks_topic, 0, "u1", first),
        event(settings.clicks_topic, 1, "u1", again),
        event(settings.clicks_topic, 2, "u1", click("c2", TS + 1000)),
    ])  # fmt: skip
    updates = out.to(settings.sequence_updates_topic)
    assert [key for key, _ in updates] == [b"u1", b"u1"]
    assert [e["event_id"] for e in updates[-1][1]["window"]] == ["c1", "c2"]
    assert (
        registry.get_sample_value("streamproc_duplicate_events_total", {"topic": settings.clicks_topic})
        == 1.0
    )


def test_a_click_keyed_by_something_else_is_rekeyed_by_its_user_and_not_applied_here() -> None:
    batches, settings, _ = stages()
    out = RecordingProducer()
    states = DictStates(new_user_state)
    batches.user_batch(out, states, [event(settings.clicks_topic, 0, "session-9", click("c1"))])  # type: ignore[list-item]
    ((key, rekeyed),) = out.to(settings.user_events_topic)
    assert key == b"u1" and rekeyed["record"]["event_id"] == "c1"
    assert out.to(settings.sequence_updates_topic) == [] and states.states == {}


def test_a_click_far_ahead_of_its_partitions_clock_is_dead_lettered_and_changes_no_window() -> None:
    batches, settings, _ = stages()
    out = RecordingProducer()
    states = DictStates(new_user_state)
    year_2099 = 4_070_908_800_000
    batches.user_batch(out, states, [  # type: ignore[arg-type]
        event(settings.clicks_topic, 0, "u1", click("c1")),
        event(settings.clicks_topic, 1, "u1", click("c-future", year_2099)),
    ])  # fmt: skip
    ((_, dead),) = out.to(settings.dead_letter_topic)
    assert dead["reason"] == "future_timestamp"
    ((_, update),) = out.to(settings.sequence_updates_topic)
    assert [e["event_id"] for e in update["window"]] == ["c1"]
