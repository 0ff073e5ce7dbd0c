"""Small real consumers of the output topics: an analyst's alert feed and a user's latest recommendations.

They double as examples for the teams that build on the score topics.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamproc.config import Settings
from streamproc.kafka.clients import new_consumer
from streamproc.kafka.records import position_of, value_of


def _consumer(settings: Settings, group: str, from_beginning: bool) -> Consumer:
    return new_consumer(
        settings,
        group,
        {"auto.offset.reset": "earliest" if from_beginning else "latest", "enable.partition.eof": True},
    )


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def _past_event(event: dict[str, Any]) -> str:
    amount = event.get("amount")
    amount_text = f" amount {amount:.2f}" if isinstance(amount, int | float) else ""
    at = event.get("item_id") or "-"
    return f"{event.get('event_id')} {event.get('kind') or event.get('action') or ''} at {at}{amount_text}"


def explanation_lines(explanation: dict[str, Any]) -> list[str]:
    """An alert's explanation (models.serving.explain) as an analyst reads it, one line per half of the score,
    in log-odds: what each feature added to the trees' score, and the past events that moved the head's most."""
    lines = []
    trees = explanation.get("trees")
    if trees:
        terms = [f"bias {_signed(trees['bias'])}"]
        for part in trees["top"]:
            value = part["value"]
            value_text = "missing" if value is None else f"{value:.4g}"
            terms.append(f"{part['feature']}={value_text} {_signed(part['contribution'])}")
        terms.append(f"others {_signed(trees['others'])}")
        lines.append(
            f"    why, trees ({trees['weight']:.0%}): {_signed(trees['log_odds'])} = " + ", ".join(terms)
        )
    head = explanation.get("head")
    if head:
        events = ", ".join(f"{_past_event(e)} {_signed(e['effect'])}" for e in head["events"])
        lines.append(
            f"    why, sequence model ({head['weight']:.0%}): {_signed(head['log_odds'])}"
            + (f"; past events that moved it most: {events}" if events else "; no past events")
        )
    return lines


def format_alert(alert: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(alert["event_ts_ms"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    amount = alert.get("amount")
    amount_text = f"{amount:>10.2f}" if isinstance(amount, int | float) else " " * 10
    lag_ms = alert["scored_ts_ms"] - (alert.get("lineage") or {}).get("ingest_ts_ms", alert["scored_ts_ms"])
    velocity = alert.get("velocity") or {}
    velocity_text = "".join(
        f"  {who} 1h: {velocity[f'{prefix}nb_tx_1h']:.0f} tx {velocity[f'{prefix}amount_1h']:.2f}"
        for who, prefix in (("user", "customer_"), ("terminal", "terminal_recent_"))
        if f"{prefix}nb_tx_1h" in velocity and f"{prefix}amount_1h" in velocity
    )
    return (
        f"{when}  risk {alert['risk']:.3f}  user {alert['user_id']:<10} {alert.get('kind') or '':<11} "
        f"at {alert.get('item_id') or '-':<10} amount {amount_text}{velocity_text}  event {alert['event_id']}  "
        f"(scored {lag_ms} ms after ingest, model {alert['model_version']})"
    ) + "".join("\n" + line for line in explanation_lines(alert.get("explanation") or {}))


def follow_alerts(settings: Settings, from_beginning: bool = False, max_alerts: int | None = None) -> int:
    """Print fraud alerts as they arrive (Ctrl-C stops)."""
    consumer = _consumer(settings, f"streamproc-alerts-{uuid.uuid4().hex[:8]}", from_beginning)
    consumer.subscribe([settings.fraud_alerts_topic])
    seen = 0
    try:
        while max_alerts is None or seen < max_alerts:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            print(format_alert(json.loads(value_of(msg))), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a murmur2 partitioner (Java's, Faust's, the scoring worker's) gives `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def latest_scores_for(
    settings: Settings, user_id: str, timeout_s: float = 30.0, chunk: int = 5_000
) -> dict[str, Any] | None:
    """The last next-action scores published for `user_id`, read from the end of its partition back.

    Last published, as a table built from the topic (last value per key) holds it: the scores of the
    user's most recently scored event. The scoring worker keys scores by user with the murmur2
    partitioner, so only that partition holds them; it is read in ranges going back from its end
    (`chunk` records, then twice as many each time) until a range holds any of the user's scores.
    """
    topic, key = settings.next_action_topic, user_id.encode()
    consumer = _consumer(settings, f"streamproc-recs-{uuid.uuid4().hex[:8]}", True)
    deadline = time.monotonic() + timeout_s
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"cannot read {topic}: {metadata.error}")
        partition = partition_of(key, len(metadata.partitions))
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        end, size = high, chunk
        while end > low:
            start = max(low, end - size)
            found = _read_range(consumer, topic, partition, start, end, key, deadline)
            if found:
                return json.loads(found[-1])
            end, size = start, size * 2
        return None
    finally:
        consumer.close()


def _read_range(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, key: bytes, deadline: float
) -> list[bytes]:
    """The values with `key` among the partition's records at offsets [start, end)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    values: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}[{partition}] not read from {start} to {end} in time")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return values
            raise RuntimeError(f"reading {topic}[{partition}]: {error}")
        _, _, offset = position_of(msg)
        if offset >= end:
            return values
        if msg.key() == key:
            values.append(value_of(msg))
        if offset >= end - 1:
            return values


def show_recommendations(settings: Settings, user_id: str) -> int:
    scores = latest_scores_for(settings, user_id)
    if scores is None:
        print(f"no next-action scores for user {user_id}")
        return 1
    print(f"user {user_id}: after event {scores['event_id']} (model {scores['model_version']})")
    print("  next items:   " + ", ".join(f"{i['item_id']} ({i['score']:.2f})" for i in scores["top_items"]))
    actions = sorted(scores["next_action"].items(), key=lambda kv: -kv[1])
    print("  next action:  " + ", ".join(f"{a} {p:.2f}" for a, p in actions))
    print(f"  next event in about {scores['time_to_next_s']:.0f} s")
    return 0
