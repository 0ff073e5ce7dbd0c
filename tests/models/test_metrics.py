"""Hand-computed cases for every metric in models.metrics."""

import math

import numpy as np
import pytest

from models import metrics as m


def test_full_ranks_pessimistic_and_average_ties() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [3.0, 1.0, 2.0, 0.0]])
    targets = np.array([2, 0])
    # row 0: one higher (0.9), one tie (item 3) -> pessimistic 3, average 2.5; row 1: best -> 1
    assert m.ranks_from_scores(scores, targets).tolist() == [3, 1]
    assert m.ranks_from_scores(scores, targets, ties="average").tolist() == [2.5, 1.0]
    with pytest.raises(ValueError):
        m.ranks_from_scores(scores, targets, ties="optimistic")


def test_minus_inf_items_rank_last() -> None:
    scores = np.array([[-np.inf, 0.2, 0.1]])
    assert m.ranks_from_scores(scores, np.array([2])).tolist() == [2]


def test_hit_rate_ndcg_mrr() -> None:
    ranks = np.array([1, 2, 11])
    assert m.hit_rate(ranks, 1) == pytest.approx(1 / 3)
    assert m.hit_rate(ranks, 10) == pytest.approx(2 / 3)
    assert m.ndcg(ranks, 10) == pytest.approx((1.0 + 1 / math.log2(3)) / 3)
    assert m.ndcg(ranks, 1) == pytest.approx(1 / 3)
    assert m.mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)
    report = m.ranking_report(ranks, ks=(10,))
    assert set(report) == {"HR@10", "NDCG@10", "MRR"}


def test_sampled_ranks_use_only_candidates() -> None:
    scores = np.array([[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    # target item 3 (score 3) against negatives 5 and 4 (scores 1 and 2): rank 1; against 1, 2: rank 3
    assert m.sampled_ranks(scores, np.array([3]), np.array([[5, 4]])).tolist() == [1]
    assert m.sampled_ranks(scores, np.array([3]), np.array([[1, 2]])).tolist() == [3]


def test_sample_negatives_excludes_target_history_and_repeats_and_is_seeded() -> None:
    targets = np.array([0, 7])
    exclude = [np.arange(1, 10), np.array([3])]
    neg = m.sample_negatives(30, targets, n_negatives=20, seed=3, exclude=exclude, low=1)
    assert neg.shape == (2, 20)
    assert not np.isin(neg[0], np.arange(0, 10)).any()
    assert 7 not in neg[1] and 3 not in neg[1] and 0 not in neg[1]
    assert all(len(set(row)) == 20 for row in neg.tolist())
    assert np.array_equal(neg, m.sample_negatives(30, targets, 20, seed=3, exclude=exclude, low=1))


def test_roc_auc_hand_computed_with_ties() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.8, 0.8, 0.3, 0.1])
    # positive pairs: (0.8 vs 0.8) = 1/2, (0.8 vs 0.1) = 1, (0.3 vs 0.8) = 0, (0.3 vs 0.1) = 1 -> 2.5 / 4
    assert m.roc_auc(labels, scores) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        m.roc_auc(np.ones(3), np.arange(3))


def test_average_precision_hand_computed() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # thresholds: 0.9 -> P=1, R=1/2; 0.8 -> P=1/2, R=1/2; 0.7 -> P=2/3, R=1 ; AP = 1/2*1 + 1/2*2/3
    assert m.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)
    # a tie between a positive and a negative at the top counts as one threshold: P=1/2 at R=1/2
    assert m.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.9, 0.1])) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3
    )


def test_card_precision_at_k_tiny_frame() -> None:
    # day 0: customers a (max 0.9, fraud), b (0.8, fraud), c (0.7, no fraud), d (0.1, fraud)
    # day 1: a again (0.95, fraud), c (0.6), d (0.5, fraud)
    days = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    customers = np.array(["a", "a", "b", "c", "d", "a", "c", "d"])
    labels = np.array([0, 1, 1, 0, 1, 1, 0, 1])
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.95, 0.6, 0.5])
    # k=2, day 0: top a, b -> both frauds -> 1.0; day 1 with a removed (detected): top c, d -> 1/2
    assert m.card_precision_at_k(days, customers, labels, scores, k=2) == pytest.approx(0.75)
    # without removal day 1: top a, c -> 1/2 ; same mean here, so use k=1: day0 a -> 1; day1 a -> 1
    assert m.card_precision_at_k(days, customers, labels, scores, k=1, remove_detected=False) == 1.0
    # with removal and k=1: day 1 top is c (0.6) -> 0 -> mean 0.5
    assert m.card_precision_at_k(days, customers, labels, scores, k=1) == 0.5
    # the denominator is k even when fewer customers are active: day 0 -> 3/100, day 1 (only c left) -> 0
    assert m.card_precision_at_k(days, customers, labels, scores, k=100) == pytest.approx(0.015)


def test_mae_rmse() -> None:
    y, p = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0])
    assert m.mae(y, p) == pytest.approx(4 / 3)
    assert m.rmse(y, p) == pytest.approx(math.sqrt(10 / 3))
