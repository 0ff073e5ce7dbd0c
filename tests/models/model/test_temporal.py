"""Temporal head: output shapes, causality, and learning a toy next-item signal (transformer and GRU)."""

from __future__ import annotations

import pytest
import torch

from models.features.featurize import DERIVED_FEATURES, MODEL_AGGREGATES, NUMERIC_FEATURES
from models.model.temporal import TemporalConfig, TemporalModel
from tests.models.helpers import K, T, toy_batch


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_tiny_model_learns_next_item(kind: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=32, n_layers=1, n_heads=2, max_len=T, dropout=0.0, kind=kind, text_dim=8)  # fmt: skip
    model = TemporalModel(config)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    aggregates = torch.zeros(32, T, len(MODEL_AGGREGATES))
    losses = []
    for _ in range(150):
        inp, target = toy_batch(32, generator)
        out = model.heads(model.encode(inp), aggregates)
        loss = torch.nn.functional.cross_entropy(out.item_logits.reshape(-1, K + 2), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    inp, target = toy_batch(256, generator)
    with torch.inference_mode():
        out = model.eval()(inp, aggregates[:1, 0].expand(256, -1))
    accuracy = (out.item_logits.argmax(-1) == target[:, -1]).float().mean().item()
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.8  # chance is 1/12


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_shapes_and_causality(kind: str) -> None:
    torch.manual_seed(0)
    config = TemporalConfig(n_items=K + 2, n_actions=5, d_model=16, n_layers=2, n_heads=2, max_len=T, kind=kind, text_dim=8)  # fmt: skip
    model = TemporalModel(config).eval()
    inp, _ = toy_batch(4, torch.Generator().manual_seed(1))
    h = model.encode(inp)
    assert h.shape == (4, T, 16)
    out = model(inp, torch.zeros(4, len(MODEL_AGGREGATES)))
    assert out.item_logits.shape == (4, K + 2) and out.action_logits.shape == (4, 5)
    assert out.risk_logit.shape == (4,) and out.log_time_to_next.shape == (4,)
    assert torch.isinf(out.item_logits[:, :2]).all() and torch.isinf(out.action_logits[:, :2]).all()
    inp.item[:, 6:] = 2  # changing later events leaves earlier states untouched
    torch.testing.assert_close(model.encode(inp)[:, :6], h[:, :6])


def test_sampled_candidates_score_only_those_items() -> None:
    config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=16, n_layers=1, max_len=T, text_dim=8)
    model = TemporalModel(config).eval()
    h = torch.randn(5, 16)
    full = model.heads(h, torch.zeros(5, len(MODEL_AGGREGATES)))
    candidates = torch.tensor([3, 7, 9])
    sampled = model.heads(h, torch.zeros(5, len(MODEL_AGGREGATES)), candidates)
    torch.testing.assert_close(sampled.item_logits, full.item_logits[:, candidates])


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_last_position_path_matches_full_encoding(kind: str) -> None:
    torch.manual_seed(0)
    config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=16, n_layers=2, n_heads=2, max_len=T, kind=kind, text_dim=8)  # fmt: skip
    model = TemporalModel(config).eval()
    inp, _ = toy_batch(6, torch.Generator().manual_seed(2))
    inp.lengths = torch.tensor([1, 3, 10, 7, 2, 10])
    full = model.encode(inp)[torch.arange(6), inp.lengths - 1]  # (B, d)
    torch.testing.assert_close(model.encode_last(inp), full, atol=1e-5, rtol=1e-5)


def test_without_item_ids_the_outputs_ignore_them() -> None:
    torch.manual_seed(0)
    config = TemporalConfig(n_items=K + 2, n_actions=3, d_model=16, n_layers=1, max_len=T, text_dim=8, use_item_ids=False)  # fmt: skip
    model = TemporalModel(config).eval()
    inp, _ = toy_batch(4, torch.Generator().manual_seed(3))
    aggregates = torch.randn(4, len(MODEL_AGGREGATES))
    before = model(inp, aggregates).risk_logit
    inp.item = (inp.item + 5) % K + 2
    torch.testing.assert_close(model(inp, aggregates).risk_logit, before)


def test_input_scale_standardises_numerics_and_aggregates() -> None:
    torch.manual_seed(0)
    n_num, n_agg = len(NUMERIC_FEATURES), len(MODEL_AGGREGATES)
    num_mean, num_std = torch.rand(n_num), torch.rand(n_num) + 0.5
    agg_mean, agg_std = torch.rand(n_agg) * 4, torch.rand(n_agg) * 3 + 0.1
    base = dict(n_items=K + 2, n_actions=3, d_model=16, n_layers=1, max_len=T, text_dim=8, dropout=0.0)
    plain = TemporalModel(TemporalConfig(**base)).eval()
    scaled = TemporalModel(
        TemporalConfig(
            **base,
            numeric_scale=[num_mean.tolist(), num_std.tolist()],
            aggregate_scale=[agg_mean.tolist(), agg_std.tolist()],
        )
    ).eval()
    scaled.load_state_dict(plain.state_dict())  # the scales are config, not weights
    inp, _ = toy_batch(4, torch.Generator().manual_seed(4))
    inp.numeric = torch.randn(4, T, n_num) * 3
    aggregates = torch.rand(4, n_agg) * 10
    out = scaled(inp, aggregates)
    inp.numeric = (inp.numeric - num_mean) / num_std
    torch.testing.assert_close(out.risk_logit, plain(inp, (aggregates - agg_mean) / agg_std).risk_logit)


def _item_share_of_input(config: TemporalConfig, generator: torch.Generator) -> float:
    """How much of the normalised per-event input varies with the item, when nothing else varies."""
    model = TemporalModel(config).eval()
    inp, _ = toy_batch(64, generator)
    inp.text_index = torch.full_like(inp.text_index, -1)
    inp.numeric = torch.zeros_like(inp.numeric)  # a constant feature, standardised
    with torch.inference_mode():
        x = model.embed(inp)  # (B, T, d)
    at_pos0 = x[:, 0]  # same position, action and numerics; only the item differs
    return float((at_pos0 - at_pos0.mean(0)).norm(dim=-1).mean() / at_pos0.norm(dim=-1).mean())


def test_scaled_item_embeddings_dominate_constant_inputs_at_initialisation() -> None:
    """With the SASRec scale (d**0.5) the item accounts for most of each input; unscaled, constant
    features drowned it and the trained model sat at the popularity baseline for hundreds of steps."""
    torch.manual_seed(0)
    base = dict(n_items=K + 2, n_actions=3, d_model=64, n_layers=1, n_heads=2, max_len=T, text_dim=8)
    unscaled = _item_share_of_input(TemporalConfig(**base), torch.Generator().manual_seed(0))
    scaled = _item_share_of_input(
        TemporalConfig(**base, item_input_scale=64**0.5), torch.Generator().manual_seed(0)
    )
    assert scaled > 0.9
    assert unscaled < 0.7


def test_a_model_of_the_12_aggregates_ignores_the_appended_ratios() -> None:
    """Checkpoints trained before the derived ratios (n_aggregates=12) score as they did."""
    torch.manual_seed(0)
    n_old = len(MODEL_AGGREGATES) - len(DERIVED_FEATURES)
    model = TemporalModel(TemporalConfig(n_items=K + 2, n_actions=3, d_model=16, n_layers=1, n_heads=2, max_len=T, use_text=False, n_aggregates=n_old)).eval()  # fmt: skip
    inp, _ = toy_batch(4, torch.Generator().manual_seed(0))
    aggregates = torch.randn(4, len(MODEL_AGGREGATES))
    with torch.inference_mode():
        old_width, new_width = model(inp, aggregates[:, :n_old]), model(inp, aggregates)
    torch.testing.assert_close(old_width.risk_logit, new_width.risk_logit)
    torch.testing.assert_close(old_width.item_logits, new_width.item_logits)
