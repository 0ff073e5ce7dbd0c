"""Hostile input on the real pipeline: oversized messages, a far-future event time, an overflowing value and
an event sent twice neither wedge the worker, nor poison a user's or a terminal's state, nor get scored twice."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections import Counter

import pytest
from confluent_kafka import Producer

from streamproc.kafka.admin import create_topics
from streamproc.observability.readiness import read_metrics
from tests.integration.helpers import make_settings, wait_until_worker_caught_up
from tests.integration.pipeline_data import assert_windows_match_from_scratch, synthetic_events

pytestmark = pytest.mark.integration

Y2099 = 4_070_908_800_000
BIG = 16 * 2**20  # the input topics' max.message.bytes in this test, so that 10 MB messages get in


def oversized(size: int, template: dict) -> bytes:
    """A JSON message of about `size` bytes: the template with a long title."""
    return json.dumps(template | {"title": "x" * size}).encode()


def test_hostile_messages_are_dead_lettered_and_change_no_state(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    s = make_settings(broker, tmp_path, tiny_checkpoint)
    create_topics(s.kafka_common(), s.input_topics(), s.partitions, config={"max.message.bytes": str(BIG)})
    worker, scorer = processes("worker", s), processes("score", s)
    events = synthetic_events(600, seed=21)
    first_click = next(m for t, m in events if t == "clicks")
    first_tx = next(m for t, m in events if t == "transactions")
    user, terminal = first_tx["user_id"], first_tx["terminal_id"]
    click = {
        "event_id": "hostile-click",
        "user_id": user,
        "item_id": "i1",
        "action": "view",
        "ts": first_tx["ts"],
    }
    tx = {
        "event_id": "hostile-tx",
        "user_id": user,
        "amount": 5.0,
        "currency": "EUR",
        "terminal_id": terminal,
        "ts": first_tx["ts"],
    }
    label = {
        "event_id": "hostile-label",
        "transaction_id": first_tx["event_id"],
        "terminal_id": terminal,
        "ts": first_tx["ts"],
        "label": 1,
    }
    hostile = [  # (topic, raw bytes, expected reason), sent between the valid events
        (s.clicks_topic, oversized(2**20, click), "too_large"),
        (s.transactions_topic, oversized(10 * 2**20, tx), "too_large"),
        (s.fraud_labels_topic, oversized(2**20, label), "too_large"),
        (s.clicks_topic, oversized(10 * 2**20, click), "too_large"),
        (
            s.clicks_topic,
            json.dumps(click | {"event_id": "far-click", "ts": Y2099}).encode(),
            "future_timestamp",
        ),
        (
            s.transactions_topic,
            json.dumps(tx | {"event_id": "far-tx", "ts": Y2099}).encode(),
            "future_timestamp",
        ),
        (
            s.clicks_topic,
            json.dumps(click | {"event_id": "huge-value", "value": 1e308}).encode(),
            "bad_value",
        ),
    ]
    producer = Producer(
        {
            "bootstrap.servers": s.bootstrap_servers,
            "partitioner": "murmur2_random",
            "message.max.bytes": BIG,
            "enable.idempotence": True,
        }
    )
    topics = {"clicks": s.clicks_topic, "transactions": s.transactions_topic}
    for n, (topic, message) in enumerate(events):
        producer.produce(topics[topic], key=message["user_id"].encode(), value=json.dumps(message).encode())
        if n % 80 == 40 and hostile:
            hostile_topic, raw, _reason = hostile[(n // 80) % len(hostile)]
            producer.produce(hostile_topic, key=user.encode(), value=raw)
        if n == 300:  # a producer that sends a click and a transaction again, under new offsets
            producer.produce(s.clicks_topic, key=user.encode(), value=json.dumps(first_click).encode())
            producer.produce(s.transactions_topic, key=user.encode(), value=json.dumps(first_tx).encode())
        producer.poll(0)
    for hostile_topic, raw, _reason in hostile:  # every one at least once, then valid events after them
        producer.produce(hostile_topic, key=user.encode(), value=raw)
    tail = [(t, m | {"event_id": f"tail-{m['event_id']}"}) for t, m in synthetic_events(200, seed=22)]
    for topic, message in tail:
        producer.produce(topics[topic], key=message["user_id"].encode(), value=json.dumps(message).encode())
    assert producer.flush(60) == 0
    events += tail

    r = reader(s, [s.risk_scores_topic, s.dead_letter_topic, s.sequence_updates_topic])
    accepted = {m["event_id"] for _, m in events}
    sent_hostile = Counter(reason for _t, _raw, reason in hostile) + Counter(
        reason
        for n in range(len(events) - len(tail))
        if n % 80 == 40
        for _t, _raw, reason in [hostile[(n // 80) % len(hostile)]]
    )
    r.poll_until(
        lambda: (
            {m["event_id"] for m in r.messages[s.risk_scores_topic]} >= accepted
            and len(r.messages[s.dead_letter_topic]) >= sum(sent_hostile.values())
        ),
        deadline_s=300,
        watch=[worker, scorer],
    )
    wait_until_worker_caught_up(s)
    r.read_to_end(s.risk_scores_topic, deadline_s=60)

    # every valid event scored exactly once: the ones sent twice not again, none lost beside the hostile ones
    scored = Counter(m["event_id"] for m in r.messages[s.risk_scores_topic])
    assert set(scored) == accepted and set(scored.values()) == {1}
    page = read_metrics(f"http://127.0.0.1:{s.worker_metrics_port}/metrics") or ""
    assert f'streamproc_duplicate_events_total{{topic="{s.clicks_topic}"}} 1.0' in page
    assert f'streamproc_duplicate_events_total{{topic="{s.transactions_topic}"}} 1.0' in page
    # every hostile message in the dead letters with its reason; the oversized ones reduced to size, hash, prefix
    dead = r.messages[s.dead_letter_topic]
    assert Counter(d["reason"] for d in dead) == sent_hostile
    by_hash = {
        raw_hash: raw for raw_hash, raw in ((hashlib.sha256(raw).hexdigest(), raw) for _t, raw, _r in hostile)
    }
    for d in dead:
        raw = by_hash[d["raw_sha256"]]
        assert d["raw_bytes"] == len(raw)
        if d["reason"] == "too_large":
            assert d["raw_b64"] is None and base64.b64decode(d["raw_prefix_b64"]) == raw[:512]
        else:
            assert base64.b64decode(d["raw_b64"]) == raw
    # no state saw the far-future events: windows, customer and terminal velocity equal a fold of the valid events
    r.read_to_end(s.sequence_updates_topic, deadline_s=120)
    assert_windows_match_from_scratch(s, events, r.messages[s.sequence_updates_topic])
    after = [u for u in r.messages[s.sequence_updates_topic] if u["user_id"] == user][-1]
    assert len(after["window"]) > 1 and all(e["ts_ms"] < Y2099 for e in after["window"])
    assert worker.alive() and scorer.alive()


def test_a_dead_letter_kafka_refuses_whole_is_sent_reduced(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    # the dead-letter topic takes at most 4 KB: a 20 KB invalid click (within the input limit) cannot go whole
    s = make_settings(broker, tmp_path, tiny_checkpoint)
    create_topics(s.kafka_common(), [s.dead_letter_topic], s.partitions, config={"max.message.bytes": "4096"})
    worker = processes("worker", s)
    raw = b"{not json " + random.Random(5).randbytes(20_000)  # incompressible: the outputs are lz4-compressed
    valid = synthetic_events(50, seed=23)
    producer = Producer({"bootstrap.servers": s.bootstrap_servers, "partitioner": "murmur2_random"})
    producer.produce(s.clicks_topic, key=b"u1", value=raw)
    for topic, message in valid:
        producer.produce(
            s.clicks_topic if topic == "clicks" else s.transactions_topic,
            key=message["user_id"].encode(),
            value=json.dumps(message).encode(),
        )
    assert producer.flush(30) == 0
    r = reader(s, [s.dead_letter_topic, s.sequence_updates_topic])
    r.poll_until(
        lambda: r.messages[s.dead_letter_topic] and len(r.messages[s.sequence_updates_topic]) >= len(valid),
        deadline_s=120,
        watch=[worker],
    )
    (letter,) = r.messages[s.dead_letter_topic]
    assert letter["reason"] == "invalid_json" and letter["raw_b64"] is None
    assert letter["raw_bytes"] == len(raw) and base64.b64decode(letter["raw_prefix_b64"]) == raw[:512]
    assert worker.alive()
