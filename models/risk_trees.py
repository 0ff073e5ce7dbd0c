"""Gradient-boosted trees on a transaction's velocity features: the tree half of the served risk score.

One feature function for every path: the LightGBM baseline (`baselines.fraud_frame`), the trees a
checkpoint carries (fitted by `models.train` when `risk_trees` is set) and `Scorer.score`, which
blends the trees' log-odds with the temporal head's. Features: the handbook's (amount, weekend,
night, the 12 aggregates) and the derived ratios of `models.features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from models.aggregates import AGGREGATE_FEATURES, DAY_MS
from models.features import (
    DERIVED_FEATURES,
    EPOCH_WEEKDAY,
    HOUR_MS,
    Window,
    derived_aggregates,
    raw_aggregates,
)

HANDBOOK_FEATURES = ("TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", *AGGREGATE_FEATURES)
TREE_FEATURES = (*HANDBOOK_FEATURES, *DERIVED_FEATURES)
FILE = "risk_trees.txt"


def tree_features(
    amount: np.ndarray, ts_ms: np.ndarray, aggregates: Sequence[dict[str, float]]
) -> np.ndarray:
    """(N, len(TREE_FEATURES)) float64 of events' amounts (nan if none), UTC times and aggregates."""
    amount = np.asarray(amount, dtype=np.float64)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    raw = raw_aggregates(aggregates)
    weekday = (ts_ms // DAY_MS + EPOCH_WEEKDAY) % 7
    hour = (ts_ms % DAY_MS) // HOUR_MS
    return np.column_stack(
        [
            amount,
            (weekday >= 5).astype(np.float64),
            (hour <= 6).astype(np.float64),
            raw,
            derived_aggregates(raw, amount),
        ]
    ).reshape(len(amount), len(TREE_FEATURES))


def event_features(events: Sequence[dict[str, Any]], aggregates: Sequence[dict[str, float]]) -> np.ndarray:
    """Tree features of contract event records (no amount: nan) with each one's aggregates."""
    return tree_features(
        np.array([e.get("amount") for e in events], dtype=np.float64),
        np.array([e.get("ts_ms", 0) for e in events], dtype=np.int64),
        aggregates,
    )


def window_features(windows: Sequence[Window]) -> np.ndarray:
    """Tree features of each window's last (scored) event."""
    return event_features(
        [w.events[-1] if w.events else {} for w in windows], [w.aggregates for w in windows]
    )


def fit(features: np.ndarray, labels: np.ndarray, params: dict[str, Any], seed: int = 0) -> lightgbm.Booster:
    """LightGBM classifier (one thread) on tree features; returns its booster."""
    model = lightgbm.LGBMClassifier(**params, random_state=seed, n_jobs=1, verbose=-1)
    model.fit(features, labels)
    return model.booster_


def save(booster: lightgbm.Booster, folder: str | Path) -> None:
    booster.save_model(str(Path(folder) / FILE))


def load(folder: str | Path) -> lightgbm.Booster | None:
    """The checkpoint's trees, None when it has none."""
    path = Path(folder) / FILE
    return lightgbm.Booster(model_file=str(path)) if path.is_file() else None


def log_odds(booster: lightgbm.Booster, features: np.ndarray) -> np.ndarray:
    """(N,) raw scores (log-odds) of the trees."""
    return np.asarray(booster.predict(features, raw_score=True, num_threads=1), dtype=np.float64)
