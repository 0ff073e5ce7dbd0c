"""Exactly-once on a real Apache Kafka: SIGKILLs of the scoring worker, and of the Faust worker, leave one
sequence update, one risk score, one next-action score and at most one fraud alert per accepted event, and one
dead letter per invalid message, for a read_committed reader, with states equal to a from-scratch fold; a
fenced (zombie) scoring worker cannot commit."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer

from streamproc.kafka.admin import create_topics, topic_end_offsets
from streamproc.observability.metrics import create_metrics
from streamproc.scoring.commits import ProducerFenced, TransactionalCommits
from tests.integration.helpers import make_settings, wait_until_worker_caught_up
from tests.integration.pipeline_data import assert_windows_match_from_scratch, produce, synthetic_events

pytestmark = pytest.mark.integration


def test_scoring_worker_killed_three_times_mid_replay_publishes_each_score_once(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    # A stable transactional id, as a StatefulSet gives each instance: the restarted worker aborts what the
    # killed one left open at once, instead of readers waiting for the transaction to time out.
    s = make_settings(
        broker,
        tmp_path,
        tiny_checkpoint,
        batch_max_size=64,
        alert_threshold=0.0,  # every accepted event raises an alert: at most one each
        scorer_transactional_id=f"scorer-{uuid.uuid4().hex[:8]}",
    )
    events = synthetic_events(3000, seed=21)
    accepted = {m["event_id"] for _, m in events}
    worker, scorer = processes("worker", s), processes("score", s)
    invalid = produce(s, events, invalid_every=60)
    outputs = [s.risk_scores_topic, s.next_action_topic, s.fraud_alerts_topic]
    r = reader(s, [*outputs, s.dead_letter_topic])
    rng = random.Random(21)
    for kill in range(3):  # at random moments: mostly with a transaction open, its batch half produced
        at = (kill + 1) * 600 + rng.randrange(200)
        r.poll_until(
            lambda at=at: len(r.messages[s.risk_scores_topic]) >= at, deadline_s=300, watch=[worker, scorer]
        )
        scorer.kill()
        scorer = processes("score", s)
    wait_for_every_output(r, s, outputs, accepted, len(invalid), watch=[worker, scorer])
    assert_each_output_once(r, s, outputs, accepted)
    assert len(r.messages[s.dead_letter_topic]) == len(invalid)
    print(  # the counts the docs report for repeated runs (pytest -s)
        f"exactly-once kill test: {len(accepted)} accepted events; read committed: "
        + ", ".join(f"{t.split('-', 1)[1]} {len(r.messages[t])}" for t in outputs)
        + f", dead letters {len(r.messages[s.dead_letter_topic])} of {len(invalid)} invalid"
    )


def test_both_workers_killed_three_times_each_mid_stream_publish_everything_once_and_states_match(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    """Events arrive in six chunks; while the first three are processed the Faust worker is SIGKILLed, while
    the last three are scored the scoring worker is, each at a random point (most of them with a transaction
    open, some inside a commit)."""
    suffix = uuid.uuid4().hex[:8]
    s = make_settings(
        broker,
        tmp_path,
        tiny_checkpoint,
        batch_max_size=64,
        alert_threshold=0.0,
        commit_interval_ms=200,  # more commits, so that kills land inside some
        worker_transactional_id=f"worker-{suffix}",
        scorer_transactional_id=f"scorer-{suffix}",
    )
    events = synthetic_events(3000, seed=23)
    chunks = [events[i : i + 500] for i in range(0, len(events), 500)]
    accepted = {m["event_id"] for _, m in events}
    outputs = [s.sequence_updates_topic, s.risk_scores_topic, s.next_action_topic, s.fraud_alerts_topic]
    r = reader(s, [*outputs, s.dead_letter_topic])
    worker, scorer = processes("worker", s), processes("score", s)
    rng = random.Random(23)
    invalid: list = []
    for i, chunk in enumerate(chunks):
        invalid += produce(s, chunk, invalid_every=60)
        killed = "worker" if i < 3 else "score"
        topic = s.sequence_updates_topic if killed == "worker" else s.risk_scores_topic
        at = i * 500 + rng.randrange(50, 450)
        r.poll_until(
            lambda at=at, topic=topic: len(r.messages[topic]) >= at, deadline_s=300, watch=[worker, scorer]
        )
        if killed == "worker":
            worker.kill()
            worker = processes("worker", s)
        else:
            scorer.kill()
            scorer = processes("score", s)
    wait_for_every_output(r, s, outputs, accepted, len(invalid), watch=[worker, scorer])
    wait_until_worker_caught_up(s)
    assert_each_output_once(r, s, outputs, accepted)
    sources = Counter(
        (d["source_topic"], d["partition"], d["offset"]) for d in r.messages[s.dead_letter_topic]
    )
    assert len(sources) == len(invalid) and max(sources.values()) == 1, sources.most_common(3)
    assert_windows_match_from_scratch(s, events, r.messages[s.sequence_updates_topic])
    print(  # the counts the docs report for repeated runs (pytest -s)
        f"exactly-once kill test (both workers): {len(accepted)} accepted events; read committed: "
        + ", ".join(f"{t.split('-', 1)[1]} {len(r.messages[t])}" for t in outputs)
        + f", dead letters {len(r.messages[s.dead_letter_topic])} of {len(invalid)} invalid"
    )


def wait_for_every_output(r, s, outputs, accepted, invalid_count, watch) -> None:
    """Poll until every accepted event is in every output topic and every invalid message is dead-lettered."""
    r.poll_until(
        lambda: (
            all(set(ids(r.messages[t])) >= accepted for t in outputs)
            and len(r.messages[s.dead_letter_topic]) >= invalid_count
        ),
        deadline_s=400,
        watch=watch,
    )


def assert_each_output_once(r, s, outputs, accepted) -> None:
    """Read the outputs and dead letters to their ends (anything published after the last expected record is
    read too), then: each accepted event exactly once in each output."""
    for topic in [*outputs, s.dead_letter_topic]:
        r.read_to_end(topic, deadline_s=60)
    for topic in outputs:
        counts = ids(r.messages[topic])
        assert set(counts) == accepted and max(counts.values()) == 1, (topic, counts.most_common(3))


def ids(messages):
    return Counter(m["event_id"] for m in messages)


def test_a_zombie_scoring_worker_cannot_commit_and_its_outputs_stay_invisible(
    broker, tiny_checkpoint, tmp_path
):
    s = make_settings(
        broker,
        tmp_path,
        tiny_checkpoint,
        scorer_transactional_id=f"zombie-{uuid.uuid4().hex[:8]}",
        scorer_commit_interval_ms=0,
    )
    create_topics(s.kafka_common(), [s.risk_scores_topic], s.partitions)
    zombie = TransactionalCommits(s, create_metrics(), lambda: False)
    zombie.start()
    zombie.begin()
    zombie.produce(s.risk_scores_topic, b"u1", b'{"event_id": "from-the-zombie"}')
    zombie.producer.flush(30)  # in the log, inside the zombie's open transaction
    # its replacement takes the same transactional id: the zombie's transaction is aborted, the zombie fenced
    successor = TransactionalCommits(s, create_metrics(), lambda: False)
    successor.start()
    successor.begin()
    successor.produce(s.risk_scores_topic, b"u1", b'{"event_id": "from-the-successor"}')
    assert successor.finish(None, [])  # type: ignore[arg-type]  # no input offsets to send
    with pytest.raises(ProducerFenced):
        zombie.finish(None, [])  # type: ignore[arg-type]
    committed = read_all(s, s.risk_scores_topic, "read_committed")
    assert committed == ["from-the-successor"]
    # the zombie's record is in the log all the same: only read_committed keeps it out
    assert sorted(read_all(s, s.risk_scores_topic, "read_uncommitted")) == [
        "from-the-successor",
        "from-the-zombie",
    ]


def read_all(s, topic: str, isolation: str) -> list[str]:
    """The event ids of `topic`, read from the start to its end offsets with `isolation`."""
    ends = {tp: end for tp, end in topic_end_offsets(s.kafka_common(), [topic]).items() if end > 0}
    consumer = Consumer(
        {
            **s.kafka_common(),
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    found: list[str] = []
    done: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if done >= set(ends):
                return found
            for msg in consumer.consume(100, timeout=0.1):
                if msg.error():
                    done.add((msg.topic(), msg.partition()))
                else:
                    found.append(json.loads(msg.value())["event_id"])
        raise AssertionError(f"{topic} not read to its end in 60 s: {sorted(done)} of {sorted(ends)}")
    finally:
        consumer.close()
