"""Time to the next event, judged as the design asks: MAE and RMSE in hours, MAE of log1p(hours), and "does
the user return within 1 h / 24 h / 7 days" (ROC-AUC of the predicted hours, F1 of predicting "within"
when the prediction is at most the horizon), for each model against the trivial baselines: the global
median gap, the user's median gap and the user's last gap. On MovieLens-small (leave-one-out: the gaps
before each user's validation and test events) and on the fraud data's customer transactions (the gap
to each transaction's next one, in a validation and a test week)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from models import metrics
from models.data import datasets as ds
from models.evaluation.report import markdown_table
from models.training.train_config import FRAUD_TEMPORAL, apply_overrides

HORIZONS_H = (1, 24, 168)
DAY_MS = 86_400_000


def time_to_next_rows(truth_h: np.ndarray, predictions: Mapping[str, np.ndarray]) -> list[dict[str, object]]:
    """One row per model: the errors of its predicted hours against the true gaps (hours)."""
    truth_h = np.asarray(truth_h, dtype=float)
    rows: list[dict[str, object]] = []
    for name, predicted in predictions.items():
        pred = np.asarray(predicted, dtype=float)
        row: dict[str, object] = {
            "model": name,
            "MAE (h)": metrics.mae(truth_h, pred),
            "RMSE (h)": metrics.rmse(truth_h, pred),
            "MAE log1p(h)": metrics.mae(np.log1p(truth_h), np.log1p(np.maximum(pred, 0))),
        }
        for horizon in HORIZONS_H:
            within = (truth_h <= horizon).astype(np.int64)
            both = 0 < within.sum() < len(within)
            row[f"AUC {horizon} h"] = metrics.roc_auc(within, -pred) if both else float("nan")
            row[f"F1 {horizon} h"] = metrics.f1(within, pred <= horizon)
        rows.append(row)
    return rows


def baselines(
    train_gaps_h: pd.DataFrame, users: Sequence[str], last_gap_h: np.ndarray
) -> dict[str, np.ndarray]:
    """The trivial predictions for targets of `users`: the global and the user's median of the training gaps
    (`train_gaps_h`: columns user, gap_h) and the user's last gap before the target (nan: none known,
    then the global median)."""
    global_median = float(train_gaps_h["gap_h"].median())
    per_user = train_gaps_h.groupby("user")["gap_h"].median()
    user_median = pd.Series(list(users)).map(per_user).fillna(global_median).to_numpy(dtype=float)
    last = np.where(np.isnan(last_gap_h), global_median, last_gap_h)
    return {
        "global median gap": np.full(len(users), global_median),
        "user's median gap": user_median,
        "user's last gap": last,
    }


def best_baseline_ratio(rows: list[dict[str, object]], model: str, n_baselines: int = 3) -> float:
    """Our MAE (hours) over the best trivial baseline's (the first `n_baselines` rows)."""
    best = min(float(r["MAE (h)"]) for r in rows[:n_baselines])  # type: ignore[arg-type]
    ours = next(float(r["MAE (h)"]) for r in rows if r["model"] == model)  # type: ignore[arg-type]
    return ours / best


def loo_tables(log: ds.EventLog, predicted: Mapping[str, Mapping[str, pd.Series]]) -> str:
    """Leave-one-out data sets: the gap before each user's validation event (predicted from the training
    events) and before the test event (from the training and validation events); `predicted` holds each
    checkpoint's hours by split ("val", "test"), indexed by user."""
    frame = pd.DataFrame(
        {"user": [r["user_id"] for r in log.records], "ts": [r["ts_ms"] for r in log.records]}
    )
    split = log.require_split()
    frame["split"] = [split[r["event_id"]] for r in log.records]
    frame["gap_h"] = frame.groupby("user", sort=False)["ts"].diff() / 3_600_000
    frame["last_gap_h"] = frame.groupby("user", sort=False)["gap_h"].shift(1)
    train_gaps = frame[frame["split"] == "train"].dropna(subset=["gap_h"])
    parts = []
    for part in ("val", "test"):
        targets = frame[frame["split"] == part]
        users = targets["user"].tolist()
        predictions: dict[str, np.ndarray] = baselines(train_gaps, users, targets["last_gap_h"].to_numpy())
        for name, by_split in predicted.items():
            predictions[name] = by_split[part].reindex(users).to_numpy(dtype=float)
        parts.append(
            f"Gap before each user's {'validation' if part == 'val' else 'test'} event ({len(users)} users):\n\n"
            + markdown_table(time_to_next_rows(targets["gap_h"].to_numpy(), predictions))
        )
    return "\n\n".join(parts)


def fraud_time_to_next(args: argparse.Namespace, out: Path) -> str:
    """The fraud data's customers: train a time-only model on the weeks before --valid-start (early stopping
    on the validation week), then predict each transaction's gap to the customer's next one in the
    validation week and the test week (--test-start); the baselines' medians from every gap that ended before
    the week (those of the weeks in between too, as the model's windows see them)."""
    from models.evaluation.fraud import customer_windows
    from models.serving.scorer import Scorer
    from models.training import loop

    since = args.valid_start - dt.timedelta(days=args.train_days)
    log = ds.load_fraud_handbook(args.data_dir, since=since)
    records = log.records  # by user, then time
    ts = np.array([r["ts_ms"] for r in records], dtype=np.int64)
    users = np.array([r["user_id"] for r in records])
    same_user_next = np.append(users[1:] == users[:-1], False)
    gap_next_h = np.where(same_user_next, (np.append(ts[1:], 0) - ts) / 3_600_000, np.nan)
    same_user_before = np.insert(users[1:] == users[:-1], 0, False)
    gap_before_h = np.where(same_user_before, (ts - np.insert(ts[:-1], 0, 0)) / 3_600_000, np.nan)
    start_ms = {
        "val": _day_ms(args.valid_start),
        "test": _day_ms(args.test_start),
        "train": _day_ms(since),
    }
    week = {part: (start_ms[part] <= ts) & (ts < start_ms[part] + 7 * DAY_MS) for part in ("val", "test")}
    train = ts < start_ms["val"]
    ids = np.array([r["event_id"] for r in records])
    config = replace(apply_overrides(FRAUD_TIME_CONFIG, args.set or []), device=args.device)
    checkpoint = Path(args.checkpoint_dir) / "fraud_time_to_next"
    keep = ts < start_ms["val"] + 7 * DAY_MS
    summary = loop.fit(
        [r for r, k in zip(records, keep, strict=True) if k],
        {},
        log.aggregates,
        config,
        checkpoint,
        set(ids[train].tolist()),
        set(ids[week["val"]].tolist()),
    )
    print(json.dumps({"checkpoint": str(checkpoint), "best": summary["best"]}), flush=True)
    scorer = Scorer.load(str(checkpoint), device=args.device)
    parts = [f"Checkpoint `{checkpoint}` ({json.dumps(summary['best'])}); settings: {config}."]
    for part in ("val", "test"):
        target = week[part] & ~np.isnan(gap_next_h)
        windows = customer_windows(log, ids[target].tolist(), window=config.max_len)
        hours = np.array(
            [
                s.time_to_next_s / 3600
                for k in range(0, len(windows), 512)
                for s in scorer.score(windows[k : k + 512])
            ]
        )
        known = ts + np.nan_to_num(gap_next_h) * 3_600_000 < start_ms[part]  # gaps ended before the week
        known_gaps = pd.DataFrame({"user": users[known], "gap_h": gap_next_h[known]}).dropna()
        predictions = baselines(known_gaps, users[target].tolist(), gap_before_h[target])
        predictions["ours, time head"] = hours
        rows = time_to_next_rows(gap_next_h[target], predictions)
        parts.append(
            f"{'Validation' if part == 'val' else 'Test'} week from {args.valid_start if part == 'val' else args.test_start}: the gap"
            f" from each of {int(target.sum())} transactions to the customer's next one\n\n"
            + markdown_table(rows)
            + f"\n\nOurs / best trivial baseline, MAE (h): {best_baseline_ratio(rows, 'ours, time head'):.4f}"
        )
    return "\n\n".join(parts)


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)


# the time-only model of the fraud evaluation: the fraud folds' shape with no terminal ids, trained for time
# to next alone on every event; a step count ends training, not the clock
FRAUD_TIME_CONFIG = replace(
    FRAUD_TEMPORAL,
    max_steps=1500,
    max_seconds=None,
    eval_every=150,
    sampling="event",
    use_item_ids=False,
    loss_weights={"item": 0.0, "action": 0.0, "risk": 0.0, "time": 1.0},
)
