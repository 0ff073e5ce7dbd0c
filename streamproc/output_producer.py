"""The Faust agents' output producer: librdkafka (confluent-kafka) instead of aiokafka's pure-Python one.

Producing and network I/O run in C threads, off the event loop; a batch waits for every
acknowledgement (flush in an executor thread) before its input offsets are acknowledged.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, Message, Producer

from streamproc.config import Settings


class OutputProducer:
    def __init__(self, settings: Settings, name: str) -> None:
        self._producer = Producer({
            **settings.kafka_common(),
            "client.id": f"{settings.app_id}-{name}",
            "partitioner": "murmur2_random",  # the Java/aiokafka partitioner: keeps co-partitioning with Faust
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "queue.buffering.max.messages": 200_000,
            "compression.type": settings.output_compression,
        })
        self._errors: list[str] = []
        # highest acknowledged offset per (topic, partition) of the records produced with track=True
        self.acked: dict[tuple[str, int], int] = {}

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")

    def _on_tracked_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")
        else:
            tp = (message.topic(), message.partition())
            self.acked[tp] = max(self.acked.get(tp, -1), message.offset())

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                track: bool = False) -> None:
        """Queue one record (to `partition` when given, else by key); track=True records its acked offset."""
        callback = self._on_tracked_delivery if track else self._on_delivery
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=callback, **extra)
                return
            except BufferError:
                self._producer.poll(0.05)

    async def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until everything produced so far is acknowledged; raise if anything was not."""
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout_s)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"outputs not acknowledged ({remaining} in flight): {errors[:5]}")

    def close(self) -> None:
        self._producer.flush(10)
