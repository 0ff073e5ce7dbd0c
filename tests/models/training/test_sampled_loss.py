"""Sampled softmax with logQ correction (item_loss="sampled"): exactness, accidental hits, learning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from models.features.featurize import MODEL_AGGREGATES
from models.model.temporal import TemporalConfig, TemporalModel
from models.training import batching, losses, train_config
from tests.models.helpers import K, T, toy_batch


def test_every_item_drawn_once_with_a_constant_correction_is_the_full_softmax() -> None:
    generator = torch.Generator().manual_seed(0)
    weight, query = torch.randn(10, 4, generator=generator), torch.randn(6, 4, generator=generator)
    target = torch.tensor([2, 3, 5, 9, 9, 4])
    every_real_item = torch.arange(2, 10)  # PAD and OOV are never drawn
    loss = losses.sampled_item_loss(query, weight, target, every_real_item, torch.full((10,), 1.7))
    full = F.cross_entropy((query @ weight.T)[:, 2:], target - 2)
    torch.testing.assert_close(loss, full)


def test_negatives_equal_to_the_target_are_masked() -> None:
    generator = torch.Generator().manual_seed(1)
    weight, query = torch.randn(8, 4, generator=generator), torch.randn(3, 4, generator=generator)
    target, drawn, log_expected = torch.tensor([2, 3, 4]), torch.tensor([2, 3, 4, 5, 6]), torch.zeros(8)
    for row in range(3):  # drawing a row's own target as a negative changes nothing for that row
        others = drawn[drawn != target[row]]
        one = slice(row, row + 1)
        torch.testing.assert_close(
            losses.sampled_item_loss(query[one], weight, target[one], drawn, log_expected),
            losses.sampled_item_loss(query[one], weight, target[one], others, log_expected),
        )


def test_negative_sampling_probabilities_follow_training_frequency() -> None:
    next_item = np.array([2, 2, 2, 2, 3, batching.IGNORE, 5, 5])  # item 4 never a target
    probs = batching.negative_sampling_probs(next_item, n_items=6).numpy()
    assert probs[0] == probs[1] == 0.0
    assert abs(probs.sum() - 1.0) < 1e-6
    assert probs[2] > probs[5] > probs[3] == probs[4] > 0.0  # 4**.75 > 2**.75 > 1 (unseen floored at 1)
    np.testing.assert_allclose(probs[2] / probs[5], 2.0**0.75, rtol=1e-5)


def test_model_trained_with_the_sampled_loss_learns_next_item() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model_config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=32, n_layers=1, n_heads=2, max_len=T, dropout=0.0, use_text=False, item_input_scale=32**0.5)  # fmt: skip
    model = TemporalModel(model_config)
    config = replace(
        train_config.TrainConfig(),
        item_loss="sampled",
        sampled_negatives=4,  # a third of the catalogue per step
        loss_weights={"item": 1.0, "action": 0.0, "risk": 0.0, "time": 0.0},
    )
    probs = batching.negative_sampling_probs(np.arange(2, K + 2).repeat(3), K + 2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    item_losses = []
    for _ in range(120):
        inp, target = toy_batch(32, generator)
        batch = batching.Batch(
            inp=inp,
            aggregates=torch.zeros(32, T, len(MODEL_AGGREGATES)),
            mask=torch.ones(32, T, dtype=torch.bool),
            targets={
                "item": target,
                "action": torch.full((32, T), batching.IGNORE),
                "risk": torch.full((32, T), float("nan")),
                "time": torch.full((32, T), float("nan")),
            },
        )
        loss, parts = losses.multitask_loss(model, model.encode(inp), batch, config, probs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        item_losses.append(parts["item"])
    inp, target = toy_batch(256, generator)
    with torch.inference_mode():
        out = model.eval()(inp, torch.zeros(256, len(MODEL_AGGREGATES)))
    accuracy = (out.item_logits.argmax(-1) == target[:, -1]).float().mean().item()
    assert item_losses[-1] < 0.5 * item_losses[0]
    assert accuracy > 0.8  # chance is 1/12; scored over the full catalogue, as served


def test_full_softmax_loss_equals_cross_entropy_over_the_served_logits() -> None:
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    model_config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=16, n_layers=1, n_heads=2, max_len=T, dropout=0.0, use_text=False)  # fmt: skip
    model = TemporalModel(model_config).eval()
    inp, target = toy_batch(8, generator)
    mask = torch.rand(8, T, generator=generator) > 0.2
    target = torch.where(torch.rand(8, T, generator=generator) > 0.3, target, batching.IGNORE)  # some unknown
    config = replace(
        train_config.TrainConfig(), loss_weights={"item": 1.0, "action": 0.0, "risk": 0.0, "time": 0.0}
    )
    batch = batching.Batch(
        inp=inp,
        aggregates=torch.zeros(8, T, len(MODEL_AGGREGATES)),
        mask=mask,
        targets={
            "item": target,
            "action": torch.full((8, T), batching.IGNORE),
            "risk": torch.full((8, T), float("nan")),
            "time": torch.full((8, T), float("nan")),
        },
    )
    h = model.encode(inp)
    _, parts = losses.multitask_loss(model, h, batch, config)
    served = model.heads(h, torch.zeros(8, T, len(MODEL_AGGREGATES))).item_logits  # PAD and OOV at -inf
    keep = mask & (target != batching.IGNORE)
    assert 0 < keep.sum() < mask.sum()
    expected = F.cross_entropy(served[keep], target[keep])
    assert abs(parts["item"] - expected.item()) < 1e-5
