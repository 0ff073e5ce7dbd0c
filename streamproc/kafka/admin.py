"""Topic administration on any Kafka: create the pipeline's topics, check their partition counts, read end offsets."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

log = logging.getLogger(__name__)
RETRY_PAUSE_S = 0.2  # between tries of a topic creation that failed on the way


class BrokerError(RuntimeError):
    """A topic could not be created, or the topics are not as the pipeline needs them."""


def client_config(kafka: str | Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka options from bootstrap servers alone, or from options (Settings.kafka_common)."""
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def create_topics(
    kafka: str | Mapping[str, Any],
    topics: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (with topic `config`, if any); an existing topic is left as it
    is. `kafka`: bootstrap servers, or client options with the connection's security (Settings.kafka_common).

    A creation that fails on the way (`transient_create_error`: librdkafka dropping a bootstrap connection
    for the broker it names, met on a fresh three-node cluster) is tried again until `timeout_s`."""
    admin = AdminClient(client_config(kafka))
    deadline = time.monotonic() + timeout_s
    pending, created = list(dict.fromkeys(topics)), []
    while pending:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
        new = [
            NewTopic(
                t, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
            )
            for t in pending
            if t not in existing
        ]
        created += [t.topic for t in new]
        pending = []
        for topic, future in admin.create_topics(new, operation_timeout=timeout_s).items() if new else ():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    continue
                if not transient_create_error(exc) or time.monotonic() > deadline:
                    raise BrokerError(f"could not create topic {topic}: {exc}") from exc
                log.warning("creating topic %s failed on the way (%s); trying again", topic, exc)
                pending.append(topic)
        if pending:
            time.sleep(RETRY_PAUSE_S)
    if created:
        wait_for_leaders(admin, list(dict.fromkeys(created)), timeout_s)


def transient_create_error(exc: BaseException) -> bool:
    """A failure the request may not have reached the controller through: retriable, or a connection that
    librdkafka closed under it (_DESTROY_BROKER, _TRANSPORT)."""
    if not isinstance(exc, KafkaException) or not isinstance(exc.args[0], KafkaError):
        return False
    error: KafkaError = exc.args[0]
    return error.retriable() or error.code() in (KafkaError._DESTROY_BROKER, KafkaError._TRANSPORT)


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    """Return once every partition of `topics` has a leader: a topic is created before its partitions
    elect one, and a read of its offsets meanwhile fails (NOT_LEADER_FOR_PARTITION)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        waiting = [
            t
            for t in topics
            if t not in metadata
            or metadata[t].error is not None
            or any(p.leader < 0 for p in metadata[t].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"topics without a leader for every partition after {timeout_s:.0f} s: {waiting}"
            )
        time.sleep(0.05)  # leaders are elected within milliseconds on a healthy cluster


def check_partitions(
    kafka: str | Mapping[str, Any], topics: Iterable[str], partitions: int, timeout_s: float = 30.0
) -> None:
    """Refuse to run over existing topics whose partition count is not `partitions`.

    The Faust worker's input topics, its re-keyed topics and its table changelogs must be
    co-partitioned: a record read from partition p writes its table change to changelog partition p.
    create_topics leaves an existing topic as it is, so a topic made elsewhere with another count
    (a cluster default, an init job) would break that silently.
    """
    metadata = AdminClient(client_config(kafka)).list_topics(timeout=timeout_s).topics
    wrong = {
        t: len(metadata[t].partitions)
        for t in topics
        if t in metadata and len(metadata[t].partitions) != partitions
    }
    if wrong:
        found = ", ".join(f"{t}: {n}" for t, n in sorted(wrong.items()))
        raise BrokerError(
            f"partition counts differ from STREAMPROC_PARTITIONS={partitions} ({found}); set "
            "STREAMPROC_PARTITIONS to the topics' count, or recreate the topics"
        )


def end_offsets(
    kafka: str | Mapping[str, Any], partitions: Iterable[tuple[str, int]], timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The end offset (high watermark) of each (topic, partition) now, from ListOffsets.

    A partition whose leader is moving, or was elected a moment ago and has not taken over its log yet,
    answers with a retriable error (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE): asked again until
    `timeout_s` is spent."""
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        {**client_config(kafka), "group.id": "streamproc-end-offsets", "enable.auto.commit": False}
    )
    try:
        return {(t, p): _end_offset(consumer, TopicPartition(t, p), deadline) for t, p in partitions}
    finally:
        consumer.close()


# The errors ListOffsets answers while a partition has no leader able to serve it yet.
_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
    }
)


def _end_offset(consumer: Consumer, partition: TopicPartition, deadline: float) -> int:
    while True:
        try:
            left = max(deadline - time.monotonic(), 0.1)
            return int(consumer.get_watermark_offsets(partition, timeout=left)[1])
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.code() not in _LEADER_MOVING or time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # a new leader takes over within milliseconds on a healthy cluster


def last_committed_offsets(
    kafka: str | Mapping[str, Any], partitions: Iterable[tuple[str, int]], timeout_s: float = 60.0
) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the offset of its last record a read_committed reader sees; -1 when it has none.

    On a partition written in transactions the end offset is one past a commit marker (or past an aborted
    transaction's records), not past a record: the tail is read back from the end, in growing spans, up to
    where a read_committed reader stops (the last stable offset)."""
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": "streamproc-last-committed",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        bounds = {}
        for topic, partition in partitions:
            left = max(deadline - time.monotonic(), 0.1)
            bounds[(topic, partition)] = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), left
            )
        found = {tp: -1 for tp in bounds}
        starts = {tp: high for tp, (low, high) in bounds.items() if high > low}
        span = 256
        while starts:
            starts = {tp: max(bounds[tp][0], start - span) for tp, start in starts.items()}
            found.update(_last_records_from(consumer, starts, deadline))
            starts = {tp: start for tp, start in starts.items() if found[tp] < 0 and start > bounds[tp][0]}
            span *= 4
        return found
    finally:
        consumer.close()


def _last_records_from(
    consumer: Consumer, starts: Mapping[tuple[str, int], int], deadline: float
) -> dict[tuple[str, int], int]:
    """Per partition, the offset of the last record read from its start offset to its end; -1 if none."""
    consumer.assign([TopicPartition(t, p, start) for (t, p), start in starts.items()])
    last = {tp: -1 for tp in starts}
    open_tps = set(starts)
    try:
        while open_tps:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions not read to their end in time: {sorted(open_tps)}")
            for msg in consumer.consume(500, timeout=0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is None:
                    last[tp] = max(last[tp], msg.offset() or 0)
                elif error.code() == KafkaError._PARTITION_EOF:
                    open_tps.discard(tp)
                else:
                    raise KafkaException(error)
        return last
    finally:
        consumer.unassign()


def topic_max_message_bytes(kafka: str | Mapping[str, Any], topic: str, timeout_s: float = 30.0) -> int:
    """The largest record batch `topic` takes (its max.message.bytes, or the broker's default)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient(
        client_config(kafka)
    )  # referenced until the answer came: destroying it fails the future
    futures = admin.describe_configs([resource], request_timeout=timeout_s)
    return int(futures[resource].result(timeout_s)["max.message.bytes"].value)


def topic_end_offsets(
    kafka: str | Mapping[str, Any], topics: Iterable[str], timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """end_offsets of every partition of `topics`."""
    metadata = AdminClient(client_config(kafka)).list_topics(timeout=timeout_s).topics
    return end_offsets(kafka, [(t, p) for t in topics for p in sorted(metadata[t].partitions)], timeout_s)


def wipe(path: Path) -> None:
    """Remove a state directory."""
    shutil.rmtree(path, ignore_errors=True)
