"""Shared fixtures of the models tests: a tiny trained checkpoint and small synthetic windows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models import train
from models.features import Window

TINY_SPEC = {"n_users": 12, "n_items": 40, "n_terminals": 12, "days": 12, "seed": 3}


@pytest.fixture(scope="session")
def tiny_records() -> tuple[list[dict], dict[str, int]]:
    """Contract records (event-time order) and labels of a small synthetic stream."""
    return train.synthetic_records(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset trained with text embeddings (real all-MiniLM-L6-v2 weights, a few seconds)."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    spec, config = train.PRESETS["tiny"]
    records, labels = train.synthetic_records(spec)
    train.fit(records, labels, None, replace(config, max_steps=30, eval_every=30), out)
    return out


@pytest.fixture(scope="session")
def tiny_windows(tiny_records: tuple[list[dict], dict[str, int]]) -> list[Window]:
    """Windows of growing user histories (up to 30 events), clicks and transactions mixed."""
    records, _ = tiny_records
    aggregates = train.replay_aggregates(records, {})
    by_user: dict[str, list[dict]] = {}
    windows = []
    for record in records:
        history = by_user.setdefault(record["user_id"], [])
        history.append(record)
        windows.append(Window(events=list(history[-30:]), aggregates=aggregates[record["event_id"]]))
    return windows[::7]
