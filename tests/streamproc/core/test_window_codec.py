"""Window JSON re-use (streamproc.core.window_codec): the bytes always equal a fresh encoding of the same window."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.processing import apply_user_event, new_user_state
from streamproc.core.window_codec import WindowEncodings

DAY_MS = 86_400_000
MAX_AGE_MS = 30 * DAY_MS


def click(n: int, ts_ms: int, title: str | None = None) -> dict:
    return {
        "event_id": f"e{n}",
        "kind": "click",
        "user_id": "u1",
        "ts_ms": ts_ms,
        "item_id": f"i{n % 7}",
        "action": "view",
        "amount": None,
        "value": None,
        "title": title,
        "category": "Books",
    }


# one step: (time offset in minutes, whether to reload the state as if read back from RocksDB,
# whether the event is a re-delivery of an earlier one)
steps = st.lists(
    st.tuples(st.integers(-30, 60), st.booleans(), st.integers(0, 9)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, max_events=st.integers(1, 12), max_age_minutes=st.integers(5, 100_000))
def test_windows_and_states_encode_as_orjson_does(steps, max_events, max_age_minutes):
    """In-order, out-of-order, duplicate and re-delivered events, evictions by count and age, and states
    read back from storage: every window's and state's bytes decode to what orjson makes of it."""
    codec = WindowEncodings(max_keys=10)
    state = new_user_state()
    sent: list[dict] = []
    clock = 1_700_000_000_000
    for offset, (minutes, reload, redeliver) in enumerate(steps):
        if redeliver == 0 and sent:  # the same event again, under a new offset (a re-sent copy)
            record = sent[offset % len(sent)]
        else:
            clock += minutes * 60_000
            record = click(offset, clock, title='Ünïcode "title"' if offset % 3 else None)
            sent.append(record)
        if reload:
            state = orjson.loads(orjson.dumps(state))
        window, _ = apply_user_event(state, record, "clicks:0", offset, max_events, max_age_minutes * 60_000)
        assert codec.window(b"u1", window) == orjson.dumps(window)
        assert orjson.loads(codec.state(b"u1", state)) == orjson.loads(orjson.dumps(state))
    assert codec.reused + codec.encoded == len(steps)


def test_in_order_events_reuse_the_previous_window_and_the_state_splices_it():
    codec = WindowEncodings(max_keys=10)
    state = new_user_state()
    for n in range(30):
        window, _ = apply_user_event(
            state, click(n, 1_700_000_000_000 + n * 1000), "clicks:0", n, 5, MAX_AGE_MS
        )
        data = codec.window(b"u1", window)
    assert orjson.loads(data) == [click(n, 1_700_000_000_000 + n * 1000) for n in range(25, 30)]
    assert (codec.encoded, codec.reused) == (1, 29)
    assert codec.state(b"u1", state) == orjson.dumps(state)  # same key order, spliced bytes


def test_an_update_carries_the_encoded_window():
    codec = WindowEncodings(max_keys=10)
    window = [click(1, 1_700_000_000_000), click(2, 1_700_000_001_000)]
    update = {"user_id": "u1", "event_id": "e2", "window": window, "aggregates": {"customer_nb_tx_1d": 0.0}}
    assert codec.update(b"u1", update) == orjson.dumps(update)
    assert update["window"] is window  # the caller's update is not changed


def test_keys_beyond_the_bound_are_forgotten_least_recently_used_first():
    codec = WindowEncodings(max_keys=2)
    for key in (b"a", b"b", b"a", b"c"):
        codec.window(key, [click(1, 1_700_000_000_000)])
    assert len(codec) == 2
    codec.window(b"b", [click(1, 1_700_000_000_000)])  # b was evicted: encoded in full again
    assert codec.encoded == 4
    codec.forget()
    assert len(codec) == 0
