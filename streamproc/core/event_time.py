"""Event-time guard: an event far ahead in time is refused, never applied to state.

Each input partition has an event-time clock: the newest event time it has accepted (Kafka Streams'
"stream time"), and never behind the wall clock. One event dated decades ahead would otherwise become
the newest event of a user's window and of a terminal's day buckets, evicting everything older by age:
every later event of that card or terminal would be scored on an empty history. So an event more than
`max_ahead_ms` ahead of its partition's clock is refused (reason future_timestamp).

The clock follows the wall clock as well as the events: a partition that was quiet for longer than the
skew (a weekend without traffic, an outage) takes its next events, which a clock made of events alone
would refuse for ever. So for live traffic the bound is the wall clock plus the skew, and the events
count where they run ahead of it (a producer whose clock is fast, a replay of data dated in the future).
Late events are never refused: windows insert them in event-time order and evict by age as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamproc.core.events import InvalidEvent


@dataclass
class EventTimeClocks:
    """The event-time clock of each (topic, partition) this worker has read; pure, no I/O.

    `max_ahead_ms` 0 turns the guard off (a replay of data dated in the future)."""

    max_ahead_ms: int
    clocks: dict[tuple[str, int], int] = field(default_factory=dict)

    def clock(self, topic: str, partition: int, now_ms: int) -> int:
        """The partition's event-time clock now: its newest accepted event, or the wall clock if later."""
        return max(self.clocks.get((topic, partition), now_ms), now_ms)

    def admit(self, topic: str, partition: int, ts_ms: int, now_ms: int) -> None:
        """Accept an event's time, moving its partition's clock forward; raise InvalidEvent(future_timestamp)
        when it is too far ahead (the clock then stays where it was)."""
        if self.max_ahead_ms:
            clock = self.clock(topic, partition, now_ms)
            if ts_ms > clock + self.max_ahead_ms:
                raise InvalidEvent(
                    "future_timestamp",
                    f"'ts' {ts_ms} is {(ts_ms - clock) / 3_600_000:,.1f} h ahead of "
                    f"its partition's event-time clock {clock} (at most "
                    f"{self.max_ahead_ms / 3_600_000:g} h)",
                )
        if ts_ms > self.clocks.get((topic, partition), ts_ms - 1):
            self.clocks[(topic, partition)] = ts_ms
