"""The embedded broker, and the workaround for its low ListOffsets answer."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamproc.broker import BrokerError, check_partitions, create_topics
from streamproc.config import Settings
from streamproc.consumers import _consumer
from streamproc.tansu_compat import fetch_high_watermarks
from tests.integration.conftest import GROUP_TIMEOUTS

pytestmark = pytest.mark.integration


def produce_in_batches(bootstrap_servers: str, topic: str, n: int) -> list[int]:
    """n small records alternately to the 2 partitions of a new topic, in many record batches (the
    broker's ListOffsets answer is the start of the last batch + 1); the count per partition."""
    produced = [0, 0]
    create_topics(bootstrap_servers, [topic], partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 20, "batch.num.messages": 500})
    for i in range(n):
        producer.produce(topic, value=b"x" * 40, partition=i % 2)
        produced[i % 2] += 1
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return produced


def test_fetch_high_watermark_counts_every_record_where_list_offsets_falls_short(broker):
    topic = "highwater-check"
    produced = produce_in_batches(broker.bootstrap_servers, topic, 20_000)

    probed = fetch_high_watermarks(broker.bootstrap_servers, [(topic, 0), (topic, 1)])
    assert probed == {(topic, 0): produced[0], (topic, 1): produced[1]}

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "listed-check"})
    try:
        listed = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in (0, 1)]
    finally:
        consumer.close()
    # Tansu 0.6 answers ListOffsets(latest) with the start of the last batch + 1. If this starts
    # failing, the broker was fixed and streamproc.tansu_compat can go.
    assert listed[0] < produced[0] and listed[1] < produced[1]


def test_faust_takes_its_high_watermarks_from_the_fetch_probe(broker, monkeypatch):
    """install_faust_highwater_probe replaces the lookup Faust's consumer thread makes (ListOffsets,
    low on this broker) by the Fetch probe: what a table's changelog recovery reads its end from."""
    import asyncio

    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    from streamproc import tansu_compat

    topic = "highwater-faust"
    produced = produce_in_batches(broker.bootstrap_servers, topic, 10_000)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "listed-faust"})
    try:
        listed = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in (0, 1)}
    finally:
        consumer.close()
    assert listed[0] < produced[0] and listed[1] < produced[1]  # what Faust's own lookup answers here

    async def listed_offsets(self, partitions):  # the thread's ListOffsets lookup, as this broker answers it
        return {tp: listed[tp.partition] for tp in partitions}

    thread = faust_aiokafka.AIOKafkaConsumerThread
    monkeypatch.setattr(thread, "_highwaters", listed_offsets)  # restored, unwrapped, after the test
    monkeypatch.setattr(tansu_compat, "_INSTALLED", {})
    partitions = [TP(topic, 0), TP(topic, 1)]
    assert asyncio.run(thread._highwaters(None, partitions)) == {tp: listed[tp.partition] for tp in partitions}
    tansu_compat.install_faust_highwater_probe(broker.bootstrap_servers)
    assert asyncio.run(thread._highwaters(None, partitions)) == {TP(topic, 0): produced[0], TP(topic, 1): produced[1]}


def test_empty_partition_has_high_watermark_zero(broker):
    create_topics(broker.bootstrap_servers, ["highwater-empty"], partitions=1)
    assert fetch_high_watermarks(broker.bootstrap_servers, [("highwater-empty", 0)]) == {("highwater-empty", 0): 0}


@pytest.mark.parametrize("round_", range(3))  # the first round on a broker rarely hits the race
def test_consumers_subscribed_just_before_their_topics_exist_see_them_soon(broker, round_):
    """`streamproc alerts`, the scoring worker or a test's reader started as the pipeline creates its topics.

    A subscription whose first metadata answer comes while its topics are being created learns of
    them only at librdkafka's next metadata refresh, 5 minutes by default. On this broker most such
    consumers waited that long after the first round (`STREAMPROC_METADATA_REFRESH_MS=300000` makes
    this test fail); the settings make it seconds. Four consumers per round, so that the race is hit.
    """
    settings = Settings(bootstrap_servers=broker.bootstrap_servers, **GROUP_TIMEOUTS)
    consumers, topics = [], []
    try:
        for _ in range(4):
            pair = [f"created-late-{uuid.uuid4().hex[:8]}" for _ in range(2)]
            consumer = _consumer(settings, f"late-{uuid.uuid4().hex[:8]}", from_beginning=True)
            consumer.subscribe(pair)
            consumers.append(consumer)
            topics.append(pair)
        # with the pipeline's other topics, as `create_topics` makes them for a Settings
        others = [f"created-late-other-{uuid.uuid4().hex[:8]}" for _ in range(8)]
        create_topics(broker.bootstrap_servers, [t for pair in topics for t in pair] + others, partitions=4)
        producer = Producer(settings.kafka_common())
        for pair in topics:
            for n in range(20):
                producer.produce(pair[n % 2], key=str(n).encode(), value=b"x")
        assert producer.flush(10) == 0
        received = [0] * len(consumers)
        deadline = time.monotonic() + 45
        while min(received) < 20:
            assert time.monotonic() < deadline, f"records read per consumer after 45 s: {received} of 20"
            for i, consumer in enumerate(consumers):
                received[i] += sum(1 for msg in consumer.consume(100, 0.05) if not msg.error())
        assert received == [20] * len(consumers)
    finally:
        for consumer in consumers:
            consumer.close()


def test_topics_with_another_partition_count_stop_the_worker_before_it_starts(broker):
    create_topics(broker.bootstrap_servers, ["copart-a"], partitions=2)
    create_topics(broker.bootstrap_servers, ["copart-b"], partitions=4)
    check_partitions(broker.bootstrap_servers, ["copart-b", "copart-missing"], 4)  # agrees, or absent: fine
    with pytest.raises(BrokerError, match=r"STREAMPROC_PARTITIONS=4 \(copart-a: 2\)"):
        check_partitions(broker.bootstrap_servers, ["copart-a", "copart-b"], 4)
