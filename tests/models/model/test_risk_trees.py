"""Risk trees: one feature path for the baseline, training and serving; carried and blended by the Scorer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from models.data.datasets import EventLog
from models.evaluation import baselines
from models.features.aggregates import AGGREGATE_FEATURES, RECENT_FEATURES, TERMINAL_HISTORY_FEATURES
from models.features.featurize import Window
from models.model import risk_trees
from models.serving import checkpoint
from models.serving.scorer import Scorer
from models.training import loop
from tests.models.helpers import RISK_CONFIG, rare_risk_log, user_ids


def test_calendar_flags_match_pandas() -> None:
    ts = np.array([0, 6 * 3_600_000, 7 * 3_600_000, 2 * 86_400_000, 3 * 86_400_000 + 5, 1_530_000_000_000])
    features = risk_trees.tree_features(np.full(len(ts), 10.0), ts, [{}] * len(ts))
    when = pd.to_datetime(ts, unit="ms")
    columns = list(risk_trees.TREE_FEATURES)
    np.testing.assert_array_equal(features[:, columns.index("TX_DURING_WEEKEND")], when.weekday >= 5)
    np.testing.assert_array_equal(features[:, columns.index("TX_DURING_NIGHT")], when.hour <= 6)


def test_baseline_frame_and_served_windows_share_the_features() -> None:
    records, labels, aggregates = rare_risk_log(n_users=5, per_user=6)
    log = EventLog(
        name="toy", records=records, labels=labels, aggregates=aggregates, has_text=False, split=None
    )
    frame = baselines.fraud_frame(log)
    windows = [Window(events=records[max(0, i - 3) : i + 1], aggregates=aggregates[r["event_id"]]) for i, r in enumerate(records)]  # fmt: skip
    served = risk_trees.window_features(windows)
    np.testing.assert_array_equal(frame[list(risk_trees.TREE_FEATURES)].to_numpy(), served)


def test_scorer_averages_head_and_tree_log_odds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    records, labels, aggregates = rare_risk_log()
    train_ids, val_ids = user_ids(records, range(60)), user_ids(records, range(60, 70))
    config = replace(RISK_CONFIG, max_steps=20, risk_trees=True, risk_trees_params={"n_estimators": 30, "num_leaves": 7, "learning_rate": 0.1})  # fmt: skip
    loop.fit(records, labels, aggregates, config, tmp_path / "both", train_ids, val_ids)
    loaded = checkpoint.load(tmp_path / "both")
    assert loaded.risk_trees is not None

    held_out = [r for r in records if int(r["user_id"][1:]) >= 70]
    windows = [Window(events=[r], aggregates=aggregates[r["event_id"]]) for r in held_out]
    risk = np.array([s.risk for s in Scorer(loaded, torch.device("cpu")).score(windows)])
    assert loaded.risk_trees.head_weight == config.risk_head_weight == risk_trees.HEAD_WEIGHT
    assert Scorer(loaded, torch.device("cpu")).required_aggregates == loaded.risk_trees.aggregate_names()
    trees = loaded.risk_trees.log_odds(risk_trees.window_features(windows))
    (tmp_path / "both" / risk_trees.FILE).unlink()  # the same checkpoint without its trees: the head alone
    head_only = checkpoint.load(tmp_path / "both")
    head = np.array([s.risk for s in Scorer(head_only, torch.device("cpu")).score(windows)])
    assert head_only.risk_trees is None and head_only.model_version != loaded.model_version
    head_log_odds = np.log(head / (1 - head))
    w = risk_trees.HEAD_WEIGHT
    np.testing.assert_allclose(risk, 1 / (1 + np.exp(-(w * head_log_odds + (1 - w) * trees))), rtol=1e-5)
    y = np.array([labels[r["event_id"]] for r in held_out])
    assert roc_auc_score(y, trees) > 0.9  # the label is a threshold on one tree feature


def test_bag_round_trips_and_legacy_single_booster_reads_its_feature_prefix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(risk_trees.TREE_FEATURES)))
    y = (x[:, 0] + x[:, -1] > 0.5).astype(int)  # the last column is a recent-velocity feature
    params = {"n_estimators": 20, "num_leaves": 7, "subsample": 0.8, "subsample_freq": 1}
    bag = risk_trees.fit(x, y, params, bags=3)
    assert len({b.model_to_string() for b in bag}) == 3  # different seeds, different trees
    risk_trees.save(risk_trees.RiskTrees(bag, head_weight=0.3), tmp_path)
    loaded = risk_trees.load(tmp_path)
    assert loaded is not None and len(loaded.boosters) == 3 and loaded.head_weight == 0.3
    expected = np.mean([b.predict(x, raw_score=True) for b in bag], axis=0)
    np.testing.assert_allclose(loaded.log_odds(x), expected)
    np.testing.assert_allclose(loaded.blend(np.ones(len(x)), x), 0.3 + 0.7 * expected)

    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    n_old = len(risk_trees.RATIO_FEATURES)
    (old,) = risk_trees.fit(x[:, :n_old], y, {"n_estimators": 20, "num_leaves": 7})
    old.save_model(str(legacy_dir / risk_trees.LEGACY_FILE))
    legacy = risk_trees.load(legacy_dir)
    assert legacy is not None and legacy.head_weight == 0.5  # the plain mean those checkpoints served
    np.testing.assert_allclose(legacy.log_odds(x), old.predict(x[:, :n_old], raw_score=True))
    assert risk_trees.files(legacy_dir) == [legacy_dir / risk_trees.LEGACY_FILE]

    # the aggregates each reads: what the scoring worker checks the sequence updates for
    assert loaded.aggregate_names() == {*AGGREGATE_FEATURES, *TERMINAL_HISTORY_FEATURES, *RECENT_FEATURES}
    assert legacy.aggregate_names() == set(AGGREGATE_FEATURES)
    (v6,) = risk_trees.fit(x[:, : len(risk_trees.HISTORY_FEATURES)], y, {"n_estimators": 5, "num_leaves": 7})
    assert risk_trees.RiskTrees([v6]).aggregate_names() == {*AGGREGATE_FEATURES, *TERMINAL_HISTORY_FEATURES}
