"""Fraud labels that arrive after their transactions, on the real broker: counted once, retractable,
dead-lettered when invalid, and visible in the terminal features of the transactions scored later,
beside the recent velocity those carry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models.features import aggregates
from streamproc.core.events import FraudLabel, validate_fraud_label
from streamproc.demo.processes import settings_env
from streamproc.feed.fraud_labels import label_message
from streamproc.observability.readiness import read_metrics
from streamproc.stages.app import TERMINAL_TABLE
from tests.integration.helpers import last_value_per_key, make_settings, wait_until_worker_caught_up
from tests.integration.pipeline_data import produce, reference_terminal_states, synthetic_events

pytestmark = pytest.mark.integration


def _worker_samples(port: int, family: str) -> list:
    """The samples of one metric family on the worker's /metrics now."""
    text = read_metrics(f"http://127.0.0.1:{port}/metrics", timeout_s=10) or ""
    return [sample for f in text_string_to_metric_families(text) if f.name == family for sample in f.samples]


def _label_outcomes(port: int) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for sample in _worker_samples(port, "streamproc_fraud_labels")
        if sample.name == "streamproc_fraud_labels_total"
    }


def _label_delay(port: int) -> tuple[float, float]:
    """(count, sum) of the worker's fraud label delay histogram."""
    samples = {
        sample.name: sample.value for sample in _worker_samples(port, "streamproc_fraud_label_delay_days")
    }
    return samples["streamproc_fraud_label_delay_days_count"], samples[
        "streamproc_fraud_label_delay_days_sum"
    ]


def read_topic(s, topic: str, want: int, deadline_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    """The first `want` (key, value) pairs of a topic, across its partitions."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(s.partitions)])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(got) < want:
            assert time.monotonic() < deadline, f"read {len(got)} of {want} messages from {topic}"
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def test_late_fraud_labels_count_once_and_reach_the_features_of_later_transactions(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    s = make_settings(broker, tmp_path, tiny_checkpoint)
    events = synthetic_events(2000, seed=12, n_users=10)  # 25 days, 41 frauds at 16 terminals
    transactions = [m for t, m in events if t == "transactions"]
    frauds = [m for m in transactions if m["label"] == 1]
    genuine = next(m for m in transactions if m["label"] == 0)
    assert len(frauds) >= 5
    r = reader(s, [s.sequence_updates_topic, s.dead_letter_topic])
    worker = processes("worker", s)
    # the transactions as a live system gets them: without labels
    produce(s, [(t, {k: v for k, v in m.items() if k != "label"}) for t, m in events])
    r.poll_until(
        lambda: len(r.messages[s.sequence_updates_topic]) >= len(events), deadline_s=300, watch=[worker]
    )
    wait_until_worker_caught_up(s)  # the labels follow transactions the terminals have counted

    def label(m, fraud=True):
        return label_message(m["event_id"], m["terminal_id"], m["ts"], fraud=fraud, source="chargeback")

    flipped = frauds[0]
    labels = [label(m) for m in frauds] * 2  # a chargeback feed that sends everything twice
    labels += [label(flipped, fraud=False), label(flipped)]  # cleared by mistake, then confirmed again
    labels += [label(genuine, fraud=False), {**label(genuine), "terminal_id": "t-unknown"}]
    invalid = [(b"{", "invalid_json"), (json.dumps({**label(genuine), "label": 2}).encode(), "bad_label")]
    producer = Producer({"bootstrap.servers": s.bootstrap_servers, "enable.idempotence": True})
    for message in labels:  # keyed by terminal: one terminal's verdicts keep their order
        producer.produce(
            s.fraud_labels_topic, key=message["terminal_id"].encode(), value=json.dumps(message).encode()
        )
    for raw, _reason in invalid:
        producer.produce(s.fraud_labels_topic, key=b"t0", value=raw)
    assert producer.flush(30) == 0

    n = len(frauds)
    want_outcomes = {"counted": n + 1, "duplicate": n, "retracted": 1, "not_counted": 1, "unmatched": 1}
    r.poll_until(
        lambda: (
            _label_outcomes(s.worker_metrics_port) == want_outcomes
            and len(r.messages[s.dead_letter_topic]) >= len(invalid)
        ),
        deadline_s=120,
        watch=[worker],
    )
    # each counted label's delay on its terminal's clock: the minute of its newest transaction
    newest = {}
    for m in transactions:
        newest[m["terminal_id"]] = max(newest.get(m["terminal_id"], 0), m["ts"] // 60_000 * 60_000)
    delays = [max(0, newest[m["terminal_id"]] - m["ts"]) / aggregates.DAY_MS for m in [*frauds, flipped]]
    count, total = _label_delay(s.worker_metrics_port)
    assert count == n + 1 and total == pytest.approx(sum(delays)) and total > 0
    dead = r.messages[s.dead_letter_topic]
    assert sorted((d["source_topic"], d["reason"]) for d in dead) == sorted(
        (s.fraud_labels_topic, reason) for _, reason in invalid
    )

    # the terminals' state (as a restart restores it) equals one built with the labels inline
    wait_until_worker_caught_up(s)
    expected = reference_terminal_states(events)
    terminals = last_value_per_key(s, f"{s.app_id}-{TERMINAL_TABLE}-changelog")
    assert {t: {d: (b[0], b[2]) for d, b in state["v"]["d"].items()} for t, state in terminals.items()} == {
        t: {d: (b[0], b[2]) for d, b in state["d"].items()} for t, state in expected.items()
    }
    assert {t for t, state in terminals.items() if state["f"]} == {m["terminal_id"] for m in frauds}

    # a transaction at each defrauded terminal, past the label delay: scored with the known frauds
    last_ts = max(m["ts"] for m in transactions)
    probe_ts = last_ts + (aggregates.LABEL_DELAY_DAYS + 1) * aggregates.DAY_MS
    probes = [
        {
            "event_id": f"probe-{t}",
            "user_id": "probe-user",
            "amount": 10.0,
            "currency": "EUR",
            "terminal_id": t,
            "ts": probe_ts,
        }
        for t in sorted({m["terminal_id"] for m in frauds})
    ]
    produce(s, [("transactions", p) for p in probes])
    r.poll_until(
        lambda: (
            {u["event_id"] for u in r.messages[s.sequence_updates_topic]} >= {p["event_id"] for p in probes}
        ),
        deadline_s=120,
        watch=[worker],
    )
    updates = {
        u["event_id"]: u for u in r.messages[s.sequence_updates_topic] if u["event_id"].startswith("probe-")
    }
    for p in probes:
        want = aggregates.terminal_features(expected[p["terminal_id"]], probe_ts)
        got = {k: updates[p["event_id"]]["aggregates"][k] for k in want}
        assert got == pytest.approx(want), p["terminal_id"]
    assert any(u["aggregates"]["terminal_risk_30d"] > 0 for u in updates.values())
    # recent velocity, eight days after the rest: each terminal's only transaction; the user's probes so far
    for u in updates.values():
        assert {k: u["aggregates"][k] for k in aggregates.TERMINAL_RECENT_FEATURES} == {
            "terminal_recent_nb_tx_1h": 1.0,
            "terminal_recent_amount_1h": 10.0,
            "terminal_recent_nb_tx_1d": 1.0,
            "terminal_recent_amount_1d": 10.0,
            "terminal_recent_nb_tx_7d": 1.0,
            "terminal_recent_amount_7d": 10.0,
        }
    assert sorted(u["aggregates"]["customer_nb_tx_1h"] for u in updates.values()) == [
        float(n) for n in range(1, len(probes) + 1)
    ]
    assert max(u["aggregates"]["customer_amount_1h"] for u in updates.values()) == 10.0 * len(probes)


def test_label_command_sends_an_analysts_verdict_keyed_by_terminal(broker, tiny_checkpoint, tmp_path):
    s = make_settings(broker, tmp_path, tiny_checkpoint)
    for extra in ([], ["--genuine"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamproc.cli",
                "label",
                "tx-9",
                "--terminal",
                "t4",
                "--ts",
                "1735689600000",
                "--source",
                "analyst",
                *extra,
            ],
            env=settings_env(s),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    sent = read_topic(s, s.fraud_labels_topic, want=2)
    assert [key for key, _ in sent] == [b"t4", b"t4"]
    assert [validate_fraud_label(value) for _, value in sent] == [
        FraudLabel("label-tx-9-1", "tx-9", "t4", 1_735_689_600_000, 1, "analyst"),
        FraudLabel("label-tx-9-0", "tx-9", "t4", 1_735_689_600_000, 0, "analyst"),
    ]
