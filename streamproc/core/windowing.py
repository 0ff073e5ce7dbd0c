"""Pure per-user window arithmetic: event-time ordered insert, duplicate ids ignored, eviction by count and age.

A window is ordered by (event time, event id): events with equal times keep one order whatever order
they arrive in (a click and a transaction of the same second reach the user's state by different
paths), so a window rebuilt from scratch or after a restart equals the live one.
"""

from __future__ import annotations

import bisect
from operator import itemgetter
from typing import Any

Record = dict[str, Any]
_ts = itemgetter("ts_ms")
_event_id = itemgetter("event_id")
_order = itemgetter("ts_ms", "event_id")


def _insert_position(window: list[Record], event: Record) -> int:
    """Index of `event` in the window's (event time, event id) order."""
    return bisect.bisect_right(window, _order(event), key=_order)


def evict(window: list[Record], max_events: int, max_age_ms: int) -> list[Record]:
    """Drop events older than max_age_ms before the newest one, then keep the newest max_events."""
    if not window:
        return window
    oldest_allowed = window[-1]["ts_ms"] - max_age_ms
    start = max(bisect.bisect_left(window, oldest_allowed, key=_ts), len(window) - max_events)
    return window[start:]


def insert_event(
    window: list[Record], event: Record, max_events: int, max_age_ms: int
) -> tuple[list[Record], bool]:
    """The window with `event` in event-time order and evictions applied; False when its id is already there."""
    if event["event_id"] in map(_event_id, window):  # `in` over a map runs in C
        return window, False
    position = _insert_position(window, event)
    return evict(window[:position] + [event] + window[position:], max_events, max_age_ms), True


def window_for_event(window: list[Record], event: Record, max_events: int) -> list[Record]:
    """What scoring `event` may see: the window's events up to and including it, at most max_events.

    Later events that arrived first (out-of-order input, or a re-delivered event) are cut off, so a
    score never uses anything after the scored event; the scored event is always last.
    """
    event_id = event["event_id"]
    for index in range(len(window) - 1, -1, -1):  # newest first: the scored event is usually the last
        if window[index]["event_id"] == event_id:
            return window[max(0, index + 1 - max_events) : index + 1]
    earlier = window[: _insert_position(window, event)]
    return (earlier + [event])[-max_events:]
