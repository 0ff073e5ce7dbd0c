"""Risk training on rare positives: a label set by one aggregate must be learned, then served the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models import train
from models.aggregates import AGGREGATE_FEATURES
from models.features import Vocab, Window
from models.scorer import Scorer
from models.temporal import TemporalConfig, TemporalModel, TemporalOutput

HOUR_MS = 3_600_000
RISK_CONFIG = train.TrainConfig(
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


def test_model_learns_rare_aggregate_risk_and_scorer_serves_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    records, labels, aggregates = rare_risk_log()
    assert 0.01 < np.mean(list(labels.values())) < 0.04
    train_ids, val_ids = user_ids(records, range(60)), user_ids(records, range(60, 70))
    train.fit(records, labels, aggregates, RISK_CONFIG, tmp_path / "risk", train_ids, val_ids)

    scorer = Scorer.load(tmp_path / "risk", device="cpu")
    held_out = [r for r in records if int(r["user_id"][1:]) >= 70]  # by user, then time
    windows = [
        Window(events=held_out[max(i - 9, i - int(r["event_id"].split(":")[1])) : i + 1],
               aggregates=aggregates[r["event_id"]])
        for i, r in enumerate(held_out)
    ]  # fmt: skip  # the user's last 10 events up to and including the scored one
    risk = np.array([s.risk for s in scorer.score(windows)])
    y = np.array([labels[r["event_id"]] for r in held_out])
    assert y.sum() >= 10
    assert roc_auc_score(y, risk) > 0.9
    assert risk[y == 1].mean() > 5 * risk[y == 0].mean()


def test_unweighted_item_loss_builds_no_item_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    records, labels, aggregates = rare_risk_log(n_users=8, per_user=12)
    vocab = Vocab.build(records)
    data = train.build_sequences(records, labels, aggregates, vocab, {})
    model = TemporalModel(TemporalConfig(n_items=vocab.n_items, n_actions=vocab.n_actions, d_model=16, n_layers=1, max_len=10, use_text=False))  # fmt: skip
    batch = train.make_batch(data, np.arange(5, 90, 7), 10, torch.zeros(0, 384), torch.device("cpu"))
    widths: list[int] = []
    heads = model.heads

    def spy(*args: torch.Tensor) -> TemporalOutput:
        out = heads(*args)
        widths.append(out.item_logits.shape[-1])
        return out

    monkeypatch.setattr(model, "heads", spy)
    loss, parts = train.multitask_loss(model, model.encode(batch.inp), batch, RISK_CONFIG)
    assert widths == [0]  # a catalogue-wide softmax at every position would cost the whole step budget
    assert parts["item"] == 0.0 and loss.item() == pytest.approx(parts["risk"])
