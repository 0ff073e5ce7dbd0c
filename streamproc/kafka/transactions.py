"""What both workers' Kafka transactions share: calling librdkafka's transactional methods safely, and the
consumer group metadata that fences a zombie.

librdkafka's transactional calls do not always honour their timeout: `send_offsets_to_transaction` can
wait for ever once the group coordinator's broker went away and came back (librdkafka issues 5456 and 5511,
open in 2.16; the broker-restart test met it). So `call_transactional` runs each try in a daemon thread,
and one that has not returned after `hang_s` makes the producer unusable (`ProducerUnusable`): its owner
replaces it, and the new producer's `init_transactions` aborts the hung one's transaction and fences it.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)
WAIT_LOG_EVERY_S = 30.0  # while a call waits for Kafka, say so this often
STOP_GRACE_S = 30.0  # a stop asked for during an outage gives up waiting after this
KAFKA_CALL_TIMEOUT_S = 5.0  # one try of a transactional call; a retriable failure is tried again

# The errors with which the broker refuses a producer that another one with its transactional id replaced.
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class ProducerFenced(RuntimeError):
    """Another instance took this one's transactional id: this one is a zombie and must stop."""


class NotAcknowledged(RuntimeError):
    """Outputs were refused or never acknowledged: their inputs must not be committed."""


class ProducerUnusable(Exception):
    """A call hung, or failed with a fatal error that is not fencing: the producer is replaced."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MustAbort(Exception):
    """The open transaction cannot commit (a refused record, a transaction the broker timed out, offsets sent
    with a group generation the group has moved past): abort it, and read its inputs again."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


class TransactionAbandoned(RuntimeError):
    """The open transaction was aborted: the worker must read its inputs again from the last commit (the Faust
    worker rejoins its group: `compat.faust_commit_hook`)."""


def error_reason(error: KafkaError) -> str:
    """A failure's label in streamproc_commit_failures_total{reason}."""
    return error.name().lstrip("_").lower()


def call_transactional(
    what: str,
    call: Callable[[], Any],
    transactional_id: str,
    stopping: Callable[[], bool],
    hang_s: float,
) -> None:
    """`call` until it succeeds, trying again on a retriable error (an outage, a coordinator moving) for as
    long as it takes; raise MustAbort on an error that needs the transaction aborted, ProducerFenced when
    another producer took the transactional id, ProducerUnusable when one try does not return in `hang_s`
    or fails with another fatal error (a broker answering INVALID_TXN_STATE to the abort of a transaction it
    timed out, after a broker loss), and NotAcknowledged when asked to stop during a long outage."""
    started = time.monotonic()
    next_log = started + WAIT_LOG_EVERY_S
    while True:
        try:
            run_bounded(call, hang_s, what)
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in FENCED:
                raise ProducerFenced(
                    f"{what}: transactional id {transactional_id} was taken by another instance ({error}); "
                    "this one stops"
                ) from exc
            if error.txn_requires_abort() and what != "abort_transaction":
                raise MustAbort(error) from exc
            if not error.retriable():
                raise ProducerUnusable(f"{what} failed: {error}", error_reason(error)) from exc
        time.sleep(0.1)  # most retriable errors took KAFKA_CALL_TIMEOUT_S; some come back at once
        now = time.monotonic()
        if stopping() and now - started > STOP_GRACE_S:
            raise NotAcknowledged(f"{what} not done after {now - started:.0f} s, and asked to stop")
        if now >= next_log:
            log.warning("%s waiting %.0f s for Kafka", what, now - started)
            next_log = now + WAIT_LOG_EVERY_S


def run_bounded(call: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Run `call` in a daemon thread and return (or raise) what it does; raise ProducerUnusable if it has not
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
        raise ProducerUnusable(
            f"{what} did not return in {timeout_s:.0f} s (librdkafka issues 5456, 5511)", "producer_hung"
        )
    if outcome[0] is not None:
        raise outcome[0]


_GROUP_METADATA_MAGIC = b"CGMDv2:"


def group_metadata(
    group_id: str, generation: int, member_id: str, group_instance_id: str | None = None
) -> bytes:
    """The consumer group metadata `send_offsets_to_transaction` takes, for a member of a group that a
    client other than librdkafka joined (the Faust worker's aiokafka consumer).

    confluent-kafka passes librdkafka's serialised form (`rd_kafka_consumer_group_metadata_write`, "for
    client binding use"): the magic, the generation id (native int32), the group id, the member id (each
    NUL-terminated), a byte saying whether the group instance id is absent, and that id if present. With the
    generation and member id, the broker refuses offsets from a member the group has moved past (KIP-447)."""
    parts = [
        _GROUP_METADATA_MAGIC,
        struct.pack("=i", generation),
        group_id.encode() + b"\0",
        member_id.encode() + b"\0",
        struct.pack("=b", 1 if group_instance_id is None else 0),
    ]
    if group_instance_id is not None:
        parts.append(group_instance_id.encode() + b"\0")
    return b"".join(parts)
