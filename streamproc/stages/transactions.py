"""The Faust worker's commit under exactly-once: one Kafka transaction per commit, in numbered steps.

Everything the three stages send between two commits (re-keyed records, sequence updates, dead letters, and
the changelog records of the states they changed) goes through one transactional producer; each commit
adds the input offsets Faust chose and commits them all together (as Kafka Streams does per task, and
Quix Streams' `checkpointing/checkpoint.py` does in numbered steps):

  1. close the gate: an agent waits before its next batch, so nothing is produced into a closing
     transaction (a batch in hand was produced and acknowledged to Faust without an await in between,
     so every output in the transaction belongs to an offset being committed);
  2. write each changed state's changelog record into the transaction (RocksDB writes held back);
  3. send the input offsets with the consumer group's metadata (its generation: the broker refuses a
     member the group has moved past, so a zombie cannot commit);
  4. commit the transaction (librdkafka sends what it holds first);
  5. write the held states to RocksDB and record the changelog offsets they reached;
  6. open the gate (the next batch begins the next transaction).

RocksDB therefore never runs ahead of the committed changelog: after a crash, Faust's recovery reads the
changelog (read_committed) from RocksDB's recorded offset and the state equals the last commit.

A commit that cannot complete (an abortable error, a transaction the broker timed out in an outage, or a
call that hung: librdkafka issues 5456 and 5511, met on every broker restart) is abandoned without
stopping the worker: the transaction is aborted (a hung producer is replaced, and the new one's
registration aborts and fences it), the batches in hand are skipped, and the worker rejoins its group
(`TransactionAbandoned`): the rebalance forgets the states in memory, recovers the tables from the
committed changelog and seeks the inputs back to the last commit, so that everything since is read again.
Fencing (another instance took the transactional id) stops the worker (`TransactionFailed`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial

from confluent_kafka import TopicPartition
from faust.types import TP

from streamproc.config import Settings
from streamproc.kafka.output_producer import OutputProducer
from streamproc.kafka.transactions import (
    KAFKA_CALL_TIMEOUT_S,
    MustAbort,
    ProducerFenced,
    ProducerUnusable,
    TransactionAbandoned,
    call_transactional,
    error_reason,
)
from streamproc.observability.metrics import Metrics, StepTimes
from streamproc.stages.write_behind import StateCache

log = logging.getLogger(__name__)
CALL_HANG_S = 30.0  # a transactional call that has not returned after this is hung (kafka.transactions)


class TransactionFailed(RuntimeError):
    """This worker was fenced: nothing of the open transaction is visible, and the worker must stop."""


def worker_transactional_id(settings: Settings) -> str:
    if settings.worker_transactional_id:
        return settings.worker_transactional_id
    return f"{settings.app_id}-worker-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class StageTransactions:
    def __init__(
        self, settings: Settings, metrics: Metrics, out: OutputProducer, caches: list[StateCache]
    ) -> None:
        self.metrics = metrics
        self.out = out  # made with transactional_id=self.transactional_id
        self.caches = caches
        self.transactional_id = out.transactional_id or worker_transactional_id(settings)
        self._open: asyncio.Event | None = None  # made on the event loop's thread (mode runs agents there)
        self._in_transaction = False
        self._failure: BaseException | None = None
        self._stopping = False
        self.rewinding = False  # a transaction was abandoned: nothing is produced or committed until rewound

    def start(self) -> None:
        """Register the transactional id (aborting and fencing what a predecessor with the same id left open)."""
        self._call("init_transactions", partial(self.out.client.init_transactions, KAFKA_CALL_TIMEOUT_S))
        log.info("exactly-once: the Faust worker's transactional id is %s", self.transactional_id)

    def stop(self) -> None:
        self._stopping = True

    @property
    def gate(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    async def before_batch(self) -> bool:
        """Wait while a commit runs, then make sure a transaction is open for the batch's records; False when
        the batch must be skipped (a transaction was abandoned: it is read again after the rejoin)."""
        await self.gate.wait()
        if self.rewinding:
            return False
        self._begin()
        return True

    def rewound(self) -> None:
        """The group gave this worker its partitions again: they are read from the last commit."""
        if self.rewinding:
            log.warning(
                "exactly-once: rejoined after an abandoned transaction; reading on from the last commit"
            )
        self.rewinding = False
        self._failure = None

    def failed_batch(self, exc: BaseException) -> None:
        """A batch raised after producing part of its records: the open transaction must never commit."""
        if self._failure is None:
            self._failure = exc

    def _begin(self) -> None:
        if not self._in_transaction:
            self.out.client.begin_transaction()
            self._in_transaction = True

    async def commit(
        self,
        offsets: Mapping[TP, int],
        group_metadata: bytes,
        offsets_at_gate: Callable[[], Mapping[TP, int]] | None = None,
    ) -> Mapping[TP, int]:
        """Steps 1 to 6 above for the input `offsets` (the next offset to read, per partition), updated with
        `offsets_at_gate()` once the gate is closed: Faust chose `offsets` before an await, during which
        batches may have produced records and been acknowledged, and a record must never commit without the
        offset of its input (if its partition moved to another worker before the next commit, the new owner
        would process that input again). Returns the offsets committed."""
        if self.rewinding:
            for cache in self.caches:
                cache.forget()
            raise TransactionAbandoned("a transaction was abandoned: nothing is committed until the rejoin")
        started = time.perf_counter()
        gate = self.gate
        gate.clear()  # 1
        if offsets_at_gate is not None:
            offsets = {**offsets, **offsets_at_gate()}
        try:
            if self._failure is not None:
                await asyncio.to_thread(self._abort)
                raise TransactionAbandoned(f"a batch failed mid-way: {self._failure!r}")
            self._begin()
            step = StepTimes()
            written = [cache.write_dirty() for cache in self.caches]  # 2
            step("states")
            positions = [TopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
            client = self.out.client
            await asyncio.to_thread(  # 3
                self._call,
                "send_offsets_to_transaction",
                lambda: client.send_offsets_to_transaction(positions, group_metadata, KAFKA_CALL_TIMEOUT_S),
            )
            step("offsets")
            await asyncio.to_thread(  # 4
                self._call, "commit_transaction", lambda: client.commit_transaction(KAFKA_CALL_TIMEOUT_S)
            )
            step("commit")
            self._in_transaction = False
            self.out.poll()  # serve the delivery reports: the changelog offsets reached
            for cache, count in zip(self.caches, written, strict=True):  # 5
                cache.apply_held()
                cache.persist_offsets()
                self.metrics.state_writes.labels(cache.table.name).inc(count)
            step("apply")
            step.observe(self.metrics)  # completed commits only: the failed ones are counted below
            self.metrics.state_flush.observe(time.perf_counter() - started)
        except MustAbort as abort:
            self.metrics.commit_failures.labels(error_reason(abort.error)).inc()
            await asyncio.to_thread(self._abort)
            self._abandon(f"transaction aborted ({abort.error})", abort)
        except ProducerUnusable as unusable:
            self.metrics.commit_failures.labels(unusable.reason).inc()
            await asyncio.to_thread(self._replace_producer)
            self._abandon(str(unusable), unusable)
        except ProducerFenced as fenced:
            self.metrics.commit_failures.labels("fenced").inc()
            raise TransactionFailed(str(fenced)) from fenced
        except TransactionAbandoned:
            self._abandon("a batch failed mid-way", None)
        gate.set()  # 6 (after a fencing it stays closed: the worker is stopping, no batch may start)
        return offsets

    def _abandon(self, why: str, cause: BaseException | None) -> None:
        """Skip every batch and commit until the rejoin (`rewound`); the states in memory are forgotten."""
        self._in_transaction = False
        self.rewinding = True
        for cache in self.caches:
            cache.forget()
        self.out.acked.clear()
        self.gate.set()  # agents skip their batches (before_batch), so that Faust's revocation can finish
        raise TransactionAbandoned(
            f"{why}; the worker rejoins its group and reads on from the last commit"
        ) from cause

    def _replace_producer(self) -> None:
        """A new producer takes the transactional id: the hung one's transaction is aborted, and it is fenced."""
        while True:
            self.out.replace_client()
            try:
                self.start()
                return
            except ProducerUnusable as unusable:
                log.warning("a new producer's registration failed too (%s); trying another", unusable)

    def _abort(self) -> None:
        try:
            self._call("abort_transaction", lambda: self.out.client.abort_transaction(KAFKA_CALL_TIMEOUT_S))
        except ProducerFenced:
            raise
        except Exception as exc:  # noqa: BLE001  # a new producer's registration aborts it
            log.warning("abort failed (%r); a new producer takes the transactional id", exc)
            self._replace_producer()

    def _call(self, what: str, call: Callable[[], object]) -> None:
        call_transactional(what, call, self.transactional_id, lambda: self._stopping, CALL_HANG_S)
