"""Checkpoint round trip: identical scores after load, stable model_version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.features.featurize import Vocab, Window
from models.model.temporal import TemporalConfig, TemporalModel
from models.serving import checkpoint
from models.serving.scorer import Scorer


def test_round_trip_gives_identical_scores(
    tiny_checkpoint: Path, tiny_windows: list[Window], tmp_path: Path
) -> None:
    loaded = checkpoint.load(tiny_checkpoint)
    version = checkpoint.save(
        tmp_path / "copy",
        loaded.model,
        loaded.vocab,
        loaded.encoder,
        loaded.texts,
        loaded.text_embeddings,
        loaded.extra,
        loaded.risk_trees,
    )
    assert loaded.risk_trees is not None  # the tiny preset fits trees: they round-trip too
    assert version == loaded.model_version  # same weights, config and trees -> same version
    before = Scorer.load(tiny_checkpoint, device="cpu").score(tiny_windows)
    after = Scorer.load(tmp_path / "copy", device="cpu").score(tiny_windows)
    assert before == after
    assert checkpoint.load(tmp_path / "copy").vocab == loaded.vocab


def test_model_version_tracks_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vocab = Vocab(items=["a", "b"], actions=["view"])
    model = TemporalModel(
        TemporalConfig(n_items=vocab.n_items, n_actions=vocab.n_actions, d_model=8, n_heads=1, use_text=False)
    )
    first = checkpoint.save(tmp_path / "one", model, vocab, None)
    assert first == checkpoint.save(tmp_path / "two", model, vocab, None)
    assert len(first) == 12 and first == checkpoint.model_version(tmp_path / "one")
    with torch.no_grad():
        model.item_emb.weight[2, 0] += 1.0
    assert checkpoint.save(tmp_path / "three", model, vocab, None) != first
    loaded = checkpoint.load(tmp_path / "one")
    assert loaded.encoder is None and loaded.texts == [] and loaded.text_embeddings.shape == (0, 384)
    for name, value in model.state_dict().items():
        if name != "item_emb.weight":
            np.testing.assert_array_equal(loaded.model.state_dict()[name].numpy(), value.numpy())
