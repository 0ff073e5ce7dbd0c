"""Does the recent velocity (last hour; terminal counts and amounts over 1 and 7 days) help the risk trees?

Usage: PYTHONPATH=. python scripts/recent_velocity_trees.py --data PATH/transactions.parquet
       [--valid-start 2018-06-20] [--seeds 0 1 2]

The Fraud Handbook's transactions replayed through `models.features.aggregates` as the pipeline does
(`datasets.load_fraud_handbook`); prints the four validation folds' mean ROC-AUC, AP and card
precision@100 of LightGBM (`risk_trees.PARAMS`, one booster per seed) on the trees' features before
the recent velocity (`risk_trees.HISTORY_FEATURES`, the v6 trees) and with it (`TREE_FEATURES`).
The test folds are never read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import pandas as pd

from models.data import datasets as ds
from models.evaluation import baselines as bl
from models.evaluation.report import markdown_table
from models.features import aggregates as agg
from models.model import risk_trees


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--valid-start", type=dt.date.fromisoformat, default=dt.date(2018, 6, 20))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()

    started = time.monotonic()
    folds = ds.prequential_folds(args.valid_start, n_folds=4)
    # 8 days before the first training day: the recent 7-day windows are full from that day on
    log = ds.load_fraud_handbook(args.data, since=folds[0].train_start - dt.timedelta(days=8))
    frame = bl.fraud_frame(log)
    splits = [ds.fold_event_ids(log, f) for f in folds]
    print(
        f"{len(frame):,} transactions loaded and replayed in {time.monotonic() - started:.0f} s", flush=True
    )

    rows = []
    for name, features in (
        ("v6 trees' features (HISTORY_FEATURES)", risk_trees.HISTORY_FEATURES),
        ("+ recent velocity (TREE_FEATURES)", risk_trees.TREE_FEATURES),
    ):
        per_seed = []
        for seed in args.seeds:
            reports = []
            for train_ids, test_ids in splits:
                model = bl.fit_lightgbm(frame.loc[train_ids], risk_trees.PARAMS, seed, features)
                scores = model.predict_proba(frame.loc[test_ids, list(features)])[:, 1]
                reports.append(bl.fraud_report(frame.loc[test_ids], scores))
            per_seed.append(pd.DataFrame(reports).mean())
        means = pd.DataFrame(per_seed)
        rows.append(
            {"features": name, "seeds": len(args.seeds)}
            | {f"{k} (mean)": round(float(means[k].mean()), 4) for k in means.columns}
            | {"AP min..max over seeds": f"{means['AP'].min():.4f}..{means['AP'].max():.4f}"}
        )
        print(rows[-1], flush=True)
    print(markdown_table(rows))
    print(f"validation folds from {folds[0].train_start}; {time.monotonic() - started:.0f} s in all")
    assert np.isfinite(frame[list(agg.RECENT_FEATURES)].to_numpy()).all()


if __name__ == "__main__":
    main()
