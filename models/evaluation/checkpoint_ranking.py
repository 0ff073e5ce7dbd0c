"""A checkpoint's next-item ranking on leave-one-out data, through the Scorer (the serving code path):
each user's event records as windows (validation: the training events; test: those and the validation
event) and a baselines.ScoreFn that scores them. Used by the evaluation and by the choice of the new-item
bonus after training (models.evaluation.cold_start)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.data.datasets import EventLog
from models.evaluation import baselines as bl
from models.features.featurize import Window

MAX_WINDOW = 200  # the events of a user's window the Scorer is given (its checkpoint keeps max_len of them)


class CheckpointItemScores:
    """A baselines.ScoreFn over a checkpoint: LooData histories in, (B, n_items + 1) scores out.

    The checkpoint scores event records (times, actions, text), not item indices, so it is given each
    user's records in the order next_item_ranks passes the histories, and checks that each history
    ends with its window's last item. Catalogue items the checkpoint does not know score -inf.
    """

    def __init__(self, scorer: Any, windows: list[list[dict]], data: bl.LooData) -> None:
        self.scorer, self.windows, self.data = scorer, windows, data
        self.position = 0
        index = {item: i + 1 for i, item in enumerate(data.items)}
        pairs = [(j, index[item]) for j, item in enumerate(scorer.item_ids) if item in index]
        self.source = np.array([j for j, _ in pairs], dtype=np.int64)
        self.target = np.array([i for _, i in pairs], dtype=np.int64)
        self.index = index

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        windows = self.windows[self.position : self.position + len(histories)]
        self.position += len(histories)
        for history, window in zip(histories, windows, strict=True):
            if len(history) and self.index[window[-1]["item_id"]] != history[-1]:
                raise ValueError("checkpoint windows out of step with the histories")
        logits = self.scorer.item_scores([Window(events=w[-MAX_WINDOW:]) for w in windows])
        scores = np.full((len(histories), self.data.n_items + 1), -np.inf)
        scores[:, self.target] = logits[:, self.source]
        return scores


def loo_windows(log: EventLog, data: bl.LooData) -> tuple[list[list[dict]], list[list[dict]]]:
    """(validation, test) windows of event records, one per user of `data`, in its order: the training
    events, and the training events plus the validation event."""
    train_recs: dict[str, list[dict]] = {u: [] for u in data.users}
    val_recs: dict[str, dict] = {}
    split_of = log.require_split()
    for r in log.records:
        split = split_of[r["event_id"]]
        if split == "train" and r["user_id"] in train_recs:
            train_recs[r["user_id"]].append(r)
        elif split == "val":
            val_recs[r["user_id"]] = r
    return [train_recs[u] for u in data.users], [train_recs[u] + [val_recs[u]] for u in data.users]
