"""Choose the head's weight in the served fraud risk (head and risk-tree log-odds) on the validation folds.

Usage: PYTHONPATH=. python scripts/fraud_blend_weight.py --data PATH/transactions.parquet
       [--checkpoints checkpoints/fraud_d0664a6e] [--valid-start 2018-06-20]

Reads the per-fold checkpoints that `python -m models.evaluate --dataset fraud --model
temporal:use_item_ids=false,risk_trees=true` wrote (one folder per training-week start) for the four
validation folds only, scores each fold's assessment transactions with the head alone and with the
trees alone (the pipeline's windows, `models.evaluation.fraud.customer_windows`), and prints validation AP and
ROC-AUC of the blend `w * head + (1 - w) * trees` for w = 0, 0.1, ..., 1. The test folds are never read.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

import numpy as np
import torch

from models.data import datasets as ds
from models.evaluation import baselines as bl
from models.evaluation.fraud import customer_windows, scorer_risks
from models.evaluation.report import markdown_table
from models.model import risk_trees
from models.serving import checkpoint
from models.serving.scorer import Scorer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the Fraud Handbook transactions parquet")
    p.add_argument("--checkpoints", default="checkpoints/fraud_d0664a6e")
    p.add_argument("--valid-start", type=dt.date.fromisoformat, default=dt.date(2018, 6, 20))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folds = ds.prequential_folds(args.valid_start, n_folds=4)
    log = ds.load_fraud_handbook(args.data, since=folds[0].train_start)
    frame = bl.fraud_frame(log)
    parts = []  # (assessment frame, head log-odds, tree log-odds) per fold
    for fold in folds:
        test_ids = ds.fold_event_ids(log, fold)[1]
        ckpt = checkpoint.load(f"{args.checkpoints}/{fold.train_start}")
        if ckpt.risk_trees is None:
            raise SystemExit(f"{args.checkpoints}/{fold.train_start} has no risk trees")
        windows = customer_windows(log, test_ids)
        head = scorer_risks(Scorer(dataclasses.replace(ckpt, risk_trees=None), torch.device("cpu")), windows)
        head = np.clip(head, 1e-7, 1 - 1e-7)
        tree_log_odds = ckpt.risk_trees.log_odds(risk_trees.window_features(windows))
        parts.append((frame.loc[test_ids], np.log(head / (1 - head)), tree_log_odds))
    rows = []
    for w in np.round(np.arange(0, 1.01, 0.1), 1):
        reports = [bl.fraud_report(test, w * head + (1 - w) * trees) for test, head, trees in parts]
        rows.append(
            {"head weight": w}
            | {k: round(float(np.mean([r[k] for r in reports])), 4) for k in ("ROC-AUC", "AP", "CP@100")}
            | {"AP by fold": " ".join(f"{r['AP']:.3f}" for r in reports)}
        )
    print(markdown_table(rows))
    print(f"best validation AP: head weight {max(rows, key=lambda r: r['AP'])['head weight']}")


if __name__ == "__main__":
    main()
