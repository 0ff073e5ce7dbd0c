"""Exactly once: each batch of the scoring worker is one transaction (outputs, dead letters and the input offsets
after the batch); an abortable failure aborts it and rewinds the consumer to read the batch again; a retriable one
is tried again; a fenced producer stops the worker. Nothing is counted before its batch commits.

The sequence of calls is pure logic: the producer and consumer here are recording fakes. The real broker's side
(a zombie cannot commit, kills leave one score per event) is in tests/integration/test_exactly_once.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from streamproc.config import Settings
from streamproc.observability.metrics import create_metrics
from streamproc.scoring import commits
from streamproc.scoring.commits import ProducerFenced, TransactionalCommits, first_offsets, next_offsets
from streamproc.scoring.messages import Pending
from streamproc.scoring.worker import ScoringWorker
from tests.streamproc.doubles import ConstantScorer, DeadLetterMessage, TransactionalProducer, sample, update


class Message(DeadLetterMessage):
    def __init__(self, n: int, partition: int = 0) -> None:
        super().__init__(n)
        self._partition = partition

    def partition(self) -> int:
        return self._partition


class GroupConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> bytes:
        return b"group-generation-7"

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def exactly_once_worker(producer: TransactionalProducer, commit_interval_ms: int = 0) -> ScoringWorker:
    settings = Settings(
        alert_threshold=0.5,
        processing_guarantee="exactly_once",
        scorer_transactional_id="t-1",
        scorer_commit_interval_ms=commit_interval_ms,  # 0: a transaction per batch
    )
    worker = ScoringWorker(settings, ConstantScorer(), create_metrics())  # type: ignore[arg-type]
    worker.consumer.close()
    assert isinstance(worker.commits, TransactionalCommits)
    worker.commits.producer = producer  # type: ignore[assignment]
    worker.consumer = GroupConsumer()  # type: ignore[assignment]
    return worker


def add(worker: ScoringWorker, offsets: list[tuple[int, int]]) -> None:
    for partition, offset in offsets:
        worker.batcher.add(Pending(Message(offset, partition), update(offset)), now_ms=0)  # type: ignore[arg-type]


def test_offsets_after_and_first_offsets_of_a_batch_per_partition() -> None:
    batch = [Message(5, 1), Message(3, 0), Message(9, 1), Message(4, 0)]
    assert [(tp.partition, tp.offset) for tp in next_offsets(batch)] == [(0, 5), (1, 10)]  # type: ignore[arg-type]
    assert [(tp.partition, tp.offset) for tp in first_offsets(batch)] == [(0, 3), (1, 5)]  # type: ignore[arg-type]


def test_a_batch_is_one_transaction_with_its_input_offsets_and_is_counted_once_committed() -> None:
    producer = TransactionalProducer()
    worker = exactly_once_worker(producer)
    add(worker, [(0, 10), (0, 11), (1, 4)])
    worker.flush_batch()
    outputs = [("produce", t) for t in ("risk-scores", "next-action-scores", "fraud-alerts")] * 3
    assert producer.calls == [
        ("begin",),
        *outputs,
        ("offsets", [("sequence-updates", 0, 12), ("sequence-updates", 1, 5)], b"group-generation-7"),
        ("commit",),
    ]
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 3
    assert sample(worker, "streamproc_fraud_alerts_total") == 3


def test_batches_of_one_commit_interval_share_a_transaction_counted_once_it_commits() -> None:
    producer = TransactionalProducer()
    worker = exactly_once_worker(producer, commit_interval_ms=60_000)
    add(worker, [(0, 10)])
    worker.flush_batch()
    add(worker, [(0, 11), (1, 4)])
    worker.flush_batch()
    assert [call[0] for call in producer.calls].count("begin") == 1
    assert "commit" not in [call[0] for call in producer.calls]  # the interval has not ended
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 0
    assert worker.commits.due_in_ms() is not None
    worker._settle(worker.commits.commit_due(worker.consumer, force=True))  # as on idle, revoke or stop
    assert producer.calls[-2:] == [
        ("offsets", [("sequence-updates", 0, 12), ("sequence-updates", 1, 5)], b"group-generation-7"),
        ("commit",),
    ]
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 3
    assert worker.commits.due_in_ms() is None
    for step in ("offsets", "commit"):  # one commit, each of its steps timed once
        assert sample(worker, "streamproc_transaction_step_seconds_count", {"step": step}) == 1


def test_a_lost_assignment_aborts_the_open_transaction_and_counts_nothing() -> None:
    producer = TransactionalProducer()
    worker = exactly_once_worker(producer, commit_interval_ms=60_000)
    add(worker, [(0, 10)])
    worker.flush_batch()
    worker._on_lost(worker.consumer, [])  # type: ignore[arg-type]
    assert producer.calls[-1] == ("abort",) and worker.commits.due_in_ms() is None
    worker._settle(worker.commits.commit_due(worker.consumer, force=True))
    assert "commit" not in [call[0] for call in producer.calls]
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 0


def test_an_abortable_failure_aborts_the_batch_rewinds_the_consumer_and_counts_nothing() -> None:
    abortable = KafkaError(KafkaError._TIMED_OUT, "coordinator aborted it", txn_requires_abort=True)
    producer = TransactionalProducer({"commit": [abortable]})
    worker = exactly_once_worker(producer)
    add(worker, [(0, 10), (0, 11), (1, 4)])
    worker.flush_batch()
    assert producer.calls[-2:] == [("commit",), ("abort",)]
    assert worker.consumer.seeks == [("sequence-updates", 0, 10), ("sequence-updates", 1, 4)]  # type: ignore[attr-defined]
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 0
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "timed_out"}) == 1
    assert sample(worker, "streamproc_transaction_step_seconds_count", {"step": "offsets"}) == 0


def test_a_retriable_failure_is_tried_again_in_the_same_transaction() -> None:
    outage = KafkaError(KafkaError._TIMED_OUT, "no coordinator", retriable=True)
    producer = TransactionalProducer({"offsets": [outage, outage], "commit": [outage]})
    worker = exactly_once_worker(producer)
    add(worker, [(0, 1)])
    worker.flush_batch()
    names = [call[0] for call in producer.calls]
    assert names == [
        "begin",
        "produce",
        "produce",
        "produce",
        "offsets",
        "offsets",
        "offsets",
        "commit",
        "commit",
    ]
    assert worker.consumer.seeks == []  # type: ignore[attr-defined]
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 1


@pytest.mark.parametrize(
    "code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH]
)
def test_a_fenced_producer_stops_the_worker_without_counting(code: int) -> None:
    producer = TransactionalProducer({"commit": [KafkaError(code, "fenced", fatal=True)]})
    worker = exactly_once_worker(producer)
    add(worker, [(0, 1)])
    with pytest.raises(ProducerFenced, match="transactional id t-1 was taken by another instance"):
        worker.flush_batch()
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 0


def test_a_fatal_error_that_is_not_fencing_replaces_the_producer_and_reads_the_batch_again() -> None:
    # after a broker loss the broker answered INVALID_TXN_STATE to an abort: fatal for that producer only
    invalid = KafkaError(KafkaError.INVALID_TXN_STATE, "invalid state", fatal=True)
    worker = exactly_once_worker(TransactionalProducer({"commit": [invalid]}))
    fresh = TransactionalProducer()
    worker.commits._new_producer = lambda: fresh  # type: ignore[attr-defined]
    add(worker, [(0, 1)])
    worker.flush_batch()
    assert worker.commits.producer is fresh and fresh.calls == [("init",)]
    assert worker.consumer.seeks == [("sequence-updates", 0, 1)]  # type: ignore[attr-defined]
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "invalid_txn_state"}) == 1


def test_a_call_that_never_returns_is_given_up_for_a_new_producer_and_the_batch_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # librdkafka issues 5456 and 5511: send_offsets_to_transaction can ignore its timeout and wait for ever
    monkeypatch.setattr(commits, "CALL_HANG_S", 0.2)
    release = threading.Event()

    class HangingProducer(TransactionalProducer):
        def send_offsets_to_transaction(
            self, offsets: list[TopicPartition], metadata: Any, _timeout: float
        ) -> None:
            self.calls.append(("offsets",))
            release.wait(10)

    worker = exactly_once_worker(HangingProducer())
    fresh = TransactionalProducer()
    worker.commits._new_producer = lambda: fresh  # type: ignore[attr-defined]
    add(worker, [(0, 10), (0, 11), (1, 4)])
    worker.flush_batch()
    release.set()
    assert worker.commits.producer is fresh and fresh.calls == [("init",)]  # it took the transactional id
    assert worker.consumer.seeks == [("sequence-updates", 0, 10), ("sequence-updates", 1, 4)]  # type: ignore[attr-defined]
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "producer_hung"}) == 1
    assert sample(worker, "streamproc_scores_published_total", {"topic": "risk-scores"}) == 0
