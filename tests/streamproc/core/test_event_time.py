"""The event-time guard: an event far ahead of its partition's clock (never behind the wall clock) is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.core.event_time import EventTimeClocks
from streamproc.core.events import InvalidEvent

HOUR = 3_600_000
NOW = 1_800_000_000_000
Y2099 = 4_070_908_800_000


def test_an_event_far_ahead_of_the_wall_clock_is_refused_and_the_clock_stays():
    clocks = EventTimeClocks(max_ahead_ms=24 * HOUR)
    t0 = 1_522_540_800_000  # a replay of 2018 data, long before the wall clock
    clocks.admit("clicks", 0, t0, NOW)
    with pytest.raises(InvalidEvent) as exc:
        clocks.admit("clicks", 0, Y2099, NOW)  # the first event after a start too: the wall clock bounds it
    assert (
        exc.value.reason == "future_timestamp"
        and "ahead of its partition's event-time clock" in exc.value.detail
    )
    assert clocks.clocks == {("clicks", 0): t0}
    clocks.admit(
        "clicks", 0, t0 - 240 * HOUR, NOW
    )  # late events are not refused: windows insert them in place
    assert clocks.clocks == {("clicks", 0): t0}


def test_a_partition_quiet_for_days_takes_its_next_events():
    # a clock made of events alone would refuse everything after a gap longer than the skew, for ever
    clocks = EventTimeClocks(max_ahead_ms=24 * HOUR)
    clocks.admit("transactions", 1, NOW - 200 * HOUR, NOW - 200 * HOUR)
    clocks.admit("transactions", 1, NOW + HOUR, NOW)  # eight days later
    assert clocks.clock("transactions", 1, NOW) == NOW + HOUR


def test_a_partition_running_ahead_of_the_wall_clock_is_bounded_by_its_own_clock():
    clocks = EventTimeClocks(max_ahead_ms=24 * HOUR)
    clocks.admit("clicks", 2, NOW + 20 * HOUR, NOW)  # a producer whose clock is fast: within the skew
    clocks.admit("clicks", 2, NOW + 40 * HOUR, NOW)  # within the skew of the partition's clock
    with pytest.raises(InvalidEvent):
        clocks.admit("clicks", 2, NOW + 70 * HOUR, NOW)
    clocks.admit("clicks", 3, NOW + 23 * HOUR, NOW)  # another partition has its own clock
    with pytest.raises(InvalidEvent):
        clocks.admit("clicks", 3, NOW + 70 * HOUR, NOW)


def test_a_skew_of_zero_turns_the_guard_off_for_future_dated_replays():
    clocks = EventTimeClocks(max_ahead_ms=0)
    clocks.admit("transactions", 3, Y2099, NOW)
    assert clocks.clocks == {("transactions", 3): Y2099}


@given(st.lists(st.integers(0, 400 * HOUR), min_size=1, max_size=50))
def test_an_accepted_event_is_never_more_than_the_skew_ahead_of_what_came_before_or_the_wall_clock(offsets):
    clocks = EventTimeClocks(max_ahead_ms=24 * HOUR)
    accepted = [NOW]
    for offset in offsets:
        try:
            clocks.admit("clicks", 0, NOW + offset, NOW)
            accepted.append(NOW + offset)
        except InvalidEvent:
            assert NOW + offset > max(accepted) + 24 * HOUR
        else:
            assert NOW + offset <= max(accepted[:-1]) + 24 * HOUR
