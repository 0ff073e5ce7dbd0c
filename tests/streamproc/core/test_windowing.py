"""Window arithmetic: ordering, eviction by count and age, duplicates, no future in a scored window."""

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.windowing import evict, insert_event, window_for_event


def ev(i: int, ts: int) -> dict:
    return {"event_id": f"e{i}", "ts_ms": ts}


def reference(events: list[dict], max_events: int, max_age_ms: int) -> list[dict]:
    """From scratch: unique ids (first arrival wins), (event time, event id) order, then eviction."""
    seen, unique = set(), []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            unique.append(e)
    ordered = sorted(unique, key=lambda e: (e["ts_ms"], e["event_id"]))
    if not ordered:
        return []
    newest = ordered[-1]["ts_ms"]
    return [e for e in ordered if e["ts_ms"] >= newest - max_age_ms][-max_events:]


events_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 10_000)).map(lambda t: ev(*t)), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.integers(1, 20), st.integers(0, 20_000))
def test_incremental_window_equals_from_scratch_when_nothing_is_evicted_early(events, max_events, max_age_ms):
    window: list[dict] = []
    for e in events:
        window, _ = insert_event(window, e, max_events=10_000, max_age_ms=10**12)
    assert window == reference(events, 10_000, 10**12)
    assert [e["ts_ms"] for e in evict(window, max_events, max_age_ms)] == [
        e["ts_ms"] for e in reference(events, max_events, max_age_ms)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=30), st.randoms())
def test_a_window_does_not_depend_on_the_arrival_order_of_its_events(times, rnd):
    # many equal times: a click and a transaction of the same second arrive by different paths, in either order
    events = [ev(i, ts) for i, ts in enumerate(times)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    windows = []
    for order in (events, shuffled):
        window: list[dict] = []
        for e in order:
            window, _ = insert_event(window, e, max_events=10_000, max_age_ms=10**12)
        windows.append([e["event_id"] for e in window])
    assert windows[0] == windows[1]


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.integers(1, 20), st.integers(0, 20_000))
def test_window_invariants(events, max_events, max_age_ms):
    window: list[dict] = []
    for e in events:
        window, _ = insert_event(window, e, max_events, max_age_ms)
        times = [x["ts_ms"] for x in window]
        assert times == sorted(times)
        assert len(window) <= max_events
        assert len({x["event_id"] for x in window}) == len(window)
        if window:
            assert window[0]["ts_ms"] >= window[-1]["ts_ms"] - max_age_ms


def test_duplicate_event_id_is_ignored():
    window, inserted = insert_event([], ev(1, 100), 5, 1000)
    again, inserted_again = insert_event(window, {"event_id": "e1", "ts_ms": 50}, 5, 1000)
    assert inserted and not inserted_again
    assert again == [ev(1, 100)]


def test_out_of_order_event_is_inserted_in_place_and_evictions_apply():
    window: list[dict] = []
    for i, ts in enumerate([100, 300, 200, 400]):
        window, _ = insert_event(window, ev(i, ts), 3, 1000)
    assert [e["ts_ms"] for e in window] == [200, 300, 400]
    window, _ = insert_event(window, ev(9, 5000), 3, 1000)
    assert [e["ts_ms"] for e in window] == [5000]


@given(events_strategy, st.integers(1, 10))
def test_window_for_event_never_shows_later_events_and_ends_with_the_event(events, max_events):
    window: list[dict] = []
    for e in events:
        window, _ = insert_event(window, e, 1000, 10**12)
    for e in events:
        seen = window_for_event(window, e, max_events)
        assert seen[-1]["event_id"] == e["event_id"]
        assert all(x["ts_ms"] <= seen[-1]["ts_ms"] for x in seen)
        assert len(seen) <= max_events
