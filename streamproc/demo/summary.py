"""The demo's live summary: what the output topics showed of this run's input, rendered every few seconds."""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamproc.config import Settings
from streamproc.kafka.clients import new_consumer
from streamproc.kafka.consumers import explanation_lines

Partition = tuple[str, int]


@dataclass
class Summary:
    """What the output topics have shown so far of this run's input: the outputs of input offsets
    before `since` (per input topic and partition; absent: 0) belong to earlier runs and are ignored."""

    since: dict[Partition, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    scored: set[str] = field(default_factory=set)
    next_actions_for: set[str] = field(default_factory=set)
    dead_lettered: set[tuple[str, int, int]] = field(default_factory=set)
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=5000))
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))
    last_recs: dict[str, Any] | None = None
    first_score_at: float | None = None
    rate_mark: tuple[float, int] | None = None

    def is_this_runs(self, topic: str, partition: int, offset: int) -> bool:
        return offset >= self.since.get((topic, partition), 0)

    def add(self, topic: str, value: dict[str, Any], settings: Settings) -> None:
        origin: dict[str, Any] | None = (
            value.get("lineage")
            if topic != settings.dead_letter_topic
            else {
                "topic": value.get("source_topic"),
                "partition": value.get("partition"),
                "offset": value.get("offset"),
            }
        )
        if origin and not self.is_this_runs(origin["topic"], origin["partition"], origin["offset"]):
            return
        self.counts[topic] += 1
        if topic == settings.risk_scores_topic:
            self.scored.add(value["event_id"])
            ingest = (value.get("lineage") or {}).get("ingest_ts_ms")
            if ingest:
                self.latencies_ms.append(value["scored_ts_ms"] - ingest)
            self.first_score_at = self.first_score_at or time.monotonic()
        elif topic == settings.fraud_alerts_topic:
            self.alerts.append(value)
        elif topic == settings.next_action_topic:
            self.next_actions_for.add(value["event_id"])
            self.last_recs = value
        elif topic == settings.dead_letter_topic and value.get("source_topic") in (
            settings.clicks_topic,
            settings.transactions_topic,
        ):  # fraud labels are not scored
            self.dead_lettered.add((value["source_topic"], value["partition"], value["offset"]))

    def recent_rate(self) -> float:
        """Scores per second since the previous call (the first call: since the first score), so
        that the summary shows the current rate, not an average since the start."""
        now = time.monotonic()
        since, count_then = self.rate_mark or (self.first_score_at or now, 0)
        elapsed = now - since
        if elapsed < 0.5:  # too short to say; the next call measures from the same mark
            return 0.0
        self.rate_mark = (now, len(self.scored))
        return (len(self.scored) - count_then) / elapsed

    def done(self) -> int:
        """Input events seen through: both scores read (each topic is read at its own pace, so counting
        risk scores alone could end the demo with next-action scores of the same transactions unread)
        or dead-lettered."""
        return len(self.scored & self.next_actions_for) + len(self.dead_lettered)

    def render(self, produced: int, settings: Settings, kafka_status: str = "", labels_sent: int = 0) -> str:
        lat = sorted(self.latencies_ms)
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0  # noqa: E731
        rate = self.recent_rate()
        lines = [
            f"--- produced {produced}  scored {len(self.scored)}  dead-lettered {len(self.dead_lettered)}  "
            f"({rate:.0f} scored/s)  latency ms p50 {pct(0.5)} p95 {pct(0.95)} p99 {pct(0.99)}"
            + (f"  fraud labels sent {labels_sent}" if labels_sent else "")
            + (f"  {kafka_status}" if kafka_status else ""),
        ]
        for alert in self.alerts:
            lines.append(
                f"  ALERT risk {alert['risk']:.2f} user {alert['user_id']} event {alert['event_id']} "
                f"{alert.get('kind')} at {alert.get('item_id')} amount {alert.get('amount')}"
            )
        if self.alerts:  # why the latest alert was raised
            lines += explanation_lines(self.alerts[-1].get("explanation") or {})
        if self.last_recs:
            lines.append(
                f"  user {self.last_recs['user_id']}: " + "; ".join(predictions_shown(self.last_recs))
            )
        return "\n".join(lines)


def predictions_shown(next_action: dict[str, Any]) -> list[str]:
    """What a next-action score says that its model was trained to say: next items only when the model
    recommends any (one trained on payments alone lists none), the likely next action only when there is a
    choice of actions, and the time to the next event."""
    shown = []
    if next_action.get("top_items"):
        shown.append("next items " + ", ".join(i["item_id"] for i in next_action["top_items"][:5]))
    actions = next_action.get("next_action") or {}
    if len(actions) > 1:
        shown.append("likely next action " + max(actions.items(), key=lambda kv: kv[1])[0])
    if "time_to_next_s" in next_action:
        shown.append("next event in " + duration(float(next_action["time_to_next_s"])) + " (median)")
    return shown


def duration(seconds: float) -> str:
    """A duration as a person reads it: 45 s, 12 min, 3.5 h, 2.0 days."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def output_topics(settings: Settings) -> tuple[str, ...]:
    return (
        settings.risk_scores_topic,
        settings.next_action_topic,
        settings.fraud_alerts_topic,
        settings.dead_letter_topic,
    )


def output_consumer(settings: Settings, start: dict[Partition, int]) -> Consumer:
    """A consumer of the output topics from `start` (every partition of the output topics); no group join."""
    consumer = new_consumer(settings, f"streamproc-demo-{uuid.uuid4().hex[:8]}")
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
    return consumer
