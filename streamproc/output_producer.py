"""The Faust agents' output producer: librdkafka (confluent-kafka) instead of aiokafka's pure-Python one.

Producing and network I/O run in C threads, off the event loop. Records are counted in generations:
`cut()` closes the current one, and `settle(generation)` waits (polling in an executor thread) until
every record of that generation and the ones before it is acknowledged, while the agent goes on
producing into the next generation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from streamproc.config import Settings

POLL_S = 0.01


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
        # produced[g] is written by the agent's thread only, delivered[g] by the delivery callbacks only
        self._generation = 0
        self._oldest = 0  # the oldest generation not yet settled
        self._poll_lock = threading.Lock()  # delivery callbacks run in one thread at a time
        self._produced: dict[int, int] = {0: 0}
        self._delivered: dict[int, int] = {0: 0}
        self._callbacks = self._callbacks_for(0)

    def _callbacks_for(self, generation: int) -> tuple[Callable, Callable]:
        delivered = self._delivered

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self._errors.append(f"{message.topic()}: {error}")
            delivered[generation] += 1

        def on_tracked_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                tp = (message.topic(), message.partition())
                self.acked[tp] = max(self.acked.get(tp, -1), message.offset())
            on_delivery(error, message)

        return on_delivery, on_tracked_delivery

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                track: bool = False) -> None:
        """Queue one record (to `partition` when given, else by key); track=True records its acked offset."""
        callback = self._callbacks[1] if track else self._callbacks[0]
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=callback, **extra)
                break
            except BufferError:
                with self._poll_lock:
                    self._producer.poll(0.05)
        self._produced[self._generation] += 1

    def cut(self) -> int:
        """Close the current generation (returned); later records belong to the next one."""
        closed = self._generation
        self._generation += 1
        self._produced[self._generation] = 0
        self._delivered[self._generation] = 0
        self._callbacks = self._callbacks_for(self._generation)
        return closed

    def _generations_done(self, upto: int) -> bool:
        return all(self._delivered[g] >= self._produced[g] for g in range(self._oldest, upto + 1))

    def _poll_until_done(self, upto: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._generations_done(upto):
            if time.monotonic() > deadline:
                return False
            with self._poll_lock:
                self._producer.poll(POLL_S)
        return True

    async def settle(self, generation: int | None = None, timeout_s: float = 60.0) -> None:
        """Wait until every record up to `generation` (default: all so far) is acknowledged; raise if any was not."""
        upto = self.cut() if generation is None else generation
        done = await asyncio.get_running_loop().run_in_executor(None, self._poll_until_done, upto, timeout_s)
        if not done or self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"outputs not acknowledged (timed out: {not done}): {errors[:5]}")
        for g in range(self._oldest, upto + 1):
            del self._produced[g], self._delivered[g]
        self._oldest = upto + 1

    def close(self) -> None:
        self._producer.flush(10)
