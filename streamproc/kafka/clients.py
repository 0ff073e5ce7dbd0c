"""The one place confluent-kafka clients are configured: every producer and consumer that streamproc and
its tools create starts from the defaults of its role here, and states only what it does differently."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer

from streamproc.config import Settings


def producer_config(
    settings: Settings, name: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Idempotent, every replica acknowledging, and keyed with murmur2 as Java clients and aiokafka (Faust)
    are, so that a key lands in the partition Faust's co-partitioned stages expect."""
    return {
        **settings.kafka_common(),
        "client.id": f"{settings.app_id}-{name}",
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        **(overrides or {}),
    }


def consumer_config(
    settings: Settings, group: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A member of `group` that commits only when told to, with the configured group timeouts, and reads only
    committed records (what an aborted transaction wrote stays unseen; librdkafka's default, stated here)."""
    return {
        **settings.kafka_common(),
        "group.id": group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        **(overrides or {}),
    }


def new_producer(settings: Settings, name: str, overrides: Mapping[str, Any] | None = None) -> Producer:
    return Producer(producer_config(settings, name, overrides))


def new_consumer(settings: Settings, group: str, overrides: Mapping[str, Any] | None = None) -> Consumer:
    return Consumer(consumer_config(settings, group, overrides))
