"""Replay readers: each public format becomes valid wire messages in event-time order."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from streamproc.core.events import validate, validate_fraud_label
from streamproc.feed.replay import detect_format, labels_as_topic, message_key, read_events


def _valid(messages):
    for topic, msg in messages:
        validate("click" if topic == "clicks" else "transaction", json.dumps(msg).encode())
    times = [m["ts"] for _, m in messages]
    assert times == sorted(times)


def test_fraud_handbook_parquet_never_reads_the_scenario(tmp_path: Path):
    path = tmp_path / "tx.parquet"
    pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 0],
            "TX_DATETIME": pd.to_datetime(["2018-04-01 00:10:00", "2018-04-01 00:00:31"]),
            "CUSTOMER_ID": [7, 8],
            "TERMINAL_ID": [3, 4],
            "TX_AMOUNT": [12.5, 300.0],
            "TX_TIME_SECONDS": [600, 31],
            "TX_TIME_DAYS": [0, 0],
            "TX_FRAUD": [0, 1],
            "TX_FRAUD_SCENARIO": [0, 1],
        }
    ).to_parquet(path)
    assert detect_format(path) == "fraud"
    messages = list(read_events(path))
    _valid(messages)
    assert messages[0] == (
        "transactions",
        {
            "event_id": "tx-0",
            "user_id": "c8",
            "amount": 300.0,
            "currency": "EUR",
            "terminal_id": "t4",
            "ts": 1522540831000,
            "label": 1,
        },
    )
    assert all(
        "TX_FRAUD_SCENARIO" not in json.dumps(m) and "scenario" not in json.dumps(m).lower()
        for _, m in messages
    )


def test_movielens_ratings_with_titles(tmp_path: Path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,3.5,964981247\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"Toy Story (1995)",Animation|Children\n20,Heat (1995),Action\n'
    )
    messages = list(read_events(tmp_path / "ratings.csv"))
    _valid(messages)
    assert [m["item_id"] for _, m in messages] == ["m20", "m10"]
    assert (
        messages[1][1]["title"] == "Toy Story (1995)" and messages[1][1]["category"] == "Animation, Children"
    )
    assert messages[1][1]["value"] == 4.0 and messages[1][1]["action"] == "rate"


def test_yoochoose_sessions_are_users(tmp_path: Path):
    path = tmp_path / "clicks_train.tsv"
    path.write_text("SessionId\tItemId\tTime\n5\t214\t1396839069.277\n5\t215\t1396839000.5\n")
    messages = list(read_events(path))
    _valid(messages)
    assert [(m["user_id"], m["item_id"], m["ts"]) for _, m in messages] == [
        ("s5", "i215", 1396839000500),
        ("s5", "i214", 1396839069277),
    ]


def test_taobao_behaviours_map_to_actions(tmp_path: Path):
    path = tmp_path / "UserBehavior_head.csv"
    path.write_text(
        "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n1,2576651,149192,cart,1511572885\n"
    )
    messages = list(read_events(path))
    _valid(messages)
    assert [m["action"] for _, m in messages] == ["view", "purchase", "cart"]


def test_shared_taobao_sample_is_all_valid():
    path = Path(__file__).resolve().parents[4] / "shared" / "data" / "taobao-sample" / "UserBehavior_head.csv"
    if not path.exists():
        pytest.skip(f"{path} is not here (the data sets live beside the repository)")
    messages = list(read_events(path))
    assert len(messages) == 4321
    _valid(messages)


def test_unknown_format_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path / "events.bin")


def _tx(n: int, day: float, label: int) -> tuple[str, dict]:
    return "transactions", {
        "event_id": f"tx-{n}",
        "user_id": "c1",
        "amount": 5.0,
        "currency": "EUR",
        "terminal_id": f"t{n % 2}",
        "ts": int(1_522_540_800_000 + day * 86_400_000),
        "label": label,
    }


def test_labels_as_topic_strips_labels_and_sends_each_fraud_after_its_delay():
    events = [
        _tx(0, 0.0, 1),
        _tx(1, 0.5, 0),
        (
            "clicks",
            {
                "event_id": "c",
                "user_id": "c1",
                "item_id": "i",
                "action": "view",
                "ts": 1_522_540_800_000 + 86_400_000,
            },
        ),
        _tx(2, 1.5, 1),
        _tx(3, 1.6, 0),
    ]
    out = list(labels_as_topic(events, delay_ms=86_400_000))
    assert [(t, m["event_id"]) for t, m in out] == [
        ("transactions", "tx-0"),
        ("transactions", "tx-1"),
        ("fraud_labels", "label-tx-0-1"),
        ("clicks", "c"),
        ("transactions", "tx-2"),
        ("transactions", "tx-3"),
        ("fraud_labels", "label-tx-2-1"),
    ]
    assert all("label" not in m for t, m in out if t == "transactions")
    assert all(
        "label" in m for t, m in events if t == "transactions"
    )  # the input messages are left as they were
    labels = [validate_fraud_label(json.dumps(m).encode()) for t, m in out if t == "fraud_labels"]
    assert [(f.transaction_id, f.terminal_id, f.ts_ms, f.label) for f in labels] == [
        ("tx-0", "t0", 1_522_540_800_000, 1),
        ("tx-2", "t0", 1_522_540_800_000 + 129_600_000, 1),
    ]
    assert message_key("fraud_labels", out[2][1]) == b"t0" and message_key("clicks", out[3][1]) == b"c1"


def test_the_endless_generator_goes_on_with_fresh_ids_and_later_times_behind_the_wall_clock():
    import itertools
    import time

    from streamproc.feed.replay import read_generator

    first = list(read_generator())
    endless = list(itertools.islice(read_generator(endless=True), 2 * len(first) + 10))
    ids = [m["event_id"] for _, m in endless]
    assert len(set(ids)) == len(ids)  # chunk 1 has ids of its own
    assert [m["event_id"] for _, m in endless[: len(first)]] == [m["event_id"] for _, m in first]
    times = [m["ts"] for _, m in endless]
    assert times == sorted(times)  # each chunk's days follow the last's
    assert max(times) < time.time() * 1000 - 365 * 86_400_000  # years behind the wall clock
