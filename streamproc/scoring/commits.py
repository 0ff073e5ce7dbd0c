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

librdkafka's transactional calls do not always honour their timeout: `send_offsets_to_transaction` can
wait for ever once the group coordinator's broker went away and came back (librdkafka issues 5456 and 5511,
open in 2.16; the broker-restart test met it). So each call runs in a helper thread, and one that has not
returned after CALL_HANG_S is given up: a new producer takes the transactional id (which aborts the hung
one's transaction and fences it), and the batch is read again. A fatal error other than fencing (the broker
answered INVALID_TXN_STATE to an abort after a broker loss, in the 3-broker test) is met the same way.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamproc.config import Settings
from streamproc.kafka.clients import new_producer
from streamproc.observability.metrics import Metrics

log = logging.getLogger(__name__)
ACK_WAIT_LOG_EVERY_S = 30.0  # while a batch waits for Kafka, say so this often
STOP_GRACE_S = 30.0  # a stop asked for during an outage gives up waiting after this
KAFKA_CALL_TIMEOUT_S = 5.0  # one try of a transactional call; a retriable failure is tried again
CALL_HANG_S = 30.0  # a transactional call that has not returned after this is hung (the module says why)

# The errors with which the broker refuses a producer that another one with its transactional id replaced.
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class ProducerFenced(RuntimeError):
    """Another scoring worker took this one's transactional id: this one is a zombie and must stop."""


class NotAcknowledged(RuntimeError):
    """A batch's outputs were refused or never acknowledged: its inputs must not be committed."""


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
    metrics.commit_failures.labels(error.name().lstrip("_").lower()).inc()


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
            except _ProducerUnusable as unusable:
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
        except _ProducerUnusable:
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
                if messages:
                    offsets = next_offsets(messages)
                    metadata = consumer.consumer_group_metadata()
                    self._call(
                        "send_offsets_to_transaction",
                        lambda: producer.send_offsets_to_transaction(offsets, metadata, KAFKA_CALL_TIMEOUT_S),
                    )
                self._call("commit_transaction", lambda: producer.commit_transaction(KAFKA_CALL_TIMEOUT_S))
                return True
            except _MustAbort as abort:
                log.warning(
                    "transaction aborted (%s); its %d sequence updates are read again",
                    abort.error,
                    len(messages),
                )
                count_commit_failure(self.metrics, abort.error)
                self._call("abort_transaction", lambda: producer.abort_transaction(KAFKA_CALL_TIMEOUT_S))
        except _ProducerUnusable as unusable:
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
        """`call` until it succeeds, trying again on a retriable error (an outage, a coordinator moving) for as
        long as it takes; raise _MustAbort on an error that needs the transaction aborted, ProducerFenced when
        another producer took the transactional id, and _ProducerUnusable when one try does not return in
        CALL_HANG_S or fails with another fatal error (a broker answering INVALID_TXN_STATE to the abort of a
        transaction it timed out, after a broker loss)."""
        started = time.monotonic()
        next_log = started + ACK_WAIT_LOG_EVERY_S
        while True:
            try:
                run_bounded(call, CALL_HANG_S, what)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in FENCED:
                    raise ProducerFenced(
                        f"{what}: transactional id {self.transactional_id} was taken by another scoring "
                        f"worker ({error}); this one stops"
                    ) from exc
                if error.txn_requires_abort() and what != "abort_transaction":
                    raise _MustAbort(error) from exc
                if not error.retriable():
                    raise _ProducerUnusable(
                        f"{what} failed: {error}", error.name().lstrip("_").lower()
                    ) from exc
            time.sleep(0.1)  # most retriable errors took KAFKA_CALL_TIMEOUT_S; some come back at once
            now = time.monotonic()
            if self.stopping() and now - started > STOP_GRACE_S:
                raise NotAcknowledged(f"{what} not done after {now - started:.0f} s, and asked to stop")
            if now >= next_log:
                log.warning("%s waiting %.0f s for Kafka", what, now - started)
                next_log = now + ACK_WAIT_LOG_EVERY_S


def run_bounded(call: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Run `call` in a daemon thread and return (or raise) what it does; raise _ProducerUnusable if it has not
    returned after `timeout_s` (the thread is left behind, and does not hold up the process's exit)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=target, name=f"transactional-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise _ProducerUnusable(
            f"{what} did not return in {timeout_s:.0f} s (librdkafka issues 5456, 5511)", "producer_hung"
        )
    if outcome[0] is not None:
        raise outcome[0]


class _ProducerUnusable(Exception):
    """A call hung, or failed with a fatal error that is not fencing: the producer is replaced."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _MustAbort(Exception):
    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error
