"""A risk score's explanation adds up: the trees' contributions to their raw score, the two halves to the served
risk's log-odds; the head's event effects are what leaving each past event out changes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logit

from models.features.featurize import Window
from models.model import risk_trees
from models.serving.explain import head_explanations, tree_explanations, without_each_past_event
from models.serving.scorer import Scorer
from streamproc.kafka.consumers import explanation_lines


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint: Path) -> Scorer:
    return Scorer.load(tiny_checkpoint, device="cpu", top_k=5)


@pytest.fixture(scope="module")
def transactions(tiny_windows: list[Window]) -> list[Window]:
    """Windows whose scored event is a transaction, with at least three past events."""
    chosen = [w for w in tiny_windows if w.events[-1]["kind"] == "transaction" and len(w.events) >= 4]
    assert len(chosen) >= 5
    return chosen[:12]


def test_bag_contributions_add_up_to_its_raw_score_for_boosters_of_every_width() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, len(risk_trees.TREE_FEATURES)))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing features, as a click's amount
    y = (x[:, 0] + np.nan_to_num(x[:, -1]) > 0.5).astype(int)
    wide = risk_trees.fit(x, y, {"n_estimators": 15, "num_leaves": 7}, bags=2)
    narrow = risk_trees.fit(x[:, :20], y, {"n_estimators": 15, "num_leaves": 7})  # reads a prefix
    trees = risk_trees.RiskTrees([*wide, *narrow])
    contributions = trees.contributions(x)
    assert contributions.shape == (300, len(risk_trees.TREE_FEATURES) + 1)
    np.testing.assert_allclose(contributions.sum(axis=1), trees.log_odds(x), rtol=1e-9, atol=1e-9)
    assert np.abs(contributions[:, 0]).mean() > np.abs(contributions[:, 5]).mean()  # the label's feature
    assert trees.contributions(x[:0]).shape == (0, len(risk_trees.TREE_FEATURES) + 1)  # a batch, no alert


def test_the_trees_explanation_names_the_top_features_and_adds_up(
    scorer: Scorer, transactions: list[Window]
) -> None:
    trees = scorer.ckpt.risk_trees
    assert trees is not None  # the tiny preset serves trees
    raw = trees.log_odds(risk_trees.window_features(transactions))
    for window, explained, expected in zip(
        transactions, tree_explanations(trees, transactions, top=4), raw, strict=True
    ):
        assert math.isclose(explained["log_odds"], expected, rel_tol=1e-9, abs_tol=1e-9)
        parts = [p["contribution"] for p in explained["top"]]
        assert len(parts) == 4
        assert [abs(p) for p in parts] == sorted((abs(p) for p in parts), reverse=True)
        assert math.isclose(
            explained["bias"] + sum(parts) + explained["others"], expected, rel_tol=1e-9, abs_tol=1e-9
        )
        for part in explained["top"]:  # a feature's value is the scored transaction's
            if part["feature"] == "TX_AMOUNT":
                assert part["value"] == pytest.approx(window.events[-1]["amount"])
        assert explained["weight"] == pytest.approx(1 - trees.head_weight)


def test_an_event_effect_is_the_head_score_change_when_that_event_is_left_out(
    scorer: Scorer, transactions: list[Window]
) -> None:
    window = transactions[0]
    (explained,) = head_explanations(scorer.head_log_odds, [window], head_weight=0.2, top=3)
    full = scorer.head_log_odds([window])[0]
    assert explained["log_odds"] == pytest.approx(full)
    occluded = without_each_past_event(window)
    assert len(occluded) == len(window.events) - 1
    assert all(o.events[-1] is window.events[-1] for o in occluded)  # the scored event always stays
    effects = full - scorer.head_log_odds(occluded)
    top = explained["events"]
    assert len(top) == 3
    for event in top:
        index = next(i for i, e in enumerate(window.events) if e["event_id"] == event["event_id"])
        assert index < len(window.events) - 1
        assert event["effect"] == pytest.approx(effects[index], abs=1e-9)
    assert abs(top[0]["effect"]) == pytest.approx(np.abs(effects).max(), abs=1e-9)
    (alone,) = head_explanations(scorer.head_log_odds, [Window(events=window.events[-1:])], 0.2)
    assert alone["events"] == []  # nothing in the past to blame


def test_scores_explain_exactly_the_risks_at_the_threshold_and_the_halves_give_the_risk(
    scorer: Scorer, transactions: list[Window]
) -> None:
    plain = scorer.score(transactions)
    assert all(s.explanation is None for s in plain)
    assert all(s.explanation is None for s in scorer.score(transactions, explain_at=1.01))  # none to explain
    capped = scorer.score(transactions, explain_at=0.0, explain_max=3)  # the riskiest three only
    explained = sorted((s.risk for s in capped if s.explanation is not None), reverse=True)
    assert explained == sorted((s.risk for s in plain), reverse=True)[:3]
    threshold = float(np.median([s.risk for s in plain]))
    scored = scorer.score(transactions, explain_at=threshold)
    for before, after in zip(plain, scored, strict=True):
        assert after.risk == pytest.approx(before.risk)
        if after.risk < threshold:
            assert after.explanation is None
            continue
        explanation = after.explanation
        assert explanation is not None
        assert explanation["log_odds"] == pytest.approx(logit(after.risk), abs=1e-6)
        head, trees = explanation["head"], explanation["trees"]
        blended = head["weight"] * head["log_odds"] + trees["weight"] * trees["log_odds"]
        assert blended == pytest.approx(explanation["log_odds"])
        lines = explanation_lines(explanation)
        assert len(lines) == 2
        assert lines[0].startswith("    why, trees (") and trees["top"][0]["feature"] in lines[0]
        assert "past events that moved it most" in lines[1]
        assert str(head["events"][0]["event_id"]) in lines[1]
