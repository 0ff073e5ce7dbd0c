"""Command line evaluation: baselines or a checkpoint on one data set -> markdown table, report and plots."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models.eval_fraud import run_fraud
from models.eval_next_item import NEXT_ITEM_BASELINES, NEXT_ITEM_LOADERS, run_next_item


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, choices=[*NEXT_ITEM_LOADERS, "fraud"])
    p.add_argument("--data-dir", required=True, help="data folder, or the parquet file for fraud")
    p.add_argument(
        "--model",
        nargs="+",
        help="baseline names (pop markov sasrec gru | lightgbm lightgbm_ratios lightgbm_history risk_trees) or checkpoint paths",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="markdown report path; plots are written next to it"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negatives", type=int, default=100, help="sampled negatives for the sampled metrics")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--time-budget-s", type=float, default=540.0, help="per neural model training budget")
    p.add_argument("--valid-start", type=dt.date.fromisoformat, default=dt.date(2018, 6, 20))
    p.add_argument("--test-start", type=dt.date.fromisoformat, default=dt.date(2018, 7, 25))
    p.add_argument("--test-folds", type=int, default=1, help="fraud: 0 scores the validation folds only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu or cuda[:N]")
    p.add_argument(
        "--lightgbm-params",
        nargs="*",
        metavar="NAME=VALUE",
        help="fraud: score this LightGBM setting only instead of searching GBDT_GRID",
    )
    args = p.parse_args(argv)
    if args.model is None:
        args.model = ["lightgbm"] if args.dataset == "fraud" else list(NEXT_ITEM_BASELINES)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = run_fraud(args, args.out) if args.dataset == "fraud" else run_next_item(args, args.out)
    command = "python -m models.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = f"# {args.dataset}: {', '.join(args.model)}\n\nCommand: `{command}`\n\n{body}\n"
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
