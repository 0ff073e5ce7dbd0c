"""How soon after a Kafka transaction commits does a read_committed reader see its records?

An exactly-once hop of the pipeline (Faust stage to Faust stage through a repartition topic, Faust worker to
scoring worker, scoring worker to the output topics) adds three waits to an event's latency: the rest of
the producer's commit interval, the commit itself (commit_transaction), and the reader's fetch of the
now-committed records. This bench measures the last two on one local Apache Kafka, for both readers the
pipeline uses: confluent-kafka (the scoring worker, the CLI readers) and aiokafka (the Faust worker), each
with a long fetch wait, so that a fetch parked at the broker would show as a delay of up to that wait.

Each round: begin a transaction, produce one record, flush (the record is in the log, uncommitted), let a
parked fetch wait 30 ms, commit, and time from commit_transaction's return to the reader's receipt.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import fmt, header, percentile, start_kafka, table
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def confluent_reader(bootstrap: str, topic: str, fetch_wait_ms: int) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"visibility-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": fetch_wait_ms,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([CkTopicPartition(topic, 0, 0)])
    return consumer


def measure_confluent(producer: Producer, bootstrap: str, topic: str, rounds: int, fetch_wait_ms: int):
    reader = confluent_reader(bootstrap, topic, fetch_wait_ms)
    commits, seen = [], []
    try:
        for i in range(-3, rounds):  # three unmeasured rounds warm the reader's connection
            value = f"c{i}".encode()
            producer.begin_transaction()
            producer.produce(topic, value)
            producer.flush()
            time.sleep(0.03)
            t0 = time.monotonic()
            producer.commit_transaction()
            t1 = time.monotonic()
            while True:
                msg = reader.poll(1.0)
                if msg is not None and msg.error() is None and msg.value() == value:
                    break
            if i >= 0:
                commits.append((t1 - t0) * 1000)
                seen.append((time.monotonic() - t1) * 1000)
    finally:
        reader.close()
    return commits, seen


async def measure_aiokafka(producer: Producer, bootstrap: str, topic: str, rounds: int, fetch_wait_ms: int):
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        fetch_max_wait_ms=fetch_wait_ms,
        enable_auto_commit=False,
    )
    await reader.start()
    partition = TopicPartition(topic, 0)
    reader.assign([partition])
    reader.seek_to_end(partition)
    commits, seen = [], []
    try:
        for i in range(-3, rounds):
            value = f"a{i}".encode()
            producer.begin_transaction()
            producer.produce(topic, value)
            producer.flush()
            await asyncio.sleep(0.03)
            t0 = time.monotonic()
            producer.commit_transaction()  # blocks the loop for the commit: the reader's fetch is in flight
            t1 = time.monotonic()
            found = False
            while not found:
                batches = await reader.getmany(partition, timeout_ms=1000)
                found = any(m.value == value for msgs in batches.values() for m in msgs)
            if i >= 0:
                commits.append((t1 - t0) * 1000)
                seen.append((time.monotonic() - t1) * 1000)
    finally:
        await reader.stop()
    return commits, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--fetch-wait-ms", type=int, default=500, help="the readers' fetch wait")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="txn-visibility-"))
    kafka = start_kafka(work)
    try:
        bootstrap = kafka.bootstrap_servers
        topic = f"visibility-{uuid.uuid4().hex[:6]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"visibility-{topic}", "linger.ms": 0}
        )
        producer.init_transactions(30)
        results = {
            "confluent-kafka": measure_confluent(producer, bootstrap, topic, args.rounds, args.fetch_wait_ms),
            "aiokafka": asyncio.run(
                measure_aiokafka(producer, bootstrap, topic, args.rounds, args.fetch_wait_ms)
            ),
        }
        del producer, admin  # closed before the broker stops (no reconnection attempts logged)
    finally:
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for reader, (commits, seen) in results.items():
        commits.sort()
        seen.sort()
        rows.append(
            [reader, len(seen)]
            + [fmt(percentile(commits, q), 1) for q in (0.5, 0.99)]
            + [fmt(percentile(seen, q), 1) for q in (0.5, 0.9, 0.99)]
            + [fmt(seen[-1], 1)]
        )
    print(header("txn_visibility_bench: from a transaction's commit to a read_committed reader"))
    print(
        table(
            [
                "reader",
                "rounds",
                "commit_transaction p50 ms",
                "p99 ms",
                "seen after commit p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
            ],
            rows,
        )
    )
    print(f"\n- readers' fetch wait {args.fetch_wait_ms} ms; one record per transaction, one partition")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
