"""Encoder fine-tuning: the split forward equals the frozen encoder, training moves only the top layers,
and the checkpoint serves with the tuned encoder through the ordinary TextEncoder path."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import train
from models.features.featurize import Window
from models.model.encoder import TextEncoder, resolve_model_path
from models.model.text_finetune import TopLayerTuner
from models.serving import checkpoint
from models.serving.scorer import Scorer
from models.training import loop, train_config

TEXTS = [
    "rate | Toy Story (1995) | Animation, Children's, Comedy",
    "click | Walnut desk lamp | Home",
    "purchase | a rather long product title with many words in it, to pad the others | Beauty",
    "view | x",
]


@pytest.mark.parametrize("n_layers", [1, 3])
def test_the_split_forward_equals_the_frozen_encoder(n_layers: int) -> None:
    tuner = TopLayerTuner(resolve_model_path(None), TEXTS, n_layers, torch.device("cpu"))
    frozen = TextEncoder(device="cpu").encode(TEXTS)
    np.testing.assert_allclose(tuner.embed_all().numpy(), frozen, atol=1e-5)
    subset = tuner.eval()(torch.tensor([3, 1]))  # a subset is padded to its own longest text only
    np.testing.assert_allclose(subset.detach().numpy(), frozen[[3, 1]], atol=1e-5)


def test_only_the_top_layers_get_gradients() -> None:
    tuner = TopLayerTuner(resolve_model_path(None), TEXTS, 1, torch.device("cpu")).train()
    tuner(torch.tensor([0, 2])).sum().backward()
    trained = {n for n, p in tuner.model.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("encoder.layer.5.") for n in trained)


def test_more_layers_than_the_encoder_has_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="7 top layers"):
        TopLayerTuner(resolve_model_path(None), TEXTS, 7, torch.device("cpu"))


def test_a_tuned_checkpoint_serves_with_its_tuned_encoder(tmp_path: Path, tiny_windows: list[Window]) -> None:
    spec, config = train_config.PRESETS["tiny"]
    records, labels = train.synthetic_records(spec)
    tuned = replace(config, max_steps=20, eval_every=20, finetune_layers=1, encoder_lr=1e-3, device="cpu")
    loop.fit(records, labels, None, tuned, tmp_path / "tuned")

    folder = checkpoint.tuned_encoder_folder(tmp_path / "tuned")
    original = load_file(str(resolve_model_path(None) / "model.safetensors"))
    weights = load_file(str(folder / "model.safetensors"))
    changed = {k for k in weights if not torch.equal(weights[k], original[k])}
    assert changed and all(".5." in k for k in changed)  # the top layer (of 6) only

    scorer = Scorer.load(tmp_path / "tuned", device="cpu")
    assert scorer.encoder is not None and Path(scorer.encoder.name_or_path) == folder
    stored = scorer.ckpt.text_embeddings
    np.testing.assert_allclose(
        stored, TextEncoder(str(folder), device="cpu").encode(scorer.ckpt.texts), atol=1e-5
    )
    assert np.abs(stored - TextEncoder(device="cpu").encode(scorer.ckpt.texts)).max() > 1e-3

    shutil.copytree(tmp_path / "tuned", tmp_path / "copy")
    before, after = (
        scorer.score(tiny_windows),
        Scorer.load(tmp_path / "copy", device="cpu").score(tiny_windows),
    )
    assert [s.top_items for s in before] == [s.top_items for s in after]
    assert [s.risk for s in before] == [s.risk for s in after]
    assert scorer.model_version == checkpoint.model_version(tmp_path / "copy")
