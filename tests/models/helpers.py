"""Data builders shared by several models tests: a rare-risk transaction log and a toy next-item batch."""

from __future__ import annotations

import numpy as np
import torch

from models.features.aggregates import AGGREGATE_FEATURES
from models.features.featurize import NUMERIC_FEATURES
from models.model.temporal import TemporalInput
from models.training import train_config

HOUR_MS = 3_600_000
RISK_CONFIG = train_config.TrainConfig(
    d_model=16,
    n_layers=1,
    max_len=10,
    dropout=0.0,
    batch_size=64,
    lr=3e-3,
    max_steps=100,
    warmup_steps=10,
    max_seconds=60.0,
    eval_every=50,
    sampling="labelled",
    use_text=False,
    loss_weights={"item": 0.0, "action": 0.0, "risk": 1.0, "time": 0.0},
)


def rare_risk_log(
    n_users: int = 90, per_user: int = 40, seed: int = 0
) -> tuple[list[dict], dict[str, int], dict[str, dict[str, float]]]:
    """Transactions at 3,000 random terminals, aggregates at the fraud data's scales (counts and amounts
    ~40, terminal fraud rates ~0.01); fraud (~3 %) iff the event's terminal_risk_7d > 0.06."""
    rng = np.random.default_rng(seed)
    records, labels, aggregates = [], {}, {}
    for u in range(n_users):
        for k in range(per_user):
            event_id = f"{u}:{k}"
            records.append(
                {
                    "event_id": event_id,
                    "kind": "transaction",
                    "user_id": f"u{u}",
                    "ts_ms": 1_530_000_000_000 + k * HOUR_MS + u,
                    "item_id": f"t{rng.integers(3000)}",
                    "action": "transaction",
                    "amount": float(rng.gamma(2.0, 30.0)),
                    "value": None,
                    "title": None,
                    "category": None,
                }
            )
            aggs = {name: float(rng.gamma(4.0, 10.0)) for name in AGGREGATE_FEATURES}  # counts, amounts
            aggs |= {name: float(rng.beta(0.3, 30.0)) for name in AGGREGATE_FEATURES if "risk" in name}
            aggregates[event_id] = aggs
            labels[event_id] = int(aggs["terminal_risk_7d"] > 0.06)
    return records, labels, aggregates


def user_ids(records: list[dict], users: range) -> set[str]:
    return {r["event_id"] for r in records if int(r["user_id"][1:]) in users}


K, T = 12, 10  # toy catalogue size (+2 for PAD/OOV) and sequence length


def toy_batch(
    batch_size: int, generator: torch.Generator, text_dim: int = 8
) -> tuple[TemporalInput, torch.Tensor]:
    """Sequences where the next item is always (item + 1) mod K: inputs and per-position targets."""
    first = torch.randint(0, K, (batch_size, 1), generator=generator)
    items = (first + torch.arange(T + 1)) % K + 2  # (B, T+1)
    inp = TemporalInput(
        item=items[:, :T],
        action=torch.full((batch_size, T), 2),
        numeric=torch.zeros(batch_size, T, len(NUMERIC_FEATURES)),
        text_index=(items[:, :T] - 2) % 3 - 1,  # -1 (no text), 0 or 1
        text_table=torch.randn(2, text_dim, generator=generator),
        lengths=torch.full((batch_size,), T),
    )
    return inp, items[:, 1:]
