"""Loaders on tiny files in each format: records, splits, fraud folds and the leakage guard."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data import datasets as ds

DAY_S = 86_400
T0 = pd.Timestamp("2018-04-01")


def test_load_ml1m_records_titles_synthetic_time_and_published_split(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "user_id": [2, 2, 2, 1, 1, 1, 1],
            "pos": [0, 1, 2, 0, 1, 2, 3],
            "movie_id": [10, 20, 10, 30, 10, 20, 30],
            "split": ["train", "val", "test", "train", "train", "val", "test"],
        }
    ).to_csv(tmp_path / "ml1m_sequences_loo.csv", index=False)
    pd.DataFrame(
        {"movie_id": [10, 20, 30], "title": ["A (1990)", "B (1991)", "C (1992)"], "genres": ["X", "X|Y", "Z"]}
    ).to_csv(tmp_path / "movies.csv", index=False)
    log = ds.load_ml1m(tmp_path)
    assert [r["user_id"] for r in log.records] == ["1"] * 4 + ["2"] * 3
    first = log.records[0]
    assert set(first) == set(ds.RECORD_KEYS)
    assert first == {
        "event_id": "1:0",
        "kind": "click",
        "user_id": "1",
        "ts_ms": 0,
        "item_id": "30",
        "action": "rate",
        "amount": None,
        "value": None,
        "title": "C (1992)",
        "category": "Z",
    }
    assert [r["ts_ms"] for r in log.records[:4]] == [0, 60_000, 120_000, 180_000]
    assert log.split["1:3"] == "test" and log.split["1:2"] == "val" and log.split["2:1"] == "val"
    assert log.has_text and log.synthetic_time and log.labels is None
    assert log.sequences(("train",)) == {"1": ["30", "10"], "2": ["10"]}


def test_load_beauty_ids_only(tmp_path: Path) -> None:
    pd.DataFrame(
        {"user_idx": [0, 0, 0], "pos": [0, 1, 2], "item_idx": [5, 6, 7], "split": ["train", "val", "test"]}
    ).to_csv(tmp_path / "amazon_beauty_sequences_loo.csv", index=False)
    log = ds.load_beauty(tmp_path)
    assert not log.has_text
    assert [(r["item_id"], r["title"], log.split[r["event_id"]]) for r in log.records] == [
        ("5", None, "train"),
        ("6", None, "val"),
        ("7", None, "test"),
    ]


def test_load_movielens_small_chronological_split_with_stable_ties(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "userId": [1, 1, 1, 1, 2, 2, 2],
            "movieId": [3, 1, 2, 4, 1, 2, 3],
            "rating": [4.0, 3.5, 5.0, 1.0, 2.0, 3.0, 4.0],
            "timestamp": [300, 100, 300, 200, 50, 60, 70],
        }
    ).to_csv(tmp_path / "ratings.csv", index=False)
    pd.DataFrame({"movieId": [1, 2, 3, 4], "title": ["a", "b", "c", "d"], "genres": ["G"] * 4}).to_csv(
        tmp_path / "movies.csv", index=False
    )
    log = ds.load_movielens_small(tmp_path)
    user1 = [r for r in log.records if r["user_id"] == "1"]
    # time order 100 (movie 1), 200 (4), 300 (3, file row 0), 300 (2, file row 2): the tie keeps file order
    assert [r["item_id"] for r in user1] == ["1", "4", "3", "2"]
    assert [log.split[r["event_id"]] for r in user1] == ["train", "train", "val", "test"]
    assert user1[0]["ts_ms"] == 100_000 and user1[0]["value"] == 3.5 and user1[0]["title"] == "a"
    assert not log.synthetic_time


def test_load_taobao_and_yoochoose(tmp_path: Path) -> None:
    (tmp_path / "ub.csv").write_text("1,11,100,pv,20\n1,12,100,buy,10\n2,11,100,cart,5\n")
    log = ds.load_taobao(tmp_path / "ub.csv")
    assert [(r["user_id"], r["item_id"], r["action"], r["ts_ms"]) for r in log.records] == [
        ("1", "12", "purchase", 10_000),
        ("1", "11", "view", 20_000),
        ("2", "11", "cart", 5_000),
    ]
    (tmp_path / "yc.tsv").write_text("SessionId\tItemId\tTime\n3\t7\t2.5\n3\t8\t1.25\n")
    log = ds.load_yoochoose(tmp_path / "yc.tsv")
    assert [(r["item_id"], r["ts_ms"], log.split[r["event_id"]]) for r in log.records] == [
        ("8", 1250, "val"),
        ("7", 2500, "test"),
    ]


def _fraud_frame(seed: int = 0, n: int = 400, days: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * DAY_S, n))
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": T0 + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": rng.integers(0, 6, n),
            "TERMINAL_ID": rng.integers(0, 4, n),
            "TX_AMOUNT": rng.uniform(1, 200, n).round(2),
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // DAY_S,
            "TX_FRAUD": (rng.random(n) < 0.2).astype(int),
            "TX_FRAUD_SCENARIO": rng.integers(0, 4, n),
        }
    )


def _load(df: pd.DataFrame, path: Path, **kwargs: object) -> ds.EventLog:
    df.to_parquet(path)
    return ds.load_fraud_handbook(path, **kwargs)


def test_fraud_records_labels_and_hand_checked_aggregates(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": [0, 1, 2],
            "TX_DATETIME": [T0, T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(days=8)],
            "CUSTOMER_ID": [5, 5, 6],
            "TERMINAL_ID": [9, 9, 9],
            "TX_AMOUNT": [10.0, 30.0, 5.0],
            "TX_FRAUD": [1, 0, 0],
            "TX_FRAUD_SCENARIO": [1, 0, 0],
        }
    )
    log = _load(df, tmp_path / "tx.parquet")
    assert log.records[1] == {
        "event_id": "1",
        "kind": "transaction",
        "user_id": "5",
        "ts_ms": 1522544400000,
        "item_id": "9",
        "action": "transaction",
        "amount": 30.0,
        "value": None,
        "title": None,
        "category": None,
    }
    assert log.labels == {"0": 1, "1": 0, "2": 0}
    a1 = log.aggregates["1"]
    assert a1["customer_nb_tx_1d"] == 2.0 and a1["customer_avg_amount_1d"] == 20.0  # current one included
    assert a1["terminal_nb_tx_30d"] == 0.0  # today's terminal activity is inside the delay
    a2 = log.aggregates["2"]  # day 8: day 0 is known (8 - 7 = 1 > 0), inside the 7- and 30-day windows
    assert a2["terminal_nb_tx_7d"] == 2.0 and a2["terminal_risk_7d"] == 0.5 and a2["terminal_nb_tx_1d"] == 0.0


def test_fraud_scenario_never_reaches_records_or_aggregates(tmp_path: Path) -> None:
    df = _fraud_frame()
    log = _load(df, tmp_path / "a.parquet")
    other = _load(df.assign(TX_FRAUD_SCENARIO=99 - df["TX_FRAUD_SCENARIO"]), tmp_path / "b.parquet")
    assert all(set(r) == set(ds.RECORD_KEYS) for r in log.records)
    assert not any("scenario" in k.lower() for a in log.aggregates.values() for k in a)
    assert log.records == other.records and log.aggregates == other.aggregates


@pytest.mark.parametrize("cut", [50, 140, 230, 330, 399])
def test_fraud_aggregates_ignore_later_transactions_and_labels_inside_the_delay(
    tmp_path: Path, cut: int
) -> None:
    df = _fraud_frame()
    base = _load(df, tmp_path / "a.parquet")
    cut_time = df["TX_DATETIME"].iloc[cut]
    cut_day = df["TX_TIME_DAYS"].iloc[cut]
    later = df["TX_DATETIME"] > cut_time
    in_delay = df["TX_TIME_DAYS"] > cut_day - 7  # labels not yet known on the cut day
    changed = df.copy()
    changed.loc[later, "TX_AMOUNT"] *= 3
    changed.loc[later, "TERMINAL_ID"] = (changed.loc[later, "TERMINAL_ID"] + 1) % 4
    changed.loc[later, "CUSTOMER_ID"] = (changed.loc[later, "CUSTOMER_ID"] + 1) % 6
    changed.loc[in_delay, "TX_FRAUD"] = 1 - changed.loc[in_delay, "TX_FRAUD"]
    other = _load(changed, tmp_path / "b.parquet")
    guarded = df.loc[(df["TX_TIME_DAYS"] == cut_day) & ~later, "TRANSACTION_ID"].astype(str)
    assert len(guarded) > 0
    for event_id in guarded:
        assert base.aggregates[event_id] == other.aggregates[event_id]
    # the guard can fail: flipping a label just past the delay changes someone's terminal risk
    known = df["TX_TIME_DAYS"] == cut_day - 7
    if known.any():
        flipped = _load(
            df.assign(TX_FRAUD=np.where(known, 1 - df["TX_FRAUD"], df["TX_FRAUD"])), tmp_path / "c.parquet"
        )
        assert any(base.aggregates[e] != flipped.aggregates[e] for e in guarded)


def test_fraud_since_keeps_aggregates_of_a_full_replay(tmp_path: Path) -> None:
    df = _fraud_frame(seed=1, n=600, days=90)
    full = _load(df, tmp_path / "a.parquet")
    part = ds.load_fraud_handbook(tmp_path / "a.parquet", since="2018-05-20")
    first_ms = ds.date_ms(dt.date(2018, 5, 20))
    kept = [r for r in full.records if r["ts_ms"] >= first_ms]
    assert part.records == kept and len(kept) < len(full.records)
    assert part.aggregates == {r["event_id"]: full.aggregates[r["event_id"]] for r in kept}


def test_prequential_folds_match_the_handbook_dates() -> None:
    valid = ds.prequential_folds("2018-06-20")
    assert [f.train_start.isoformat() for f in valid] == [
        "2018-06-20",
        "2018-06-27",
        "2018-07-04",
        "2018-07-11",
    ]
    assert valid[0].test_start == dt.date(2018, 7, 4) and valid[-1].test_end == dt.date(2018, 8, 1)
    (test,) = ds.prequential_folds(dt.date(2018, 7, 25), n_folds=1)
    assert test == ds.Fold(
        dt.date(2018, 7, 25), dt.date(2018, 8, 1), dt.date(2018, 8, 8), dt.date(2018, 8, 15)
    )


def test_fold_event_ids_drop_customers_known_to_be_defrauded(tmp_path: Path) -> None:
    day = pd.Timedelta(days=1)
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": [0, 1, 2, 3, 4, 5, 6],
            # train days 0..1, delay 2..3 (delay_days=2), test days 4..5
            "TX_DATETIME": [
                T0,
                T0 + day,
                T0 + 2 * day,
                T0 + 4 * day,
                T0 + 4 * day,
                T0 + 5 * day,
                T0 + 5 * day,
            ],
            "CUSTOMER_ID": [1, 2, 3, 1, 3, 3, 2],
            "TERMINAL_ID": [0] * 7,
            "TX_AMOUNT": [1.0] * 7,
            "TX_FRAUD": [1, 0, 1, 0, 0, 0, 0],
            "TX_FRAUD_SCENARIO": [0] * 7,
        }
    )
    log = _load(df, tmp_path / "tx.parquet", with_aggregates=False)
    (fold,) = ds.prequential_folds(dt.date(2018, 4, 1), n_folds=1, train_days=2, delay_days=2, test_days=2)
    train, test = ds.fold_event_ids(log, fold, delay_days=2)
    # customer 1 (fraud in training) is dropped from the test days; customer 3's fraud on day 2 becomes
    # known on day 2 + 2 + 1 = 5, so it stays on test day 4 and is dropped on day 5
    assert sorted(train) == ["0", "1"]
    assert sorted(test) == ["4", "6"]


def test_any_sequence_file_loads_with_its_own_column_names_and_a_leave_one_out_split(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    pd.DataFrame(
        {
            "user": ["b", "a", "a", "a", "b", "b"],
            "item": [1, 2, 3, 4, 5, 6],
            "timestamp": [30, 20, 10, 40, 10, 20],
            "title": ["t1", "t2", "t3", "t4", "t5", "t6"],
        }
    ).to_csv(path, index=False)
    log = ds.load("sequences", path)
    assert [(r["user_id"], r["item_id"], r["ts_ms"]) for r in log.records][:3] == [
        ("a", "3", 10_000),
        ("a", "2", 20_000),
        ("a", "4", 40_000),
    ]
    assert [log.split[r["event_id"]] for r in log.records] == ["train", "val", "test"] * 2
    assert log.has_text and not log.synthetic_time and log.records[0]["title"] == "t3"


def test_a_sequence_file_with_positions_and_its_own_split(tmp_path: Path) -> None:
    path = tmp_path / "seq.parquet"
    pd.DataFrame(
        {"user_idx": [0, 0, 0], "pos": [2, 0, 1], "item_idx": [7, 5, 6], "split": ["test", "train", "val"]}
    ).to_parquet(path)
    log = ds.load_sequences(path)
    assert [(r["item_id"], log.split[r["event_id"]]) for r in log.records] == [
        ("5", "train"),
        ("6", "val"),
        ("7", "test"),
    ]
    assert log.synthetic_time and not log.has_text


def test_a_sequence_file_without_its_columns_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"user": [1], "thing": [2], "timestamp": [3]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing \['item_id'\]"):
        ds.load_sequences(path)
    pd.DataFrame({"user": [1], "item": [2], "timestamp": [3], "split": ["dev"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="split values"):
        ds.load_sequences(path)


def test_one_data_set_vocabulary_with_the_old_evaluate_names_as_aliases(tmp_path: Path) -> None:
    assert [ds.dataset_name(n) for n in ("ml1m", "beauty", "fraud", "ml-1m")] == [
        "ml-1m",
        "amazon-beauty",
        "fraud-handbook",
        "ml-1m",
    ]
    with pytest.raises(ValueError, match="known"):
        ds.dataset_name("imdb")
    pd.DataFrame(
        {"user_idx": [0, 0, 0], "pos": [0, 1, 2], "item_idx": [5, 6, 7], "split": ["train", "val", "test"]}
    ).to_csv(tmp_path / "renamed.csv", index=False)
    assert len(ds.load("beauty", tmp_path / "renamed.csv").records) == 3  # a file, not only its folder
