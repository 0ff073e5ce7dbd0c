"""Text encoder: offline load from the package, normalised 384-d embeddings, LRU cache, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.model.encoder import TextCache, TextEncoder, default_model_path


def test_default_model_loads_offline_and_embeds() -> None:
    encoder = TextEncoder(device="cpu")
    assert encoder.path == default_model_path() and encoder.dim == 384
    texts = [
        "view | Trail running shoes | Sports",
        "click | Lightweight running shoes | Sports",
        "transaction | fuel",
    ]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1
    assert (encoder.cache.hits, encoder.cache.misses) == (0, 3)
    again = encoder.encode([texts[1], texts[0]])
    np.testing.assert_array_equal(again, vectors[[1, 0]])
    assert (encoder.cache.hits, encoder.cache.misses) == (2, 3) and encoder.cache.hit_rate == 0.4


def test_wrong_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        TextEncoder(str(missing))


def test_cache_is_bounded_lru() -> None:
    cache = TextCache(max_entries=2)
    for text in ["a", "b"]:
        cache.put(text, np.zeros(2, np.float32))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", np.ones(2, np.float32))
    assert len(cache) == 2 and "b" not in cache and "a" in cache
    assert cache.get("b") is None and (cache.hits, cache.misses) == (1, 1)


def test_preloaded_texts_need_no_model(tmp_path: Path) -> None:
    encoder = TextEncoder(device="cpu")
    encoder.preload(["known"], np.ones((1, 384), np.float32))
    np.testing.assert_array_equal(encoder.encode(["known"]), np.ones((1, 384), np.float32))
    assert not encoder.is_loaded
