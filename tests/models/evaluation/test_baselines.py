"""Baselines on toy data: hand-checkable count models, tiny sequence models that learn, LightGBM."""

import numpy as np
import pandas as pd
import pytest
import torch

from models import metrics
from models.data.datasets import EventLog
from models.evaluation import baselines as bl
from models.features.aggregates import AGGREGATE_FEATURES


def _log(sequences: dict[str, list[str]]) -> EventLog:
    records, split = [], {}
    for user, items in sequences.items():
        for pos, item in enumerate(items):
            event_id = f"{user}:{pos}"
            records.append({"event_id": event_id, "user_id": user, "item_id": item, "ts_ms": pos})
            split[event_id] = "test" if pos == len(items) - 1 else "val" if pos == len(items) - 2 else "train"
    return EventLog("toy", records, None, None, False, split)


@pytest.fixture
def toy() -> bl.LooData:
    # items a..d -> indices 1..4; training parts: [a b c], [a b d], [c b]
    return bl.loo_data(
        _log({"u1": ["a", "b", "c", "d", "a"], "u2": ["a", "b", "d", "c", "b"], "u3": ["c", "b", "a", "d"]})
    )


def test_loo_data_splits_and_indices(toy: bl.LooData) -> None:
    assert toy.items == ["a", "b", "c", "d"]
    assert [s.tolist() for s in toy.train] == [[1, 2, 3], [1, 2, 4], [3, 2]]
    assert toy.val_target.tolist() == [4, 3, 1] and toy.test_target.tolist() == [1, 2, 4]
    assert toy.test_input[2].tolist() == [3, 2, 1]


def test_most_popular_ranks_by_training_counts(toy: bl.LooData) -> None:
    pop = bl.MostPopular().fit(toy)
    assert pop.counts.tolist() == [0, 2, 3, 2, 1]
    # full ranking with history masked: u1 history {a,b,c}: only d is left -> rank 1
    # u3 history {c,b}: a (2) ahead of d (1) -> target a rank 1
    ranks = bl.next_item_ranks(pop, toy.val_input, toy.val_target, toy.n_items)
    assert ranks.tolist() == [1, 1, 1]
    scores = pop([np.array([1])])
    assert np.argsort(-scores[0], kind="stable").tolist()[:2] == [2, 1]


def test_markov_follows_transitions_and_backs_off_to_popularity(toy: bl.LooData) -> None:
    markov = bl.Markov().fit(toy)
    # transitions: a->b (2), b->c (1), b->d (1), c->b (1)
    scores = markov([np.array([1]), np.array([2]), np.array([4])])
    assert int(np.argmax(scores[0])) == 2  # after a: b
    assert scores[1, 3] > scores[1, 1] and scores[1, 4] > scores[1, 1]  # after b: c and d before a
    assert scores[1, 3] > scores[1, 4]  # c ties d on transitions, wins on popularity (2 > 1)
    assert np.argsort(-scores[2], kind="stable").tolist()[:4] == [
        2,
        1,
        3,
        4,
    ]  # d never seen first: popularity


def test_sampled_ranks_exclude_history() -> None:
    # items 1..12 scored by their index; history 1..9 and target 10 leave only 11 and 12 as negatives
    ranks = bl.next_item_ranks(
        lambda h: np.tile(np.arange(13.0), (len(h), 1)), [np.arange(1, 10)], np.array([10]), 12, n_negatives=2
    )
    assert ranks.tolist() == [3]
    with pytest.raises(ValueError):
        bl.next_item_ranks(
            lambda h: np.zeros((len(h), 13)), [np.arange(1, 10)], np.array([10]), 12, n_negatives=3
        )


@pytest.mark.parametrize("arch", ["sasrec", "gru"])
def test_sequence_models_learn_a_deterministic_chain(arch: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    # item k is always followed by item k + 1; each user walks 12 steps from a random start (no repeats)
    sequences = {
        f"u{i}": [f"{k:02d}" for k in range(start, start + 12)]
        for i, start in enumerate(rng.integers(0, 28, 64))
    }
    data = bl.loo_data(_log(sequences))
    config = bl.SeqRecConfig(
        arch=arch,
        n_items=data.n_items,
        max_len=10,
        d_model=16,
        dropout=0.0,
        lr=1e-2,
        max_epochs=30,
        eval_every=10,
        batch_size=16,
    )
    model, history = bl.train_seqrec(data, config, log=lambda _: None)
    assert history.loss[-1] < 0.5 * history.loss[0]
    ranks = bl.next_item_ranks(bl.seqrec_scorer(model), data.test_input, data.test_target, data.n_items)
    assert metrics.hit_rate(ranks, 1) > 0.9


def test_lightgbm_separates_a_toy_problem() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(rng.normal(size=(n, len(bl.FRAUD_FEATURES))), columns=list(bl.FRAUD_FEATURES))
    frame["label"] = (frame["TX_AMOUNT"] + frame[AGGREGATE_FEATURES[-1]] > 1.0).astype(int)
    frame["day"] = np.arange(n) % 5
    frame["customer"] = np.arange(n) % 300
    model = bl.fit_lightgbm(frame.iloc[:1500], {"n_estimators": 50, "num_leaves": 7})
    test = frame.iloc[1500:]
    report = bl.fraud_report(test, model.predict_proba(test[list(bl.FRAUD_FEATURES)])[:, 1])
    assert report["ROC-AUC"] > 0.9 and report["AP"] > 0.8


def test_fraud_frame_night_weekend_and_aggregates() -> None:
    # 2018-04-07 is a Saturday; 03:00 UTC is night (hour <= 6), 12:00 is not
    ts = [pd.Timestamp("2018-04-07 03:00").value // 10**6, pd.Timestamp("2018-04-09 12:00").value // 10**6]
    records = [
        {"event_id": str(i), "user_id": "c", "item_id": "t", "ts_ms": t, "amount": 10.0 * (i + 1)}
        for i, t in enumerate(ts)
    ]
    aggregates = {str(i): dict.fromkeys(AGGREGATE_FEATURES, float(i)) for i in range(2)}
    log = EventLog("tx", records, {"0": 1, "1": 0}, aggregates, False, None)
    frame = bl.fraud_frame(log)
    assert frame["TX_DURING_WEEKEND"].tolist() == [1.0, 0.0]
    assert frame["TX_DURING_NIGHT"].tolist() == [1.0, 0.0]
    assert frame["TX_AMOUNT"].tolist() == [10.0, 20.0] and frame["label"].tolist() == [1, 0]
    assert frame.loc["1", "terminal_risk_30d"] == 1.0 and frame["day"].tolist() == [17628, 17630]
