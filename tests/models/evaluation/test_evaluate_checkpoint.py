"""A checkpoint's full-ranking evaluation agrees with the ranks its Scorer's top items give."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data import datasets as ds
from models.evaluation import baselines as bl
from models.evaluation import next_item
from models.serving.scorer import Scorer, Window


def leave_one_out_log(records: list[dict]) -> ds.EventLog:
    """Per user (3+ events): the last event is test, the one before validation, the rest training."""
    ordered = sorted(records, key=lambda r: (r["user_id"], r["ts_ms"]))
    by_user: dict[str, list[dict]] = {}
    for r in ordered:
        by_user.setdefault(r["user_id"], []).append(r)
    kept = [r for rs in by_user.values() if len(rs) >= 3 for r in rs]
    split = {}
    for rs in by_user.values():
        if len(rs) >= 3:
            split |= {r["event_id"]: "train" for r in rs[:-2]}
            split[rs[-2]["event_id"]], split[rs[-1]["event_id"]] = "val", "test"
    return ds.EventLog("tiny", kept, None, None, True, split)


def top_item_ranks(
    scorer: Scorer, windows: list[list[dict]], targets: list[str], catalogue: set[str]
) -> np.ndarray:
    """1-based rank of each target among the catalogue's unseen items in the Scorer's top items (0: absent)."""
    ranks = []
    for window, target, scores in zip(
        windows, targets, scorer.score([Window(events=w) for w in windows]), strict=True
    ):
        seen = {r["item_id"] for r in window}
        ranked = [item for item, _ in scores.top_items if item not in seen and item in catalogue]
        ranks.append(ranked.index(target) + 1 if target in ranked else 0)
    return np.array(ranks)


def test_full_ranking_matches_the_scorers_top_items(tiny_checkpoint: Path, tiny_records) -> None:
    records, _ = tiny_records
    clicks = [r for r in records if r["kind"] == "click"]
    log = leave_one_out_log(clicks)
    data = bl.loo_data(log)
    val, test, sampled, hours = next_item.checkpoint_next_item(str(tiny_checkpoint), log, data, 5, 0)

    scorer = Scorer.load(tiny_checkpoint, device="cpu", top_k=10_000)
    windows = {
        u: [r for r in log.records if r["user_id"] == u and log.split[r["event_id"]] == "train"]
        for u in data.users
    }
    val_target = [data.items[i - 1] for i in data.val_target]
    expected = top_item_ranks(scorer, [windows[u] for u in data.users], val_target, set(data.items))
    compared = expected > 0  # targets the checkpoint recommends
    assert compared.sum() >= 2
    np.testing.assert_array_equal(val[compared], expected[compared])
    # a target it never recommends scores -inf: ranked after every column (pessimistic ties)
    assert (val[~compared] == data.n_items + 1).all()

    assert len(test) == len(sampled) == len(hours["test"]) == len(hours["val"]) == len(data.users)
    assert (sampled >= 1).all() and (sampled <= 6).all() and (sampled <= test).all()
    assert all((h >= 0).all() for h in hours.values())


def test_training_curves_are_drawn_from_the_checkpoint_history(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert next_item.checkpoint_curves_plot({"tiny": tiny_checkpoint}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not next_item.checkpoint_curves_plot({"none": tmp_path / "missing"}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
