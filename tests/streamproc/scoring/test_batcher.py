"""The micro-batch policy with an explicit clock: size and deadline, whichever comes first."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.scoring.batcher import MicroBatcher


def test_flushes_when_full():
    b: MicroBatcher[int] = MicroBatcher(max_size=3, max_wait_ms=1000)
    for i in range(3):
        assert not b.is_due(0)
        b.add(i, now_ms=0)
    assert b.is_due(0)
    assert b.drain() == [0, 1, 2]
    assert len(b) == 0 and not b.is_due(10_000)


def test_flushes_at_deadline_of_first_item():
    b: MicroBatcher[str] = MicroBatcher(max_size=100, max_wait_ms=20)
    b.add("a", now_ms=1000)
    b.add("b", now_ms=1015)
    assert not b.is_due(1019)
    assert b.wait_ms(1015, idle_ms=500) == 5
    assert b.is_due(1020)
    assert b.drain() == ["a", "b"]
    assert b.wait_ms(2000, idle_ms=500) == 500


def test_rejects_bad_limits():
    with pytest.raises(ValueError):
        MicroBatcher(max_size=0, max_wait_ms=1)
    with pytest.raises(ValueError):
        MicroBatcher(max_size=1, max_wait_ms=-1)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=200), st.integers(1, 16), st.integers(0, 100))
def test_every_item_comes_out_once_in_order_and_no_batch_is_too_big(gaps, max_size, max_wait):
    b: MicroBatcher[int] = MicroBatcher(max_size=max_size, max_wait_ms=max_wait)
    now, out, first_at = 0, [], {}
    for i, gap in enumerate(gaps):
        # the loop a worker runs: flush what is due before adding more
        now += gap
        if b.is_due(now):
            out.append(b.drain())
        b.add(i, now)
        first_at.setdefault(len(out), now)
        if b.is_due(now):
            out.append(b.drain())
    out.append(b.drain())
    flat = [i for batch in out for i in batch]
    assert flat == list(range(len(gaps)))
    assert all(len(batch) <= max_size for batch in out)
