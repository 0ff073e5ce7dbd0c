"""Exactly once in the Faust worker: each commit is one transaction in numbered steps (changelog records, input
offsets with the group's metadata, commit, then RocksDB), and a commit that cannot complete is abandoned: the
transaction aborted (a hung producer replaced), the states in memory forgotten, every batch skipped and nothing
committed until the group has given the partitions back (`rewound`). Fencing stops the worker with the gate shut.

The sequence of calls is pure logic: producer and state caches here are recording fakes. The real broker's side
(kills of both workers leave one output per input) is in tests/integration/test_exactly_once.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from faust.types import TP

from streamproc.config import Settings
from streamproc.kafka.transactions import TransactionAbandoned
from streamproc.observability.metrics import create_metrics
from streamproc.stages import transactions as stage_transactions
from streamproc.stages.transactions import StageTransactions, TransactionFailed
from tests.streamproc.doubles import TransactionalProducer

GROUP_METADATA = b"CGMDv2:group"
OFFSETS = {TP("clicks", 0): 11, TP("transactions", 1): 7}


class HangingProducer(TransactionalProducer):
    """A producer whose `send_offsets_to_transaction` never returns (librdkafka issues 5456/5511)."""

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, _timeout: float) -> None:
        self.calls.append(("offsets-hung",))
        time.sleep(3600)


class Out:
    """The shared OutputProducer's part the commit uses; `replace_client` makes a fresh recording producer."""

    def __init__(self, client: TransactionalProducer) -> None:
        self.client = client
        self.transactional_id = "app-worker-test"
        self.acked: dict[tuple[str, int], int] = {("app-users-changelog", 0): 41}
        self.replaced: list[TransactionalProducer] = []
        self.polls = 0

    def poll(self) -> None:
        self.polls += 1

    def replace_client(self) -> None:
        self.replaced.append(self.client)
        self.client = TransactionalProducer()


class Table:
    name = "users"


class Cache:
    """Records the steps of a table's state cache."""

    def __init__(self, steps: list[str], dirty: int = 3) -> None:
        self.table = Table()
        self.steps = steps
        self.dirty = dirty

    def write_dirty(self) -> int:
        self.steps.append("write_dirty")
        return self.dirty

    def apply_held(self) -> int:
        self.steps.append("apply_held")
        return self.dirty

    def persist_offsets(self) -> None:
        self.steps.append("persist_offsets")

    def forget(self) -> None:
        self.steps.append("forget")


def make(client: TransactionalProducer | None = None) -> tuple[StageTransactions, Out, list[str]]:
    out = Out(client or TransactionalProducer())
    steps: list[str] = []
    tx = StageTransactions(Settings(), create_metrics(), out, [Cache(steps)])  # type: ignore[arg-type, list-item]
    return tx, out, steps


def names(producer: TransactionalProducer) -> list[str]:
    return [call[0] for call in producer.calls]


def abortable(code: int = KafkaError._STATE) -> KafkaError:
    return KafkaError(code, "abortable", txn_requires_abort=True)


def test_a_commit_sends_changelogs_offsets_with_group_metadata_commits_then_writes_rocksdb() -> None:
    async def run() -> None:
        tx, out, steps = make()
        assert await tx.before_batch()
        assert await tx.before_batch()  # one transaction for every batch of the interval
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets", "commit"]
        assert out.client.calls[1][1:] == ([("clicks", 0, 11), ("transactions", 1, 7)], GROUP_METADATA)
        assert steps == ["write_dirty", "apply_held", "persist_offsets"]
        assert out.polls == 1  # the delivery reports are served before the changelog offsets are recorded
        for step in ("states", "offsets", "commit", "apply"):  # each step of the commit timed once
            count = tx.metrics.registry.get_sample_value(
                "streamproc_transaction_step_seconds_count", {"step": step}
            )
            assert count == 1, step
        assert tx.gate.is_set()
        assert await tx.before_batch()  # the next interval's transaction
        assert names(out.client)[-1] == "begin"

    asyncio.run(run())


def test_a_commit_with_nothing_produced_still_commits_the_offsets_in_a_transaction() -> None:
    async def run() -> None:
        tx, out, _steps = make()
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets", "commit"]

    asyncio.run(run())


def test_a_retriable_error_is_tried_again_and_the_commit_completes() -> None:
    async def run() -> None:
        timed_out = KafkaError(KafkaError._TIMED_OUT, "coordinator away", retriable=True)
        tx, out, steps = make(TransactionalProducer({"commit": [timed_out, timed_out]}))
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets", "commit", "commit", "commit"]
        assert steps[-2:] == ["apply_held", "persist_offsets"]
        assert not tx.rewinding

    asyncio.run(run())


def test_an_abortable_error_aborts_forgets_the_states_and_skips_everything_until_the_rejoin() -> None:
    async def run() -> None:
        tx, out, steps = make(TransactionalProducer({"offsets": [abortable()]}))
        assert await tx.before_batch()
        with pytest.raises(TransactionAbandoned, match="rejoins its group"):
            await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets", "abort"]
        assert "apply_held" not in steps and steps[-1] == "forget"  # RocksDB never got the aborted states
        assert out.acked == {}  # nor their changelog offsets
        states_timed = tx.metrics.registry.get_sample_value(
            "streamproc_transaction_step_seconds_count", {"step": "states"}
        )
        assert not states_timed  # a failed commit leaves no step in the histogram (its failure is counted)
        # open, so that agents reach the skip and revocation finishes
        assert tx.rewinding and tx.gate.is_set()
        assert not await tx.before_batch()  # batches read before the rejoin are skipped: they are read again
        with pytest.raises(TransactionAbandoned, match="nothing is committed until the rejoin"):
            await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets", "abort"]  # no transaction begun, no offsets sent

        tx.rewound()  # the group gave the partitions back: read on from the last commit
        assert await tx.before_batch()
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client)[3:] == ["begin", "offsets", "commit"]
        assert steps[-2:] == ["apply_held", "persist_offsets"]

    asyncio.run(run())


def test_a_hung_call_replaces_the_producer_whose_registration_fences_the_hung_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage_transactions, "CALL_HANG_S", 0.3)

    async def run() -> None:
        hung = HangingProducer()
        tx, out, steps = make(hung)
        assert await tx.before_batch()
        with pytest.raises(TransactionAbandoned):
            await tx.commit(OFFSETS, GROUP_METADATA)
        assert out.replaced == [hung]
        assert names(out.client) == ["init"]  # the new producer registered the transactional id
        assert "commit" not in names(hung)
        assert tx.rewinding and steps[-1] == "forget"
        tx.rewound()
        assert await tx.before_batch()
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["init", "begin", "offsets", "commit"]

    asyncio.run(run())


def test_a_batch_that_failed_mid_way_aborts_the_transaction_at_the_commit() -> None:
    async def run() -> None:
        tx, out, steps = make()
        assert await tx.before_batch()
        tx.failed_batch(ValueError("agent raised after producing"))
        with pytest.raises(TransactionAbandoned):
            await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "abort"]  # its offsets never reach the transaction
        assert "write_dirty" not in steps
        assert tx.rewinding
        tx.rewound()
        await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client)[2:] == ["begin", "offsets", "commit"]

    asyncio.run(run())


def test_a_fenced_worker_stops_with_the_gate_shut() -> None:
    async def run() -> None:
        fenced = KafkaError(KafkaError._FENCED, "fenced")
        tx, out, steps = make(TransactionalProducer({"offsets": [fenced]}))
        assert await tx.before_batch()
        with pytest.raises(TransactionFailed, match="taken by another instance"):
            await tx.commit(OFFSETS, GROUP_METADATA)
        assert names(out.client) == ["begin", "offsets"]  # nothing committed, nothing aborted by the zombie
        assert "apply_held" not in steps
        assert not tx.gate.is_set()  # no batch may start: the worker is stopping

    asyncio.run(run())


def test_offsets_acknowledged_before_the_gate_closed_commit_with_their_records() -> None:
    """Faust chooses the offsets before an await in which a batch may produce and be acknowledged: the offsets
    are chosen again once the gate is closed, so that no record commits without its input's offset."""

    async def run() -> None:
        tx, out, _steps = make()
        later = {TP("clicks", 0): 15}  # a batch of clicks[0] 11..14 ran after Faust chose OFFSETS
        committed = await tx.commit(OFFSETS, GROUP_METADATA, lambda: later)
        assert out.client.calls[1][1] == [("clicks", 0, 15), ("transactions", 1, 7)]
        assert committed == {TP("clicks", 0): 15, TP("transactions", 1): 7}

    asyncio.run(run())
