"""The first-order transition prior: counts as CSR, the dense prior of a batch's last items, its weight chosen
on validation by models.train and served by the Scorer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.features.featurize import Window
from models.model.temporal import TemporalConfig, TemporalModel
from models.serving import checkpoint
from models.serving.scorer import Scorer
from models.training import loop, train_config
from models.training.batching import IGNORE, transition_counts
from models.training.validation import TRANSITION_WEIGHTS


def test_transition_counts_are_csr_by_the_first_item() -> None:
    item = np.array([2, 3, 2, 3, 2, 1, 4])
    nxt = np.array([3, 2, 3, IGNORE, 4, 2, 1])  # 1 (unknown) on either side is no transition
    indptr, items, log_count = transition_counts(item, nxt, n_items=5)
    assert indptr.tolist() == [0, 0, 0, 2, 3, 3]
    assert items.tolist() == [3, 4, 2]
    np.testing.assert_allclose(log_count, np.log1p([2, 1, 1]))


def test_the_prior_of_a_batch_is_the_dense_rows_of_its_last_items() -> None:
    model = TemporalModel(TemporalConfig(n_items=5, n_actions=3, d_model=8, use_text=False, n_transitions=3))
    model.set_transitions(*transition_counts(np.array([2, 3, 2, 2]), np.array([3, 2, 3, 4]), 5))
    prior = model.transition_prior(torch.tensor([2, 4, 3, 2]))
    expected = np.zeros((4, 5), np.float32)
    expected[0, 3], expected[0, 4], expected[2, 2], expected[3, 3], expected[3, 4] = np.log1p([2, 1, 1, 2, 1])
    np.testing.assert_allclose(prior.numpy(), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def prior_checkpoint(
    tiny_records: tuple[list[dict], dict[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    records, labels = tiny_records
    _, config = train_config.PRESETS["tiny"]
    config = replace(
        config, transition_prior=True, use_text=False, max_steps=6, eval_every=3, risk_trees=False
    )
    out = tmp_path_factory.mktemp("prior") / "ckpt"
    return out, loop.fit(records, labels, None, config, out)


def test_training_chooses_the_weight_on_validation_and_the_checkpoint_keeps_it(
    prior_checkpoint: tuple[Path, dict],
) -> None:
    out, summary = prior_checkpoint
    chosen = summary["transition_prior"]
    figures = chosen["val_item_ndcg10"]
    assert set(figures) == {str(w) for w in TRANSITION_WEIGHTS}
    assert figures[str(chosen["weight"])] == max(figures.values())
    loaded = checkpoint.load(out)
    assert loaded.config.transition_weight == chosen["weight"] and loaded.config.n_transitions > 0


def test_the_scorer_adds_the_weighted_prior_of_each_windows_last_item(
    prior_checkpoint: tuple[Path, dict], tiny_windows: list[Window]
) -> None:
    out, _ = prior_checkpoint
    scorer = Scorer.load(out, device="cpu")
    model = scorer.ckpt.model
    windows = [w for w in tiny_windows if w.events[-1]["kind"] == "click"][:6]
    model.config.transition_weight = 0.0
    without = scorer.item_scores(windows)
    model.config.transition_weight = 2.0
    with_prior = scorer.item_scores(windows)
    last = torch.from_numpy(scorer.ckpt.vocab.item_ids([w.events[-1]["item_id"] for w in windows]))
    prior = model.transition_prior(last)[:, 2:].numpy()
    finite = np.isfinite(without)
    assert prior.sum() > 0  # some last items have known successors
    np.testing.assert_allclose(with_prior[finite], (without + 2.0 * prior)[finite], rtol=1e-5, atol=1e-5)
