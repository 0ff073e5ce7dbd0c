"""The Faust agents' output producer: librdkafka (confluent-kafka) instead of aiokafka's pure-Python one.

Producing and network I/O run in C threads, off the event loop. Agents do not wait for
acknowledgements: records are counted per generation, and a commit waits only for the generations
cut before it (`cut` then `settle_through`), so that steady production never delays a commit.
Delivery callbacks run on the event loop's thread (`poll` is only called from there).

A Kafka outage is waited through, however long: records have no local delivery timeout (librdkafka
retries until the brokers answer), and a settle waits for them, saying every 30 s that it waits; only
a record the broker refuses fails it.

With a `transactional_id` (exactly-once) the producer is transactional: `stages.transactions` begins and
commits its transactions, records time out with the transaction, and a record with a fallback that is
larger than its topic's `max.message.bytes` (`limit_topic`) is replaced by the fallback before it is sent,
since a refusal by the broker would abort the whole transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamproc.config import Settings
from streamproc.kafka.clients import new_producer
from streamproc.kafka.records import position_of

SETTLE_POLL_S = 0.002
SETTLE_LOG_EVERY_S = 30.0
RECORD_OVERHEAD_BYTES = 512  # a record batch's header and a record's own fields, well over their size
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
log = logging.getLogger(__name__)


class OutputNotAcknowledged(RuntimeError):
    """A record was not acknowledged by the broker: the inputs it came from must not be committed."""


class OutputProducer:
    def __init__(self, settings: Settings, name: str, transactional_id: str | None = None) -> None:
        config: dict[str, object] = {
            "queue.buffering.max.messages": 200_000,
            "compression.type": settings.output_compression,
        }
        if transactional_id is None:
            config["message.timeout.ms"] = 0  # retry through an outage of any length (settle_through logs it)
        else:  # message.timeout.ms: librdkafka's default, the transaction timeout
            config["transactional.id"] = transactional_id
            config["transaction.timeout.ms"] = settings.transaction_timeout_ms
        self.transactional_id = transactional_id
        self._new_client = lambda: new_producer(settings, name, config)
        self._producer = self._new_client()
        self._abandoned: list[Producer] = []  # given-up clients, kept referenced: a thread may be inside one
        self._limits: dict[str, int] = {}  # topic -> the largest record it takes whole (limit_topic)
        self._errors: list[str] = []
        self._generation = 0
        self._in_flight: Counter[int] = Counter()  # generation -> records not yet acknowledged
        self._callbacks = self._new_callbacks()
        # highest acknowledged offset per (topic, partition) of the records produced with track=True
        self.acked: dict[tuple[str, int], int] = {}

    @property
    def client(self) -> Producer:
        """The librdkafka producer (its transactional calls are made by `stages.transactions`)."""
        return self._producer

    def replace_client(self) -> None:
        """Give up the librdkafka producer (a transactional call of it hung) for a new one with the same
        config; what the old one held is abandoned (its transaction is aborted when the new one registers)."""
        self._abandoned.append(self._producer)
        self._producer = self._new_client()
        self._errors.clear()
        self._in_flight.clear()
        self.acked.clear()

    def limit_topic(self, topic: str, max_message_bytes: int) -> None:
        """Records with a fallback for `topic` larger than this (key, value and a margin for the batch's own
        bytes) are sent as their fallback without trying the whole."""
        self._limits[topic] = max(max_message_bytes - RECORD_OVERHEAD_BYTES, 0)

    def _on_delivery(self, generation: int, track: bool, error: KafkaError | None, message: Message) -> None:
        left = self._in_flight[generation] - 1
        if left:
            self._in_flight[generation] = left
        else:
            del self._in_flight[generation]
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")
        elif track:
            topic, partition, offset = position_of(message)
            self.acked[(topic, partition)] = max(self.acked.get((topic, partition), -1), offset)

    def _new_callbacks(self) -> tuple[partial[None], partial[None]]:
        """The current generation's delivery callbacks, untracked and tracked (made once, not per record)."""
        return partial(self._on_delivery, self._generation, False), partial(
            self._on_delivery, self._generation, True
        )

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        track: bool = False,
        fallback: bytes | None = None,
    ) -> None:
        """Queue one record (to `partition` when given, else by key); track=True records its acked offset.

        `fallback`: a smaller value to send instead if Kafka refuses this one as too large (a dead letter's
        reduced form), so that a refusal never fails the commit that waits for it.
        """
        limit = self._limits.get(topic)
        if fallback is not None and limit is not None and len(value) + len(key or b"") > limit:
            value, fallback = fallback, None
        callback = (
            self._callbacks[track]
            if fallback is None
            else partial(self._on_delivery_or_fallback, self._generation, topic, key, partition, fallback)
        )
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, on_delivery=callback)
                else:
                    self._producer.produce(topic, value, key, partition, on_delivery=callback)
                break
            except BufferError:
                self._producer.poll(0.05)
            except (
                KafkaException
            ) as exc:  # refused before sending: larger than the producer's message.max.bytes
                if fallback is None or exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                log.warning(
                    "a record for %s of %d bytes is too large to send; sending its reduced form",
                    topic,
                    len(value),
                )
                value, fallback, callback = fallback, None, self._callbacks[track]
        self._in_flight[self._generation] += 1

    def _on_delivery_or_fallback(
        self,
        generation: int,
        topic: str,
        key: bytes | None,
        partition: int | None,
        fallback: bytes,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        """A record with a fallback: refused as too large by the broker, its fallback is sent in its place
        (counted in the same generation, so a commit waiting for it waits for the fallback)."""
        if error is not None and error.code() in TOO_LARGE:
            log.warning(
                "Kafka refused a record for %s as too large (%s); sending its reduced form", topic, error
            )
            self._in_flight[generation] += 1
            on_delivery = partial(self._on_delivery, generation, False)
            if partition is None:
                self._producer.produce(topic, fallback, key, on_delivery=on_delivery)
            else:
                self._producer.produce(topic, fallback, key, partition, on_delivery=on_delivery)
            error = None
        self._on_delivery(generation, False, error, message)

    def poll(self) -> None:
        """Serve the delivery callbacks of acknowledged records (cheap; call it once per batch)."""
        self._producer.poll(0)

    def cut(self) -> int:
        """Close the current generation: records produced from now on belong to the next one."""
        self._generation += 1
        self._callbacks = self._new_callbacks()
        return self._generation - 1

    def in_flight_through(self, generation: int) -> int:
        return sum(n for g, n in self._in_flight.items() if g <= generation)

    async def settle_through(self, generation: int, timeout_s: float | None = None) -> None:
        """Wait until every record of `generation` and earlier is acknowledged; raise if one was refused (or
        when `timeout_s`, if given, passes)."""
        started = time.monotonic()
        next_log = started + SETTLE_LOG_EVERY_S
        while True:
            self._producer.poll(0)
            if self._errors:
                errors, self._errors = self._errors, []
                raise OutputNotAcknowledged(f"outputs not acknowledged: {errors[:5]}")
            left = self.in_flight_through(generation)
            if not left:
                return
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                raise OutputNotAcknowledged(f"{left} outputs not acknowledged within {timeout_s} s")
            if now >= next_log:
                log.warning("%d outputs waiting %.0f s for Kafka's acknowledgement", left, now - started)
                next_log = now + SETTLE_LOG_EVERY_S
            await asyncio.sleep(SETTLE_POLL_S)

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait until everything produced so far is acknowledged."""
        await self.settle_through(self.cut(), timeout_s)

    def close(self) -> None:
        self._producer.flush(10)
