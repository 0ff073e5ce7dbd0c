"""Risk training on rare positives: a label set by one aggregate must be learned, then served the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.features.featurize import Vocab, Window
from models.model.temporal import TemporalConfig, TemporalModel, TemporalOutput
from models.serving.scorer import Scorer
from models.training import batching, loop, losses
from tests.models.helpers import RISK_CONFIG, rare_risk_log, user_ids


def test_model_learns_rare_aggregate_risk_and_scorer_serves_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    records, labels, aggregates = rare_risk_log()
    assert 0.01 < np.mean(list(labels.values())) < 0.04
    train_ids, val_ids = user_ids(records, range(60)), user_ids(records, range(60, 70))
    loop.fit(records, labels, aggregates, RISK_CONFIG, tmp_path / "risk", train_ids, val_ids)

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
    data = batching.build_sequences(records, labels, aggregates, vocab, {})
    model = TemporalModel(TemporalConfig(n_items=vocab.n_items, n_actions=vocab.n_actions, d_model=16, n_layers=1, max_len=10, use_text=False))  # fmt: skip
    batch = batching.make_batch(data, np.arange(5, 90, 7), 10, torch.zeros(0, 384), torch.device("cpu"))
    widths: list[int] = []
    heads = model.heads

    def spy(*args: torch.Tensor) -> TemporalOutput:
        out = heads(*args)
        widths.append(out.item_logits.shape[-1])
        return out

    monkeypatch.setattr(model, "heads", spy)
    loss, parts = losses.multitask_loss(model, model.encode(batch.inp), batch, RISK_CONFIG)
    assert widths == [0]  # a catalogue-wide softmax at every position would cost the whole step budget
    assert parts["item"] == 0.0 and loss.item() == pytest.approx(parts["risk"])
