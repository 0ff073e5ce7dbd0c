"""Produce-to-score latency of the full pipeline (Faust worker + scoring worker on CPU) at paced rates.

Synthetic events (models.data.synthetic, clicks and transactions) are replayed with
streamproc.feed.replay.replay(..., rate=R) into a local Apache Kafka; a test consumer reads risk-scores.
  end-to-end   = arrival of the score at the test consumer - lineage.ingest_ts_ms
                 (the input message's broker timestamp, carried through by the pipeline)
  scorer stamp = scored_ts_ms (scoring worker's clock when it published) - lineage.ingest_ts_ms
A second table splits the scorer stamp into stages, by input topic (a transaction crosses three
Faust agents, a click one): Faust = lineage.emitted_ts_ms (the worker's clock when it emitted the
sequence update) - ingest; scorer = scored_ts_ms - emitted_ts_ms.
Each rate runs for --duration-s; the first --warmup-s of every step are dropped. A rate is
sustainable when the scored rate is >= 95% of the offered rate, p99 stays under --p99-max-ms,
the median latency does not climb during the step (consumer lag not growing) and the backlog
drains within --drain-s after the step. The sweep stops at the first unsustainable rate.
With --guarantees and --rounds the sweep runs once per processing guarantee per round, on fresh topics
and state, in the order A B, B A, ... (a run finds the broker warmer than the one before it), and a last
table gives the medians of p50, p95 and p99 over the rounds and p99's range: one run's p99 can be twice another's
on the same machine (docs/benchmarks.md, 2026-12-07). Each step also reports the machine's CPU steal (time
the host gave a virtual machine's CPUs to something else), which stretches every latency measured meanwhile.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from _common import (
    Child,
    add_checkpoint_argument,
    alternating_runs,
    bench_settings,
    cpu_seconds,
    fmt,
    header,
    machine_cpu_ticks,
    percentile,
    require_checkpoint,
    start_kafka,
    streamproc_child,
    table,
    transaction_steps,
)
from pipeline_load import ScoreReader, event_source, wait_scored

from streamproc.config import Settings
from streamproc.feed.replay import replay
from streamproc.kafka.admin import create_topics

REPO = Path(__file__).resolve().parent.parent


def run_step(
    settings: Settings,
    reader: ScoreReader,
    events: list[tuple[str, dict[str, Any]]],
    rate: float,
    args: argparse.Namespace,
    children: list[Child],
    pids: dict[str, int],
) -> dict[str, Any]:
    start_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    steal0, ticks0 = machine_cpu_ticks()
    ports = {"Faust worker": settings.worker_metrics_port, "scoring worker": settings.scorer_metrics_port}
    commits0 = {name: transaction_steps(port) for name, port in ports.items()}
    produced = replay(settings, iter(events), rate=rate, progress=False)
    produce_s = time.perf_counter() - t0
    commits = {
        name: commit_rate_and_step_ms(commits0[name], transaction_steps(port), produce_s)
        for name, port in ports.items()
    }
    cpu = {name: 100 * (cpu_seconds(pid) - cpu0[name]) / produce_s for name, pid in pids.items()}
    steal1, ticks1 = machine_cpu_ticks()
    steal_pct = 100 * (steal1 - steal0) / (ticks1 - ticks0) if ticks1 > ticks0 else None
    end_ms = int(time.time() * 1000)
    ids = {m["event_id"] for _, m in events}
    drain_s = wait_scored(reader, ids, args.drain_s, children)
    rows = [r for r in reader.snapshot() if r[0] in ids]
    lo = start_ms + int(args.warmup_s * 1000)
    window_s = (end_ms - lo) / 1000
    measured = [r for r in rows if lo <= r[1] <= end_ms]
    offered = produced / produce_s
    offered_in_window = offered  # paced producer: the same rate throughout the step
    arrived_in_window = sum(1 for r in rows if lo <= r[3] <= end_ms)
    scored_rate = arrived_in_window / window_s if window_s > 0 else 0.0
    e2e = sorted(r[3] - r[1] for r in measured)
    stamp = sorted(r[2] - r[1] for r in measured)
    # lag trend: median latency of the last 5 s of the window minus the first 5 s
    first = sorted(r[3] - r[1] for r in measured if r[1] < lo + 5000)
    last = sorted(r[3] - r[1] for r in measured if r[1] >= end_ms - 5000)
    trend = (percentile(last, 0.5) or 0) - (percentile(first, 0.5) or 0) if first and last else None
    missing = len(ids) - len({r[0] for r in rows})
    stages = {}  # input topic -> (Faust ms, scorer ms), each sorted
    for topic in sorted({r[4] for r in measured}):
        timed = [r for r in measured if r[4] == topic and r[5] is not None]
        stages[topic] = (sorted(r[5] - r[1] for r in timed), sorted(r[2] - r[5] for r in timed))
    p99 = percentile(e2e, 0.99)
    reasons = []
    if scored_rate < 0.95 * offered_in_window:
        reasons.append("scored < 95% offered")
    if p99 is None or p99 > args.p99_max_ms:
        reasons.append(f"p99 > {args.p99_max_ms} ms")
    if (trend is not None and trend > args.max_trend_ms) or (first and not last):
        reasons.append("latency climbing")
    if drain_s is None:
        reasons.append(f"not drained in {args.drain_s:.0f}s")
    return {
        "target": rate,
        "produced": produced,
        "offered": offered,
        "scored_rate": scored_rate,
        "scored_pct": 100 * scored_rate / offered_in_window if offered_in_window else None,
        "n": len(measured),
        "e2e": e2e,
        "stamp": stamp,
        "stages": stages,
        "trend": trend,
        "drain_s": drain_s,
        "missing": missing,
        "sustainable": not reasons,
        "why": ", ".join(reasons),
        "cpu": cpu,
        "steal_pct": steal_pct,
        "commits": commits,
    }


def commit_rate_and_step_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], seconds: float
) -> dict[str, float]:
    """Between two transaction_steps(): 'per_s', commits per second, and each step's mean in milliseconds."""
    means: dict[str, float] = {}
    for step, (total, count) in after.items():
        total0, count0 = before.get(step, (0.0, 0.0))
        if count > count0:
            means[step] = 1000 * (total - total0) / (count - count0)
            if step == "commit":
                means["per_s"] = (count - count0) / seconds
    return means


def median_over_runs(group: list[dict[str, Any]], q: float) -> float | None:
    """The median over the runs in `group` of each run's e2e latency percentile `q`."""
    values = sorted(v for v in (percentile(s["e2e"], q) for s in group) if v is not None)
    return percentile(values, 0.5)


def summary_table(steps: list[dict[str, Any]]) -> str:
    """Per guarantee and rate, over the rounds: the median of each latency percentile, and p99's range."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for s in steps:
        groups.setdefault((s["guarantee"], s["target"]), []).append(s)
    rows = []
    for (guarantee, target), group in groups.items():
        p99s = sorted(p for p in (percentile(s["e2e"], 0.99) for s in group) if p is not None)
        steals = [s["steal_pct"] for s in group if s["steal_pct"] is not None]
        rows.append(
            [
                guarantee,
                fmt(target),
                str(len(group)),
                *(fmt(median_over_runs(group, q)) for q in (0.5, 0.95, 0.99)),
                f"{fmt(p99s[0])} - {fmt(p99s[-1])}" if p99s else "n/a",
                f"{sum(s['sustainable'] for s in group)} of {len(group)}",
                fmt(max(steals), 1) if steals else "n/a",
            ]
        )
    return table(
        [
            "guarantee",
            "target ev/s",
            "rounds",
            "e2e p50 ms (median of rounds)",
            "p95 ms",
            "p99 ms",
            "p99 range ms",
            "sustainable",
            "max steal %",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--rates", default="1000,2000,3000,5000", help="events/s per step, increasing")
    parser.add_argument("--duration-s", type=float, default=30.0, help="seconds per rate step (default 30)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="dropped at the start of each step")
    parser.add_argument(
        "--warm-s",
        type=float,
        default=30.0,
        help="before the first step, this long at the first rate, not measured (a fresh broker's JIT takes "
        "about that long to settle, using up to a core meanwhile: docs/benchmarks.md)",
    )
    parser.add_argument("--drain-s", type=float, default=30.0, help="max wait for the backlog after a step")
    parser.add_argument("--p99-max-ms", type=float, default=2000.0, help="p99 bound for 'sustainable'")
    parser.add_argument(
        "--max-trend-ms",
        type=float,
        default=500.0,
        help="max rise of the median latency over a step for 'sustainable'",
    )
    parser.add_argument(
        "--probe-down",
        type=int,
        default=3,
        help="when no rate is sustainable yet, halve the rate this many times (fresh pipeline each)",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="run every rate even after an unsustainable one"
    )
    parser.add_argument(
        "--guarantees",
        help="run the sweep once per processing guarantee in this comma list (e.g. "
        "exactly_once,at_least_once), each on fresh topics and state; default: one sweep with the settings' "
        "guarantee (--set processing_guarantee=...)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the sweeps this many times, the order of --guarantees reversed every other round",
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--users", type=int, default=500, help="users per generator chunk (default 500)")
    parser.add_argument("--days", type=int, default=30, help="days per generator chunk (default 30)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="scoring worker device (default cpu)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a Settings override for the pipeline, e.g. --set producer_linger_ms=5",
    )
    parser.add_argument("--work-dir", type=Path, help="logs and state (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    require_checkpoint(parser, args.checkpoint)
    rates = [float(r) for r in args.rates.split(",")]

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="latency-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = start_kafka(work)
    children: list[Child] = []
    steps: list[dict[str, Any]] = []
    reader: ScoreReader | None = None

    overrides = dict(item.split("=", 1) for item in args.set)
    runs: list[tuple[int, str | None]] = (
        list(alternating_runs(args.guarantees.split(","), args.rounds))
        if args.guarantees
        else [(r, None) for r in range(args.rounds)]
    )

    def start_pipeline(
        rate: float, guarantee: str | None, source: Iterator[tuple[str, dict[str, Any]]]
    ) -> tuple[Settings, ScoreReader]:
        """Fresh topics, groups and state; worker + scorer started and warmed up at `rate`."""
        for c in reversed(children):
            c.stop()
        children.clear()
        settings = bench_settings(
            broker,
            work,
            partitions=args.partitions,
            checkpoint=args.checkpoint.resolve(),
            device=args.device,
            **{**overrides, **({"processing_guarantee": guarantee} if guarantee else {})},
        )
        create_topics(settings.bootstrap_servers, settings.all_topics(), settings.partitions)
        children.append(streamproc_child("worker", settings, work / f"worker-{len(steps)}.log"))
        children.append(streamproc_child("score", settings, work / f"score-{len(steps)}.log"))
        reader = ScoreReader(settings)
        reader.start()
        # Warm-up (group joins, RocksDB open, model load, the broker's JIT): --warm-s at `rate`, then wait
        # for every score.
        t0 = time.monotonic()
        warm = list(islice(source, max(100, int(rate * args.warm_s))))
        replay(settings, iter(warm), rate=rate, progress=False)
        if wait_scored(reader, {m["event_id"] for _, m in warm}, 240, children) is None:
            raise RuntimeError(
                "warm-up events not scored within 240 s:\n" + "\n".join(c.log_tail() for c in children)
            )
        print(f"pipeline warm after {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
        return settings, reader

    try:
        for round_index, guarantee in runs:
            # every run replays the same events (the generator from its seed): runs that replayed different
            # slices of it differed in their share of transactions, which cross two more stages than clicks
            source = event_source(args.users, args.days, args.seed)
            settings, reader = start_pipeline(rates[0], guarantee, source)
            run_label = {"round": round_index + 1, "guarantee": settings.processing_guarantee}
            run_steps: list[dict[str, Any]] = []
            queue = list(rates)
            probes = 0
            while queue:
                rate = queue.pop(0)
                events = list(islice(source, int(rate * args.duration_s)))
                pids = {
                    "Faust worker": children[0].pid,
                    "scoring worker": children[1].pid,
                    "Kafka broker": broker.pids()[0],
                    "bench (producer + reader)": os.getpid(),
                }
                step = {**run_label, **run_step(settings, reader, events, rate, args, children, pids)}
                run_steps.append(step)
                steps.append(step)
                print(
                    {k: v for k, v in step.items() if k not in ("e2e", "stamp", "stages", "cpu")},
                    file=sys.stderr,
                    flush=True,
                )
                if step["sustainable"] or args.keep_going:
                    continue
                ok = any(s["sustainable"] for s in run_steps)
                if ok or probes >= args.probe_down:
                    break
                # Nothing sustainable yet: probe a lower rate on a fresh pipeline (the backlog would skew it).
                probes += 1
                queue = [max(1.0, round(rate / 2))]
                reader.stopping.set()
                reader.join(5)
                settings, reader = start_pipeline(queue[0], guarantee, source)
            reader.stopping.set()
            reader.join(5)
    finally:
        for c in reversed(children):
            c.stop()
        broker.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    print(
        header(
            "latency_bench: produce-to-score latency of the full pipeline",
            {
                "pipeline": f"streamproc worker + streamproc score (device {args.device}, checkpoint {args.checkpoint}), "
                f"{args.partitions} partitions, batch_max_size {settings.batch_max_size}, "
                f"batch_max_wait_ms {settings.batch_max_wait_ms}, Faust fetch wait "
                f"{settings.faust_fetch_wait_ms} ms, scorer fetch wait {settings.scorer_fetch_wait_ms} ms, "
                f"producer linger {settings.producer_linger_ms} ms, state_flush {settings.state_flush}",
                "workload": f"models.data.synthetic events (clicks + transactions), {args.users} users x {args.days} days per "
                f"chunk, paced by streamproc.feed.replay.replay(rate=R); {args.duration_s:.0f} s per rate, "
                f"first {args.warmup_s:.0f} s dropped",
            },
        )
    )
    several = len(runs) > 1
    run_columns = ["guarantee", "round"] if several else []

    def run_cells(s: dict[str, Any]) -> list[str]:
        return [s["guarantee"], str(s["round"])] if several else []

    rows = []
    for s in steps:
        e2e, stamp = s["e2e"], s["stamp"]
        rows.append(
            [
                *run_cells(s),
                fmt(s["target"]),
                fmt(s["offered"]),
                fmt(s["scored_rate"]),
                fmt(s["scored_pct"], 1) + "%",
                f"{s['n']:,}",
                fmt(percentile(e2e, 0.5)),
                fmt(percentile(e2e, 0.95)),
                fmt(percentile(e2e, 0.99)),
                fmt(percentile(stamp, 0.5)),
                fmt(percentile(stamp, 0.95)),
                fmt(percentile(stamp, 0.99)),
                fmt(s["trend"]),
                fmt(s["drain_s"], 1) if s["drain_s"] is not None else "no",
                f"{s['missing']:,}",
                "yes" if s["sustainable"] else f"NO ({s['why']})",
            ]
        )
    print(
        table(
            [
                *run_columns,
                "target ev/s",
                "offered ev/s",
                "scored ev/s",
                "scored/offered",
                "scores measured",
                "e2e p50 ms",
                "e2e p95 ms",
                "e2e p99 ms",
                "scorer-stamp p50 ms",
                "p95 ms",
                "p99 ms",
                "median rise ms",
                "drain s",
                "unscored after drain",
                "sustainable",
            ],
            rows,
        )
    )
    print()
    stage_rows = []
    for s in steps:
        for topic, (faust_ms, scorer_ms) in s["stages"].items():
            stage_rows.append(
                [
                    *run_cells(s),
                    fmt(s["target"]),
                    topic.split("-", 1)[-1],
                    f"{len(faust_ms):,}",
                    *(fmt(percentile(faust_ms, q)) for q in (0.5, 0.95, 0.99)),
                    *(fmt(percentile(scorer_ms, q)) for q in (0.5, 0.95, 0.99)),
                ]
            )
    print(
        table(
            [
                *run_columns,
                "target ev/s",
                "input topic",
                "scores",
                "Faust p50 ms",
                "p95 ms",
                "p99 ms",
                "scorer p50 ms",
                "p95 ms",
                "p99 ms",
            ],
            stage_rows,
        )
    )
    print()
    names = list(steps[0]["cpu"]) if steps else []
    print(
        table(
            [*run_columns, "target ev/s", *(f"{n} CPU %" for n in names), "total CPU %", "machine steal %"],
            [
                [
                    *run_cells(s),
                    fmt(s["target"]),
                    *(fmt(s["cpu"][n]) for n in names),
                    fmt(sum(s["cpu"].values())),
                    fmt(s["steal_pct"], 1),
                ]
                for s in steps
            ],
        )
    )
    print(
        f"- CPU % of one core while the step's events were produced ({os.cpu_count()} cores on this machine); "
        "machine steal %: the share of all CPUs' time the host gave to something else meanwhile"
    )
    commit_rows = []
    for s in steps:
        worker, scorer = s["commits"]["Faust worker"], s["commits"]["scoring worker"]
        if worker or scorer:
            commit_rows.append(
                [
                    *run_cells(s),
                    fmt(s["target"]),
                    fmt(worker.get("per_s"), 1),
                    *(fmt(worker.get(step), 1) for step in ("states", "offsets", "commit", "apply")),
                    fmt(scorer.get("per_s"), 1),
                    *(fmt(scorer.get(step), 1) for step in ("offsets", "commit")),
                ]
            )
    if commit_rows:
        print()
        print(
            table(
                [
                    *run_columns,
                    "target ev/s",
                    "Faust worker commits/s",
                    "states ms",
                    "offsets ms",
                    "commit ms",
                    "apply ms",
                    "scoring worker commits/s",
                    "offsets ms",
                    "commit ms",
                ],
                commit_rows,
            )
        )
        print(
            "- exactly-once commits while the step's events were produced, and the mean time of each step "
            "(streamproc_transaction_step_seconds): a record is readable downstream once its commit ends"
        )
    if args.rounds > 1:
        print()
        print(summary_table(steps))
    ok = [s["target"] for s in steps if s["sustainable"]]
    print()
    print(
        f"- highest sustainable rate tried: **{fmt(max(ok)) if ok else 'none'} events/s** "
        f"(criteria: scored >= 95% of offered, e2e p99 <= {args.p99_max_ms:.0f} ms, median rise <= "
        f"{args.max_trend_ms:.0f} ms, backlog drained within {args.drain_s:.0f} s)"
    )
    if steps and not steps[-1]["sustainable"] and not args.keep_going:
        print(
            "- the sweep stopped at the first unsustainable rate (--keep-going runs them all); when no rate "
            "was sustainable it halved the rate on a fresh pipeline (--probe-down times)"
        )
    print(
        "- latency columns cover only the events that were scored; on an unsustainable step they "
        "understate the real latency (see 'unscored after drain')"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
