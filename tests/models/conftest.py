"""Fixtures of the models tests: small synthetic records and windows (the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from models import train
from models.features.featurize import Window
from models.features.replay import replay_aggregates

TINY_SPEC = {"n_users": 12, "n_items": 40, "n_terminals": 12, "days": 12, "seed": 3}


@pytest.fixture(scope="session")
def tiny_records() -> tuple[list[dict], dict[str, int]]:
    """Contract records (event-time order) and labels of a small synthetic stream."""
    return train.synthetic_records(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_windows(tiny_records: tuple[list[dict], dict[str, int]]) -> list[Window]:
    """Windows of growing user histories (up to 30 events), clicks and transactions mixed."""
    records, _ = tiny_records
    aggregates = replay_aggregates(records, {})
    by_user: dict[str, list[dict]] = {}
    windows = []
    for record in records:
        history = by_user.setdefault(record["user_id"], [])
        history.append(record)
        windows.append(Window(events=list(history[-30:]), aggregates=aggregates[record["event_id"]]))
    return windows[::7]
