"""Consumer throughput on a local Apache Kafka over the same N pre-produced JSON click events.

  (a) a raw confluent-kafka consumer keeping per-user last-50 windows in a dict (this process)
  (b) a minimal Faust app that only counts events (own process), with stream.take_events and with
      a plain `async for`
  (c) the streamproc Faust worker (`streamproc worker`: real agents, RocksDB tables, sequence-updates)
  (d) Quix Streams doing the same window job (RocksDB state + changelog, one output per event)
(a), (b) and (d) are in pipeline_peers.py.

The events are produced once, keyed by user with the murmur2 partitioner (streamproc.feed.replay), before
any consumer starts; every consumer reads the same topic from the beginning with its own group. The
clock starts at the first event processed, so group join, RocksDB open and start-up are excluded.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    Child,
    alternating_runs,
    bench_settings,
    cpu_seconds,
    fmt,
    header,
    scrape_metrics,
    start_kafka,
    streamproc_child,
    table,
)
from pipeline_peers import failed, read_updates, result, run_faust_count, run_quix, run_raw_consumer

from streamproc.config import Settings
from streamproc.feed.replay import replay
from streamproc.kafka.admin import create_topics

START_MS = 1_735_689_600_000
ACTIONS = ["view", "view", "view", "click", "click", "cart", "purchase", "fav", "search", "share"]
CATEGORIES = ["Sports", "Electronics", "Books", "Home", "Beauty", "Toys", "Garden", "Fashion"]
# How often the bench reads the worker's /metrics for its progress. A scrape cost the idle worker 4-10 ms
# of CPU (three rounds of 40, 2026-12-01) and the HTTP threads were 4% of the loaded worker's py-spy
# samples at one scrape per 0.5 s, ten times what deploy/prometheus.yml (every 5 s) asks. The CPU note's
# window ends at the poll that sees the last update, so it may include up to this long of idle worker.
METRICS_POLL_S = 2.0


def make_clicks(n: int, users: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """n valid click wire messages over `users` users, in event-time order (50 ms apart)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        item = rng.randrange(2000)
        out.append(
            (
                "clicks",
                {
                    "event_id": f"e{k:09d}",
                    "user_id": f"u{rng.randrange(users):05d}",
                    "item_id": f"i{item:04d}",
                    "action": rng.choice(ACTIONS),
                    "ts": START_MS + 50 * k,
                    "title": f"Item {item} of the shop",
                    "category": CATEGORIES[item % len(CATEGORIES)],
                },
            )
        )
    return out


# -- (c) ------------------------------------------------------------------------------------------
def metric_value(port: int, name: str) -> float | None:
    for line in (scrape_metrics(port) or "").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker (all threads, non-blocking) into collapsed stacks; SIGINT ends it."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--rate",
            "100",
            "-o",
            str(out),
            "--pid",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def guarantee_means(worker_rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean events/s of row (c) per guarantee (its label after the row's name), in first-seen order."""
    rates: dict[str, list[float]] = {}
    for r in worker_rows:
        rates.setdefault(r["name"].split("), ", 1)[-1], []).append(r["rate"] or 0.0)
    return {k: (sum(v) / len(v) if all(v) else None) for k, v in rates.items()}


def run_streamproc_worker(
    settings: Settings, n: int, work: Path, timeout_s: float, py_spy_out: Path | None = None
) -> tuple[dict[str, Any], Child | None]:
    label = (
        "(c) streamproc Faust worker (validate, RocksDB user table + changelog, sequence-updates), "
        f"{settings.processing_guarantee.replace('_', '-')}, commit every {settings.worker_commit_interval_ms()} ms"
    )
    child = streamproc_child(
        "worker", settings, work / f"streamproc-worker-{settings.processing_guarantee}.log"
    )
    deadline = time.monotonic() + timeout_s
    done = 0.0
    spy: subprocess.Popen[bytes] | None = None
    cpu_from: tuple[float, float] | None = None  # (updates, worker CPU s) at the first poll that saw updates
    cpu_note = ""
    try:
        while time.monotonic() < deadline and child.alive():
            done = metric_value(settings.worker_metrics_port, "streamproc_sequence_updates_total") or 0.0
            if done > 0 and cpu_from is None:
                cpu_from = (done, cpu_seconds(child.pid))
            if done > 0 and py_spy_out and spy is None:  # profile the steady state, not the start-up
                spy = start_py_spy(child.pid, py_spy_out)
            if done >= n:
                if cpu_from is not None and done > cpu_from[0]:
                    per_event_us = 1e6 * (cpu_seconds(child.pid) - cpu_from[1]) / (done - cpu_from[0])
                    cpu_note = (
                        f"worker CPU {per_event_us:,.0f} us per event (all threads, before the final flush); "
                    )
                break
            time.sleep(METRICS_POLL_S)
        if done >= n:  # the counter moves at send(); let the last batches be flushed and acknowledged
            time.sleep(10.0)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        child.stop()
    if done < n:
        why = "died" if child.proc.returncode not in (None, 0, -15) else "timed out"
        note = f"worker {why} after {int(done)}/{n} updates; log {child.log_path}"
    else:
        note = ""
    ids, emitted = read_updates(settings.bootstrap_servers, settings.sequence_updates_topic, n, 120)
    if not emitted:
        return failed(label, note or "no sequence updates read"), child
    if not note and len(ids) < n:
        note = f"only {len(ids):,} of {n:,} distinct ids read back (worker stopped before its last flush?); "
    res = result(
        label,
        len(ids),
        min(emitted) / 1000,
        max(emitted) / 1000,
        note + cpu_note + "first→last emitted_ts_ms of the sequence updates; distinct event ids",
    )
    return res, child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=50_000, help="click events produced once (default 50000)"
    )
    parser.add_argument("--users", type=int, default=2_000, help="distinct users / keys (default 2000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--window", type=int, default=50, help="events per user window (default 50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stage-timeout-s", type=float, default=180, help="give up on one consumer after this"
    )
    parser.add_argument("--only", default="a,b,c,d", help="comma list of a,b,c,d (default all)")
    parser.add_argument("--quix-python", help="interpreter that has quixstreams (default: this one)")
    parser.add_argument(
        "--guarantees",
        default="exactly_once,at_least_once",
        help="row (c) once per processing guarantee, in this order (default exactly_once,at_least_once)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="row (c) runs the guarantees this many times, the order reversed every other round (A B, B A, ...): "
        "a run finds the broker warmer than the run before it, which would favour whichever came second",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a Settings override for row (c), e.g. --set commit_interval_ms=1000",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="logs and state (default: a temp dir, removed unless --keep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (child logs)")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="OUT",
        help="profile (c) with py-spy (raw collapsed stacks to OUT-<guarantee>-<round>.txt; see bench/profile_top.py)",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = start_kafka(work)
    rows: list[dict[str, Any]] = []
    try:
        settings = bench_settings(broker, work, partitions=args.partitions, window_max_events=args.window)
        create_topics(settings.bootstrap_servers, settings.all_topics(), settings.partitions)
        events = make_clicks(args.events, args.users, args.seed)
        t0 = time.perf_counter()
        produced = replay(settings, iter(events), rate=0, progress=False)
        produce_s = time.perf_counter() - t0
        print(
            f"produced {produced} events to {settings.clicks_topic} in {produce_s:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        if "a" in only:
            rows.append(run_raw_consumer(settings, args.events, args.window, args.stage_timeout_s))
            print(rows[-1], file=sys.stderr, flush=True)
        if "b" in only:
            for mode in ("take", "take-uvloop", "iter", "layout"):
                rows.append(run_faust_count(settings, args.events, mode, work, args.stage_timeout_s))
                print(rows[-1], file=sys.stderr, flush=True)
        for round_no, guarantee in (
            alternating_runs(args.guarantees.split(","), args.rounds) if "c" in only else []
        ):
            # its own app id, internal and output topics (the clicks are shared): a run reads nothing of another
            run = settings.namespaced(f"{guarantee[:3]}{round_no}").with_overrides(
                clicks_topic=settings.clicks_topic,
                processing_guarantee=guarantee,
                data_dir=settings.data_dir / f"{guarantee}-{round_no}",
                **dict(item.split("=", 1) for item in args.set),
            )
            create_topics(run.bootstrap_servers, run.all_topics(), run.partitions)
            spy_out = args.py_spy and args.py_spy.with_name(f"{args.py_spy.stem}-{guarantee}-{round_no}.txt")
            res, _child = run_streamproc_worker(run, args.events, work, args.stage_timeout_s, spy_out)
            rows.append(res)
            print(rows[-1], file=sys.stderr, flush=True)
        if "d" in only:
            rows.append(
                run_quix(settings, args.events, args.window, work, args.stage_timeout_s, args.quix_python)
            )
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        broker.stop()
        if not (args.keep or args.work_dir):
            shutil.rmtree(work, ignore_errors=True)

    print(
        header(
            "pipeline_bench: consumer throughput on a local Apache Kafka",
            {
                "workload": f"{args.events:,} JSON click events, {args.users:,} users (keys), {args.partitions} partitions, "
                f"murmur2 keyed by user, window {args.window}; produced once before any consumer "
                f"({produced:,} acked in {produce_s:.1f} s)",
            },
        )
    )
    print(
        table(
            ["consumer", "events", "seconds (first→last)", "events/s", "notes"],
            [[r["name"], f"{r['count']:,}", fmt(r["seconds"], 2), fmt(r["rate"]), r["note"]] for r in rows],
        )
    )
    by = {r["name"][:3]: r for r in rows}
    base = [r for r in rows if r["name"].startswith("(b)")]
    worker_rows = [r for r in rows if r["name"].startswith("(c)")]
    for c in worker_rows:
        which = c["name"].split("), ", 1)[-1]
        if base:
            print()
        for b in base:
            pct = 100 * c["rate"] / b["rate"] if c["rate"] and b["rate"] else None
            why = (
                "Faust's path as the worker subscribes, our code aside"
                if "layout" in b["name"]
                else "target: 70%; like for like: the worker also runs on uvloop"
                if "uvloop" in b["name"]
                else "target: 70%"
            )
            print(f"- (c) streamproc worker, {which} = **{fmt(pct, 1)}%** of {b['name'][4:]} ({why})")
        if "(a)" in by and by["(a)"]["rate"] and c["rate"]:
            print(
                f"- (c) streamproc worker, {which} = {fmt(100 * c['rate'] / by['(a)']['rate'], 1)}% "
                "of (a) raw confluent-kafka"
            )
    means = guarantee_means(worker_rows)
    if len(means) == 2 and all(means.values()):
        (first, first_rate), (second, second_rate) = means.items()
        assert first_rate is not None and second_rate is not None
        print(
            f"- (c) {first} / {second}, means of {args.rounds} run(s) each: "
            f"{first_rate:,.0f} / {second_rate:,.0f} = {first_rate / second_rate:.3f}"
        )
    if args.keep or args.work_dir:
        print(f"\nlogs and state kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
