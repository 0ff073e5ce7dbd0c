"""Featurization: batch independence, JSON round trip, truncation, and identity with the training path."""

from __future__ import annotations

import json

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features.aggregates import AGGREGATE_FEATURES
from models.features.featurize import (
    DERIVED_FEATURES,
    MODEL_AGGREGATES,
    OOV,
    PAD,
    FeatureBatch,
    Vocab,
    Window,
    aggregate_matrix,
    derived_aggregates,
    event_text,
    featurize,
    raw_aggregates,
)
from models.features.replay import replay_aggregates
from models.training import batching

VOCAB = Vocab(items=["a", "b", "c", "t1"], actions=["click", "transaction", "view"])
MAX_LEN = 8


@st.composite
def windows(draw: st.DrawFn) -> Window:
    n = draw(st.integers(1, 12))
    ts = np.cumsum(draw(st.lists(st.integers(0, 10**8), min_size=n, max_size=n))) + 1_700_000_000_000
    events = []
    for i in range(n):
        tx = draw(st.booleans())
        text = st.none() | st.sampled_from(["Trail shoes", "Sports", "grocery"])
        events.append(
            {
                "event_id": f"e{i}",
                "kind": "transaction" if tx else "click",
                "user_id": "u",
                "ts_ms": int(ts[i]),
                "item_id": draw(st.sampled_from(["a", "b", "c", "t1", "zz"])),
                "action": "transaction" if tx else draw(st.sampled_from(["view", "click", "rate"])),
                "amount": draw(st.floats(0, 5000)) if tx else None,
                "value": draw(st.none() | st.floats(0, 5)),
                "title": draw(text),
                "category": draw(text),
            }
        )
    names = st.sampled_from(AGGREGATE_FEATURES)
    aggregates = draw(st.dictionaries(names, st.floats(0, 1000), max_size=len(AGGREGATE_FEATURES)))
    return Window(events=events, aggregates=aggregates)


def row(batch: FeatureBatch, b: int) -> dict[str, object]:
    """Arrays of window b with text indices resolved to the texts themselves."""
    texts = [batch.texts[i] if i >= 0 else None for i in batch.text_index[b]]
    return {
        "item": batch.item[b],
        "action": batch.action[b],
        "numeric": batch.numeric[b],
        "aggregates": batch.aggregates[b],
        "lengths": batch.lengths[b],
        "is_transaction": batch.is_transaction[b],
        "texts": texts,
    }


def assert_rows_equal(left: dict[str, object], right: dict[str, object]) -> None:
    for key, value in left.items():
        if key == "texts":
            assert value == right[key]
        else:
            np.testing.assert_array_equal(value, right[key], err_msg=key)


@settings(max_examples=60, deadline=None)
@given(window=windows(), others=st.lists(windows(), max_size=4), position=st.integers(0, 4))
def test_window_alone_equals_window_in_batch(window: Window, others: list[Window], position: int) -> None:
    position = min(position, len(others))
    batch = others[:position] + [window] + others[position:]
    assert_rows_equal(
        row(featurize([window], VOCAB, MAX_LEN), 0), row(featurize(batch, VOCAB, MAX_LEN), position)
    )


@settings(max_examples=30, deadline=None)
@given(window=windows())
def test_truncation_keeps_most_recent_events(window: Window) -> None:
    batch = featurize([window], VOCAB, MAX_LEN)
    kept = window.events[-MAX_LEN:]
    assert batch.lengths[0] == len(kept)
    np.testing.assert_array_equal(batch.item[0, : len(kept)], VOCAB.item_ids([e["item_id"] for e in kept]))
    assert (batch.item[0, len(kept) :] == PAD).all() and (batch.text_index[0, len(kept) :] == -1).all()
    assert batch.numeric[0, 0, 0] == 0.0  # no gap before the first kept event
    assert np.isfinite(batch.numeric).all() and np.isfinite(batch.aggregates).all()


def test_json_round_trip_gives_identical_arrays(tiny_windows: list[Window]) -> None:
    vocab = Vocab.build(e for w in tiny_windows for e in w.events)
    wire = [
        Window(**json.loads(json.dumps({"events": w.events, "aggregates": w.aggregates})))
        for w in tiny_windows
    ]
    direct, round_trip = featurize(tiny_windows, vocab, 20), featurize(wire, vocab, 20)
    for b in range(len(tiny_windows)):
        assert_rows_equal(row(direct, b), row(round_trip, b))


def test_unknown_ids_map_to_oov_and_missing_aggregates_to_zero() -> None:
    event = {"event_id": "x", "kind": "click", "user_id": "u", "ts_ms": 0, "item_id": "new", "action": "fly"}
    batch = featurize([Window(events=[event])], VOCAB, MAX_LEN)
    assert batch.item[0, 0] == OOV and batch.action[0, 0] == OOV
    assert (batch.aggregates == 0).all() and batch.text_index[0, 0] == -1


def test_event_text_renders_only_stable_parts() -> None:
    click = {
        "kind": "click",
        "action": "view",
        "title": "Trail running shoes",
        "category": "Sports",
        "ts_ms": 5,
    }
    tx = {"kind": "transaction", "action": "transaction", "title": None, "category": "grocery", "amount": 3.0}
    assert event_text(click) == "view | Trail running shoes | Sports"
    assert event_text(tx) == "transaction | grocery"
    assert event_text({"kind": "transaction", "title": None, "category": None}) is None


def test_training_batches_featurize_like_serving(tiny_records: tuple[list[dict], dict[str, int]]) -> None:
    records, labels = tiny_records
    records = sorted(records, key=lambda r: (r["user_id"], r["ts_ms"]))
    aggregates = replay_aggregates(records, labels)
    vocab = Vocab.build(records)
    texts = sorted({event_text(r) for r in records} - {None})
    data = batching.build_sequences(records, labels, aggregates, vocab, {t: i for i, t in enumerate(texts)})
    ends = np.array([0, 5, 40, 41, len(records) - 1])
    batch = batching.make_batch(data, ends, 20, torch.zeros((len(texts), 4)), torch.device("cpu"))
    for b, end in enumerate(ends):
        start = int(end) - int(batch.inp.lengths[b]) + 1
        window = Window(events=records[start : end + 1], aggregates=aggregates[records[end]["event_id"]])
        served = featurize([window], vocab, 20)
        np.testing.assert_array_equal(batch.inp.item[b].numpy(), served.item[0])
        np.testing.assert_array_equal(batch.inp.action[b].numpy(), served.action[0])
        np.testing.assert_allclose(batch.inp.numeric[b].numpy(), served.numeric[0], atol=1e-6)
        np.testing.assert_array_equal(batch.aggregates[b, end - start].numpy(), served.aggregates[0])
        train_texts = [texts[i] if i >= 0 else None for i in batch.inp.text_index[b].tolist()]
        assert train_texts == [served.texts[i] if i >= 0 else None for i in served.text_index[0]]


def test_derived_ratios_by_hand() -> None:
    aggregates = {
        "customer_nb_tx_1d": 2.0,
        "customer_avg_amount_1d": 10.0,
        "customer_nb_tx_7d": 7.0,
        "customer_avg_amount_7d": 25.0,
        "customer_nb_tx_30d": 30.0,
        "customer_avg_amount_30d": 20.0,
    }
    raw = raw_aggregates([aggregates, {}, aggregates])
    derived = derived_aggregates(raw, np.array([50.0, 50.0, np.nan]))
    by_name = dict(zip(DERIVED_FEATURES, derived[0], strict=True))
    assert by_name == {
        "amount_to_customer_avg_1d": 5.0,
        "amount_to_customer_avg_7d": 2.0,
        "amount_to_customer_avg_30d": 2.5,
        "customer_avg_1d_to_30d": 0.5,
        "customer_avg_7d_to_30d": 1.25,
        "customer_rate_1d_to_30d": 2.0,  # 2 a day against 1 a day
        "customer_rate_7d_to_30d": 1.0,
    }
    assert (derived[1] == 1.0).all()  # no history: every ratio neutral
    assert (derived[2, :3] == 1.0).all() and (derived[2, 3:] == derived[0, 3:]).all()  # no amount (a click)
    matrix = aggregate_matrix([aggregates], np.array([50.0]))
    assert matrix.shape == (1, len(MODEL_AGGREGATES))
    np.testing.assert_allclose(matrix[0, len(AGGREGATE_FEATURES) :], np.log(derived[0]), rtol=1e-6)


def test_served_derived_ratios_use_the_scored_events_amount() -> None:
    events = [
        {"event_id": f"e{i}", "kind": "transaction", "user_id": "u", "ts_ms": i, "item_id": "t1",
         "action": "transaction", "amount": amount}
        for i, amount in enumerate([5.0, 80.0])
    ]  # fmt: skip
    batch = featurize([Window(events=events, aggregates={"customer_avg_amount_30d": 20.0})], VOCAB, MAX_LEN)
    column = len(AGGREGATE_FEATURES) + DERIVED_FEATURES.index("amount_to_customer_avg_30d")
    assert batch.aggregates[0, column] == np.float32(np.log(4.0))


@settings(max_examples=60, deadline=None)
@given(users=st.lists(windows(), min_size=1, max_size=3), max_len=st.integers(1, MAX_LEN), data=st.data())
def test_training_batches_equal_serving_featurization_on_random_windows(
    users: list[Window], max_len: int, data: st.DataObject
) -> None:
    """Training (build_sequences + make_batch) and serving (featurize) give the same model inputs for any
    window ending at any event: random users, items (some unknown), texts, amounts, aggregates."""
    records, aggregates = [], {}
    for u, window in enumerate(users):
        for event in window.events:
            record = {**event, "user_id": f"u{u}", "event_id": f"u{u}-{event['event_id']}"}
            records.append(record)
            aggregates[record["event_id"]] = window.aggregates if len(records) % 2 else {}
    texts = sorted({event_text(r) for r in records} - {None})
    sequences = batching.build_sequences(records, {}, aggregates, VOCAB, {t: i for i, t in enumerate(texts)})
    ends = np.array(data.draw(st.lists(st.integers(0, len(records) - 1), min_size=1, max_size=6)))
    batch = batching.make_batch(sequences, ends, max_len, torch.zeros((len(texts), 4)), torch.device("cpu"))
    for b, end in enumerate(ends):
        start = int(end) - int(batch.inp.lengths[b]) + 1
        assert records[start]["user_id"] == records[end]["user_id"]
        assert (
            start == 0
            or records[start - 1]["user_id"] != records[end]["user_id"]
            or end - start + 1 == max_len
        )
        window = Window(events=records[start : end + 1], aggregates=aggregates[records[end]["event_id"]])
        served = featurize([window], VOCAB, max_len)
        np.testing.assert_array_equal(batch.inp.item[b].numpy(), served.item[0])
        np.testing.assert_array_equal(batch.inp.action[b].numpy(), served.action[0])
        np.testing.assert_allclose(batch.inp.numeric[b].numpy(), served.numeric[0], atol=1e-5)
        np.testing.assert_allclose(batch.aggregates[b, end - start].numpy(), served.aggregates[0], atol=1e-5)
        train_texts = [texts[i] if i >= 0 else None for i in batch.inp.text_index[b].tolist()]
        assert train_texts == [served.texts[i] if i >= 0 else None for i in served.text_index[0]]
