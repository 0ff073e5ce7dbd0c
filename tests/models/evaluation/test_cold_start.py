"""Cold start: held-out items, text item vectors (trained, saved, ranked online from text), the genre baseline
and the cold/warm report from the command line."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models import evaluate, train
from models.data.datasets import load_sequences
from models.evaluation import baselines, cold_start
from models.features.featurize import Window, catalogue_texts, item_text
from models.model.encoder import TextEncoder
from models.serving import checkpoint
from models.serving.scorer import Scorer
from models.training import loop, train_config

GENRES = ("Comedy", "Drama", "Horror")


def write_sequences(folder: Path, n_users: int = 40, n_items: int = 30, per_user: int = 8) -> Path:
    """A sequence file with titles and genres; user u mostly watches the genre u % 3."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        for k in range(per_user):
            genre = u % 3 if rng.random() < 0.8 else int(rng.integers(0, 3))
            item = int(rng.integers(0, n_items // 3)) * 3 + genre
            rows.append(
                {"user_id": f"u{u}", "item_id": f"m{item}", "pos": k, "title": f"Movie {item}"}
                | {"category": GENRES[item % 3]}
            )
    path = folder / "movies.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_held_out_items_are_a_seeded_share_and_only_their_training_events_move(tmp_path: Path) -> None:
    log = load_sequences(write_sequences(tmp_path))
    cold = cold_start.held_out_items(log, 0.2, seed=1)
    assert len(cold) == 6 and cold == cold_start.held_out_items(log, 0.2, seed=1)
    assert cold != cold_start.held_out_items(log, 0.2, seed=2)
    held, same = cold_start.hold_out(log, 0.2, seed=1)
    assert same == cold
    for r in log.records:
        before, after = log.require_split()[r["event_id"]], held.require_split()[r["event_id"]]
        moved = before == "train" and r["item_id"] in cold
        assert after == (cold_start.HELD_OUT if moved else before)
    data = baselines.loo_data(held)
    assert set(data.items) == {r["item_id"] for r in log.records}  # the catalogue keeps them
    trained = {data.items[i - 1] for s in data.train for i in s}
    assert not trained & cold
    with pytest.raises(ValueError):
        cold_start.held_out_items(log, 1.5)


def test_genre_popularity_ranks_the_users_genre_first_and_cold_items_by_genre_alone() -> None:
    data = baselines.LooData(
        users=["a"],
        items=["c1", "c2", "d1", "d-cold"],
        train=[np.array([1, 1, 2, 3])],  # comedies three times, a drama once
        val_target=np.array([1]),
        test_target=np.array([4]),
    )
    categories = {"c1": "Comedy", "c2": "Comedy", "d1": "Drama", "d-cold": "Drama"}
    scores = cold_start.GenrePopularity().fit(data, categories)([np.array([1, 1, 2, 3])])[0]
    assert scores[1] > scores[2] > scores[3] > scores[4] > 0  # comedy share 0.75, drama 0.25, then counts
    assert scores[3] - scores[4] < 1e-6  # the cold drama only lacks the popularity tie-break


def test_cold_warm_rows_report_each_subset() -> None:
    data = baselines.LooData(
        ["a", "b", "c"], ["x", "y"], [np.array([1])] * 3, np.array([1, 2, 2]), np.array([2, 1, 1])
    )
    rows = cold_start.cold_warm_rows("m", np.array([1, 20, 1]), np.array([1, 1, 20]), data, {"y"})
    by = {(r["split"], r["targets"]): r for r in rows}
    assert by["val", "cold"]["n"] == 2 and by["val", "cold"]["HR@10"] == 0.5
    assert by["val", "warm"]["n"] == 1 and by["val", "warm"]["NDCG@10"] == 1.0
    assert by["test", "cold"]["n"] == 1 and by["test", "cold"]["NDCG@10"] == 1.0
    assert by["test", "warm"]["HR@10"] == 0.5


@pytest.fixture(scope="module")
def text_item_checkpoint(
    tiny_records: tuple[list[dict], dict[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    records, labels = tiny_records
    _, config = train_config.PRESETS["tiny"]
    config = replace(
        config, item_vectors="text", use_item_ids=False, max_steps=6, eval_every=3, risk_trees=False
    )  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("text-items") / "ckpt"
    loop.fit(records, labels, None, config, out)
    return out


def test_text_item_vectors_are_saved_with_the_items_text_embeddings(
    text_item_checkpoint: Path, tiny_records: tuple[list[dict], dict[str, int]]
) -> None:
    loaded = checkpoint.load(text_item_checkpoint)
    assert loaded.config.item_vectors == "text"
    texts = catalogue_texts(tiny_records[0])
    item = loaded.vocab.items[0]
    expected = TextEncoder(loaded.encoder, device="cpu").encode([texts[item]])[0]
    np.testing.assert_allclose(loaded.model.item_text[2].numpy(), expected, atol=1e-5)
    assert float(loaded.model.item_text[:2].abs().sum()) == 0.0  # padding and unknown have no text


def test_an_unseen_item_is_ranked_from_its_text_as_a_known_item_of_the_same_text(
    text_item_checkpoint: Path, tiny_records: tuple[list[dict], dict[str, int]], tiny_windows: list[Window]
) -> None:
    scorer = Scorer.load(text_item_checkpoint, device="cpu", top_k=5)
    known = scorer.item_ids[3]
    text = catalogue_texts(tiny_records[0])[known]
    assert scorer.add_items({"brand-new": text, known: "ignored: already known"}) == 1
    assert scorer.add_items({"brand-new": text}) == 0 and scorer.new_items == 1
    scores = scorer.item_scores(tiny_windows[:8])
    columns = scorer.item_ids
    assert scores.shape == (8, len(columns)) and columns[-1] == "brand-new"
    np.testing.assert_allclose(scores[:, -1], scores[:, columns.index(known)], rtol=1e-5, atol=1e-5)


def test_items_ranked_from_text_get_the_checkpoints_new_item_bonus(
    text_item_checkpoint: Path,
    tiny_records: tuple[list[dict], dict[str, int]],
    tiny_windows: list[Window],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(text_item_checkpoint, folder)
    before = checkpoint.model_version(folder)
    after = checkpoint.set_new_item_bonus(folder, 1.5, {"bonus": 1.5})
    assert after != before  # the bonus is part of what the model serves
    scorer = Scorer.load(folder, device="cpu", top_k=5)
    assert scorer.new_item_bonus == 1.5 and scorer.model_version == after
    known = scorer.item_ids[3]
    scorer.add_items({"brand-new": catalogue_texts(tiny_records[0])[known]})
    scores = scorer.item_scores(tiny_windows[:8])
    new, old = scores[:, -1], scores[:, scorer.item_ids.index(known)]
    np.testing.assert_allclose(new, old + 1.5, rtol=1e-5, atol=1e-5)  # the same text, and the bonus
    scorer.new_item_bonus = -2.0  # items already added take a new bonus too
    np.testing.assert_allclose(scorer.item_scores(tiny_windows[:8])[:, -1], old - 2.0, rtol=1e-5, atol=1e-5)


def test_an_item_first_seen_in_the_stream_joins_the_catalogue(
    text_item_checkpoint: Path, tiny_windows: list[Window]
) -> None:
    scorer = Scorer.load(text_item_checkpoint, device="cpu", top_k=5)
    click = next(e for w in tiny_windows for e in w.events if e["kind"] == "click")
    new = click | {"item_id": "launched-today", "title": "Velvet lamp 9", "event_id": "x"}
    window = replace(tiny_windows[0], events=[*tiny_windows[0].events, new])
    (first,) = scorer.score([window])
    assert "launched-today" in scorer.item_ids and scorer.new_items == 1
    assert len(first.top_items) == 5
    scorer.score([window])
    assert scorer.new_items == 1  # added once
    assert item_text(new) is not None


def test_a_model_of_id_vectors_cannot_rank_an_unseen_item(tiny_checkpoint: Path) -> None:
    scorer = Scorer.load(tiny_checkpoint, device="cpu")
    before = scorer.item_ids
    assert scorer.add_items({"brand-new": "Velvet lamp 9 | home"}) == 0
    assert scorer.item_ids == before
    with pytest.raises(ValueError):
        scorer.ckpt.model.text_item_vectors(torch.zeros(1, scorer.ckpt.config.text_dim))


def test_cold_start_from_the_command_line(tmp_path: Path) -> None:
    data = write_sequences(tmp_path)
    ckpt = tmp_path / "text"
    train.main(
        ["--dataset", "sequences", "--data", str(data), "--out", str(ckpt), "--cold-items", "0.2"]
        + ["--set", "item_vectors=text", "use_item_ids=false", "max_steps=4", "eval_every=2", "d_model=16"]
    )
    loaded = checkpoint.load(ckpt)
    assert loaded.extra["held_out_items"] == {"fraction": 0.2, "seed": 0, "items": 6}
    # the new-item bonus, chosen on the validation targets (some of them held-out items), is recorded
    chosen = loaded.extra["new_item_bonus"]
    assert chosen["val_cold_targets"] > 0 and loaded.config.new_item_bonus == chosen["bonus"]
    figures = chosen["val_ndcg10"]
    assert set(figures) == {str(b) for b in cold_start.NEW_ITEM_BONUSES}
    assert figures[str(chosen["bonus"])]["all"] == max(f["all"] for f in figures.values())
    out = tmp_path / "report.md"
    argv = ["--dataset", "sequences", "--data-dir", str(data), "--negatives", "5", "--out", str(out)]
    evaluate.main([*argv, "--cold-items", "0.2", "--model", "genre_pop", str(ckpt)])
    report = out.read_text()
    assert "Cold start: 6 of 30 items held out" in report
    for model in ("genre_pop", str(ckpt)):
        for split in ("val", "test"):
            assert f"| {model} | {split} | cold |" in report and f"| {model} | {split} | warm |" in report
    with pytest.raises(ValueError, match="same --cold-items"):  # trained holding items out, evaluated without
        evaluate.main([*argv, "--model", str(ckpt)])


def test_item_id_dropout_leaves_some_items_their_text_alone_in_training_only() -> None:
    from models.model.temporal import TemporalConfig, TemporalModel

    config = TemporalConfig(n_items=400, n_actions=3, d_model=8, use_text=False, text_dim=6)
    model = TemporalModel(replace(config, item_vectors="ids+text", item_id_dropout=0.5))
    torch.manual_seed(0)
    model.item_text.copy_(torch.randn(400, 6))
    ids_part = model.item_emb.weight.detach()
    text_part = model.item_text_proj(model.item_text).detach()
    model.train()
    trained = model.item_matrix().detach()
    dropped = torch.isclose(trained, text_part, atol=1e-6).all(1)
    kept = torch.isclose(trained, 2.0 * ids_part + text_part, atol=1e-6).all(1)
    assert bool((dropped | kept)[2:].all()) and 120 < int(dropped.sum()) < 280  # about half of 400
    model.eval()
    torch.testing.assert_close(model.item_matrix().detach(), ids_part + text_part)
