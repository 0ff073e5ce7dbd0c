"""Scorer windows/s and per-batch latency by batch size, MiniLM encoder events/s, and the encoder
cache hit rate over a real data set (MovieLens small).

Windows are built the way the Faust worker builds them: synthetic events (models.data.synthetic) are
validated (streamproc.core.events.validate) and applied in event-time order with
streamproc.core.processing.apply_user_event / apply_terminal_event; only full windows (--window events)
are kept. Every text of those windows is in the encoder cache before timing (warm-up pass), so the
batch numbers are featurize + temporal model + outputs, as in the steady-state scoring worker.
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _common import add_checkpoint_argument, fmt, header, percentile, require_checkpoint, table
from encoder_cache_replay import movielens_hit_rate, movielens_replay_encode, movielens_texts, sync

from models.data import synthetic
from models.model import risk_trees
from models.model.encoder import TextEncoder
from models.serving.scorer import Scorer, Window
from streamproc.core.events import validate
from streamproc.core.processing import (
    apply_terminal_event,
    apply_user_event,
    new_terminal_state,
    new_user_state,
)

BATCH_SIZES = (1, 8, 32, 64, 128, 256, 512, 1024)
MAX_AGE_MS = 30 * 86_400_000


def build_windows(
    n_windows: int, window: int, n_users: int, days: int, seed: int
) -> tuple[list[Window], int]:
    """Full `window`-event windows + aggregates as the pipeline emits them; also the events replayed."""
    users: dict[str, dict[str, Any]] = defaultdict(new_user_state)
    terminals: dict[str, dict[str, Any]] = defaultdict(new_terminal_state)
    offsets: dict[str, int] = defaultdict(int)
    out: list[Window] = []
    n = 0
    for topic, msg in synthetic.generate(n_users=n_users, days=days, seed=seed):
        n += 1
        valid = validate("click" if topic == "clicks" else "transaction", json.dumps(msg).encode())
        record = valid.record
        terminal: dict[str, float] = {}
        if record["kind"] == "transaction":
            key = record["item_id"]
            offsets["t:" + key] += 1
            terminal = apply_terminal_event(
                terminals[key], record, valid.label, "by-terminal:0", offsets["t:" + key]
            )
        user = record["user_id"]
        offsets[user] += 1
        events, customer = apply_user_event(
            users[user], record, "user-inputs:0", offsets[user], window, MAX_AGE_MS
        )
        if len(events) == window:
            out.append(Window(events=list(events), aggregates=customer | terminal))
            if len(out) >= n_windows:
                break
    return out, n


def bench_batches(
    scorer: Scorer, windows: list[Window], sizes: list[int], min_s: float, min_batches: int, device: str
) -> list[list[str]]:
    rows = []
    for size in sizes:
        batches = [
            [windows[(i * size + j) % len(windows)] for j in range(size)] for i in range(max(min_batches, 4))
        ]
        scorer.score(batches[0])  # warm this shape
        times: list[float] = []
        t_start = time.perf_counter()
        i = 0
        while len(times) < min_batches or time.perf_counter() - t_start < min_s:
            batch = batches[i % len(batches)]
            sync(device)
            t0 = time.perf_counter()
            scorer.score(batch)
            sync(device)
            times.append(time.perf_counter() - t0)
            i += 1
        total = sum(times)
        ordered = sorted(times)
        rows.append(
            [
                str(size),
                f"{len(times):,}",
                fmt(size * len(times) / total),
                fmt(1000 * total / len(times), 2),
                fmt(1000 * (percentile(ordered, 0.95) or 0), 2),
                fmt(1000 * total / len(times) / size, 3),
            ]
        )
        print(f"batch {size}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def bench_risk_trees(
    scorer: Scorer, windows: list[Window], size: int, repeats: int
) -> list[list[str]] | None:
    """Mean ms per `size`-window batch of the risk trees' two steps, next to the whole Scorer.score.

    The trees run inside Scorer.score (features of the scored event, then the bag's log-odds); this
    times the same calls alone, so the table says what the bag costs of a batch. None without trees.
    """
    trees = scorer.ckpt.risk_trees
    if trees is None:
        return None
    batch = [windows[j % len(windows)] for j in range(size)]
    head, features = np.zeros(size), risk_trees.window_features(batch)
    explain_repeats = max(1, repeats // 10)  # an explanation is a forward pass per past event: slow
    steps = {
        "Scorer.score, whole batch": (lambda: scorer.score(batch), repeats),
        "risk_trees.window_features": (lambda: risk_trees.window_features(batch), repeats),
        f"RiskTrees.blend, bag of {len(trees.boosters)}": (lambda: trees.blend(head, features), repeats),
        "RiskTrees.contributions (an alert's trees explanation)": (
            lambda: trees.contributions(features),
            repeats,
        ),
        "Scorer.score, every window an explained alert": (
            lambda: scorer.score(batch, explain_at=0.0),
            explain_repeats,
        ),
    }
    rows = []
    for name, (step, times) in steps.items():
        step()  # warm
        t0 = time.perf_counter()
        for _ in range(times):
            step()
        rows.append([name, str(size), str(times), fmt(1000 * (time.perf_counter() - t0) / times, 2)])
    return rows


def bench_encoder(device: str, n_texts: int, batch: int) -> dict[str, Any]:
    encoder = TextEncoder(device=device, batch_size=batch, cache_size=n_texts + 1000)
    nouns = [n for ns in synthetic.CATEGORY_NOUNS.values() for n in ns]
    cats = list(synthetic.CATEGORY_NOUNS)
    warm = [f"view | warm-up text {k} | Home" for k in range(batch)]
    encoder.encode(warm)  # loads the weights
    texts = [
        f"{('view', 'click', 'cart', 'purchase')[k % 4]} | {synthetic.ADJECTIVES[k % 10]} "
        f"{nouns[k % len(nouns)]} {k} | {cats[k % len(cats)]}"
        for k in range(n_texts)
    ]
    assert len(set(texts)) == n_texts
    sync(device)
    t0 = time.perf_counter()
    encoder.encode(texts)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "texts": n_texts,
        "seconds": seconds,
        "rate": n_texts / seconds,
        "model": encoder.name_or_path,
        "misses": encoder.cache.misses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--windows", type=int, default=4096, help="distinct windows to cycle through")
    parser.add_argument("--window", type=int, default=50, help="events per window (default 50)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time per batch size (at least)")
    parser.add_argument("--min-batches", type=int, default=5, help="batches per batch size (at least)")
    parser.add_argument("--encoder-texts", type=int, default=1024, help="unique texts for the encoder rate")
    parser.add_argument("--encoder-batch", type=int, default=64)
    parser.add_argument(
        "--movielens",
        type=Path,
        default=Path("/work/shared/data/movielens-small/ratings.csv"),
        help="ratings.csv (movies.csv beside it); 'none' skips",
    )
    parser.add_argument(
        "--cache-size", type=int, default=50_000, help="encoder LRU entries (Scorer's default)"
    )
    parser.add_argument("--trees-batch", type=int, default=256, help="batch size for the risk trees' timing")
    parser.add_argument("--trees-repeats", type=int, default=50, help="batches timed per step (default 50)")
    parser.add_argument(
        "--replay-batch", type=int, default=256, help="events per batch in the encoding replay"
    )
    parser.add_argument("--skip", default="", help="comma list of: scorer, encoder, movielens, replay")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for but torch.cuda.is_available() is False")
    device_name = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"cpu, {torch.get_num_threads()} torch threads"
    )

    batch_rows: list[list[str]] = []
    tree_rows: list[list[str]] | None = None
    built = ""
    cache_note = ""
    if "scorer" not in skip:
        require_checkpoint(parser, args.checkpoint)
        t0 = time.perf_counter()
        windows, replayed = build_windows(args.windows, args.window, n_users=100, days=30, seed=11)
        built = (
            f"{len(windows):,} full {args.window}-event windows from {replayed:,} replayed synthetic events "
            f"({time.perf_counter() - t0:.1f} s to build)"
        )
        print(built, file=sys.stderr, flush=True)
        scorer = Scorer.load(args.checkpoint, device=args.device)
        for start in range(0, len(windows), 256):  # warm-up: every text into the encoder cache
            scorer.score(windows[start : start + 256])
        misses = scorer.encoder.cache.misses if scorer.encoder else 0
        hit = scorer.cache_hit_rate()
        cache_note = (
            f"warm-up pass: encoder cache hit rate {fmt(100 * hit, 1) if hit is not None else 'n/a'}% "
            f"({misses} texts encoded); timed batches then hit the cache only"
        )
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        batch_rows = bench_batches(scorer, windows, sizes, args.min_seconds, args.min_batches, args.device)
        tree_rows = bench_risk_trees(scorer, windows, args.trees_batch, args.trees_repeats)
        del scorer

    enc = None if "encoder" in skip else bench_encoder(args.device, args.encoder_texts, args.encoder_batch)
    ml = None
    replay = None
    if {"movielens", "replay"} - skip and str(args.movielens) != "none":
        if args.movielens.exists():
            texts, accepted, rejected = movielens_texts(args.movielens)
            if "movielens" not in skip:
                ml = movielens_hit_rate(texts, accepted, rejected, args.cache_size)
            if "replay" not in skip:
                replay = movielens_replay_encode(texts, args.device, args.cache_size, args.replay_batch)
        else:
            ml = {"missing": str(args.movielens)}

    print(
        header(
            "scorer_bench: scorer and encoder throughput",
            broker=False,
            extra={
                "device": device_name,
                "checkpoint": str(args.checkpoint),
                **({"windows": built} if built else {}),
            },
        )
    )
    if batch_rows:
        print("## Scorer.score by batch size (texts cached)\n")
        print(cache_note + "\n")
        print(
            table(
                [
                    "batch size",
                    "batches timed",
                    "windows/s",
                    "batch mean ms",
                    "batch p95 ms",
                    "ms per window",
                ],
                batch_rows,
            )
        )
        print()
    if tree_rows:
        print("## Risk trees' share of a batch (the same calls as inside Scorer.score, timed alone)\n")
        print(table(["step", "batch size", "repeats", "mean ms per batch"], tree_rows))
        print()
    if enc:
        print("## Text encoder (MiniLM, models.model.encoder.TextEncoder), unique texts, cold cache\n")
        print(
            table(
                ["model", "batch", "unique texts", "seconds", "texts (events)/s"],
                [
                    [
                        enc["model"],
                        str(args.encoder_batch),
                        f"{enc['texts']:,}",
                        fmt(enc["seconds"], 2),
                        fmt(enc["rate"], 1),
                    ]
                ],
            )
        )
        print()
    if ml:
        print("## Encoder cache over a MovieLens-small replay (event_text of validated records)\n")
        if "missing" in ml:
            print(f"NOT RUN: {ml['missing']} does not exist")
        else:
            rej = ", ".join(f"{k}: {v:,}" for k, v in ml[0]["rejected"].items()) or "none"
            rows = []
            for r in ml:
                est = f"{r['misses'] / enc['rate']:.1f} s" if enc else "n/a"
                rows.append(
                    [
                        r["name"],
                        f"{r['events']:,}",
                        f"{r['with_text']:,}",
                        f"{r['distinct']:,}",
                        f"{args.cache_size:,}",
                        f"{r['hits']:,}",
                        f"{r['misses']:,}",
                        fmt(100 * r["hit_rate"], 2) + "%",
                        est,
                    ]
                )
            print(f"data set: {args.movielens}; validator rejections: {rej}\n")
            print(
                table(
                    [
                        "events",
                        "total events",
                        "events with text",
                        "distinct texts",
                        "cache entries",
                        "hits",
                        "misses",
                        "hit rate",
                        "encoder time for the misses (at the rate above)",
                    ],
                    rows,
                )
            )
            print(
                "\nOne cache lookup per event in event-time order, starting cold (the demo checkpoint's "
                "preloaded catalogue texts are synthetic, so none of them occur in MovieLens)."
            )
    if replay:
        print("\n## Encoder during a MovieLens-small replay (real encoding, cold cache)\n")
        r = replay
        print(
            table(
                [
                    "events",
                    "events with text",
                    "texts encoded",
                    "batch (events)",
                    "seconds",
                    "events/s",
                    "encoded texts/s",
                    "cache hit rate",
                ],
                [
                    [
                        f"{r['events']:,}",
                        f"{r['with_text']:,}",
                        f"{r['encoded']:,}",
                        str(r["batch"]),
                        fmt(r["seconds"], 1),
                        fmt(r["events"] / r["seconds"], 0),
                        fmt(r["encoded"] / r["seconds"], 1),
                        fmt(100 * r["hit_rate"], 2) + "%",
                    ]
                ],
            )
        )
        print(
            "\nAll events, timestamp check aside; each batch's texts go through TextEncoder.encode, which "
            "encodes a batch's distinct misses once and serves the rest from the LRU cache."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
