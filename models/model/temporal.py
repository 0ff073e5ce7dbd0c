"""Temporal head over event sequences: causal transformer or GRU with next-item/action, risk, time heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.features.featurize import MODEL_AGGREGATES, NUMERIC_FEATURES, PAD, FeatureBatch


@dataclass
class TemporalConfig:
    """Architecture hyper-parameters; saved in the checkpoint so load() rebuilds the exact model."""

    n_items: int
    n_actions: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.1
    kind: Literal["transformer", "gru"] = "transformer"
    use_text: bool = True
    use_item_ids: bool = True  # False: item ids are no input (fraud: terminal ids invite memorising)
    text_dim: int = 384
    n_numeric: int = len(NUMERIC_FEATURES)
    # leading columns of the featurized aggregates read (12 in checkpoints from before the derived ratios)
    n_aggregates: int = len(MODEL_AGGREGATES)
    item_init_std: float | None = None  # item-embedding init (training only); None: 0.02
    # multipliers of the item-id and projected-text embeddings before the input LayerNorm; 1.0 (the
    # default of checkpoints saved before they existed) lets constant inputs drown the item signal
    item_input_scale: float = 1.0
    text_input_scale: float = 1.0
    # what an item is to the next-item head: its learnt id embedding ("ids", checkpoints before 2026-12-06),
    # the projection of its text's embedding ("text": an item never trained on is ranked from its text
    # alone, models.evaluation.cold_start), or their sum ("ids+text")
    item_vectors: Literal["ids", "text", "ids+text"] = "ids"
    # training only, with ids+text: the share of items whose id part is dropped from their vector at each
    # step (DropoutNet, Volkovs et al. 2017), so that the text part alone ranks well: what an item never
    # trained on has
    item_id_dropout: float = 0.0
    # first-order transition prior (FPMC-like): next-item logits + transition_weight * log1p(the training
    # count of last item -> item); n_transitions sizes its stored counts (0: none); the weight is chosen on
    # validation after training (models.train), the head trained without it
    n_transitions: int = 0
    transition_weight: float = 0.0
    # added by the Scorer to the next-item logits of the items it ranks from their text alone (never trained
    # on: held out, or first seen in the stream), which otherwise lose to trained items' id-and-text vectors;
    # chosen on validation after training under the cold-start protocol (models.evaluation.cold_start)
    new_item_bonus: float = 0.0
    # [mean, std] per numeric feature / aggregate, fitted on the training events; None: used as featurized
    numeric_scale: list[list[float]] | None = None
    aggregate_scale: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TemporalInput:
    """Tensor inputs of a batch of right-padded windows."""

    item: torch.Tensor  # (B, T) int64
    action: torch.Tensor  # (B, T) int64
    numeric: torch.Tensor  # (B, T, F) float32
    text_index: torch.Tensor  # (B, T) int64 into text_table, -1 for none
    text_table: torch.Tensor  # (U, text_dim) float32 embeddings of the batch's distinct texts
    lengths: torch.Tensor  # (B,) int64

    @classmethod
    def from_features(
        cls, batch: FeatureBatch, text_table: torch.Tensor, device: torch.device
    ) -> TemporalInput:
        return cls(
            item=torch.from_numpy(batch.item).to(device),
            action=torch.from_numpy(batch.action).to(device),
            numeric=torch.from_numpy(batch.numeric).to(device),
            text_index=torch.from_numpy(batch.text_index).to(device),
            text_table=text_table.to(device),
            lengths=torch.from_numpy(batch.lengths).to(device),
        )


@dataclass
class TemporalOutput:
    """Head outputs; leading dims are (B,) at the scored event or (B, T) over all positions."""

    item_logits: torch.Tensor  # (..., n_items), PAD and OOV set to -inf; (..., C) over candidates
    action_logits: torch.Tensor  # (..., n_actions), PAD and OOV set to -inf
    risk_logit: torch.Tensor  # (...,)
    log_time_to_next: torch.Tensor  # (...,) predicted log1p seconds to the next event
    item_query: torch.Tensor | None = None  # (..., d) the vector item logits are dot products with


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); with last (B,) only the state at position last is computed: (B, 1, d)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # (B, T, d) each
        mask = None
        if last is not None:
            rows = torch.arange(b, device=x.device)
            x, q = x[rows, last].unsqueeze(1), q[rows, last].unsqueeze(1)  # (B, 1, d)
            mask = (torch.arange(t, device=x.device) <= last[:, None])[:, None, None, :]  # (B, 1, 1, T)
        q = q.view(b, -1, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, Tq, d/H)
        k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (k, v))
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Tq, d/H)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, -1, d))
        return x + self.mlp(self.ln2(x))


def _scale_buffers(scale: list[list[float]] | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) mean and std tensors of a [mean, std] pair; identity when None."""
    mean, std = scale if scale is not None else ([0.0] * n, [1.0] * n)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class TemporalModel(nn.Module):
    """Event embeddings -> causal sequence model -> (+ aggregates) -> task heads."""

    numeric_mean: torch.Tensor
    numeric_std: torch.Tensor
    aggregate_mean: torch.Tensor
    aggregate_std: torch.Tensor
    item_text: torch.Tensor
    transition_indptr: torch.Tensor
    transition_items: torch.Tensor
    transition_log_count: torch.Tensor

    def __init__(self, config: TemporalConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        # standardisation from the config, not the weights: older checkpoints load as before
        for name, scale, n in (
            ("numeric", config.numeric_scale, config.n_numeric),
            ("aggregate", config.aggregate_scale, config.n_aggregates),
        ):
            mean, std = _scale_buffers(scale, n)
            self.register_buffer(f"{name}_mean", mean, persistent=False)
            self.register_buffer(f"{name}_std", std, persistent=False)
        self.item_emb = nn.Embedding(config.n_items, d, padding_idx=PAD)
        self.action_emb = nn.Embedding(config.n_actions, d, padding_idx=PAD)
        self.numeric_proj = nn.Linear(config.n_numeric, d)
        self.text_proj = nn.Linear(config.text_dim, d) if config.use_text else None
        self.no_text = nn.Parameter(torch.zeros(d)) if config.use_text else None
        self.in_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        if config.kind == "transformer":
            self.pos_emb: nn.Embedding | None = nn.Embedding(config.max_len, d)
            self.blocks: nn.ModuleList | None = nn.ModuleList(
                CausalBlock(d, config.n_heads, config.dropout) for _ in range(config.n_layers)
            )
            self.gru: nn.GRU | None = None
        else:
            self.pos_emb, self.blocks = None, None
            dropout = config.dropout if config.n_layers > 1 else 0.0  # GRU drops between layers only
            self.gru = nn.GRU(d, d, config.n_layers, batch_first=True, dropout=dropout)
        self.out_norm = nn.LayerNorm(d)
        self.agg_proj = nn.Sequential(nn.Linear(config.n_aggregates, d), nn.GELU(), nn.Linear(d, d))
        self.item_out = nn.Linear(d, d)
        # text item vectors: each catalogue item's text embedding (zeros without text), saved with the weights
        self.item_text_proj = nn.Linear(config.text_dim, d) if "text" in config.item_vectors else None
        if self.item_text_proj is not None:
            self.register_buffer("item_text", torch.zeros(config.n_items, config.text_dim))
        if config.n_transitions:  # CSR by last item: the items that followed it in training, log1p(count)
            self.register_buffer("transition_indptr", torch.zeros(config.n_items + 1, dtype=torch.int64))
            self.register_buffer("transition_items", torch.zeros(config.n_transitions, dtype=torch.int64))
            self.register_buffer("transition_log_count", torch.zeros(config.n_transitions))
        self.action_head = nn.Linear(d, config.n_actions)
        self.risk_head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.time_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.apply(self._init)
        nn.init.zeros_(self.numeric_proj.bias)  # a constant offset of every event would swamp the ids
        if self.text_proj is not None:
            nn.init.zeros_(self.text_proj.bias)
        if config.item_init_std is not None:  # None: the default std 0.02 of _init
            nn.init.normal_(self.item_emb.weight, std=config.item_init_std)
            self.item_emb.weight.data[PAD].zero_()

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def item_matrix(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(C, d) the vectors next-item logits are dot products with: of items `ids` (C,), else of all."""
        vectors = None
        if "ids" in self.config.item_vectors:
            vectors = self.item_emb.weight if ids is None else self.item_emb(ids)
            drop = self.config.item_id_dropout
            if self.training and drop > 0 and self.item_text_proj is not None:
                keep = torch.rand(len(vectors), 1, device=vectors.device) >= drop  # (C, 1)
                vectors = vectors * keep.to(vectors.dtype) / (1.0 - drop)
        if self.item_text_proj is not None:
            text = self.item_text_proj(self.item_text if ids is None else self.item_text[ids])
            vectors = text if vectors is None else vectors + text
        assert vectors is not None  # item_vectors names ids, text or both
        return vectors

    def text_item_vectors(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, d) item vectors of items the model never trained on, from their text embeddings (N, text_dim):
        what the Scorer appends to its catalogue for an item first seen in the stream."""
        if self.item_text_proj is None:
            raise ValueError("this model's item vectors are ids only: it cannot rank an item from its text")
        return self.item_text_proj(embeddings.to(self.item_text.dtype))

    def set_transitions(self, indptr: np.ndarray, items: np.ndarray, log_count: np.ndarray) -> None:
        """Store the transition counts (models.training.batching.transition_counts) the prior reads."""
        with torch.no_grad():
            self.transition_indptr.copy_(torch.from_numpy(indptr))
            self.transition_items.copy_(torch.from_numpy(items))
            self.transition_log_count.copy_(torch.from_numpy(log_count))

    def transition_prior(self, last_item: torch.Tensor) -> torch.Tensor:
        """(B, n_items) log1p of the training counts of each item following last_item (B,)."""
        start, end = self.transition_indptr[last_item], self.transition_indptr[last_item + 1]
        counts = end - start  # (B,)
        rows = torch.repeat_interleave(torch.arange(len(last_item), device=last_item.device), counts)
        offsets = torch.arange(int(counts.sum()), device=last_item.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        flat = torch.repeat_interleave(start, counts) + offsets
        prior = torch.zeros(len(last_item), self.config.n_items, device=last_item.device)
        prior[rows, self.transition_items[flat]] = self.transition_log_count[flat]
        return prior

    def embed(self, inp: TemporalInput) -> torch.Tensor:
        """(B, T, d) per-event input representations."""
        numeric = (inp.numeric - self.numeric_mean) / self.numeric_std  # (B, T, F)
        x = self.action_emb(inp.action) + self.numeric_proj(numeric)
        if self.config.use_item_ids:
            x = x + self.config.item_input_scale * self.item_emb(inp.item)
        if self.text_proj is not None and self.no_text is not None:
            table = self.text_proj(inp.text_table)  # (U, d): project distinct texts once
            has_text = (inp.text_index >= 0).unsqueeze(-1)  # (B, T, 1)
            projected = table[inp.text_index.clamp_min(0)] if len(table) else torch.zeros_like(x)
            x = x + self.config.text_input_scale * torch.where(has_text, projected, self.no_text)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(x.shape[1], device=x.device))  # (T, d) broadcast
        return self.drop(self.in_norm(x))

    def encode(self, inp: TemporalInput) -> torch.Tensor:
        """(B, T, d) causal sequence states: position t sees events 0..t only."""
        x = self.embed(inp)
        if self.blocks is not None:
            for block in self.blocks:
                x = block(x)
        elif self.gru is not None:
            x, _ = self.gru(x)
        return self.out_norm(x)

    def heads(
        self, h: torch.Tensor, aggregates: torch.Tensor, item_candidates: torch.Tensor | None = None
    ) -> TemporalOutput:
        """Task heads on states h (..., d) joined with the aggregates (..., A) of the same events.

        With item_candidates (C,) the item logits are over those ids only (sampled softmax), else
        over the whole catalogue with PAD and OOV blocked.
        """
        aggregates = aggregates[..., : self.config.n_aggregates]
        z = h + self.agg_proj((aggregates - self.aggregate_mean) / self.aggregate_std)  # (..., d)
        query = self.item_out(z)  # (..., d)
        action_logits = self.action_head(z)  # (..., n_actions)
        blocked = torch.full_like(action_logits[..., :2], float("-inf"))
        if item_candidates is None:
            item_logits = torch.cat([blocked, query @ self.item_matrix()[2:].T], dim=-1)  # (..., n_items)
        else:
            item_logits = query @ self.item_matrix(item_candidates).T  # (..., C)
        return TemporalOutput(
            item_logits=item_logits,
            action_logits=torch.cat([blocked, action_logits[..., 2:]], dim=-1),
            risk_logit=self.risk_head(torch.cat([z, h], dim=-1)).squeeze(-1),
            log_time_to_next=self.time_head(z).squeeze(-1),
            item_query=query,
        )

    def encode_last(self, inp: TemporalInput) -> torch.Tensor:
        """(B, d) state at each window's last real event; the last block computes only that position."""
        last = (inp.lengths - 1).clamp_min(0)  # (B,)
        if self.blocks is None:
            return self.encode(inp)[torch.arange(len(last), device=last.device), last]
        x = self.embed(inp)  # (B, T, d)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.out_norm(self.blocks[-1](x, last).squeeze(1))

    def forward(self, inp: TemporalInput, aggregates: torch.Tensor) -> TemporalOutput:
        """Outputs at each window's last real event; aggregates (B, A) belong to that event."""
        out = self.heads(self.encode_last(inp), aggregates)
        if self.config.n_transitions and self.config.transition_weight:
            rows = torch.arange(len(inp.lengths), device=inp.item.device)
            last_item = inp.item[rows, (inp.lengths - 1).clamp_min(0)]  # (B,)
            prior = self.transition_prior(last_item).to(out.item_logits.dtype)
            out.item_logits = out.item_logits + self.config.transition_weight * prior
        return out
