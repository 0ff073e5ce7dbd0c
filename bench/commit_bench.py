"""What exactly-once costs the scoring worker: its throughput over the same N pre-produced sequence updates
with STREAMPROC_PROCESSING_GUARANTEE=exactly_once (a transaction per batch) and at_least_once, one after the
other in one run, on one local Apache Kafka, with the same checkpoint and batch settings.

The updates (windows of synthetic clicks and transactions, as the Faust worker emits them) are produced before
the scoring worker starts; the clock runs from its first score to its last (scored_ts_ms), so start-up and
model load are excluded. The scores are read back with isolation.level=read_committed, and each mode is
checked to have published exactly one risk score per update. Latency at paced rates: bench/latency_bench.py
with --set processing_guarantee=... Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    Child,
    add_checkpoint_argument,
    bench_settings,
    cpu_seconds,
    fmt,
    header,
    require_checkpoint,
    start_kafka,
    streamproc_child,
    table,
)
from confluent_kafka import Consumer

from models.data import synthetic
from streamproc.config import Settings
from streamproc.core.events import encode, validate
from streamproc.kafka.admin import create_topics
from streamproc.kafka.clients import new_producer

WINDOW = 50


def sequence_updates(n: int, users: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of `n` sequence updates: each synthetic event with its user's last WINDOW events."""
    windows: dict[str, list[dict[str, Any]]] = {}
    out: list[tuple[bytes, bytes]] = []
    for topic, msg in synthetic.generate(n_users=users, days=60, seed=seed):
        kind = "transaction" if topic == "transactions" else "click"
        event = validate(kind, encode(msg)).record  # the window record, as the Faust worker keeps it
        window = windows.setdefault(msg["user_id"], [])
        window.append(event)
        del window[:-WINDOW]
        update = {
            "user_id": msg["user_id"],
            "event_id": msg["event_id"],
            "kind": kind,
            "event_ts_ms": msg["ts"],
            "window": list(window),
            "lineage": {"topic": topic, "partition": 0, "offset": len(out), "ingest_ts_ms": msg["ts"]},
        }
        out.append((msg["user_id"].encode(), encode(update)))
        if len(out) == n:
            return out
    raise ValueError(f"the generator gave fewer than {n} events; raise --users")


def run_mode(
    broker: Any, work: Path, guarantee: str, updates: list[tuple[bytes, bytes]], args: argparse.Namespace
) -> dict[str, Any]:
    settings = bench_settings(
        broker,
        work,
        partitions=args.partitions,
        checkpoint=args.checkpoint.resolve(),
        processing_guarantee=guarantee,
        batch_max_size=args.batch_max_size,
    )
    create_topics(settings.bootstrap_servers, settings.all_topics(), settings.partitions)
    producer = new_producer(settings, "bench")
    for key, value in updates:
        producer.produce(settings.sequence_updates_topic, value, key)
        producer.poll(0)
    producer.flush(60)
    scorer = streamproc_child("score", settings, work / f"score-{guarantee}.log")
    try:
        scored = read_scores(settings, len(updates), args.deadline_s, scorer)
        cpu = cpu_seconds(scorer.pid)
    finally:
        scorer.stop()
    counts = Counter(event_id for event_id, _ in scored)
    stamps = sorted(ts for _, ts in scored)
    seconds = max((stamps[-1] - stamps[0]) / 1000, 1e-3)
    return {
        "guarantee": guarantee,
        "updates": len(updates),
        "risk scores read": len(scored),
        "each scored once": len(counts) == len(updates) and max(counts.values()) == 1,
        "seconds": seconds,
        "updates/s": len(updates) / seconds,
        "scorer CPU s": cpu,
    }


def read_scores(settings: Settings, n: int, deadline_s: float, scorer: Child) -> list[tuple[str, int]]:
    """(event_id, scored_ts_ms) of every risk score, read committed, until `n` distinct events are scored."""
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([settings.risk_scores_topic])
    scored: list[tuple[str, int]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + deadline_s
    try:
        while len(seen) < n:
            if time.monotonic() > deadline or not scorer.alive():
                raise RuntimeError(f"{len(seen)} of {n} scored before the deadline:\n{scorer.log_tail()}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    score = json.loads(msg.value())
                    scored.append((score["event_id"], int(score["scored_ts_ms"])))
                    seen.add(score["event_id"])
        # anything published twice arrives right behind: read on until the topic is quiet for 2 s
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < quiet_until:
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error() is None:
                    score = json.loads(msg.value())
                    scored.append((score["event_id"], int(score["scored_ts_ms"])))
                    quiet_until = time.monotonic() + 2.0
        return scored
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--updates", type=int, default=20_000, help="sequence updates per mode (default 20000)"
    )
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-max-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternating (default 2)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--deadline-s", type=float, default=900.0)
    parser.add_argument("--work-dir", type=Path, help="logs and state (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    require_checkpoint(parser, args.checkpoint)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="commit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = start_kafka(work)
    rows: list[dict[str, Any]] = []
    try:
        updates = sequence_updates(args.updates, args.users, args.seed)
        for repeat in range(args.repeats):
            for guarantee in (
                ("exactly_once", "at_least_once") if repeat % 2 == 0 else ("at_least_once", "exactly_once")
            ):
                row = run_mode(broker, work, guarantee, updates, args)
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    finally:
        broker.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(header("commit_bench: the scoring worker's throughput, exactly-once against at-least-once"))
    columns = [
        "guarantee",
        "updates",
        "risk scores read",
        "each scored once",
        "seconds",
        "updates/s",
        "scorer CPU s",
    ]
    print(
        table(
            columns,
            [
                [
                    r["guarantee"],
                    r["updates"],
                    r["risk scores read"],
                    r["each scored once"],
                    fmt(r["seconds"], 1),
                    fmt(r["updates/s"]),
                    fmt(r["scorer CPU s"], 1),
                ]
                for r in rows
            ],
        )
    )
    by_mode = {
        g: [r["updates/s"] for r in rows if r["guarantee"] == g] for g in ("exactly_once", "at_least_once")
    }
    if all(by_mode.values()):
        eos, alo = (sum(v) / len(v) for v in by_mode.values())
        print(
            f"\nexactly-once throughput / at-least-once: {eos / alo:.3f} (means of {args.repeats} runs each)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
