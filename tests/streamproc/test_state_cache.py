"""Pure write-behind bookkeeping: flush policy, dirty states and the bounded cache of clean ones."""

from hypothesis import given
from hypothesis import strategies as st

from streamproc.state_cache import FlushPolicy, StateCache


def test_a_flush_is_due_after_the_interval_or_at_the_event_bound_and_never_with_nothing_held() -> None:
    policy = FlushPolicy(interval_ms=1000, max_events=3)
    assert not policy.due(now_ms=5000, held_since_ms=None, held_events=0)
    assert not policy.due(now_ms=1999, held_since_ms=1000, held_events=2)
    assert policy.due(now_ms=2000, held_since_ms=1000, held_events=2)
    assert policy.due(now_ms=1001, held_since_ms=1000, held_events=3)
    assert FlushPolicy(interval_ms=0, max_events=10).due(now_ms=1000, held_since_ms=1000, held_events=1)


def test_dirty_states_are_handed_over_once_and_stay_readable_as_clean() -> None:
    cache: StateCache[str] = StateCache(max_clean=10)
    state = {"w": [1]}
    assert cache.lookup(b"u1") is None
    cache.mark_dirty(b"u1", state, "event-1")
    cache.mark_dirty(b"u1", state, "event-2")  # changed again before the flush: written once, with its last event
    assert cache.take_dirty() == {b"u1": (state, "event-2")}
    assert cache.take_dirty() == {}
    assert cache.lookup(b"u1") is state


def test_clean_states_are_evicted_least_recently_written_first_and_dirty_ones_never() -> None:
    cache: StateCache[str] = StateCache(max_clean=2)
    for key in (b"a", b"b", b"c"):
        cache.mark_dirty(key, {"k": key}, "e")
    assert len(cache) == 3  # all dirty: none may be evicted before it is written
    cache.take_dirty()
    assert cache.lookup(b"a") is None and cache.lookup(b"b") == {"k": b"b"} and cache.lookup(b"c") == {"k": b"c"}
    cache.mark_dirty(b"b", {"k": b"b2"}, "e")
    cache.mark_dirty(b"d", {"k": b"d"}, "e")
    cache.take_dirty()
    assert cache.lookup(b"c") is None
    assert cache.lookup(b"b") == {"k": b"b2"} and cache.lookup(b"d") == {"k": b"d"}


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=200), st.integers(0, 8))
def test_the_cache_never_holds_more_clean_states_than_its_bound_and_never_loses_a_dirty_one(
    ops: list[tuple[int, bool]], max_clean: int
) -> None:
    cache: StateCache[int] = StateCache(max_clean=max_clean)
    latest: dict[bytes, dict] = {}
    for number, flush in ops:
        key = str(number).encode()
        state = cache.lookup(key) or {"n": 0}
        state["n"] += 1
        cache.mark_dirty(key, state, number)
        latest[key] = state
        if flush:
            written = cache.take_dirty()
            assert all(written[k][0] is latest[k] for k in written)
        assert len(cache) - len(cache.dirty) <= max_clean
        assert all(cache.lookup(k) is latest[k] for k in cache.dirty)
