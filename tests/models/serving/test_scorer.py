"""Scorer contract: one Scores per window, valid probabilities, batch-independent results, cached texts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.features.featurize import Window, event_text
from models.serving import checkpoint
from models.serving.scorer import Scorer, Scores


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint: Path) -> Scorer:
    return Scorer.load(tiny_checkpoint, device="cpu", top_k=5)


def test_one_valid_score_per_window(scorer: Scorer, tiny_windows: list[Window]) -> None:
    scores = scorer.score(tiny_windows)
    assert len(scores) == len(tiny_windows) and all(isinstance(s, Scores) for s in scores)
    for s in scores:
        assert 0.0 <= s.risk <= 1.0
        assert len(s.top_items) == 5
        probabilities = [p for _, p in s.top_items]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
        assert all(isinstance(item, str) and not item.startswith("<") for item, _ in s.top_items)
        assert math.isclose(sum(s.next_action.values()), 1.0, rel_tol=1e-5)
        assert set(s.next_action) == set(scorer.ckpt.vocab.actions)
        assert s.time_to_next_s >= 0.0 and s.model_version == scorer.model_version
    assert scorer.score([]) == []


def test_batch_and_single_agree(scorer: Scorer, tiny_windows: list[Window]) -> None:
    batch = scorer.score(tiny_windows[:16])
    for window, together in zip(tiny_windows[:16], batch, strict=True):
        (alone,) = scorer.score([window])
        assert alone.top_items[0][0] == together.top_items[0][0]
        assert alone.risk == pytest.approx(together.risk, abs=1e-5)
        assert alone.time_to_next_s == pytest.approx(together.time_to_next_s, rel=1e-4)
        for (_, p_a), (_, p_b) in zip(alone.top_items, together.top_items, strict=True):
            assert p_a == pytest.approx(p_b, abs=1e-5)
        assert alone.next_action == pytest.approx(together.next_action, abs=1e-5)


def test_known_texts_are_served_from_the_checkpoint_cache(
    tiny_checkpoint: Path, tiny_windows: list[Window]
) -> None:
    scorer = Scorer.load(tiny_checkpoint, device="cpu")
    assert scorer.encoder is not None and len(scorer.encoder.cache) == len(scorer.ckpt.texts) > 0
    max_len = scorer.ckpt.config.max_len
    texts = {event_text(e) for w in tiny_windows for e in w.events[-max_len:]} - {None}
    scorer.score(tiny_windows)
    cache = scorer.encoder.cache
    assert cache.misses == len(texts - set(scorer.ckpt.texts)) and cache.hits > 0
    misses = cache.misses
    scorer.score(tiny_windows)
    assert cache.misses == misses  # nothing is encoded twice


def test_item_scores_order_the_catalogue_as_the_top_items(scorer: Scorer, tiny_windows: list[Window]) -> None:
    logits = scorer.item_scores(tiny_windows[:16])
    assert logits.shape == (16, len(scorer.item_ids))
    ids = scorer.item_ids
    for row, scores in zip(logits, scorer.score(tiny_windows[:16]), strict=True):
        best = [ids[j] for j in np.argsort(-row, kind="stable")[: len(scores.top_items)]]
        assert best == [item for item, _ in scores.top_items]
    assert scorer.item_scores([]).shape == (0, len(ids))


def test_a_checkpoint_whose_item_head_was_not_trained_recommends_nothing(
    tiny_checkpoint: Path, tiny_windows: list[Window]
) -> None:
    """The fraud data's default trains risk and time to next only: its next-item head (over payment
    terminals) is untrained and must not be served as recommendations; the other heads still score."""
    ckpt = checkpoint.load(tiny_checkpoint, torch.device("cpu"))
    ckpt.extra["train_config"]["loss_weights"]["item"] = 0.0
    untrained = Scorer(ckpt, torch.device("cpu"), top_k=5)
    scores = untrained.score(tiny_windows[:8])
    assert untrained.top_k == 0 and all(s.top_items == [] for s in scores)
    assert all(
        0.0 <= s.risk <= 1.0 and math.isclose(sum(s.next_action.values()), 1.0, rel_tol=1e-5) for s in scores
    )
    # a checkpoint trained on payments alone lists no shop item: none is recommended either
    ckpt.extra["train_config"]["loss_weights"]["item"] = 1.0
    ckpt.extra["recommendable_items"] = []
    assert Scorer(ckpt, torch.device("cpu"), top_k=5).score(tiny_windows[:2])[0].top_items == []
    # and the tiny checkpoint itself, item head trained, recommends as before
    del ckpt.extra["recommendable_items"]
    assert len(Scorer(ckpt, torch.device("cpu"), top_k=5).score(tiny_windows[:2])[0].top_items) == 5
