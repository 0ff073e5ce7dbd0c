"""Consumer throughput on a local Apache Kafka over the same N pre-produced JSON click events.

  (a) a raw confluent-kafka consumer keeping per-user last-50 windows in a dict (this process)
  (b) a minimal Faust app that only counts events (own process), with stream.take_events and with
      a plain `async for`
  (c) the streamproc Faust worker (`streamproc worker`: real agents, RocksDB tables, sequence-updates)
  (d) Quix Streams doing the same window job (RocksDB state + changelog, one output per event)

The events are produced once, keyed by user with the murmur2 partitioner (streamproc.feed.replay), before
any consumer starts; every consumer reads the same topic from the beginning with its own group. The
clock starts at the first event processed, so group join, RocksDB open and start-up are excluded.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from _common import Child, bench_settings, cpu_seconds, fmt, header, start_kafka, streamproc_child, table
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamproc.config import Settings
from streamproc.feed.replay import replay
from streamproc.kafka.admin import create_topics

HERE = Path(__file__).resolve().parent
START_MS = 1_735_689_600_000
ACTIONS = ["view", "view", "view", "click", "click", "cart", "purchase", "fav", "search", "share"]
CATEGORIES = ["Sports", "Electronics", "Books", "Home", "Beauty", "Toys", "Garden", "Fashion"]
_EVENT_ID = re.compile(rb'"event_id":\s*"([^"]+)"')
_EMITTED = re.compile(rb'"emitted_ts_ms":\s*(\d+)')
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


def result(name: str, count: int, first: float | None, last: float | None, note: str = "") -> dict[str, Any]:
    seconds = (last - first) if first is not None and last is not None else None
    rate = count / seconds if seconds and seconds > 0 else None
    return {"name": name, "count": count, "seconds": seconds, "rate": rate, "note": note}


def failed(name: str, why: str) -> dict[str, Any]:
    return {"name": name, "count": 0, "seconds": None, "rate": None, "note": why}


# -- (a) ------------------------------------------------------------------------------------------
def run_raw_consumer(settings: Settings, n: int, window: int, timeout_s: float) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
        }
    )
    consumer.subscribe([settings.clicks_topic])
    windows: dict[bytes, deque[dict[str, Any]]] = {}
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while count < n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=1000, timeout=0.5)
            for msg in messages:
                if msg.error():
                    continue
                if first is None:
                    first = time.perf_counter()
                event = json.loads(msg.value())
                w = windows.get(msg.key())
                if w is None:
                    w = windows[msg.key()] = deque(maxlen=window)
                w.append(event)
                count += 1
            if messages and first is not None:
                last = time.perf_counter()
    finally:
        consumer.close()
    note = f"{len(windows)} user windows" + ("" if count >= n else f"; TIMED OUT at {count}/{n}")
    return result(
        "(a) raw confluent-kafka consumer, dict of per-user last-50 deques", count, first, last, note
    )


# -- (b) ------------------------------------------------------------------------------------------
def wait_for_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if not child.alive():
            return None
        time.sleep(0.2)
    return None


def run_faust_count(settings: Settings, n: int, mode: str, work: Path, timeout_s: float) -> dict[str, Any]:
    label = {
        "take": "(b) Faust raw consume, stream.take_events(1000, within=0.01)",
        "take-uvloop": "(b) Faust raw consume, stream.take_events(1000, within=0.01) on uvloop, the worker's loop",
        "iter": "(b) Faust raw consume, plain `async for value in stream`",
        "layout": "(b) Faust raw consume, the worker's layout: three take_events agents over its five topics",
    }[mode]
    tag = f"faust-{mode}-{uuid.uuid4().hex[:6]}"
    mode, loop = (mode.removesuffix("-uvloop"), ["--uvloop"]) if mode.endswith("-uvloop") else (mode, [])
    out = work / f"{tag}.json"
    child = Child(
        [
            sys.executable,
            str(HERE / "faust_count_app.py"),
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic",
            settings.clicks_topic,
            "--app-id",
            f"bench-{tag}",
            "--partitions",
            str(settings.partitions),
            "--n",
            str(n),
            "--mode",
            mode,
            "--datadir",
            str(work / tag),
            "--layout-topics",
            ",".join(
                (
                    settings.user_events_topic,
                    settings.transactions_topic,
                    settings.fraud_labels_topic,
                    settings.tx_by_terminal_topic,
                )
            ),
            "--out",
            str(out),
            *loop,
        ],
        work / f"{tag}.log",
    )
    try:
        res = wait_for_file(out, child, timeout_s)
    finally:
        child.stop()
    if res is None:
        return failed(
            label, f"no result (child {'died' if not child.alive() else 'timed out'}); log {child.log_path}"
        )
    return result(label, res["count"], res["first_ts"], res["last_ts"], "agent only counts events")


# -- (c) ------------------------------------------------------------------------------------------
def metric_value(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


def read_updates(bootstrap: str, topic: str, n: int, timeout_s: float) -> tuple[set[bytes], list[int]]:
    """Distinct event ids and emitted_ts_ms values of an output topic, read from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "isolation.level": "read_committed",  # what an exactly-once worker committed, nothing aborted
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])  # no group join
    ids: set[bytes] = set()
    emitted: list[int] = []
    deadline = time.monotonic() + timeout_s
    last_msg = time.monotonic()
    try:
        while len(ids) < n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=2000, timeout=0.5)
            if messages:
                last_msg = time.monotonic()
            elif time.monotonic() - last_msg > (10.0 if ids else 60.0):
                break  # topic exhausted: the producer stopped short of n
            for msg in messages:
                if msg.error():
                    continue
                head = msg.value()[:400]
                m = _EVENT_ID.search(head)
                e = _EMITTED.search(head)
                if m:
                    ids.add(m.group(1))
                if e:
                    emitted.append(int(e.group(1)))
    finally:
        consumer.close()
    return ids, emitted


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


def worker_runs(guarantees: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, guarantee) in run order: the given order, then reversed, alternately."""
    return [(r, g) for r in range(rounds) for g in (guarantees if r % 2 == 0 else guarantees[::-1])]


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


# -- (d) ------------------------------------------------------------------------------------------
def quix_python(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable]
    for python in candidates:
        if (
            python
            and subprocess.run([python, "-c", "import quixstreams"], capture_output=True).returncode == 0
        ):
            return python
    return None


def run_quix(
    settings: Settings, n: int, window: int, work: Path, timeout_s: float, python: str | None
) -> dict[str, Any]:
    label = "(d) Quix Streams: last-50 window in RocksDB state + changelog, one output per event"
    py = quix_python(python)
    if py is None:
        return failed(
            label,
            "NOT RUN: quixstreams is not importable (pass --quix-python; see 'The scripts' in docs/benchmarks.md)",
        )
    version = subprocess.run(
        [py, "-c", "import quixstreams; print(quixstreams.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    tag = f"quix-{uuid.uuid4().hex[:6]}"
    output = f"{settings.clicks_topic}-{tag}-out"
    create_topics(settings.bootstrap_servers, [output], settings.partitions)
    out = work / f"{tag}.json"
    child = Child(
        [
            py,
            str(HERE / "quix_window_app.py"),
            "--bootstrap",
            settings.bootstrap_servers,
            "--input",
            settings.clicks_topic,
            "--output",
            output,
            "--group",
            f"bench-{tag}",
            "--state-dir",
            str(work / tag),
            "--window",
            str(window),
            "--n",
            str(n),
            "--out",
            str(out),
        ],
        work / f"{tag}.log",
        env=dict(os.environ),
    )
    try:
        res = wait_for_file(out, child, timeout_s)
        time.sleep(1.0)  # let the last outputs be produced
    finally:
        child.stop()
    if res is None:
        tail = " ".join(child.log_tail(400).split())
        return failed(
            label,
            f"quixstreams {version}: no result ({'died' if child.proc.returncode not in (None, 0, -15) else 'timed out'}): {tail}",
        )
    ids, emitted = read_updates(settings.bootstrap_servers, output, n, 120)
    if not emitted:
        return failed(label, f"quixstreams {version}: processed {res['count']} but no output read")
    return result(
        label,
        len(ids),
        min(emitted) / 1000,
        max(emitted) / 1000,
        f"quixstreams {version}; first→last emitted_ts_ms of the outputs; distinct event ids",
    )


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
            worker_runs(args.guarantees.split(","), args.rounds) if "c" in only else []
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
