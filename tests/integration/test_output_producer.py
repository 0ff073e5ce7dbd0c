"""The agents' output producer on the real broker: a commit waits for its generation, and a failed record is reported."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import KafkaException

from streamproc.config import Settings
from streamproc.kafka.admin import create_topics, end_offsets
from streamproc.kafka.output_producer import OutputNotAcknowledged, OutputProducer

pytestmark = pytest.mark.integration


def _producer(broker) -> tuple[OutputProducer, str]:
    topic = f"out-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap_servers, [topic], partitions=2)
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    return OutputProducer(settings, "test"), topic


def test_settling_a_generation_waits_for_its_records_and_tracks_acknowledged_offsets(broker):
    out, topic = _producer(broker)

    async def scenario() -> tuple[int, int]:
        for n in range(3000):
            out.produce(topic, b"k", b"v%d" % n, partition=n % 2, track=True)
        first = out.cut()
        for _ in range(500):  # the next generation, still in flight while the first settles
            out.produce(topic, b"k", b"w", partition=0)
        await out.settle_through(first)
        left_first = out.in_flight_through(first)
        await out.settle()
        return left_first, out.in_flight_through(first + 1)

    assert asyncio.run(scenario()) == (0, 0)
    out.close()
    assert out.acked == {(topic, 0): 1499, (topic, 1): 1499}
    assert end_offsets(broker.bootstrap_servers, [(topic, 0), (topic, 1)]) == {
        (topic, 0): 2000,
        (topic, 1): 1500,
    }


def test_a_record_the_broker_refuses_fails_loudly(broker):
    out, topic = _producer(broker)

    async def scenario() -> None:
        out.produce(topic, b"k", b"v", partition=0)
        out.produce(topic, b"k", b"v", partition=7)  # the topic has 2 partitions
        await out.settle(timeout_s=30)

    # refused by produce() itself once librdkafka has the topic's metadata, else by the delivery report
    # and so by the settle: which one depends on how soon the metadata arrives, and both fail loudly
    with pytest.raises((OutputNotAcknowledged, KafkaException), match="(?i:partition)"):
        asyncio.run(scenario())
    out.close()
