"""Fixtures every test folder shares: the tiny checkpoint, trained once per session."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models import train
from models.training import loop, train_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset trained with text embeddings (real all-MiniLM-L6-v2 weights, a few seconds), for the
    models tests and for the scoring workers of the integration tests."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    spec, config = train_config.PRESETS["tiny"]
    records, labels = train.synthetic_records(spec)
    loop.fit(records, labels, None, replace(config, max_steps=30, eval_every=30), out)
    return out
