"""Pure per-key state transitions of the Faust agents: user windows and velocity, terminal velocity and labels.

Each state remembers the last source offset it applied per input partition, so an event that
Kafka redelivers after a crash (at-least-once) changes nothing twice; windows also ignore a
duplicate event_id sent twice by a producer, and a terminal remembers which of its transactions
it counts as fraud, so a fraud label counts once however often it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.features import aggregates
from streamproc.core.events import FraudLabel
from streamproc.core.windowing import insert_event, window_for_event

State = dict[str, Any]
RECENT_IDS_PER_MAX_EVENTS = 4  # event ids remembered per user, in multiples of the window length
TERMINAL_RECENT_IDS = 256  # transaction ids a terminal remembers, to count one sent twice once


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where an input event came from, carried to every message derived from it."""

    topic: str
    partition: int
    offset: int
    ingest_ts_ms: int  # the broker timestamp of the input message

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "ingest_ts_ms": self.ingest_ts_ms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lineage:
        return cls(str(d["topic"]), int(d["partition"]), int(d["offset"]), int(d["ingest_ts_ms"]))


def new_user_state() -> State:
    # w: window, o: last applied offset per source partition, v: velocity, s: recently applied event ids
    return {"w": [], "o": {}, "v": aggregates.new_state(), "s": []}


def new_terminal_state() -> State:
    # f: the transactions counted as fraud, {transaction event_id: day index}, for the days velocity keeps;
    # s: the terminal's recently applied transaction ids
    return {"o": {}, "v": aggregates.new_state(), "f": {}, "s": []}


def already_applied(state: State, source: str, offset: int) -> bool:
    return offset <= state["o"].get(source, -1)


def is_new_user_event(state: State, record: dict[str, Any], source: str, offset: int) -> bool:
    """Whether `apply_user_event` would change the state: neither a redelivered offset nor a re-sent event id."""
    return not already_applied(state, source, offset) and record["event_id"] not in state.get("s", [])


def is_duplicate_user_event(state: State, record: dict[str, Any], source: str, offset: int) -> bool:
    """Whether the event's id was already applied under another offset: a producer (or an upstream stage
    that re-ran) sent it twice. Such an event is neither applied nor scored again; a redelivery of an
    applied offset (after a crash, before its commit) is not a duplicate: it is scored again."""
    return not already_applied(state, source, offset) and record["event_id"] in state.get("s", [])


def apply_user_event(
    state: State,
    record: dict[str, Any],
    source: str,
    offset: int,
    max_events: int,
    max_age_ms: int,
    is_new: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Apply one accepted event to its user's state (mutated); return the window and customer aggregates to score it with.

    An event counts once even when it arrives twice: Kafka redelivers the same offset after a
    crash, and an upstream stage that re-runs re-sends the same event under a new offset, which
    the recent event ids catch. `is_new`: what `is_new_user_event` just said of this event and
    state, when the caller asked it (the recent ids are not scanned twice).
    """
    recent = state.setdefault("s", [])
    if is_new is None:
        is_new = is_new_user_event(state, record, source, offset)
    if is_new:
        state["w"], _inserted = insert_event(state["w"], record, max_events, max_age_ms)
        if record["kind"] == "transaction":
            aggregates.update(state["v"], record["ts_ms"], record["amount"])
        recent.append(record["event_id"])
        del recent[: max(0, len(recent) - RECENT_IDS_PER_MAX_EVENTS * max_events)]
    state["o"][source] = max(offset, state["o"].get(source, -1))
    window = window_for_event(state["w"], record, max_events)
    at = record["ts_ms"]
    return window, aggregates.customer_features(state["v"], at) | aggregates.customer_recent_features(
        state["v"], at
    )


def apply_terminal_event(
    state: State, record: dict[str, Any], label: int | None, source: str, offset: int
) -> dict[str, float]:
    """Apply one transaction to its terminal's state (mutated); return the terminal aggregates at its time.

    `source` and `offset` name the input transaction, not the by-terminal record: when the routing
    stage re-runs after a crash it re-sends transactions under new offsets, and those must not count
    twice. One routing task reads each input partition, so a terminal sees each partition's offsets
    in order. A transaction whose id the terminal applied recently (sent twice by a producer, under
    another input offset) does not count again either.
    """
    if not already_applied(state, source, offset):
        recent = state.setdefault("s", [])  # states written before duplicates were caught had no "s"
        if record["event_id"] not in recent:
            aggregates.update(state["v"], record["ts_ms"], record["amount"], label)
            if label:
                _known_frauds(state)[record["event_id"]] = aggregates.day_index(record["ts_ms"])
            recent.append(record["event_id"])
            del recent[: max(0, len(recent) - TERMINAL_RECENT_IDS)]
        state["o"][source] = offset
    at = record["ts_ms"]
    return aggregates.terminal_features(state["v"], at) | aggregates.terminal_recent_features(state["v"], at)


# what a fraud label did to its terminal's state (the label metric's `outcome`)
LABEL_OUTCOMES = ("counted", "retracted", "duplicate", "not_counted", "unmatched")


def apply_fraud_label(state: State, label: FraudLabel) -> str:
    """Apply a verdict on a past transaction to its terminal's state (mutated); return one of LABEL_OUTCOMES.

    label 1 counts the transaction as a known fraud on its day ("duplicate" when it already is);
    label 0 retracts it ("not_counted" when it was not counted). "unmatched": the terminal holds no
    transaction on that day left to count (never seen here, or older than the days velocity keeps).
    """
    frauds = _known_frauds(state)
    counted = label.transaction_id in frauds
    if label.label == 1 and counted:
        return "duplicate"
    if label.label == 0 and not counted:
        return "not_counted"
    if label.label == 1:
        if not aggregates.add_known_fraud(state["v"], label.ts_ms, 1):
            return "unmatched"
        frauds[label.transaction_id] = aggregates.day_index(label.ts_ms)
        return "counted"
    aggregates.add_known_fraud(state["v"], frauds.pop(label.transaction_id) * aggregates.DAY_MS, -1)
    return "retracted"


def label_delay_days(state: State, label: FraudLabel) -> float | None:
    """How late a label is in the terminal's event time: its newest transaction minus the labelled one
    (0 at least; None for a terminal without transactions). The terminal risk features assume every
    label of a transaction is known aggregates.LABEL_DELAY_DAYS after it; a quiet terminal's clock lags."""
    newest = aggregates.newest_ms(state["v"])
    return None if newest is None else max(0.0, (newest - label.ts_ms) / aggregates.DAY_MS)


def _known_frauds(state: State) -> dict[str, int]:
    """The state's fraud transaction ids, less those of days its velocity no longer keeps."""
    frauds: dict[str, int] = state.setdefault("f", {})  # states written before labels had no "f"
    kept = state["v"].get("d", {})
    for transaction_id in [t for t, day in frauds.items() if str(day) not in kept]:
        del frauds[transaction_id]
    return frauds


def sequence_update(
    record: dict[str, Any],
    window: list[dict[str, Any]],
    aggregate_values: dict[str, float],
    lineage: Lineage,
    emitted_ts_ms: int,
) -> dict[str, Any]:
    """The `sequence-updates` message: everything the scorer needs, plus lineage back to the input event."""
    return {
        "user_id": record["user_id"],
        "event_id": record["event_id"],
        "kind": record["kind"],
        "event_ts_ms": record["ts_ms"],
        "emitted_ts_ms": emitted_ts_ms,
        "lineage": lineage.as_dict(),
        "window": window,
        "aggregates": aggregate_values,
    }
