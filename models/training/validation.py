"""Serving-style metrics of a model on validation windows: what training selects and stops on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from models.metrics import hit_rate, ndcg, ranks_from_scores
from models.model.temporal import TemporalModel, TemporalOutput
from models.training.batching import IGNORE, SequenceData, make_batch
from models.training.train_config import TrainConfig


@torch.inference_mode()
def evaluate(
    model: TemporalModel, data: SequenceData, ends: np.ndarray, config: TrainConfig, text_table: torch.Tensor
) -> dict[str, float]:
    """Serving-style metrics at the last event of windows ending at ends."""
    model.eval()
    outs: list[TemporalOutput] = []
    for chunk in np.array_split(ends, max(1, len(ends) // 512)):
        batch = make_batch(data, chunk, config.max_len, text_table, text_table.device)
        rows = torch.arange(len(chunk), device=batch.aggregates.device)
        outs.append(model(batch.inp, batch.aggregates[rows, batch.inp.lengths - 1]))
    model.train()
    cat = {
        f: torch.cat([getattr(o, f) for o in outs]).float().cpu()
        for f in ("item_logits", "action_logits", "risk_logit", "log_time_to_next")
    }
    metrics: dict[str, float] = {}
    item, action = torch.from_numpy(data.next_item[ends]), torch.from_numpy(data.next_action[ends])
    keep = item != IGNORE
    if keep.any():
        metrics["item_ce"] = float(F.cross_entropy(cat["item_logits"][keep], item[keep]))
        ranks = ranks_from_scores(cat["item_logits"][keep].numpy(), item[keep].numpy())  # history not masked
        metrics["item_hr10"] = hit_rate(ranks, 10)
        metrics["item_ndcg10"] = ndcg(ranks, 10)
    keep = action != IGNORE
    if keep.any():
        metrics["action_ce"] = float(F.cross_entropy(cat["action_logits"][keep], action[keep]))
        metrics["action_acc"] = float((cat["action_logits"][keep].argmax(-1) == action[keep]).float().mean())
    gap = torch.from_numpy(data.next_log_gap[ends])
    keep = ~gap.isnan()
    metrics["time_mse"] = float(F.mse_loss(cat["log_time_to_next"][keep], gap[keep])) if keep.any() else 0.0
    metrics["time_mae"] = float(F.l1_loss(cat["log_time_to_next"][keep], gap[keep])) if keep.any() else 0.0
    risk = data.risk[ends]
    labelled = ~np.isnan(risk)
    if labelled.any():
        logit = cat["risk_logit"].numpy()[labelled]
        metrics["risk_bce"] = float(
            F.binary_cross_entropy_with_logits(torch.from_numpy(logit), torch.from_numpy(risk[labelled]))
        )
        if 0 < risk[labelled].sum() < labelled.sum():
            metrics["risk_auc"] = float(roc_auc_score(risk[labelled], logit))
            metrics["risk_ap"] = float(average_precision_score(risk[labelled], logit))
    time_metric = "time_mae" if config.time_loss == "median" else "time_mse"  # the loss trained
    weights = {"item_ce": "item", "action_ce": "action", "risk_bce": "risk", time_metric: "time"}
    metrics["loss"] = sum(config.loss_weights[w] * metrics[m] for m, w in weights.items() if m in metrics)
    return metrics


TRANSITION_WEIGHTS = (
    0.0,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
)  # the transition prior's weights tried on validation


def choose_transition_weight(
    model: TemporalModel, data: SequenceData, ends: np.ndarray, config: TrainConfig, text_table: torch.Tensor
) -> dict[str, object]:
    """Set the model's transition prior weight to the one of TRANSITION_WEIGHTS with the best validation
    NDCG@10 (ties: the smaller); returns it with every weight's figure."""
    scores = {}
    for weight in TRANSITION_WEIGHTS:
        model.config.transition_weight = weight
        scores[weight] = evaluate(model, data, ends, config, text_table).get("item_ndcg10", 0.0)
    best = max(TRANSITION_WEIGHTS, key=lambda w: (scores[w], -w))
    model.config.transition_weight = best
    model.eval()
    return {"weight": best, "val_item_ndcg10": {str(w): round(v, 4) for w, v in scores.items()}}
