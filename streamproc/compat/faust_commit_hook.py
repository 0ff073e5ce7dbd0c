"""Faust's commit, the point where the worker's own commit sequence runs (Faust still chooses the offsets):

- at-least-once: `app.write_behind.flush()` runs between choosing the offsets to commit and committing
  them (streamproc/stages/write_behind.py says why), as Kafka Streams and Quix Streams flush their stores;
- exactly-once: `app.write_behind.transactions.commit()` (streamproc/stages/transactions.py) commits the
  offsets in the worker's Kafka transaction, with the group metadata of Faust's aiokafka consumer, instead
  of aiokafka's offset commit; Faust's own bookkeeping of what is committed follows as after its commit.

A failed flush crashes the worker without committing: the inputs are read again after a restart. An
abandoned transaction (`TransactionAbandoned`) makes the aiokafka member rejoin its group instead: the
rebalance seeks the inputs back to the last commit. A fenced one crashes the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streamproc.compat.patching import replace_method
from streamproc.kafka.transactions import TransactionAbandoned, group_metadata

log = logging.getLogger(__name__)


def install() -> None:
    from faust.transport import consumer as faust_consumer

    for name in (
        "_filter_committable_offsets",
        "_filter_tps_with_pending_acks",
    ):  # offsets_at_gate reads them
        if not callable(getattr(faust_consumer.Consumer, name, None)):
            raise RuntimeError(f"{__name__}: faust Consumer.{name} is gone; this patch needs a review")

    def replacement(original_commit_offsets: Any) -> Any:
        async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
            write_behind = getattr(self.app, "write_behind", None)
            transactions = getattr(write_behind, "transactions", None)
            if transactions is not None:
                return await commit_in_transaction(self, transactions, offsets)
            if write_behind is not None:
                try:
                    await write_behind.flush()
                except Exception as exc:
                    log.error("state flush failed; nothing committed: %r", exc)
                    await self.crash(exc)
                    return False
            return await original_commit_offsets(self, offsets, start_new_transaction=start_new_transaction)

        return _commit_offsets

    replace_method(faust_consumer.Consumer, "_commit_offsets", replacement, __name__)


async def commit_in_transaction(consumer: Any, transactions: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit `offsets` (the next offset to read, per partition) with everything sent since the last commit;
    then what Faust's `_commit_offsets` does after a commit."""
    assignment = consumer.assignment()

    def assigned(chosen: Mapping[Any, int]) -> Mapping[Any, int]:
        revoked = {tp: offset for tp, offset in chosen.items() if tp not in assignment}
        if (
            revoked
        ):  # their records are in the open transaction: committing without their offsets re-sends them
            raise RuntimeError(f"offsets of partitions no longer assigned, records sent for them: {revoked}")
        return chosen

    def offsets_at_gate() -> Mapping[Any, int]:
        """Every offset acknowledged by now (Faust's own choice, made again once no batch can run)."""
        return assigned(consumer._filter_committable_offsets(consumer._filter_tps_with_pending_acks()))

    try:
        if not assigned(offsets):
            return False
        offsets = await transactions.commit(offsets, aiokafka_group_metadata(consumer), offsets_at_gate)
    except TransactionAbandoned as abandoned:
        log.warning("%s", abandoned)
        request_rejoin(consumer)
        return False
    except Exception as exc:
        log.error("exactly-once commit failed; nothing committed: %r", exc)
        await consumer.crash(exc)
        return False
    consumer.app.tables.on_commit(offsets)
    consumer._committed_offset.update(offsets)
    consumer.app.monitor.on_tp_commit(offsets)
    return True


def request_rejoin(consumer: Any) -> None:
    """Have Faust's aiokafka member rejoin its group (on the consumer thread's loop, where aiokafka runs)."""
    thread = consumer._thread
    coordinator = thread._consumer._coordinator
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)


def aiokafka_group_metadata(consumer: Any) -> bytes:
    """The group metadata of the Faust consumer's aiokafka member: its group, generation and member id (read
    from aiokafka's coordinator), in the form confluent-kafka's `send_offsets_to_transaction` takes."""
    aio = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    coordinator = getattr(aio, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "generation") or not hasattr(coordinator, "member_id"):
        raise RuntimeError(f"{__name__}: no aiokafka group coordinator with a generation and member id")
    if (
        coordinator.generation < 0
    ):  # not a member now: offsets sent with generation -1 skip the broker's check
        raise RuntimeError("the consumer is not a member of its group (it was removed); nothing may commit")
    return group_metadata(
        coordinator.group_id,
        coordinator.generation,
        coordinator.member_id,
        getattr(coordinator, "_group_instance_id", None),
    )
