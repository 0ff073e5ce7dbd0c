"""Small real consumers of the output topics: an analyst's alert feed and a user's latest recommendations.

They double as examples for the teams that build on the score topics.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError

from streamproc.config import Settings


def _consumer(settings: Settings, group: str, from_beginning: bool) -> Consumer:
    return Consumer({
        **settings.kafka_common(),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.partition.eof": True,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
    })


def format_alert(alert: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(alert["event_ts_ms"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    amount = alert.get("amount")
    amount_text = f"{amount:>10.2f}" if isinstance(amount, int | float) else " " * 10
    lag_ms = alert["scored_ts_ms"] - (alert.get("lineage") or {}).get("ingest_ts_ms", alert["scored_ts_ms"])
    velocity = alert.get("velocity") or {}
    velocity_text = "".join(
        f"  {who} 1h: {velocity[f'{prefix}nb_tx_1h']:.0f} tx {velocity[f'{prefix}amount_1h']:.2f}"
        for who, prefix in (("user", "customer_"), ("terminal", "terminal_recent_"))
        if f"{prefix}nb_tx_1h" in velocity and f"{prefix}amount_1h" in velocity)
    return (f"{when}  risk {alert['risk']:.3f}  user {alert['user_id']:<10} {alert.get('kind') or '':<11} "
            f"at {alert.get('item_id') or '-':<10} amount {amount_text}{velocity_text}  event {alert['event_id']}  "
            f"(scored {lag_ms} ms after ingest, model {alert['model_version']})")


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
            print(format_alert(json.loads(msg.value())), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def latest_scores_for(settings: Settings, user_id: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """The newest next-action scores of `user_id`, read from the start of the topic up to its end."""
    consumer = _consumer(settings, f"streamproc-recs-{uuid.uuid4().hex[:8]}", True)
    consumer.subscribe([settings.next_action_topic])
    latest: dict[str, Any] | None = None
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    key = user_id.encode()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    assignment = consumer.assignment()
                    if assignment and at_end >= {tp.partition for tp in assignment}:
                        break
                continue
            at_end.discard(msg.partition())
            if msg.key() == key:
                value = json.loads(msg.value())
                if latest is None or value["event_ts_ms"] >= latest["event_ts_ms"]:
                    latest = value
    finally:
        consumer.close()
    return latest


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
