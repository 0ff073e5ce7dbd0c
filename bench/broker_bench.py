"""The local Apache Kafka alone: its start-up, memory and idle CPU, and one hop's latency at a paced rate.

Start-up: for 1 and 3 KRaft nodes, a cold start (storage formatted, then started) and a restart over the
same storage, each timed until every node serves; then each node's resident memory and CPU while idle
(no client) over --idle-s; then node 1 SIGKILLed and started again, timed until it serves.

Hop: one confluent-kafka producer sends R messages/s (keyed over 500 keys, murmur2) into a fresh topic and
one consumer reads it (assigned to every partition from offset 0, no group). For each setting a fresh
broker starts, so each run begins with an empty log. Per interval of the run it prints:
  broker CPU  = the Kafka process's CPU time in that interval, % of one core
  latency     = consumer arrival - the message's CreateTime (one produce -> fetch hop)
Nothing else runs: the pipeline's own processes are not started. Not a timed test: prints markdown.

Why it exists: on the embedded broker this project used before (Tansu 0.6, in memory) a fetch cost
more the more record batches a partition held, so latency climbed through every run; this separates
the broker's share of the pipeline's latency and CPU from the pipeline's own.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from _common import cpu_seconds, fmt, header, percentile, table
from confluent_kafka import Consumer, Producer, TopicPartition
from soak_bench import rss_mib

from streamproc.kafka.admin import create_topics
from streamproc.kafka.local_kafka import LocalKafka


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


class HopReader(threading.Thread):
    """Reads every partition of a topic from offset 0; keeps (arrival_ms, create_ms) per message."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, fetch_wait_ms: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"broker-bench-{uuid.uuid4().hex[:8]}",  # required by the client, never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.min.bytes": 1,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.1)  # one at a time: consume(n) would wait for n messages
            if msg is not None and msg.error() is None:
                self.seen.append((time.time() * 1000, msg.timestamp()[1]))
        self.consumer.close()


@dataclass(frozen=True)
class HopRun:
    """One setting's run: broker CPU (% of a core) idle and per interval, hop latencies (ms) early and late."""

    linger_ms: int
    fetch_wait_ms: int
    value_bytes: int
    idle_cpu: float
    cpu: list[float]
    first: list[float]  # sorted latencies of the messages created in the first interval
    last: list[float]  # and in the last
    received: int
    sent: int

    def row(self) -> list[str]:
        def p50_p99(values: list[float]) -> str:
            return f"{fmt(percentile(values, 0.5))} / {fmt(percentile(values, 0.99))}"

        return [
            str(self.linger_ms),
            str(self.fetch_wait_ms),
            str(self.value_bytes),
            fmt(self.idle_cpu),
            ", ".join(fmt(c) for c in self.cpu),
            p50_p99(self.first),
            p50_p99(self.last),
            f"{self.received:,} / {self.sent:,}",
        ]


def run_one(
    rate: int,
    duration_s: float,
    interval_s: float,
    linger_ms: int,
    fetch_wait_ms: int,
    value_bytes: int,
    partitions: int,
) -> HopRun:
    folder = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    with LocalKafka(folder) as broker:
        pid, topic = broker.pids()[0], "hop"
        create_topics(broker.bootstrap_servers, [topic], partitions=partitions)
        reader = HopReader(broker.bootstrap_servers, topic, partitions, fetch_wait_ms)
        reader.start()
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "linger.ms": linger_ms,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
            }
        )
        producer.produce(topic, key=b"warm", value=b"x")  # the idempotent producer's id
        producer.flush(10)
        time.sleep(2.0)
        idle0, t_idle = cpu_seconds(pid), time.monotonic()
        time.sleep(3.0)
        idle_pct = 100 * (cpu_seconds(pid) - idle0) / (time.monotonic() - t_idle)

        value = b"x" * value_bytes
        total = int(rate * duration_s)
        start = time.monotonic()
        start_ms = int(time.time() * 1000) - 1  # CreateTime has whole milliseconds
        marks = [(start, cpu_seconds(pid))]
        for i in range(total):
            producer.produce(topic, key=str(i % 500).encode(), value=value)
            producer.poll(0)
            now = time.monotonic()
            if now - marks[-1][0] >= interval_s:
                marks.append((now, cpu_seconds(pid)))
            ahead = start + (i + 1) / rate - now
            if ahead > 0:
                time.sleep(ahead)
        marks.append((time.monotonic(), cpu_seconds(pid)))
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(reader.seen) < total + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        reader.stop.set()
        reader.join(10)
        del producer  # closes its connections before the broker stops (else librdkafka logs the disconnect)
    shutil.rmtree(folder, ignore_errors=True)

    cpu = [100 * (c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in itertools.pairwise(marks)]
    seen = [(arrival, created) for arrival, created in reader.seen if created >= start_ms]
    first = sorted(a - c for a, c in seen if c < start_ms + interval_s * 1000)
    last = sorted(a - c for a, c in seen if c >= start_ms + (duration_s - interval_s) * 1000)
    return HopRun(linger_ms, fetch_wait_ms, value_bytes, idle_pct, cpu, first, last, len(seen), total)


def start_up(nodes: int, idle_s: float) -> list[str]:
    """A cold start and a restart of `nodes` nodes: seconds to serve, then RSS (MiB) and idle CPU per node."""
    folder = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    try:
        kafka = LocalKafka(folder, nodes=nodes)
        started = time.monotonic()
        kafka.start()
        cold = time.monotonic() - started
        kafka.stop()
        started = time.monotonic()
        kafka.start()
        warm = time.monotonic() - started
        pids = kafka.pids()
        before = [cpu_seconds(p) for p in pids]
        time.sleep(idle_s)  # nothing connected: the brokers' own background work
        idle = [100 * (cpu_seconds(p) - b) / idle_s for p, b in zip(pids, before, strict=True)]
        rss = [rss_mib(p) for p in pids]
        kafka.kill(0)
        started = time.monotonic()
        kafka.restart(0)  # its old registration must expire first (broker.session.timeout.ms)
        killed = time.monotonic() - started
        kafka.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        str(nodes),
        fmt(cold, 1),
        fmt(warm, 1),
        fmt(killed, 1),
        ", ".join(fmt(r) for r in rss),
        ", ".join(fmt(c, 1) for c in idle),
        f"{kafka.heap_mb} MiB",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="messages/s (default 1000)")
    parser.add_argument("--duration-s", type=float, default=40.0, help="seconds per setting (default 40)")
    parser.add_argument("--interval-s", type=float, default=5.0, help="CPU reported per interval (default 5)")
    parser.add_argument("--linger-ms", default="2,20", help="producer linger.ms values (default 2,20)")
    parser.add_argument(
        "--fetch-wait-ms", default="500", help="consumer fetch.wait.max.ms values (default 500)"
    )
    parser.add_argument("--value-bytes", default="4000", help="message sizes (default 4000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--idle-s", type=float, default=30.0, help="idle CPU measured over this long (default 30)"
    )
    parser.add_argument("--skip-start-up", action="store_true")
    args = parser.parse_args(argv)

    starts = [] if args.skip_start_up else [start_up(n, args.idle_s) for n in (1, 3)]
    results = []
    for linger, wait, size in itertools.product(
        _ints(args.linger_ms), _ints(args.fetch_wait_ms), _ints(args.value_bytes)
    ):
        print(f"linger {linger} ms, fetch wait {wait} ms, {size} B ...", file=sys.stderr, flush=True)
        results.append(
            run_one(args.rate, args.duration_s, args.interval_s, linger, wait, size, args.partitions)
        )

    print(
        header(
            "broker_bench: the local Apache Kafka alone: start-up, memory, idle CPU, one paced hop",
            {
                "workload": f"{args.rate} messages/s for {args.duration_s:g} s into a fresh topic of {args.partitions} "
                f"partitions, 500 keys; a fresh broker per setting",
            },
        )
    )
    if starts:
        print(
            table(
                [
                    "KRaft nodes",
                    "cold start s (format + start)",
                    "restart s",
                    "node 1 SIGKILLed and restarted s",
                    "RSS MiB per node after restart",
                    f"idle CPU % per node ({args.idle_s:g} s, no client)",
                    "max heap",
                ],
                starts,
            )
        )
        print()
    step = f"{args.interval_s:g} s"
    print(
        table(
            [
                "linger ms",
                "fetch wait ms",
                "value bytes",
                "broker CPU % idle",
                f"broker CPU % per {step} under load",
                f"hop latency p50 / p99 ms, first {step}",
                f"p50 / p99 ms, last {step}",
                "received / sent",
            ],
            [r.row() for r in results],
        )
    )
    print()
    print(
        "- CPU in % of one core (the machine has the cores in the header); latency = consumer arrival "
        "- CreateTime, both on this machine's clock"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
