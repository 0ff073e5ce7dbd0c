"""Evaluation metrics in pure numpy: next-item ranking, fraud detection (handbook), regression errors."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- next item


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """1-based rank of each row's target among all columns of `scores` (N, n_items).

    Items a caller wants out of the ranking (padding, ...) must carry -inf. Ties with the target:
    "pessimistic" ranks the target after every tied item; "average" takes the mean tied position.
    """
    target_scores = np.take_along_axis(scores, targets[:, None], axis=1)  # (N, 1)
    higher = (scores > target_scores).sum(axis=1)
    tied = (scores == target_scores).sum(axis=1) - 1  # other items with the target's score
    if ties == "pessimistic":
        return higher + tied + 1
    if ties == "average":
        return higher + tied / 2 + 1
    raise ValueError(f"ties must be 'pessimistic' or 'average', not {ties!r}")


def sample_negatives(
    n_items: int,
    targets: np.ndarray,
    n_negatives: int = 100,
    seed: int = 0,
    exclude: list[np.ndarray] | None = None,
    low: int = 0,
) -> np.ndarray:
    """Uniform negatives per row from [low, n_items): never the target, an excluded item, or a repeat.

    `exclude[i]` lists items row i must not get (typically the user's history). Returns (N, n_negatives).
    """
    rng = np.random.default_rng(seed)
    n = len(targets)
    row_ids = np.arange(n, dtype=np.int64)
    banned_rows, banned_items = row_ids, np.asarray(targets, dtype=np.int64)
    if exclude is not None and n:
        banned_rows = np.r_[banned_rows, np.repeat(row_ids, [len(e) for e in exclude])]
        banned_items = np.r_[banned_items, np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])]
    keys = np.unique(banned_rows * n_items + banned_items)  # (row, item) pairs a row must not get
    n_banned = np.bincount(keys[keys % n_items >= low] // n_items, minlength=n)
    if n and (n_items - low - n_banned).min() < n_negatives:
        raise ValueError(f"some row has fewer than {n_negatives} items left to sample")
    neg = rng.integers(low, n_items, size=(n, n_negatives))
    redo = np.ones_like(neg, dtype=bool)
    while redo.any():
        neg[redo] = rng.integers(low, n_items, size=int(redo.sum()))
        row_keys = row_ids[:, None] * n_items + neg
        order = np.argsort(neg, axis=1, kind="stable")
        sorted_neg = np.take_along_axis(neg, order, axis=1)
        repeat_sorted = np.zeros_like(neg, dtype=bool)
        repeat_sorted[:, 1:] = sorted_neg[:, 1:] == sorted_neg[:, :-1]
        repeat = np.zeros_like(neg, dtype=bool)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        redo = np.isin(row_keys, keys) | repeat
    return neg


def sampled_ranks(
    scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray, ties: str = "pessimistic"
) -> np.ndarray:
    """1-based rank of the target among itself and the given negatives (N, n_negatives)."""
    candidates = np.concatenate([targets[:, None], negatives], axis=1)
    cand_scores = np.take_along_axis(scores, candidates, axis=1)
    return ranks_from_scores(cand_scores, np.zeros(len(targets), dtype=np.int64), ties)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """HR@k: share of rows whose target ranks in the top k."""
    return float(np.mean(ranks <= k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) inside the top k, else 0."""
    ranks = np.asarray(ranks, dtype=float)
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking (no cut-off)."""
    return float(np.mean(1.0 / np.asarray(ranks, dtype=float)))


def ranking_report(ranks: np.ndarray, ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, float]:
    """HR@k and NDCG@k for each k, plus MRR."""
    out = {f"{name}@{k}": fn(ranks, k) for k in ks for name, fn in (("HR", hit_rate), ("NDCG", ndcg))}
    out["MRR"] = mrr(ranks)
    return out


# ---------------------------------------------------------------- fraud


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(values)] - 1
    ranks = np.empty(len(values))
    ranks[order] = (first[group] + last[group]) / 2 + 1
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (tied scores count one half)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes")
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score threshold, highest threshold first."""
    y = np.asarray(labels).astype(float)
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_group]
    predicted = (np.flatnonzero(last_of_group) + 1).astype(float)
    return tp / predicted, tp / max(y.sum(), 1.0)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over thresholds of (R_n - R_{n-1}) * P_n (step-wise, as scikit-learn; no interpolation)."""
    precision, recall = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_at_k(
    days: np.ndarray,
    customers: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    k: int = 100,
    remove_detected: bool = True,
) -> float:
    """Card precision@k as the handbook's `card_precision_top_k`, averaged over days.

    Per day, each customer gets the max score and max label of its transactions that day; the k
    customers with the highest max score are alerted and the day's value is (#alerted with a fraud) / k.
    With `remove_detected` (the handbook's default), cards found compromised on an earlier day are
    dropped from later days. Tied scores are broken by customer id order (the handbook leaves it to sort).
    """
    days, customers = np.asarray(days), np.asarray(customers)
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    detected = np.empty(0, dtype=customers.dtype)
    per_day = []
    for day in np.unique(days):
        in_day = (days == day) & ~np.isin(customers, detected)
        cards, inverse = np.unique(customers[in_day], return_inverse=True)
        max_score = np.full(len(cards), -np.inf)
        np.maximum.at(max_score, inverse, scores[in_day])
        max_label = np.zeros(len(cards), dtype=int)
        np.maximum.at(max_label, inverse, labels[in_day])
        top = np.argsort(-max_score, kind="stable")[:k]
        hits = top[max_label[top] == 1]
        per_day.append(len(hits) / k)
        if remove_detected:
            detected = np.concatenate([detected, cards[hits]])
    return float(np.mean(per_day))


# ---------------------------------------------------------------- regression


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float)) ** 2)))


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of boolean predictions against 0/1 labels (0 when neither has a positive)."""
    true_positive = float(np.sum(predicted & (labels == 1)))
    denominator = float(np.sum(predicted) + np.sum(labels == 1))
    return 2 * true_positive / denominator if denominator else 0.0
