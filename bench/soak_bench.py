"""Soak: the demo pipeline at a steady rate for a long run on the local Kafka, reported minute by minute.

One local Kafka node, one Faust worker and one scoring worker (CPU), synthetic clicks and transactions
replayed at --rate for --minutes. Per minute of the run it prints:
  e2e p50 / p99  = arrival of the risk score at the bench's reader - the input's broker timestamp, over
                   the scores of events ingested in that minute
  scored         = scores of that minute's events (of those produced in it)
  lag            = records behind, summed over the Faust worker's and the scoring worker's input partitions,
                   from their /metrics at the end of the minute
  RSS            = resident memory of the Faust worker, the scoring worker, Kafka and this bench, MiB
  CPU            = each process's CPU in that minute, % of one core
  disk           = the bytes Kafka's log folder takes on disk (retention keeps it bounded)
Goal: flat memory, no lag growth, p99 of the last minute within 1.5x of the second minute's.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import (
    Child,
    add_checkpoint_argument,
    bench_settings,
    cpu_seconds,
    fmt,
    header,
    percentile,
    require_checkpoint,
    start_kafka,
    streamproc_child,
    table,
)
from pipeline_load import RiskScoreThread, event_source

from streamproc.config import Settings
from streamproc.demo.run import folder_bytes
from streamproc.feed.replay import replay
from streamproc.kafka.admin import create_topics
from streamproc.observability.readiness import read_metrics

MIB = 2**20


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def total_lag(port: int) -> int | None:
    """streamproc_consumer_lag summed over a process's input partitions, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    page = read_metrics(f"http://127.0.0.1:{port}/metrics")
    if page is None:
        return None
    return int(
        sum(
            s.value
            for f in text_string_to_metric_families(page)
            if f.name == "streamproc_consumer_lag"
            for s in f.samples
        )
    )


class MinuteReader(RiskScoreThread):
    """Keeps, per minute of ingest since `start_ms`, the end-to-end latencies (ms); nothing else, so that
    its memory stays flat however long the run."""

    def __init__(self, settings: Settings, start_ms: int) -> None:
        super().__init__(settings, "bench-soak")
        self.start_ms = start_ms
        self.latencies: dict[int, list[int]] = defaultdict(list)

    def keep(self, scores: list[dict[str, Any]], arrival_ms: int) -> None:
        for v in scores:
            ingest = (v.get("lineage") or {}).get("ingest_ts_ms")
            if ingest is not None and ingest >= self.start_ms:
                self.latencies[(ingest - self.start_ms) // 60_000].append(arrival_ms - ingest)

    def minute(self, index: int) -> list[int]:
        with self.lock:
            return sorted(self.latencies.get(index, []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser, Path("checkpoints/demo"))
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second (default 1000)")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--users", type=int, default=5000, help="users per generator chunk (default 5000)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a Settings override"
    )
    parser.add_argument("--work-dir", type=Path, help="logs and state (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    require_checkpoint(parser, args.checkpoint)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="soak-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    kafka = start_kafka(work)
    children: list[Child] = []
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    try:
        settings = bench_settings(
            kafka,
            work,
            partitions=args.partitions,
            checkpoint=args.checkpoint.resolve(),
            device="cpu",
            **dict(item.split("=", 1) for item in args.set),
        )
        create_topics(settings.bootstrap_servers, settings.all_topics(), settings.partitions)
        children += [
            streamproc_child("worker", settings, work / "worker.log"),
            streamproc_child("score", settings, work / "score.log"),
        ]
        source = event_source(args.users, args.days, seed=7)
        warm = [next(source) for _ in range(200)]
        warm_reader = MinuteReader(settings, 0)
        warm_reader.start()
        replay(settings, iter(warm), rate=200, progress=False)
        deadline = time.monotonic() + 240
        while sum(len(v) for v in warm_reader.latencies.values()) < len(warm):  # the pipeline warm
            assert time.monotonic() < deadline, "warm-up not scored:\n" + "\n".join(
                c.log_tail() for c in children
            )
            time.sleep(0.5)  # polling the warm-up reader
        warm_reader.stopping.set()

        start_ms = int(time.time() * 1000)
        reader = MinuteReader(settings, start_ms)
        reader.start()
        limit = int(args.rate * 60 * args.minutes)
        produced: list[int] = [0]
        done = threading.Event()

        def produce() -> None:
            try:
                produced[0] = replay(
                    settings,
                    source,
                    rate=args.rate,
                    limit=limit,
                    progress=False,
                    on_delivered=lambda n: produced.__setitem__(0, n),
                )
            finally:
                done.set()

        threading.Thread(target=produce, name="replay", daemon=True).start()
        pids = {
            "Faust worker": children[0].pid,
            "scoring worker": children[1].pid,
            "Kafka": kafka.pids()[0],
            "bench": os.getpid(),
        }
        cpu_before = {n: cpu_seconds(p) for n, p in pids.items()}
        produced_before = 0
        for minute in range(args.minutes):
            time.sleep(max(0.0, start_ms / 1000 + 60 * (minute + 1) - time.time()))  # the minute's end
            for c in children:
                if not c.alive():
                    raise RuntimeError(f"{c.argv[-1]} died:\n{c.log_tail()}")
            cpu_now = {n: cpu_seconds(p) for n, p in pids.items()}
            cpu = {n: 100 * (cpu_now[n] - cpu_before[n]) / 60 for n in pids}
            cpu_before = cpu_now
            lag = [total_lag(settings.worker_metrics_port), total_lag(settings.scorer_metrics_port)]
            in_minute = produced[0] - produced_before
            produced_before = produced[0]
            time.sleep(2)  # scores of the minute's last events still on their way (p99 well under 2 s)
            lat = reader.minute(minute)
            rows.append(
                [
                    minute + 1,
                    f"{in_minute:,}",
                    f"{len(lat):,}",
                    fmt(percentile(lat, 0.5)),
                    fmt(percentile(lat, 0.99)),
                    fmt(lag[0]) if lag[0] is not None else "?",
                    fmt(lag[1]) if lag[1] is not None else "?",
                    *(fmt(rss_mib(p)) for p in pids.values()),
                    *(fmt(cpu[n]) for n in pids),
                    fmt(folder_bytes(kafka.folder) / MIB),
                ]
            )
            print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
        done.wait(120)
        summary = {"p99": [percentile(reader.minute(m), 0.99) for m in range(args.minutes)]}
        reader.stopping.set()
    finally:
        for c in reversed(children):
            c.stop()
        kafka.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    print(
        header(
            f"soak_bench: the pipeline at {args.rate:,.0f} events/s for {args.minutes} minutes",
            {
                "pipeline": f"streamproc worker + streamproc score (CPU, checkpoint {args.checkpoint}), {args.partitions} "
                f"partitions, Kafka retention {kafka.retention.bytes_per_partition // MIB} MiB per partition",
                "workload": f"models.data.synthetic clicks and transactions, {args.users:,} users x {args.days} days per chunk",
            },
        )
    )
    print(
        table(
            [
                "minute",
                "produced",
                "scored",
                "e2e p50 ms",
                "e2e p99 ms",
                "Faust worker lag",
                "scorer lag",
                "RSS worker MiB",
                "RSS scorer MiB",
                "RSS Kafka MiB",
                "RSS bench MiB",
                "CPU worker %",
                "CPU scorer %",
                "CPU Kafka %",
                "CPU bench %",
                "Kafka disk MiB",
            ],
            rows,
        )
    )
    p99 = summary.get("p99") or []
    if len(p99) >= 2 and p99[1] and p99[-1]:
        print(f"\n- p99 of the last minute / the second minute: **{p99[-1] / p99[1]:.2f}** (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
