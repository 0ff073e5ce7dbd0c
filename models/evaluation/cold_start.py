"""Cold-start protocol: a seeded share of the catalogue is held out of training entirely (never a target,
never an input), kept in the catalogue at test time; next-item ranks are then reported apart for test
targets that are cold (held out) and warm. Also the popularity-within-genre baseline it is compared with.

`models.train --cold-items F` and `models.evaluate --cold-items F` hold out the same items (same seed). After
training under the protocol, a model with text item vectors gets its new-item bonus chosen on validation
(`choose_new_item_bonus`): what the Scorer adds to the logits of items it ranks from their text alone."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models import metrics
from models.data.datasets import EventLog
from models.evaluation.baselines import LooData, loo_data, next_item_ranks
from models.evaluation.checkpoint_ranking import CheckpointItemScores, loo_windows
from models.features.featurize import catalogue_texts
from models.serving import checkpoint

HELD_OUT = "held_out"  # the split of a held-out item's training events: neither trained on nor replayed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--cold-items and --cold-seed, the same for models.train and models.evaluate."""
    parser.add_argument(
        "--cold-items",
        type=float,
        metavar="FRACTION",
        help="cold-start protocol (leave-one-out data sets): hold this share of the catalogue out of training "
        "entirely; models.train and models.evaluate given the same value hold out the same items, and the "
        "evaluation adds NDCG@10 / HR@10 on cold and warm targets",
    )
    parser.add_argument("--cold-seed", type=int, default=0, help="which items --cold-items holds out")


def held_out_items(log: EventLog, fraction: float, seed: int = 0) -> set[str]:
    """A uniform draw of round(fraction * catalogue) item ids (the catalogue: every item of the log)."""
    if not 0 < fraction < 1:
        raise ValueError(f"cold-start fraction must be in (0, 1), got {fraction}")
    catalogue = sorted({str(r["item_id"]) for r in log.records})
    rng = np.random.default_rng(seed)
    return set(rng.choice(catalogue, round(fraction * len(catalogue)), replace=False).tolist())


def hold_out(log: EventLog, fraction: float, seed: int = 0) -> tuple[EventLog, set[str]]:
    """The log with the training events of held-out items moved to the HELD_OUT split, and those items.

    Validation and test events keep their split: a user's target may be a cold item (and the test input,
    the training sequence plus the validation event, may end with one, as a live stream would)."""
    cold = held_out_items(log, fraction, seed)
    split = log.require_split()
    moved = {
        r["event_id"]: HELD_OUT
        for r in log.records
        if str(r["item_id"]) in cold and split[r["event_id"]] == "train"
    }
    notes = f"{log.notes}; cold start: {len(cold)} items ({fraction:.0%}, seed {seed}) held out of training"
    return replace(log, split={**split, **moved}, notes=notes), cold


def protocol(fraction: float, seed: int, cold: set[str]) -> dict[str, Any]:
    """What a checkpoint records about the items it was not trained on (models.evaluate checks it)."""
    return {"fraction": fraction, "seed": seed, "items": len(cold)}


def cold_targets(data: LooData, cold: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(val, test) bool masks of the users whose target item is cold."""
    is_cold = np.array([False] + [item in cold for item in data.items])  # by item index, 0 = padding
    return is_cold[data.val_target], is_cold[data.test_target]


def cold_warm_rows(
    name: str, val: np.ndarray, test: np.ndarray, data: LooData, cold: set[str]
) -> list[dict[str, object]]:
    """Rows of NDCG@10 / HR@10 on cold and warm targets, validation and test, of one model's ranks."""
    rows: list[dict[str, object]] = []
    for split, ranks, is_cold in zip(("val", "test"), (val, test), cold_targets(data, cold), strict=True):
        for subset, keep in (("cold", is_cold), ("warm", ~is_cold)):
            rows.append(
                {
                    "model": name,
                    "split": split,
                    "targets": subset,
                    "n": int(keep.sum()),
                    "NDCG@10": metrics.ndcg(ranks[keep], 10) if keep.any() else float("nan"),
                    "HR@10": metrics.hit_rate(ranks[keep], 10) if keep.any() else float("nan"),
                }
            )
    return rows


class GenrePopularity:
    """Popularity within the user's genres: an item scores the mean, over its genres, of the share of the
    user's training history in that genre; its training popularity (scaled below the smallest share step)
    breaks ties. A cold item has no popularity, so it is ranked by its genres alone."""

    def fit(self, data: LooData, categories: dict[str, str]) -> GenrePopularity:
        genres = sorted({g for c in categories.values() for g in c.split("|") if g})
        column = {g: j for j, g in enumerate(genres)}
        self.item_genres = np.zeros((data.n_items + 1, len(genres)))  # (items + padding, genres)
        for index, item in enumerate(data.items, start=1):
            for g in categories.get(item, "").split("|"):
                if g:
                    self.item_genres[index, column[g]] = 1.0
        per_item = self.item_genres.sum(1, keepdims=True)
        self.item_share = np.divide(
            self.item_genres, per_item, out=np.zeros_like(self.item_genres), where=per_item > 0
        )
        counts = np.bincount(np.concatenate(data.train).astype(np.int64), minlength=data.n_items + 1)
        self.tie_break = counts / (counts.max() + 1.0) * 1e-6
        return self

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        profile = np.stack([self.item_genres[h.astype(np.int64)].sum(0) for h in histories])  # (B, G)
        profile /= np.maximum(profile.sum(1, keepdims=True), 1.0)
        return profile @ self.item_share.T + self.tie_break  # (B, items + 1)


# the new-item bonuses tried on validation (logit units; 0: the items ranked from text compete as they are;
# below 0 for a model that ranks them too high, such as one trained with much id dropout)
NEW_ITEM_BONUSES = (-4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


class RecordedScores:
    """A baselines.ScoreFn that passes another's score batches through and keeps them."""

    def __init__(self, score_fn: Any) -> None:
        self.score_fn = score_fn
        self.batches: list[np.ndarray] = []

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        scores = self.score_fn(histories)
        self.batches.append(scores)
        return scores


class ShiftedScores:
    """Recorded score batches replayed with `bonus` added to the columns of the items ranked from text."""

    def __init__(self, batches: list[np.ndarray], columns: np.ndarray, bonus: float) -> None:
        self.batches, self.columns, self.bonus, self.position = batches, columns, bonus, 0

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        scores = self.batches[self.position].copy()
        self.position += 1
        scores[:, self.columns] += self.bonus
        return scores


def choose_new_item_bonus(folder: str | Path, log: EventLog, device: str = "cpu") -> dict[str, Any] | None:
    """Choose the checkpoint's new-item bonus on the log's validation targets and record it in the checkpoint.

    The checkpoint (trained under the cold-start protocol: `log` is the held-out log) ranks the catalogue
    items it never trained on from their text, as the Scorer does in the stream. Each bonus of
    NEW_ITEM_BONUSES is scored by the validation NDCG@10 over all targets, cold and warm (ties: the one
    nearest 0). None, and the checkpoint unchanged, when its item vectors have no text part or no validation
    target is an item it never trained on."""
    from models.serving.scorer import Scorer

    scorer = Scorer.load(folder, device=device)
    if "text" not in scorer.ckpt.config.item_vectors:
        return None
    scorer.new_item_bonus = 0.0
    scorer.add_items(catalogue_texts(log.records))
    data = loo_data(log)
    new_items = set(scorer.item_ids[scorer.ckpt.vocab.n_items - 2 :])  # item_ids leaves out padding, unknown
    cold, _ = cold_targets(data, new_items)
    if not cold.any():
        return None
    val_windows, _ = loo_windows(log, data)
    score_fn = CheckpointItemScores(scorer, val_windows, data)
    columns = np.array(sorted(score_fn.index[item] for item in new_items if item in score_fn.index))
    recorded = RecordedScores(score_fn)
    next_item_ranks(recorded, data.val_input, data.val_target, data.n_items)
    figures = {}
    for bonus in NEW_ITEM_BONUSES:
        ranks = next_item_ranks(
            ShiftedScores(recorded.batches, columns, bonus), data.val_input, data.val_target, data.n_items
        )
        figures[bonus] = {
            "all": round(metrics.ndcg(ranks, 10), 4),
            "cold": round(metrics.ndcg(ranks[cold], 10), 4),
            "warm": round(metrics.ndcg(ranks[~cold], 10), 4),
        }
    best = max(NEW_ITEM_BONUSES, key=lambda b: (figures[b]["all"], -abs(b)))
    report = {
        "bonus": best,
        "chosen_on": "validation NDCG@10, all targets",
        "val_cold_targets": int(cold.sum()),
        "val_targets": len(cold),
        "val_ndcg10": {str(b): f for b, f in figures.items()},
    }
    checkpoint.set_new_item_bonus(folder, best, report)
    return report
