"""The training losses: next item (full or sampled softmax), next action, risk and time to next event,
masked to the positions that have a target and weighted per task."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from models.model.temporal import TemporalModel
from models.training.batching import IGNORE, Batch
from models.training.train_config import TrainConfig


def sampled_item_loss(
    query: torch.Tensor,
    item_weight: torch.Tensor,
    target: torch.Tensor,
    negatives: torch.Tensor,
    log_expected: torch.Tensor,
) -> torch.Tensor:
    """Sampled softmax with logQ correction: each row's target against shared negatives.

    query (M, d); item_weight (n_items, d); target (M,) item ids; negatives (K,) drawn item ids;
    log_expected (n_items,) log of each item's expected count among the K draws. Every logit is
    corrected by that log (Bengio & Senecal; Yi et al. 2019), and a negative equal to the row's target
    (an accidental hit) is masked, so with every item drawn once and a constant correction this is the
    full softmax cross-entropy.
    """
    positive = (query * item_weight[target]).sum(-1) - log_expected[target]  # (M,)
    negative = query @ item_weight[negatives].T - log_expected[negatives]  # (M, K)
    negative = negative.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
    return (torch.logsumexp(torch.cat([positive[:, None], negative], dim=1), dim=1) - positive).mean()


def multitask_loss(
    model: TemporalModel,
    h: torch.Tensor,
    batch: Batch,
    config: TrainConfig,
    negative_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of next-item CE, next-action CE, risk BCE and the time loss over the masked positions.

    With config.item_loss == "sampled", negative_probs (n_items,) is the negative-sampling distribution.
    """
    h_sel, aggs = h[batch.mask], batch.aggregates[batch.mask]  # (M, d), (M, A)
    tgt = {k: v[batch.mask] for k, v in batch.targets.items()}  # each (M,)
    use_items = config.loss_weights["item"] > 0
    sampled = use_items and config.item_loss == "sampled"
    if not use_items or sampled:  # no item logits (M, 0): their softmax would dominate the step's cost
        candidates = torch.zeros(0, dtype=torch.long, device=h.device)
    elif model.config.n_items > config.full_softmax_max:
        negatives = torch.randint(2, model.config.n_items, (config.sampled_negatives,), device=h.device)
        candidates = torch.unique(torch.cat([tgt["item"][tgt["item"] >= 2], negatives]))  # (C,) sorted
    else:  # every real item (ids 2..): the softmax of the blocked catalogue, without copying its logits
        candidates = torch.arange(2, model.config.n_items, device=h.device)
    out = model.heads(h_sel, aggs, candidates)
    item_target = tgt["item"] if use_items else torch.full_like(tgt["item"], IGNORE)
    if not sampled:  # targets as indices into the candidates
        item_target = torch.where(item_target >= 2, torch.searchsorted(candidates, item_target), IGNORE)
    if sampled:
        if negative_probs is None:
            raise ValueError("item_loss='sampled' needs negative_probs")
        keep, query = item_target != IGNORE, out.item_query
        assert query is not None  # heads always return it
        negatives = torch.multinomial(negative_probs, config.sampled_negatives, replacement=True)
        log_expected = torch.log(negative_probs * config.sampled_negatives).clamp_min(-1e4)
        item_part = (
            sampled_item_loss(query[keep], model.item_matrix(), item_target[keep], negatives, log_expected)
            if keep.any()
            else h.sum() * 0.0
        )
    elif (item_target != IGNORE).any():  # ignore_index, not indexing: no copy of the (M, C) logits
        item_part = F.cross_entropy(out.item_logits, item_target, ignore_index=IGNORE)
    else:
        item_part = out.item_logits.sum() * 0.0
    parts = {
        "item": item_part,
        "action": _masked(F.cross_entropy, out.action_logits, tgt["action"], tgt["action"] != IGNORE),
        "risk": _masked(
            F.binary_cross_entropy_with_logits, out.risk_logit, tgt["risk"], ~tgt["risk"].isnan()
        ),
        "time": _masked(
            TIME_LOSSES[config.time_loss], out.log_time_to_next, tgt["time"], ~tgt["time"].isnan()
        ),
    }
    total = torch.stack([config.loss_weights[k] * v for k, v in parts.items()]).sum()
    return total, {k: float(v.detach()) for k, v in parts.items()}


TIME_LOSSES = {"median": F.l1_loss, "mean": F.mse_loss}  # TrainConfig.time_loss: what the time head predicts


def _masked(loss_fn: Any, prediction: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return loss_fn(prediction[keep], target[keep]) if keep.any() else prediction.sum() * 0.0
