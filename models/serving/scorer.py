"""Encoder cache + temporal head behind one call: Scorer.load(checkpoint) / scorer.score(windows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from models.features.aggregates import AGGREGATE_FEATURES
from models.features.featurize import Window, catalogue_texts, featurize
from models.model import risk_trees
from models.model.device import resolve_device
from models.model.encoder import TextEncoder
from models.model.temporal import TemporalInput, TemporalOutput
from models.serving import checkpoint, explain

__all__ = ["Scorer", "Scores", "Window"]


@dataclass
class Scores:
    """Scores of one window, about its latest event."""

    risk: float
    top_items: list[tuple[str, float]]
    next_action: dict[str, float]
    time_to_next_s: float
    model_version: str
    explanation: dict[str, Any] | None = None  # why the risk is what it is (serving.explain), when asked


EXPLAIN_CHUNK = 256  # windows per forward pass of an explanation's occlusions


class Scorer:
    """Batch scorer over a loaded checkpoint; texts already seen are never re-encoded."""

    def __init__(
        self, ckpt: checkpoint.Checkpoint, device: torch.device, top_k: int = 10, cache_size: int = 50_000
    ) -> None:
        self.ckpt = ckpt
        self.device = device
        self.model_version = ckpt.model_version
        self.encoder: TextEncoder | None = None
        self._text_items = "text" in ckpt.config.item_vectors
        if ckpt.config.use_text or self._text_items:
            self.encoder = TextEncoder(
                ckpt.encoder, device=device, cache_size=max(cache_size, len(ckpt.texts) + 10_000)
            )
            self.encoder.preload(ckpt.texts, ckpt.text_embeddings)
        self._actions = list(ckpt.vocab.actions)
        self._items = np.array(ckpt.vocab.items, dtype=object)
        self._item_bias = self._recommendable_bias(ckpt).to(device)  # (n_items,) 0 or -inf
        # items the checkpoint never trained on, appended from their text (text item vectors only)
        self._catalogue_index = set(ckpt.vocab.items)
        self._new_item_vectors = torch.zeros((0, ckpt.config.d_model), device=device)
        self._top_k_asked = top_k
        self.top_k = min(top_k, int(torch.isfinite(self._item_bias).sum()))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, top_k: int = 10) -> Scorer:
        """Load a checkpoint folder; device None picks cuda when available, else cpu."""
        dev = resolve_device(device)
        return cls(checkpoint.load(path, dev), dev, top_k=top_k)

    @staticmethod
    def _recommendable_bias(ckpt: checkpoint.Checkpoint) -> torch.Tensor:
        """-inf for padding, unknown and (when the checkpoint lists them) items that are not shop items; -inf for
        all when the checkpoint lists none (trained on payments alone) or did not train its next-item head."""
        bias = torch.zeros(ckpt.vocab.n_items)
        bias[:2] = float("-inf")
        listed = ckpt.extra.get("recommendable_items")  # absent from checkpoints older than the list
        trained_with = ckpt.extra.get("train_config") or {}
        if (trained_with.get("loss_weights") or {}).get("item", 1.0) == 0:
            bias[2:] = float("-inf")
        elif listed is not None:
            allowed = set(listed)
            bias[2:] = torch.tensor([0.0 if item in allowed else float("-inf") for item in ckpt.vocab.items])
        return bias

    @property
    def required_aggregates(self) -> frozenset[str]:
        """The aggregate names this checkpoint reads (the head's 12, and its trees'); a missing one reads as 0."""
        trees = self.ckpt.risk_trees
        return frozenset(AGGREGATE_FEATURES) | (trees.aggregate_names() if trees is not None else frozenset())

    def cache_hit_rate(self) -> float | None:
        """Share of event texts served from the encoder cache (None when the model uses no text)."""
        return None if self.encoder is None else float(self.encoder.cache.hit_rate)

    def _text_table(self, texts: list[str]) -> torch.Tensor:
        """(U, text_dim) embeddings of the batch's distinct texts, from the cache when seen before."""
        if self.encoder is None or not self.ckpt.config.use_text or not texts:
            return torch.zeros((0, self.ckpt.config.text_dim))
        return torch.from_numpy(self.encoder.encode(texts))

    def _risk(self, head_log_odds: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
        """(B,) risk: the head's probability, or with trees the sigmoid of the weighted mean of both log-odds."""
        if self.ckpt.risk_trees is None:
            return expit(head_log_odds)
        return expit(self.ckpt.risk_trees.blend(head_log_odds, risk_trees.window_features(windows)))

    @property
    def item_ids(self) -> list[str]:
        """The catalogue in the column order of `item_scores`."""
        return self._items.tolist()

    @property
    def new_items(self) -> int:
        """How many catalogue items were added from their text since the checkpoint was loaded."""
        return len(self._new_item_vectors)

    @property
    def new_item_bonus(self) -> float:
        """What the logits of the items added from their text get on top (the checkpoint's, chosen on
        validation: TemporalConfig.new_item_bonus)."""
        return self.ckpt.config.new_item_bonus

    @new_item_bonus.setter
    @torch.inference_mode()
    def new_item_bonus(self, bonus: float) -> None:
        self.ckpt.config.new_item_bonus = float(bonus)
        trained = self.ckpt.vocab.n_items
        added = torch.full((len(self._item_bias) - trained,), float(bonus), device=self.device)
        self._item_bias = torch.cat([self._item_bias[:trained], added])

    @torch.inference_mode()
    def add_items(self, texts: Mapping[str, str]) -> int:
        """Append items the checkpoint never trained on (item id -> featurize.item_text) to the catalogue,
        ranked from their text's embedding; returns how many were new. A model whose item vectors are
        ids only cannot rank an unseen item: nothing is added (0)."""
        if not self._text_items or self.encoder is None:
            return 0
        new = [(item, text) for item, text in texts.items() if item not in self._catalogue_index and text]
        if not new:
            return 0
        embeddings = torch.from_numpy(self.encoder.encode([text for _, text in new])).to(self.device)
        vectors = self.ckpt.model.text_item_vectors(embeddings)
        self._new_item_vectors = torch.cat([self._new_item_vectors, vectors.to(self._new_item_vectors.dtype)])
        self._items = np.concatenate([self._items, np.array([item for item, _ in new], dtype=object)])
        bonus = torch.full((len(new),), self.new_item_bonus, device=self.device)
        self._item_bias = torch.cat([self._item_bias, bonus])
        self._catalogue_index.update(item for item, _ in new)
        self.top_k = min(self._top_k_asked, int(torch.isfinite(self._item_bias).sum()))
        return len(new)

    def _add_items_first_seen(self, windows: Sequence[Window]) -> None:
        """An item a window's latest click is about, unknown so far and with text, joins the catalogue."""
        if not self._text_items:
            return
        latest = [w.events[-1] for w in windows if w.events]
        unseen = [e for e in latest if str(e["item_id"]) not in self._catalogue_index]
        if unseen:
            self.add_items(catalogue_texts(unseen))

    def _forward(self, windows: Sequence[Window]) -> TemporalOutput:
        self._add_items_first_seen(windows)
        batch = featurize(windows, self.ckpt.vocab, self.ckpt.config.max_len)
        inp = TemporalInput.from_features(batch, self._text_table(batch.texts), self.device)
        return self.ckpt.model(inp, torch.from_numpy(batch.aggregates).to(self.device))

    def _item_logits(self, out: TemporalOutput) -> torch.Tensor:
        """(B, n_items + new items) next-item logits, the recommendable filter applied."""
        logits = out.item_logits
        if len(self._new_item_vectors):
            assert out.item_query is not None  # heads always return it
            logits = torch.cat([logits, out.item_query @ self._new_item_vectors.T.to(logits.dtype)], dim=-1)
        return logits + self._item_bias

    @torch.inference_mode()
    def item_scores(self, windows: Sequence[Window]) -> np.ndarray:
        """(B, len(item_ids)) next-item logits over the whole catalogue, -inf where the checkpoint does
        not recommend an item: what full-ranking evaluation needs (score() returns the top k only)."""
        if not windows:
            return np.zeros((0, len(self._items)), dtype=np.float32)
        out = self._forward(windows)
        return self._item_logits(out)[:, 2:].float().cpu().numpy()

    @torch.inference_mode()
    def head_log_odds(self, windows: Sequence[Window]) -> np.ndarray:
        """(N,) the temporal head's risk log-odds, in forward passes of at most EXPLAIN_CHUNK windows."""
        parts = [
            self._forward(windows[i : i + EXPLAIN_CHUNK]).risk_logit.double().cpu().numpy()
            for i in range(0, len(windows), EXPLAIN_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    def explain(self, windows: Sequence[Window]) -> list[dict[str, Any]]:
        """Why each window's risk is what it is: the blended log-odds, the head's most influential past events
        and (with trees) the trees' top feature contributions (models.serving.explain)."""
        if not windows:
            return []
        trees = self.ckpt.risk_trees
        head_weight = trees.head_weight if trees is not None else 1.0
        heads = explain.head_explanations(self.head_log_odds, windows, head_weight)
        tree_parts = explain.tree_explanations(trees, windows) if trees is not None else [None] * len(heads)
        out = []
        for head, tree in zip(heads, tree_parts, strict=True):
            log_odds = head_weight * head["log_odds"] + (tree["weight"] * tree["log_odds"] if tree else 0.0)
            out.append({"log_odds": log_odds, "head": head, **({"trees": tree} if tree else {})})
        return out

    @torch.inference_mode()
    def score(
        self, windows: Sequence[Window], explain_at: float | None = None, explain_max: int | None = None
    ) -> list[Scores]:
        """One Scores per window, in order; those with a risk of at least `explain_at` carry its explanation
        (the `explain_max` riskiest of them, when given: an explanation costs far more than a score)."""
        if not windows:
            return []
        out = self._forward(windows)
        risk = self._risk(out.risk_logit.double().cpu().numpy(), windows).tolist()
        explained: dict[int, dict[str, Any]] = {}
        if explain_at is not None:
            chosen = sorted((b for b, r in enumerate(risk) if r >= explain_at), key=lambda b: -risk[b])
            chosen = sorted(chosen[:explain_max] if explain_max is not None else chosen)
            explained = dict(zip(chosen, self.explain([windows[b] for b in chosen]), strict=True))
        top = torch.softmax(self._item_logits(out), dim=-1).topk(self.top_k, dim=-1)
        top_ids = self._items[(top.indices - 2).cpu().numpy()]  # (B, k) item ids
        top_p = top.values.cpu().tolist()
        actions = torch.softmax(out.action_logits[:, 2:], dim=-1).cpu().tolist()
        time_s = torch.expm1(out.log_time_to_next.clamp(0, 30)).cpu().tolist()
        names = self._actions
        return [
            Scores(
                risk=risk[b],
                top_items=list(zip(top_ids[b].tolist(), top_p[b], strict=True)),
                next_action=dict(zip(names, actions[b], strict=True)),
                time_to_next_s=time_s[b],
                model_version=self.model_version,
                explanation=explained.get(b),
            )
            for b in range(len(windows))
        ]
