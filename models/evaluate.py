"""Command line evaluation: baselines or a checkpoint on one data set -> markdown table, report and plots."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models.data.datasets import DATASETS, LEAVE_ONE_OUT, dataset_argument
from models.evaluation import cold_start
from models.evaluation.fraud import run_fraud
from models.evaluation.next_item import NEXT_ITEM_BASELINES, run_next_item
from models.evaluation.time_to_next import fraud_time_to_next

FRAUD = "fraud-handbook"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--dataset",
        required=True,
        type=dataset_argument,
        metavar="{" + ",".join(d for d in DATASETS if d in (*LEAVE_ONE_OUT, FRAUD)) + "}",
        help="as models.train names them (ml1m, beauty and fraud still work); `sequences`: any sequence file",
    )
    p.add_argument("--data-dir", required=True, help="data folder or file, as the data set's loader expects")
    p.add_argument(
        "--task",
        choices=["default", "time-to-next"],
        default="default",
        help="fraud: time-to-next trains a time-only model and scores each customer's gap to the next "
        "transaction (a next-item data set reports time to next with its checkpoints anyway)",
    )
    p.add_argument("--train-days", type=int, default=28, help="fraud time-to-next: training weeks' days")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where models trained here are kept")
    p.add_argument(
        "--set",
        nargs="*",
        action="extend",  # --set A B and --set A --set B alike (with the default, the last --set alone counted)
        default=[],
        metavar="FIELD=VALUE",
        help="fraud time-to-next: TrainConfig overrides",
    )
    p.add_argument(
        "--model",
        nargs="+",
        help="baseline names (pop markov sasrec gru genre_pop | lightgbm lightgbm_ratios lightgbm_history risk_trees) or checkpoint paths",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="markdown report path; plots are written next to it"
    )
    cold_start.add_arguments(p)
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
    if args.dataset not in (*LEAVE_ONE_OUT, FRAUD):
        p.error(f"--dataset {args.dataset}: evaluated by neither protocol (leave-one-out or fraud folds)")
    if args.cold_items is not None and args.dataset not in LEAVE_ONE_OUT:
        p.error("--cold-items: the cold-start protocol is for leave-one-out data sets")
    if args.task == "time-to-next":
        args.model = ["time head, trained here"]
    elif args.model is None:
        args.model = ["lightgbm"] if args.dataset == FRAUD else list(NEXT_ITEM_BASELINES)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.task == "time-to-next" and args.dataset != FRAUD:
        raise SystemExit("--task time-to-next is for --dataset fraud (next-item data sets report it anyway)")
    if args.task == "time-to-next":
        body = fraud_time_to_next(args, args.out)
    elif args.dataset == FRAUD:
        body = run_fraud(args, args.out)
    else:
        body = run_next_item(args, args.out)
    command = "python -m models.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = f"# {args.dataset}: {', '.join(args.model)}\n\nCommand: `{command}`\n\n{body}\n"
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
