"""Gradient-boosted trees on a transaction's velocity features: the tree half of the served risk score.

One feature function for every path: the LightGBM baseline (`baselines.fraud_frame`), the trees a
checkpoint carries (fitted by `models.train` when `risk_trees` is set) and `Scorer.score`, which
blends the trees' log-odds with the temporal head's. Features: the handbook's (amount, weekend,
night, the 12 aggregates), the derived ratios of `models.features.featurize`, the terminal's known fraud
history (`models.features.aggregates.TERMINAL_HISTORY_FEATURES`) and the customer's and the terminal's recent
velocity (`models.features.aggregates.RECENT_FEATURES`: the last hour, and the terminal's last 1 and 7 days).
The trees are a bag: several boosters on row and column subsamples with different seeds, whose
log-odds are averaged; the served risk is a weighted mean of the head's and the bag's log-odds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from models.features.aggregates import (
    AGGREGATE_FEATURES,
    DAY_MS,
    RECENT_FEATURES,
    TERMINAL_HISTORY_FEATURES,
    served_names,
)
from models.features.featurize import (
    DERIVED_FEATURES,
    EPOCH_WEEKDAY,
    HOUR_MS,
    Window,
    derived_aggregates,
    raw_aggregates,
)

HANDBOOK_FEATURES = ("TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", *AGGREGATE_FEATURES)
RATIO_FEATURES = (*HANDBOOK_FEATURES, *DERIVED_FEATURES)  # the trees before the terminal history
HISTORY_FEATURES = (*RATIO_FEATURES, *TERMINAL_HISTORY_FEATURES)  # the trees before the recent velocity
TREE_FEATURES = (*HISTORY_FEATURES, *RECENT_FEATURES)  # appended: older trees read a prefix
FILE = "risk_trees.json"  # {"boosters": [LightGBM model text, ...], "head_weight": float}
LEGACY_FILE = "risk_trees.txt"  # one booster, checkpoints before the bag
# chosen on the fraud validation folds (docs/results.md): the lightgbm_ratios grid's setting, bagged
PARAMS: dict[str, float | int] = {
    "n_estimators": 100,
    "num_leaves": 63,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
}
BAGS = 5
HEAD_WEIGHT = 0.2  # the head's share of the blended log-odds (checkpoints before the bag: 0.5)


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
            raw_aggregates(aggregates, TERMINAL_HISTORY_FEATURES),
            raw_aggregates(aggregates, RECENT_FEATURES),
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


@dataclass
class RiskTrees:
    """A bag of boosters and the head's weight in the served blend."""

    boosters: list[lightgbm.Booster]
    head_weight: float = HEAD_WEIGHT

    def aggregate_names(self) -> frozenset[str]:
        """The aggregates the bag reads (the prefix of TREE_FEATURES its widest booster was fitted on)."""
        width = max(b.num_feature() for b in self.boosters)
        return frozenset(name for name in TREE_FEATURES[:width] if name in served_names("transaction"))

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """(N,) mean raw score (log-odds) of the bag; a booster fitted on fewer features reads their prefix."""
        scores = [
            b.predict(features[:, : b.num_feature()], raw_score=True, num_threads=1) for b in self.boosters
        ]
        return np.mean(np.asarray(scores, dtype=np.float64), axis=0)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """(N, len(TREE_FEATURES) + 1) each feature's share of `log_odds` (LightGBM's SHAP values,
        `pred_contrib`, averaged over the bag as the log-odds are; a feature a booster does not read adds 0
        there), the bias last: each row adds up to the bag's log-odds."""
        width = features.shape[1]
        total = np.zeros((features.shape[0], width + 1), dtype=np.float64)
        if not len(features):  # LightGBM cannot predict no rows
            return total
        for b in self.boosters:
            read = b.num_feature()
            contrib = np.asarray(b.predict(features[:, :read], pred_contrib=True, num_threads=1))
            total[:, :read] += contrib[:, :read]
            total[:, width] += contrib[:, read]
        return total / len(self.boosters)

    def blend(self, head_log_odds: np.ndarray, features: np.ndarray) -> np.ndarray:
        """(N,) served log-odds: head_weight * head + (1 - head_weight) * trees."""
        return self.head_weight * head_log_odds + (1 - self.head_weight) * self.log_odds(features)


def fit(
    features: np.ndarray, labels: np.ndarray, params: dict[str, Any], seed: int = 0, bags: int = 1
) -> list[lightgbm.Booster]:
    """`bags` LightGBM classifiers (one thread each, seeds seed, seed + 1, ...) on tree features."""
    return [
        lightgbm.LGBMClassifier(**params, random_state=seed + i, n_jobs=1, verbose=-1)
        .fit(features, labels)
        .booster_
        for i in range(bags)
    ]


def fit_records(
    records: Sequence[dict[str, Any]],
    labels: dict[str, int],
    aggregates: dict[str, dict[str, float]],
    params: dict[str, float | int],
    seed: int,
    bags: int,
    head_weight: float,
) -> RiskTrees | None:
    """A bag of trees on the labelled records' tree features; None without both classes among them."""
    labelled = [r for r in records if r["event_id"] in labels]
    y = np.array([labels[r["event_id"]] for r in labelled], dtype=np.int64)
    if len(np.unique(y)) < 2:
        return None
    x = event_features(labelled, [aggregates.get(r["event_id"], {}) for r in labelled])
    return RiskTrees(fit(x, y, params, seed, bags), head_weight)


def save(trees: RiskTrees, folder: str | Path) -> None:
    text = json.dumps(
        {"boosters": [b.model_to_string() for b in trees.boosters], "head_weight": trees.head_weight}
    )
    (Path(folder) / FILE).write_text(text)


def files(folder: str | Path) -> list[Path]:
    """The trees' files in a checkpoint folder (none, the bag, or a legacy single booster)."""
    return [p for p in (Path(folder) / FILE, Path(folder) / LEGACY_FILE) if p.is_file()]


def load(folder: str | Path) -> RiskTrees | None:
    """The checkpoint's trees, None when it has none."""
    path = Path(folder) / FILE
    if path.is_file():
        raw = json.loads(path.read_text())
        return RiskTrees([lightgbm.Booster(model_str=m) for m in raw["boosters"]], float(raw["head_weight"]))
    legacy = Path(folder) / LEGACY_FILE
    return RiskTrees([lightgbm.Booster(model_file=str(legacy))], 0.5) if legacy.is_file() else None
