"""How the scoring worker makes a batch final: its outputs visible and its input offsets committed, one
commit path per processing guarantee (STREAMPROC_PROCESSING_GUARANTEE).

- `AtLeastOnceCommits`: outputs are produced, every one is acknowledged, then the batch's input offsets
  are stored (librdkafka commits stored offsets every second and at close). A crash between the two
  re-sends the batch's outputs.
- `TransactionalCommits`: the batches of one commit interval (STREAMPROC_SCORER_COMMIT_INTERVAL_MS, as
  Kafka Streams commits every 100 ms under exactly-once) are one Kafka transaction: their outputs, dead
  letters and input offsets (`send_offsets_to_transaction` with the consumer group's metadata) commit
  together or not at all, so a `read_committed` reader sees each output once. A zombie (an instance whose partitions were given to
  another member while it hung) cannot commit: the broker refuses offsets sent with a stale group
  generation, and `init_transactions` with the same transactional id fences the older producer.

Both wait through a Kafka outage of any length (logged every ACK_WAIT_LOG_EVERY_S); a stop asked for
during one gives up after STOP_GRACE_S, leaving the batch to be read again.

A transactional call that hangs or fails fatally (`streamproc.kafka.transactions` says when) costs the
producer: a new one takes the transactional id (which aborts the old one's transaction and fences it), and
the batch is read again.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamproc.config import Settings
from streamproc.kafka.clients import new_producer
from streamproc.kafka.transactions import (
    KAFKA_CALL_TIMEOUT_S,
    STOP_GRACE_S,
    MustAbort,
    NotAcknowledged,
    ProducerFenced,
    ProducerUnusable,
    call_transactional,
    error_reason,
)
from streamproc.observability.metrics import Metrics, StepTimes

__all__ = [
    "ProducerFenced",
    "NotAcknowledged",
    "TransactionalCommits",
    "AtLeastOnceCommits",
    "new_commit_path",
]

log = logging.getLogger(__name__)
ACK_WAIT_LOG_EVERY_S = 30.0  # while a batch waits for Kafka, say so this often
CALL_HANG_S = 30.0  # a transactional call that has not returned after this is hung (librdkafka 5456, 5511)


class CommitPath(Protocol):
    """What the scoring worker asks of a commit path, batch by batch."""

    producer: Producer

    def start(self) -> None:
        """Before the first batch (a transactional producer registers its id here)."""

    def begin(self) -> None:
        """Before a batch's first output."""

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """One output of the batch."""

    def finish(self, consumer: Consumer, messages: list[Message]) -> bool | None:
        """The batch's outputs are all produced: True once they are visible and its inputs (`messages`)
        committed or stored, with those of earlier batches not final yet; False when they were abandoned and
        the consumer rewound to read them again; None while they wait for the commit interval to end."""

    def commit_due(self, consumer: Consumer, force: bool = False) -> bool | None:
        """Commit what waits if the commit interval has ended (or `force`); as `finish`."""

    def due_in_ms(self) -> float | None:
        """Milliseconds until what waits must be committed; None when nothing waits."""

    def drop_open(self) -> None:
        """The assignment was lost: abort what waits (the partitions' next owner reads it again)."""

    def after_revoke(self, consumer: Consumer) -> None:
        """Partitions are being given up, the batch in hand already finished."""


def new_commit_path(settings: Settings, metrics: Metrics, stopping: Callable[[], bool]) -> CommitPath:
    if settings.processing_guarantee == "exactly_once":
        return TransactionalCommits(settings, metrics, stopping)
    return AtLeastOnceCommits(settings, metrics, stopping)


def count_commit_failure(metrics: Metrics, error: KafkaError) -> None:
    metrics.commit_failures.labels(error_reason(error)).inc()


class AtLeastOnceCommits:
    def __init__(self, settings: Settings, metrics: Metrics, stopping: Callable[[], bool]) -> None:
        self.metrics = metrics
        self.stopping = stopping
        # retry through a Kafka outage of any length (finish logs the wait)
        self.producer = new_producer(settings, "scores", {"message.timeout.ms": 0})
        self._errors: list[str] = []

    def start(self) -> None:
        pass

    def begin(self) -> None:
        pass

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
        self.producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")

    def finish(self, consumer: Consumer, messages: list[Message]) -> bool:
        """Wait until Kafka has acknowledged every output, however long an outage lasts; give up only on a
        refused record, or when asked to stop during an outage. Then store the inputs' offsets."""
        started = time.monotonic()
        next_log = started + ACK_WAIT_LOG_EVERY_S
        while (remaining := self.producer.flush(1.0)) and not self._errors:
            now = time.monotonic()
            if self.stopping() and now - started > STOP_GRACE_S:
                break
            if now >= next_log:
                log.warning("%d scores waiting %.0f s for Kafka's acknowledgement", remaining, now - started)
                next_log = now + ACK_WAIT_LOG_EVERY_S
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            # Offsets were not stored: the batch is consumed again after a restart (at-least-once).
            raise NotAcknowledged(f"scores not acknowledged ({remaining} in flight): {errors[:5]}")
        for message in messages:
            consumer.store_offsets(message=message)
        return True

    def commit_due(self, consumer: Consumer, force: bool = False) -> bool | None:
        return None  # every batch is final when finish returns

    def due_in_ms(self) -> float | None:
        return None

    def drop_open(self) -> None:
        pass

    def after_revoke(self, consumer: Consumer) -> None:
        """Commit what is stored before the partitions go to their next owner; a failure (the broker
        unreachable, the assignment lost meanwhile) is logged and counted, never fatal."""
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError._NO_OFFSET:  # nothing stored since the last commit
                return
            log.warning(
                "offset commit failed (%s); the records after the last committed offset will be read again",
                error,
            )
            count_commit_failure(self.metrics, error)


def transactional_id(settings: Settings) -> str:
    if settings.scorer_transactional_id:
        return settings.scorer_transactional_id
    return f"{settings.scorer_group}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Per input partition, the offset after the last of `messages`: what a commit of them stores."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        last[key] = max(last.get(key, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def first_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Per input partition, the first offset among `messages`: where a rewind to read them again goes."""
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        first[key] = min(first.get(key, m.offset() or 0), m.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(first.items())]


class TransactionalCommits:
    def __init__(self, settings: Settings, metrics: Metrics, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self.transactional_id = transactional_id(settings)
        self.producer = self._new_producer()
        # given-up producers, kept referenced: a thread may be inside one
        self._abandoned: list[Producer] = []
        self.interval_s = settings.scorer_commit_interval_ms / 1000
        self._opened_at: float | None = None  # when the open transaction began; None: none open
        self._waiting: list[Message] = []  # the inputs of the open transaction's batches

    def _new_producer(self) -> Producer:
        # message.timeout.ms: librdkafka's default, the transaction timeout (a transaction cannot outlive it)
        return new_producer(
            self.settings,
            "scores",
            {
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            },
        )

    def start(self) -> None:
        """Register the transactional id: aborts what a predecessor with the same id left open, and fences it."""
        while True:
            producer = self.producer
            try:
                self._call("init_transactions", partial(producer.init_transactions, KAFKA_CALL_TIMEOUT_S))
                break
            except ProducerUnusable as unusable:
                if unusable.reason != "producer_hung":
                    raise
                self._abandon_producer()
        log.info("exactly-once: transactional id %s", self.transactional_id)

    def begin(self) -> None:
        if self._opened_at is None:
            self.producer.begin_transaction()
            self._opened_at = time.monotonic()

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.producer.produce(topic, key=key, value=value)
        self.producer.poll(0)

    def finish(self, consumer: Consumer, messages: list[Message]) -> bool | None:
        self._waiting += messages
        return self.commit_due(consumer)

    def due_in_ms(self) -> float | None:
        if self._opened_at is None:
            return None
        return max(0.0, (self._opened_at + self.interval_s - time.monotonic()) * 1000)

    def drop_open(self) -> None:
        if self._opened_at is None:
            return
        messages, self._waiting, self._opened_at = self._waiting, [], None
        producer = self.producer
        log.warning(
            "assignment lost: the open transaction's %d sequence updates are left to be read again",
            len(messages),
        )
        try:
            self._call("abort_transaction", lambda: producer.abort_transaction(KAFKA_CALL_TIMEOUT_S))
        except ProducerUnusable:
            self._abandon_producer()
            self.start()

    def commit_due(self, consumer: Consumer, force: bool = False) -> bool | None:
        due = self.due_in_ms()
        if due is None or (due > 0 and not force):
            return None
        messages, self._waiting, self._opened_at = self._waiting, [], None
        return self._commit(consumer, messages)

    def _commit(self, consumer: Consumer, messages: list[Message]) -> bool:
        producer = self.producer
        try:
            try:
                step = StepTimes()
                if messages:
                    offsets = next_offsets(messages)
                    metadata = consumer.consumer_group_metadata()
                    self._call(
                        "send_offsets_to_transaction",
                        lambda: producer.send_offsets_to_transaction(offsets, metadata, KAFKA_CALL_TIMEOUT_S),
                    )
                    step("offsets")
                self._call("commit_transaction", lambda: producer.commit_transaction(KAFKA_CALL_TIMEOUT_S))
                step("commit")
                step.observe(self.metrics)
                return True
            except MustAbort as abort:
                log.warning(
                    "transaction aborted (%s); its %d sequence updates are read again",
                    abort.error,
                    len(messages),
                )
                count_commit_failure(self.metrics, abort.error)
                self._call("abort_transaction", lambda: producer.abort_transaction(KAFKA_CALL_TIMEOUT_S))
        except ProducerUnusable as unusable:
            log.warning(
                "%s; a new producer takes transactional id %s, and the batch's %d sequence updates are read again",
                unusable,
                self.transactional_id,
                len(messages),
            )
            self.metrics.commit_failures.labels(unusable.reason).inc()
            self._abandon_producer()
            self.start()
        self._rewind(consumer, messages)
        return False

    def after_revoke(self, consumer: Consumer) -> None:
        pass  # every batch commits its offsets in its own transaction

    @staticmethod
    def _rewind(consumer: Consumer, messages: list[Message]) -> None:
        """Seek back to the batch's first offsets, so that the batch is read and scored again."""
        for tp in first_offsets(messages):
            try:
                consumer.seek(tp)
            except KafkaException as exc:  # no longer assigned: its next owner reads it from the last commit
                log.info("not rewinding %s[%d]: %s", tp.topic, tp.partition, exc.args[0])

    def _abandon_producer(self) -> None:
        """Leave the producer (a call of it is hung, in a daemon thread that exit does not wait for) and make
        a new one."""
        self._abandoned.append(self.producer)
        self.producer = self._new_producer()

    def _call(self, what: str, call: Callable[[], Any]) -> None:
        call_transactional(what, call, self.transactional_id, self.stopping, CALL_HANG_S)
