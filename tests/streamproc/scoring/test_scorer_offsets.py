"""At least once: the scoring worker stores an input offset only after every score derived from it is
acknowledged, and counts (metrics) only the outputs of batches that were.

The ordering is pure logic; here the producer and consumer are recording fakes (the integration tests
restart a real scoring worker against the real broker; test_scorer_transactions.py covers exactly-once)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from models.serving.scorer import Scores
from streamproc.config import Settings
from streamproc.observability.metrics import create_metrics
from streamproc.scoring.messages import Pending
from streamproc.scoring.worker import ScoringWorker
from tests.streamproc.doubles import ConstantScorer, DeadLetterMessage, sample, update


class RecordingProducer:
    """Acknowledges (or fails) every produced message when flushed, as librdkafka's callbacks do."""

    def __init__(self, fail_topic: str | None = None) -> None:
        self.fail_topic = fail_topic
        self.in_flight: list[tuple[str, Any]] = []
        self.acked: list[str] = []

    def produce(
        self, topic: str, key: bytes | None = None, value: bytes | None = None, on_delivery: Any = None
    ) -> None:
        self.in_flight.append((topic, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for topic, callback in self.in_flight:
            error = "MSG_TIMED_OUT" if topic == self.fail_topic else None
            if error is None:
                self.acked.append(topic)
            if callback is not None:
                callback(error, SimpleNamespace(topic=lambda topic=topic: topic))
        self.in_flight = []
        return 0


class RecordingConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def store_offsets(self, message: Any) -> None:
        self.log.append(f"store {message}")


@pytest.fixture
def worker() -> ScoringWorker:
    settings = Settings(alert_threshold=0.5, processing_guarantee="at_least_once")
    w = ScoringWorker(settings, ConstantScorer(), create_metrics())  # type: ignore[arg-type]
    w.consumer.close()
    return w


def test_offsets_are_stored_after_every_score_is_acknowledged(worker: ScoringWorker) -> None:
    log: list[str] = []
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.consumer = RecordingConsumer(log)  # type: ignore[assignment]
    for n in range(3):
        worker.batcher.add(Pending(f"m{n}", update(n)), now_ms=0)  # type: ignore[arg-type]
    worker.flush_batch()
    # three outputs per update (risk, next action, alert at 0.95 >= 0.5), all acknowledged, then the offsets
    assert sorted(worker.commits.producer.acked) == sorted(
        ["risk-scores", "next-action-scores", "fraud-alerts"] * 3
    )
    assert log == ["store m0", "store m1", "store m2"]


def test_a_failed_delivery_stores_no_offset_and_stops_the_worker(worker: ScoringWorker) -> None:
    log: list[str] = []
    worker.commits.producer = RecordingProducer(fail_topic="fraud-alerts")  # type: ignore[assignment]
    worker.consumer = RecordingConsumer(log)  # type: ignore[assignment]
    for n in range(2):
        worker.batcher.add(Pending(f"m{n}", update(n)), now_ms=0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="scores not acknowledged.*fraud-alerts: MSG_TIMED_OUT"):
        worker.flush_batch()
    assert log == []  # the batch is consumed again after the restart: at-least-once


def test_acknowledged_scores_are_counted_by_kind_and_risk_and_failed_ones_are_not(
    worker: ScoringWorker,
) -> None:
    assert sample(worker, "streamproc_model_info", {"model_version": "v-test", "device": "cpu"}) == 1.0
    assert (
        sample(worker, "streamproc_scores_published_total", {"topic": "fraud-alerts"}) == 0.0
    )  # exists at 0
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.consumer = RecordingConsumer([])  # type: ignore[assignment]
    for n in range(3):
        worker.batcher.add(Pending(f"m{n}", update(n)), now_ms=0)  # type: ignore[arg-type]
    worker.flush_batch()
    transaction = {"kind": "transaction"}
    assert sample(worker, "streamproc_risk_score_count", transaction) == 3
    assert sample(worker, "streamproc_risk_score_sum", transaction) == pytest.approx(3 * 0.95)
    assert sample(worker, "streamproc_risk_score_bucket", transaction | {"le": "0.9"}) == 0
    assert sample(worker, "streamproc_risk_score_bucket", transaction | {"le": "0.95"}) == 3
    assert sample(worker, "streamproc_fraud_alerts_total") == 3

    worker.commits.producer = RecordingProducer(fail_topic="fraud-alerts")  # type: ignore[assignment]
    worker.batcher.add(Pending("m9", update(9)), now_ms=0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        worker.flush_batch()
    # a batch is counted once final: neither its failed alert nor its acknowledged risk score
    assert sample(worker, "streamproc_fraud_alerts_total") == 3
    assert sample(worker, "streamproc_risk_score_count", transaction) == 3


def test_updates_lacking_an_aggregate_the_model_reads_are_counted_by_what_their_kind_carries(
    worker: ScoringWorker, caplog: pytest.LogCaptureFixture
) -> None:
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.consumer = RecordingConsumer([])  # type: ignore[assignment]
    full = {"customer_nb_tx_1d": 1.0, "terminal_risk_30d": 0.0, "customer_nb_tx_1h": 1.0}
    complete = update(0) | {"aggregates": full}
    click = update(1) | {"kind": "click", "aggregates": {"customer_nb_tx_1d": 1.0, "customer_nb_tx_1h": 0.0}}
    old_worker = update(2) | {
        "aggregates": {"customer_nb_tx_1d": 1.0, "terminal_risk_30d": 0.0}
    }  # no 1h velocity
    for n, u in enumerate([complete, click, old_worker, old_worker]):
        worker.batcher.add(Pending(f"m{n}", u), now_ms=0)  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        worker.flush_batch()
    assert sample(worker, "streamproc_model_inputs_missing_total") == 2  # a click carries no terminal
    assert [r.getMessage() for r in caplog.records].count(
        "sequence updates lack aggregates the model reads (scored as 0): ['customer_nb_tx_1h']; upgrade the "
        "Faust workers to this checkpoint's streamproc"
    ) == 1


class FailingCommitConsumer(RecordingConsumer):
    def __init__(self, log: list[str], code: int) -> None:
        super().__init__(log)
        self.code = code

    def commit(self, asynchronous: bool = True) -> None:
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(self.code))


def test_a_commit_that_fails_in_a_rebalance_is_counted_not_fatal(worker: ScoringWorker) -> None:
    from confluent_kafka import KafkaError

    log: list[str] = []
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.batcher.add(Pending("m0", update(0)), now_ms=0)  # type: ignore[arg-type]
    lost = FailingCommitConsumer(log, KafkaError._ASSIGNMENT_LOST)
    worker.consumer = lost  # type: ignore[assignment]
    worker._on_revoke(lost, [])  # type: ignore[arg-type]  # what killed the worker in a 20 s broker pause
    assert log == ["store m0"]  # the batch in hand was scored and stored before the commit was tried
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "assignment_lost"}) == 1
    nothing_stored = FailingCommitConsumer(log, KafkaError._NO_OFFSET)
    worker._on_revoke(nothing_stored, [])  # type: ignore[arg-type]
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "no_offset"}) == 0


def test_a_lost_assignment_drops_the_batch_in_hand_unscored(worker: ScoringWorker) -> None:
    log: list[str] = []
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.consumer = RecordingConsumer(log)  # type: ignore[assignment]
    for n in range(3):
        worker.batcher.add(Pending(f"m{n}", update(n)), now_ms=0)  # type: ignore[arg-type]
    worker._on_lost(worker.consumer, [])  # type: ignore[arg-type]
    worker.flush_batch()
    assert log == [] and worker.commits.producer.acked == []  # read again by the partitions' next owner
    assert sample(worker, "streamproc_commit_failures_total", {"reason": "assignment_lost"}) == 1


class SlowThenAckingProducer(RecordingProducer):
    """Leaves its records unacknowledged for the first `outage` flushes, as during a Kafka outage."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    def flush(self, timeout: float) -> int:
        if self.outage:
            self.outage -= 1
            return len(self.in_flight)
        return super().flush(timeout)


def test_scores_wait_for_their_acknowledgement_through_an_outage(worker: ScoringWorker) -> None:
    log: list[str] = []
    worker.commits.producer = SlowThenAckingProducer(outage=5)  # type: ignore[assignment]
    worker.consumer = RecordingConsumer(log)  # type: ignore[assignment]
    worker.batcher.add(Pending("m0", update(0)), now_ms=0)  # type: ignore[arg-type]
    worker.flush_batch()  # not a RuntimeError after the first unanswered flush, as before
    assert log == ["store m0"] and worker.commits.producer.outage == 0


class NanScorer(ConstantScorer):
    def score(
        self, windows: list[Any], explain_at: float | None = None, explain_max: int | None = None
    ) -> list[Scores]:
        return [
            Scores(float("nan") if n == 1 else 0.1, [("item-1", 0.5)], {"view": 1.0}, 60.0, "v-test")
            for n, _ in enumerate(windows)
        ]


def test_a_non_finite_score_is_dead_lettered_and_counted_never_published(worker: ScoringWorker) -> None:
    log: list[str] = []
    worker.scorer = NanScorer()  # type: ignore[assignment]
    worker.commits.producer = RecordingProducer()  # type: ignore[assignment]
    worker.consumer = RecordingConsumer(log)  # type: ignore[assignment]
    for n in range(3):
        worker.batcher.add(Pending(DeadLetterMessage(n), update(n)), now_ms=0)  # type: ignore[arg-type]
    worker.flush_batch()
    assert sorted(worker.commits.producer.acked) == sorted(
        ["risk-scores", "next-action-scores"] * 2 + ["streamproc.dead-letters"]
    )
    assert (
        sample(
            worker,
            "streamproc_dead_letters_total",
            {"topic": "sequence-updates", "reason": "non_finite_score"},
        )
        == 1
    )
    assert log == ["store m0", "store m1", "store m2"]  # the dead-lettered update is done with too
