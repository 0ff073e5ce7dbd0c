"""The stall watch's pure part: how long positions stood still, reported once, and which partitions wait."""

from streamproc.observability.stall_watch import StallWatch, waiting_partitions


def test_a_standstill_is_timed_from_the_last_change_and_reported_once():
    w = StallWatch(stall_after_s=30)
    assert w.observe(0, {"a": (5, 3)}) == 0
    assert w.observe(20, {"a": (5, 3)}) == 20
    assert not w.due(20)
    still = w.observe(31, {"a": (5, 3)})
    assert still == 31 and w.due(still)
    w.reported()
    assert not w.due(w.observe(100, {"a": (5, 3)}))  # the same standstill is not reported twice


def test_a_moving_position_restarts_the_clock_and_rearms_the_report():
    w = StallWatch(stall_after_s=30)
    w.observe(0, {"a": (5, 3)})
    w.reported()
    assert w.observe(40, {"a": (6, 3)}) == 0
    assert w.observe(75, {"a": (6, 3)}) == 35
    assert w.due(35)


def test_an_idle_worker_is_checked_again_only_after_another_full_period():
    w = StallWatch(stall_after_s=30)
    w.observe(0, {})
    assert w.due(w.observe(30, {}))
    w.checked(30)  # nothing was waiting
    assert w.observe(50, {}) == 20
    assert w.due(w.observe(60, {}))


def test_waiting_partitions_are_those_whose_end_is_past_the_committed_offset():
    committed = {"a": 10, "b": 7, "c": None}
    ends = {"a": 10, "b": 9, "c": 4, "d": None}
    assert waiting_partitions(committed, ends) == {"b": (7, 9), "c": (0, 4)}
    assert waiting_partitions({"c": None}, {"c": 0}) == {}
