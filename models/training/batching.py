"""Training data as the model sees it: all users' events as columns with next-event targets, windows
cut from them into padded batches, negative-sampling weights and input standardisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.features.featurize import PAD, Vocab, aggregate_matrix, event_columns, numeric_features
from models.model.temporal import TemporalInput

IGNORE = -100


@dataclass
class SequenceData:
    """All users' events concatenated (by user, then time) with per-event model inputs and targets."""

    item: np.ndarray  # (N,) int64
    action: np.ndarray  # (N,) int64
    ts_ms: np.ndarray  # (N,) int64
    amount: np.ndarray  # (N,) float64, nan when absent
    value: np.ndarray  # (N,) float64, nan when absent
    text_index: np.ndarray  # (N,) int64 into the text table, -1 for none
    aggregates: np.ndarray  # (N, A) float32 aggregates of each event
    user_start: np.ndarray  # (N,) int64 index of the first event of the event's user
    next_item: np.ndarray  # (N,) int64, IGNORE when no next event or next item unknown
    next_action: np.ndarray  # (N,) int64, IGNORE when no next event
    next_log_gap: np.ndarray  # (N,) float32 log1p seconds to the next event, nan when none
    risk: np.ndarray  # (N,) float32 label of the event, nan when unlabelled


@dataclass
class Batch:
    """A training batch of right-padded windows with targets at every position."""

    inp: TemporalInput
    aggregates: torch.Tensor  # (B, T, A)
    mask: torch.Tensor  # (B, T) bool real events
    targets: dict[str, torch.Tensor]  # each (B, T)


def build_sequences(
    records: Sequence[dict[str, Any]],
    labels: dict[str, int],
    aggregates: dict[str, dict[str, float]],
    vocab: Vocab,
    text_ids: dict[str, int],
) -> SequenceData:
    """Columns and next-event targets of records sorted by user then time."""
    cols = event_columns(records, vocab)
    users = np.array([r["user_id"] for r in records], dtype=object)
    n = len(records)
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = users[1:] != users[:-1]
    user_start = np.maximum.accumulate(np.where(is_start, np.arange(n), 0))
    has_next = np.append(~is_start[1:], False)
    nxt = np.minimum(np.arange(n) + 1, max(n - 1, 0))
    gap_s = np.maximum(cols.ts_ms[nxt] - cols.ts_ms, 0) / 1000.0
    return SequenceData(
        item=cols.item,
        action=cols.action,
        ts_ms=cols.ts_ms,
        amount=cols.amount,
        value=cols.value,
        text_index=np.array([text_ids.get(t, -1) if t else -1 for t in cols.texts], dtype=np.int64),
        aggregates=aggregate_matrix([aggregates.get(r["event_id"], {}) for r in records], cols.amount),
        user_start=user_start,
        next_item=np.where(has_next & (cols.item[nxt] >= 2), cols.item[nxt], IGNORE),
        next_action=np.where(has_next & (cols.action[nxt] >= 2), cols.action[nxt], IGNORE),
        next_log_gap=np.where(has_next, np.log1p(gap_s), np.nan).astype(np.float32),
        risk=np.array([labels.get(r["event_id"], np.nan) for r in records], dtype=np.float32),
    )


def make_batch(
    data: SequenceData, ends: np.ndarray, max_len: int, text_table: torch.Tensor, device: torch.device
) -> Batch:
    """Windows of up to max_len events ending at ends (B,), featurized exactly as models.features.featurize does."""
    starts = np.maximum(ends - max_len + 1, data.user_start[ends])
    lengths = ends - starts + 1
    cols = np.arange(max_len)
    valid = cols[None, :] < lengths[:, None]  # (B, T)
    idx = np.where(valid, starts[:, None] + cols, ends[:, None])  # (B, T)
    numeric = (
        numeric_features(
            data.ts_ms[idx].ravel(),
            data.amount[idx].ravel(),
            data.value[idx].ravel(),
            (cols == 0)[None].repeat(len(ends), 0).ravel(),
        ).reshape(*idx.shape, -1)
        * valid[..., None]
    )  # (B, T, F)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    inp = TemporalInput(
        item=t(np.where(valid, data.item[idx], PAD)),
        action=t(np.where(valid, data.action[idx], PAD)),
        numeric=t(numeric.astype(np.float32)),
        text_index=t(np.where(valid, data.text_index[idx], -1)),
        text_table=text_table,
        lengths=t(lengths),
    )
    targets = {
        "item": t(data.next_item[idx]),
        "action": t(data.next_action[idx]),
        "risk": t(data.risk[idx]),
        "time": t(data.next_log_gap[idx]),
    }
    return Batch(inp, t(data.aggregates[idx] * valid[..., None]), t(valid), targets)


def negative_sampling_probs(next_item: np.ndarray, n_items: int, power: float = 0.75) -> torch.Tensor:
    """(n_items,) probabilities of drawing each item as a negative: training target frequency**power.

    Every real item gets at least a count of 1 (so each can be drawn); PAD and OOV are never drawn.
    """
    counts = np.bincount(next_item[next_item >= 2], minlength=n_items).astype(np.float64)
    probs = np.maximum(counts, 1.0) ** power
    probs[:2] = 0.0
    return torch.from_numpy(probs / probs.sum()).float()


def _mean_std(x: np.ndarray) -> list[list[float]]:
    """[mean, std] over the rows of x (N, F); a constant column keeps std 1."""
    std = x.std(axis=0)
    return [x.mean(axis=0).tolist(), np.where(std > 1e-6, std, 1.0).tolist()]


def input_scale(data: SequenceData) -> dict[str, Any]:
    """TemporalConfig standardisation of the numeric features and aggregates of the training events.

    Raw, they differ in scale by two orders (log counts ~4, terminal fraud rates ~0.01); Adam then
    moves the weights of the small ones, the fraud rates, far too slowly.
    """
    is_first = np.arange(len(data.ts_ms)) == data.user_start
    numeric = numeric_features(data.ts_ms, data.amount, data.value, is_first).astype(np.float64)
    return {
        "numeric_scale": _mean_std(numeric),
        "aggregate_scale": _mean_std(data.aggregates.astype(np.float64)),
    }


def transition_counts(
    item: np.ndarray, next_item: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How often each known item followed each known item in training (item (N,) and next_item (N,) of
    SequenceData), as CSR by the first: indptr (n_items + 1,), items (K,), log1p(count) (K,) float32."""
    keep = (item >= 2) & (next_item >= 2)
    pairs, counts = np.unique(item[keep] * n_items + next_item[keep], return_counts=True)  # sorted by first
    first, second = pairs // n_items, pairs % n_items
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.add.at(indptr, first + 1, 1)
    return np.cumsum(indptr), second.astype(np.int64), np.log1p(counts).astype(np.float32)
