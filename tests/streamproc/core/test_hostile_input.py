"""Hostile input, as a property: whatever a producer sends, what is accepted gives finite features, and no
accepted event wipes a user's window except by being newer in event time within the allowed skew."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features.featurize import Vocab, Window, featurize
from streamproc.core.event_time import EventTimeClocks
from streamproc.core.events import InvalidEvent, check_size, validate
from streamproc.core.processing import (
    apply_terminal_event,
    apply_user_event,
    new_terminal_state,
    new_user_state,
)

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
NOW = T0 + 10 * DAY_MS
MAX_EVENTS, MAX_AGE_MS, SKEW_MS = 8, 30 * DAY_MS, DAY_MS

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, 1e-300, 1e308, -1e308, 1e9, 1e6, -1e6, 4.5]),
)
times = st.one_of(
    st.integers(T0 - 60 * DAY_MS, T0 + 60 * DAY_MS),
    st.sampled_from([4_070_908_800_000, 4_102_444_800_000, 631_152_000_000, T0, T0 + SKEW_MS + 1]),
    st.integers(-(10**15), 10**16),
)
clicks = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from([f"e{i}" for i in range(30)]),
        "user_id": st.just("u1"),
        "item_id": st.sampled_from(["i1", "i2"]),
        "action": st.just("view"),
        "ts": times,
    },
    optional={"value": numbers, "title": st.text(max_size=20)},
)
transactions = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from([f"t{i}" for i in range(30)]),
        "user_id": st.just("u1"),
        "amount": numbers,
        "currency": st.just("EUR"),
        "terminal_id": st.just("T1"),
        "ts": times,
    }
)
messages = st.lists(
    st.one_of(st.tuples(st.just("click"), clicks), st.tuples(st.just("transaction"), transactions)),
    max_size=40,
)


def dropped_wrongly(before: list[dict], after: list[dict]) -> list[dict]:
    """Events of the window before that are gone after, though neither too old for the newest event nor
    pushed out by MAX_EVENTS events ordered after them."""
    kept = {e["event_id"] for e in after}
    newest = after[-1]["ts_ms"] if after else None
    order = [(e["ts_ms"], e["event_id"]) for e in after]
    return [
        e
        for e in before
        if e["event_id"] not in kept
        and newest is not None
        and e["ts_ms"] >= newest - MAX_AGE_MS
        and sum(o > (e["ts_ms"], e["event_id"]) for o in order) < MAX_EVENTS
    ]


@settings(max_examples=300, deadline=None)
@given(messages)
def test_accepted_events_give_finite_features_and_never_wipe_a_window(sent):
    clocks = EventTimeClocks(SKEW_MS)
    user, terminal = new_user_state(), new_terminal_state()
    vocab = Vocab(items=["i1", "i2", "T1"], actions=["view", "transaction"])
    for offset, (kind, message) in enumerate(sent):
        raw = json.dumps(message).encode()
        try:
            check_size(raw, 65_536)
            valid = validate(kind, raw)
            clocks.admit("in", 0, valid.ts_ms, NOW)
        except InvalidEvent:
            continue  # dead-lettered
        record = valid.record
        assert abs(record.get("value") or 0) <= 1e6 and 0 <= (record.get("amount") or 0) <= 1e9
        assert record["ts_ms"] <= NOW + SKEW_MS
        before = list(user["w"])
        terminal_aggregates = (
            apply_terminal_event(terminal, record, valid.label, "in:0", offset)
            if kind == "transaction"
            else {}
        )
        window, customer = apply_user_event(user, record, "in:0", offset, MAX_EVENTS, MAX_AGE_MS)
        assert not dropped_wrongly(before, user["w"])
        batch = featurize([Window(window, customer | terminal_aggregates)], vocab, MAX_EVENTS)
        assert np.isfinite(batch.numeric).all() and np.isfinite(batch.aggregates).all(), record
