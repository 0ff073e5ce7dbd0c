"""Reference models in one harness: popularity, Markov, SASRec, GRU4Rec-style GRU, LightGBM for fraud."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from models import metrics
from models.data.datasets import EventLog
from models.model.device import resolve_device
from models.model.risk_trees import HANDBOOK_FEATURES, TREE_FEATURES, event_features

# a scorer maps a batch of histories (item indices, oldest first) to scores over 0..n_items (0 = padding)
ScoreFn = Callable[[list[np.ndarray]], np.ndarray]

# ---------------------------------------------------------------- leave-one-out data


@dataclass
class LooData:
    """Item-indexed leave-one-out sequences; item index 0 is padding, items are 1..n_items."""

    users: list[str]
    items: list[str]  # items[i - 1] is the item id of index i
    train: list[np.ndarray]  # per user: the sequence minus its last two items
    val_target: np.ndarray
    test_target: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def val_input(self) -> list[np.ndarray]:
        return self.train

    @property
    def test_input(self) -> list[np.ndarray]:
        """The training sequence plus the validation item (not trained on, as in SASRec/S3Rec)."""
        return [np.append(s, v) for s, v in zip(self.train, self.val_target, strict=True)]


def loo_data(log: EventLog) -> LooData:
    """Per-user train sequences and val/test targets from an EventLog's split (users without both a
    validation and a test event are left out)."""
    if log.split is None:
        raise ValueError(f"{log.name} has no leave-one-out split")
    frame = pd.DataFrame(
        {"user": [r["user_id"] for r in log.records], "item": [r["item_id"] for r in log.records]}
    )
    frame["split"] = [log.split[r["event_id"]] for r in log.records]
    codes, items = pd.factorize(frame["item"], sort=True)
    frame["idx"] = codes + 1
    train = frame[frame["split"] == "train"].groupby("user", sort=False)["idx"].agg(np.array)
    val = frame[frame["split"] == "val"].groupby("user", sort=False)["idx"].last()
    test = frame[frame["split"] == "test"].groupby("user", sort=False)["idx"].last()
    users = val.index.intersection(test.index)
    train = train.reindex(users).apply(lambda s: s if isinstance(s, np.ndarray) else np.empty(0, np.int64))
    return LooData(
        list(users), [str(i) for i in items], list(train), val[users].to_numpy(), test[users].to_numpy()
    )


def next_item_ranks(
    score_fn: ScoreFn,
    inputs: list[np.ndarray],
    targets: np.ndarray,
    n_items: int,
    n_negatives: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """Rank of each target: full ranking over items 1..n_items (history items masked, ties pessimistic),
    or among `n_negatives` uniform negatives not in the history when given."""
    ranks = []
    for start in range(0, len(inputs), batch_size):
        batch, tgt = inputs[start : start + batch_size], targets[start : start + batch_size]
        scores = np.asarray(score_fn(batch), dtype=np.float64)  # (B, n_items + 1)
        if n_negatives is None:
            scores[:, 0] = -np.inf
            rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
            scores[rows, np.concatenate(batch).astype(np.int64)] = -np.inf
            ranks.append(metrics.ranks_from_scores(scores, tgt))
        else:
            negatives = metrics.sample_negatives(n_items + 1, tgt, n_negatives, seed + start, batch, low=1)
            ranks.append(metrics.sampled_ranks(scores, tgt, negatives))
    return np.concatenate(ranks)


# ---------------------------------------------------------------- count models


class MostPopular:
    """Scores every item by its number of training interactions."""

    def fit(self, data: LooData) -> MostPopular:
        self.counts = np.bincount(np.concatenate(data.train).astype(np.int64), minlength=data.n_items + 1)
        return self

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.tile(self.counts.astype(np.float64), (len(histories), 1))


class Markov:
    """First-order transitions from the last item; popularity (scaled below one count) breaks ties and backs off."""

    def fit(self, data: LooData) -> Markov:
        pairs = [(s[:-1], s[1:]) for s in data.train if len(s) > 1]
        src = np.concatenate([p[0] for p in pairs]).astype(np.int64)
        dst = np.concatenate([p[1] for p in pairs]).astype(np.int64)
        n = data.n_items + 1
        self.transitions = sparse.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        counts = MostPopular().fit(data).counts
        self.backoff = counts / (counts.max() + 1.0)
        return self

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        last = np.array([h[-1] if len(h) else 0 for h in histories], dtype=np.int64)
        return self.transitions[last].toarray() + self.backoff


# ---------------------------------------------------------------- neural sequence models


@dataclass(frozen=True)
class SeqRecConfig:
    """Hyper-parameters of SASRec / GRU; training is cross-entropy over all items (softmax)."""

    arch: str = "sasrec"  # "sasrec" or "gru"
    n_items: int = 0
    max_len: int = 50
    d_model: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200
    time_budget_s: float = 540.0
    eval_every: int = 5
    patience: int = 4  # evaluations without validation NDCG@10 gain before stopping
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu


class SASRecBlock(nn.Module):
    """SASRec block: query layer-norm, causal attention, residual; layer-norm, point-wise FFN, residual."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(x)  # (B, T, d)
        x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.norm_ffn(x)
        return x + self.ffn(x)


class SeqRec(nn.Module):
    """ID-only next-item model; scores are dot products with the (shared) item embeddings."""

    def __init__(self, config: SeqRecConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        if config.arch == "sasrec":
            self.pos_emb = nn.Embedding(config.max_len, d)
            self.blocks = nn.ModuleList(
                SASRecBlock(d, config.n_heads, config.dropout) for _ in range(config.n_blocks)
            )
            self.norm = nn.LayerNorm(d)
        elif config.arch == "gru":
            self.gru = nn.GRU(d, d, num_layers=1, batch_first=True)
        else:
            raise ValueError(f"unknown arch {config.arch!r}")
        for name, param in self.named_parameters():  # small init keeps tied-embedding logits near 0 at start
            if param.dim() > 1:
                nn.init.xavier_normal_(param)
            elif "norm" not in name:
                nn.init.zeros_(param)
        nn.init.zeros_(self.item_emb.weight[0])

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item indices -> (B, T, d) states, position t seeing items <= t."""
        x = self.item_emb(seq)  # (B, T, d)
        if self.config.arch == "gru":
            return self.gru(self.dropout(x))[0]
        t = seq.shape[1]
        x = x * self.config.d_model**0.5 + self.pos_emb(torch.arange(t, device=seq.device))
        x = self.dropout(x) * (seq > 0).unsqueeze(-1)
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).triu(1)  # True = masked
        for block in self.blocks:
            x = block(x, causal) * (seq > 0).unsqueeze(-1)
        return self.norm(x)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) items and (B, T) bool positions -> (N, n_items + 1) next-item logits at those positions."""
        return self.hidden(seq)[mask] @ self.item_emb.weight.T


def pad_left(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Keep the last max_len items of each sequence, left-padded with 0: (B, max_len)."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        tail = s[-max_len:]
        if len(tail):
            out[i, -len(tail) :] = tail
    return out


@dataclass
class TrainHistory:
    """Per-epoch training loss and the validation NDCG@10 at each evaluation."""

    loss: list[float] = field(default_factory=list)
    val_epochs: list[int] = field(default_factory=list)
    val_ndcg10: list[float] = field(default_factory=list)
    seconds: float = 0.0


def seqrec_scorer(model: SeqRec) -> ScoreFn:
    """Score function of a trained model: logits at the last position of each history."""

    def score(histories: list[np.ndarray]) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            seq = torch.from_numpy(pad_left(histories, model.config.max_len)).to(model.item_emb.weight.device)
            return (model.hidden(seq)[:, -1] @ model.item_emb.weight.T).float().cpu().numpy()

    return score


def train_seqrec(
    data: LooData, config: SeqRecConfig, log: Callable[[str], None] = print
) -> tuple[SeqRec, TrainHistory]:
    """Train on every position of each user's training sequence (last max_len + 1 items); keep the
    weights with the best validation NDCG@10, stopping on patience, max_epochs or the time budget."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    model = SeqRec(config).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    usable = [s for s in data.train if len(s) > 1]
    windows = torch.from_numpy(pad_left(usable, config.max_len + 1)).to(device)  # (U, T + 1)
    history, best, best_state, stale = TrainHistory(), -1.0, None, 0
    started = time.monotonic()
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch_idx in np.array_split(
            rng.permutation(len(windows)), max(1, len(windows) // config.batch_size)
        ):
            batch = windows[torch.from_numpy(batch_idx).to(device)]
            inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T)
            mask = (inputs > 0) & (targets > 0)
            logits = model(inputs, mask)  # (N, n_items + 1)
            loss = nn.functional.cross_entropy(logits, targets[mask])
            optim.zero_grad()
            loss.backward()
            optim.step()
            total, count = total + loss.item() * int(mask.sum()), count + int(mask.sum())
        history.loss.append(total / max(count, 1))
        out_of_time = time.monotonic() - started > config.time_budget_s
        if epoch % config.eval_every == 0 or epoch == config.max_epochs or out_of_time:
            ranks = next_item_ranks(seqrec_scorer(model), data.val_input, data.val_target, data.n_items)
            score = metrics.ndcg(ranks, 10)
            history.val_epochs.append(epoch)
            history.val_ndcg10.append(score)
            log(f"epoch {epoch} loss {history.loss[-1]:.4f} val NDCG@10 {score:.4f}")
            if score > best:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
            if stale >= config.patience or out_of_time:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.cpu()
    history.seconds = time.monotonic() - started
    return model, history


# ---------------------------------------------------------------- fraud: gradient-boosted trees

FRAUD_FEATURES = HANDBOOK_FEATURES  # amount, weekend, night and the 12 aggregates, as the handbook


def fraud_frame(log: EventLog) -> pd.DataFrame:
    """Tree features per transaction (`models.model.risk_trees`, the served path), indexed by event_id,
    with label, customer and UTC day."""
    if log.labels is None or log.aggregates is None:
        raise ValueError(f"{log.name} needs labels and aggregates")
    ids = [r["event_id"] for r in log.records]
    features = event_features(log.records, [log.aggregates[e] for e in ids])
    frame = pd.DataFrame(features, index=ids, columns=list(TREE_FEATURES))
    frame["label"] = [log.labels[e] for e in ids]
    frame["customer"] = [r["user_id"] for r in log.records]
    frame["day"] = np.array([r["ts_ms"] for r in log.records], dtype=np.int64) // 86_400_000
    return frame


def fit_lightgbm(
    train: pd.DataFrame,
    params: Mapping[str, Any],
    seed: int = 0,
    features: Sequence[str] = FRAUD_FEATURES,
) -> lightgbm.LGBMClassifier:
    """LightGBM classifier on the given feature columns (single thread)."""
    model = lightgbm.LGBMClassifier(**params, random_state=seed, n_jobs=1, verbose=-1)
    return model.fit(train[list(features)], train["label"])


def fraud_report(test: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and card precision@100 (handbook definitions)."""
    y = test["label"].to_numpy()
    return {
        "ROC-AUC": metrics.roc_auc(y, scores),
        "AP": metrics.average_precision(y, scores),
        "CP@100": metrics.card_precision_at_k(
            test["day"].to_numpy(), test["customer"].to_numpy(), y, scores, 100
        ),
    }
