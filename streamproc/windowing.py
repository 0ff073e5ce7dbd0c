"""Pure per-user window arithmetic: event-time ordered insert, duplicate ids ignored, eviction by count and age."""

from __future__ import annotations

import bisect
from typing import Any

Record = dict[str, Any]


def _insert_position(window: list[Record], ts_ms: int) -> int:
    """Index after every event with ts_ms <= the new one (stable for equal times)."""
    return bisect.bisect_right([e["ts_ms"] for e in window], ts_ms)


def evict(window: list[Record], max_events: int, max_age_ms: int) -> list[Record]:
    """Drop events older than max_age_ms before the newest one, then keep the newest max_events."""
    if not window:
        return window
    oldest_allowed = window[-1]["ts_ms"] - max_age_ms
    start = bisect.bisect_left([e["ts_ms"] for e in window], oldest_allowed)
    start = max(start, len(window) - max_events)
    return window[start:]


def insert_event(window: list[Record], event: Record, max_events: int, max_age_ms: int) -> tuple[list[Record], bool]:
    """The window with `event` in event-time order and evictions applied; False when its id is already there."""
    if any(e["event_id"] == event["event_id"] for e in window):
        return window, False
    position = _insert_position(window, event["ts_ms"])
    return evict(window[:position] + [event] + window[position:], max_events, max_age_ms), True


def window_for_event(window: list[Record], event: Record, max_events: int) -> list[Record]:
    """What scoring `event` may see: the window's events up to and including it, at most max_events.

    Later events that arrived first (out-of-order input, or a re-delivered event) are cut off, so a
    score never uses anything after the scored event; the scored event is always last.
    """
    for index, existing in enumerate(window):
        if existing["event_id"] == event["event_id"]:
            return window[max(0, index + 1 - max_events) : index + 1]
    earlier = window[: _insert_position(window, event["ts_ms"])]
    return (earlier + [event])[-max_events:]
