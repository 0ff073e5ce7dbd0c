"""Why a risk score is what it is: the trees' feature contributions and the head's most influential past events.

The served risk is sigmoid(w * head + (1 - w) * trees) (`risk_trees.RiskTrees.blend`); its explanation
splits it the same way, each half in log-odds:

- trees: LightGBM's SHAP values (`pred_contrib`) of the scored transaction's features, averaged over the
  bag as its log-odds are. Bias + every feature's contribution = the trees' raw score exactly; the message
  names the `top` features by size and sums the rest into `others`, so that what it says adds up.
- head: each past event's effect, the head's risk log-odds with the window as it is minus with that event
  left out (occlusion; the scored event and its aggregates stay). Positive: the event raised the risk.

Only alerts are explained (an occlusion costs a forward pass per past event).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.features.featurize import Window
from models.model.risk_trees import TREE_FEATURES, RiskTrees, window_features

TOP_FEATURES = 5
TOP_EVENTS = 3
EVENT_FIELDS = ("event_id", "kind", "ts_ms", "item_id", "amount", "action")  # what identifies a past event


def _number(value: float) -> float | None:
    """A JSON-safe number (a missing feature is NaN to the trees: None)."""
    return float(value) if math.isfinite(value) else None


def tree_explanations(
    trees: RiskTrees, windows: Sequence[Window], top: int = TOP_FEATURES
) -> list[dict[str, Any]]:
    """Per window: the trees' log-odds, bias, `top` features by absolute contribution, and the rest's sum."""
    features = window_features(windows)
    contributions = trees.contributions(features)
    out = []
    for row, contrib in zip(features, contributions, strict=True):
        per_feature = contrib[:-1]
        order = np.argsort(-np.abs(per_feature), kind="stable")[:top]
        out.append(
            {
                "weight": 1.0 - trees.head_weight,
                "log_odds": float(contrib.sum()),
                "bias": float(contrib[-1]),
                "top": [
                    {
                        "feature": TREE_FEATURES[i],
                        "value": _number(row[i]),
                        "contribution": float(per_feature[i]),
                    }
                    for i in order
                ],
                "others": float(per_feature.sum() - per_feature[order].sum()),
            }
        )
    return out


def without_each_past_event(window: Window) -> list[Window]:
    """The window with one past event left out, for each past event (the scored last one always stays)."""
    events = window.events
    return [
        Window(events=events[:i] + events[i + 1 :], aggregates=window.aggregates)
        for i in range(len(events) - 1)
    ]


def head_explanations(
    head_log_odds: Callable[[Sequence[Window]], np.ndarray],
    windows: Sequence[Window],
    head_weight: float,
    top: int = TOP_EVENTS,
) -> list[dict[str, Any]]:
    """Per window: the head's risk log-odds and the `top` past events by absolute effect on it (one forward
    pass over every window and its occlusions)."""
    occluded = [without_each_past_event(w) for w in windows]
    flat = [*windows, *(o for per_window in occluded for o in per_window)]
    scores = head_log_odds(flat)
    full, rest = scores[: len(windows)], scores[len(windows) :]
    out = []
    start = 0
    for window, score, per_window in zip(windows, full, occluded, strict=True):
        effects = score - rest[start : start + len(per_window)]
        start += len(per_window)
        order = np.argsort(-np.abs(effects), kind="stable")[:top]
        out.append(
            {
                "weight": head_weight,
                "log_odds": float(score),
                "events": [
                    {
                        **{k: window.events[i][k] for k in EVENT_FIELDS if k in window.events[i]},
                        "effect": float(effects[i]),
                    }
                    for i in order
                ],
            }
        )
    return out
