"""Time-to-next evaluation: its metrics on hand-computed cases, its baselines, and a time head trained for
the median predicts the median."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluation import time_to_next as ttn
from models.model.temporal import TemporalConfig, TemporalModel
from models.training import head_init, loop, losses, train_config


def test_rows_give_the_errors_and_the_return_within_horizons() -> None:
    truth = np.array([0.5, 2.0, 30.0, 200.0])
    rows = ttn.time_to_next_rows(truth, {"exact": truth, "one hour": np.ones(4)})
    exact, one = rows
    assert exact["MAE (h)"] == 0.0 and exact["RMSE (h)"] == 0.0 and exact["MAE log1p(h)"] == 0.0
    assert exact["AUC 1 h"] == exact["AUC 24 h"] == exact["AUC 168 h"] == 1.0
    assert exact["F1 1 h"] == exact["F1 24 h"] == exact["F1 168 h"] == 1.0
    assert one["MAE (h)"] == pytest.approx((0.5 + 1.0 + 29.0 + 199.0) / 4)
    assert one["AUC 1 h"] == 0.5  # a constant ranks nothing
    # "within 1 h" predicted for all four: 1 true positive of 1 -> precision 1/4, recall 1
    assert one["F1 1 h"] == pytest.approx(2 * 1 / (4 + 1))
    assert one["F1 24 h"] == pytest.approx(2 * 2 / (4 + 2))


def test_baselines_and_the_ratio_to_the_best() -> None:
    gaps = pd.DataFrame({"user": ["a", "a", "a", "b"], "gap_h": [1.0, 2.0, 9.0, 100.0]})
    predictions = ttn.baselines(gaps, ["a", "b", "new"], np.array([5.0, np.nan, 3.0]))
    np.testing.assert_array_equal(predictions["global median gap"], [5.5, 5.5, 5.5])
    np.testing.assert_array_equal(predictions["user's median gap"], [2.0, 100.0, 5.5])  # unknown: global
    np.testing.assert_array_equal(predictions["user's last gap"], [5.0, 5.5, 3.0])  # none known: global
    rows = [{"model": m, "MAE (h)": v} for m, v in (("g", 4.0), ("u", 2.0), ("l", 3.0), ("ours", 1.5))]
    assert ttn.best_baseline_ratio(rows, "ours") == 0.75


def test_the_median_time_loss_is_the_absolute_error_and_the_mean_one_the_squared() -> None:
    prediction, target = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 5.0])
    assert float(losses.TIME_LOSSES["median"](prediction, target)) == 2.0
    assert float(losses.TIME_LOSSES["mean"](prediction, target)) == 5.0


@pytest.mark.parametrize("time_loss", ["median", "mean"])
def test_the_time_head_starts_at_the_training_gaps_median_or_mean(
    time_loss: str, tiny_records: tuple[list[dict], dict[str, int]], tmp_path: Path
) -> None:
    records, labels = tiny_records
    _, config = train_config.PRESETS["tiny"]
    config = replace(config, use_text=False, max_steps=1, eval_every=1, time_loss=time_loss)  # type: ignore[arg-type]
    model = TemporalModel(
        TemporalConfig(n_items=3, n_actions=2, d_model=8, n_heads=2, n_layers=1, use_text=False)
    )
    gaps = np.array([1.0, 2.0, np.nan, 9.0], dtype=np.float32)
    head_init.init_time_bias(model, gaps, config.time_loss)
    bias = float(model.time_head[-1].bias.detach())  # type: ignore[union-attr]
    assert bias == pytest.approx(2.0 if time_loss == "median" else 4.0)
    summary = loop.fit(records, labels, None, config, tmp_path / time_loss)
    assert "time_mae" in summary["best"] and "time_mse" in summary["best"]
