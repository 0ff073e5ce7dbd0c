"""Stand-ins shared by the unit tests of the scoring worker and the Faust worker's commit sequence: a scorer
that always answers the same, a sequence update, a consumed message to dead-letter, a transactional producer
that records its calls (and raises the errors a test queues for it). The real broker is in tests/integration."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from models.serving.scorer import Scores
from streamproc.scoring.worker import ScoringWorker


class ConstantScorer:
    model_version, device = "v-test", "cpu"
    required_aggregates = frozenset({"customer_nb_tx_1d", "terminal_risk_30d", "customer_nb_tx_1h"})

    def score(
        self, windows: list[Any], explain_at: float | None = None, explain_max: int | None = None
    ) -> list[Scores]:
        return [Scores(0.95, [("item-1", 0.5)], {"view": 1.0}, 60.0, "v-test") for _ in windows]


def update(n: int) -> dict[str, Any]:
    event = {
        "event_id": f"e{n}",
        "kind": "transaction",
        "user_id": "u1",
        "ts_ms": 1_700_000_000_000 + n,
        "item_id": "t1",
        "action": "transaction",
        "amount": 10.0,
    }
    return {
        "user_id": "u1",
        "event_id": f"e{n}",
        "kind": "transaction",
        "event_ts_ms": event["ts_ms"],
        "window": [event],
        "lineage": {"topic": "transactions", "partition": 0, "offset": n, "ingest_ts_ms": event["ts_ms"]},
    }


def sample(worker: ScoringWorker, name: str, labels: dict[str, str] | None = None) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or {}) or 0.0


class DeadLetterMessage:
    """What the worker reads of a consumed message when it dead-letters it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topic(self) -> str:
        return "sequence-updates"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.n

    def key(self) -> bytes:
        return b"u1"

    def value(self) -> bytes:
        return b"{}"

    def __repr__(self) -> str:
        return f"m{self.n}"


class TransactionalProducer:
    """Records the transactional calls; `failures` maps a call's name to the errors its next tries raise."""

    def __init__(self, failures: dict[str, list[KafkaError]] | None = None) -> None:
        self.calls: list[Any] = []
        self.failures = failures or {}

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if self.failures.get(name):
            raise KafkaException(self.failures[name].pop(0))

    def init_transactions(self, _timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        self.calls.append(("produce", topic))

    def poll(self, _timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, _timeout: float
    ) -> None:
        self._call("offsets", [(tp.topic, tp.partition, tp.offset) for tp in offsets], metadata)

    def commit_transaction(self, _timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self._call("abort")
