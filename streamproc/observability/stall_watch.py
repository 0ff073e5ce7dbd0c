"""Notice a Faust worker that holds input partitions with records waiting and reads none of them; say why.

A worker restarted mid-stream used to log "Worker ready" now and then and read nothing more while
its inputs had records left; this watch's first report showed why (a race between a seek and a
fetch, fixed in `faust_seek_fix`). It stays as a guard: every few seconds it looks at the consumer's
read and committed offsets of its assigned input partitions; when none has moved for
`stall_after_s` (outside a changelog recovery, which may take long and logs its own progress) and
some partition's end is past its committed offset, it logs one
warning with the consumer's flow state (generation, assignment, Faust's and aiokafka's paused
partitions, flow control, recovery, aiokafka's fetch positions) and counts it in
`streamproc_worker_stalls_total`, after a dump of every thread's and task's stack. SIGUSR2 logs
the same state on demand. `StallWatch` is the pure part; `install_stall_watch` wires it to a Faust app.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mode.utils.logging import cry

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0


@dataclass
class StallWatch:
    """Tracks how long a worker's positions have stood still; reports each standstill once."""

    stall_after_s: float
    _positions: dict[Any, Any] = field(default_factory=dict)
    _still_since: float | None = None
    _reported: bool = False

    def observe(self, now: float, positions: Mapping[Any, Any]) -> float:
        """Record the positions seen at `now`; return for how many seconds they have not moved."""
        if self._still_since is None or dict(positions) != self._positions:
            self._positions = dict(positions)
            self._still_since = now
            self._reported = False
            return 0.0
        return now - self._still_since

    def due(self, still_s: float) -> bool:
        """Whether a standstill of `still_s` seconds should be reported now (once per standstill)."""
        return still_s >= self.stall_after_s and not self._reported

    def reported(self) -> None:
        self._reported = True

    def checked(self, now: float) -> None:
        """Nothing was waiting: count the standstill from `now` again (an idle worker is not stalled)."""
        self._still_since = now


def waiting_partitions(
    committed: Mapping[Any, int | None], ends: Mapping[Any, int | None], slack: int = 0
) -> dict[Any, tuple[int, int]]:
    """The partitions whose end is more than `slack` past their committed offset: partition -> (committed, end).

    `slack` 1 where topics are written in transactions: the last offset of such a partition is a commit
    marker, which no reader sees, so a worker that read everything has committed up to it, not past it."""
    waiting = {}
    for tp, end in ends.items():
        done = committed.get(tp) or 0
        if end is not None and end > done + slack:
            waiting[tp] = (done, end)
    return waiting


def consumer_state(app: Any) -> dict[str, Any]:
    """What decides whether Faust's consumer fetches and delivers records, read defensively (private fields)."""
    consumer = app.consumer
    state: dict[str, Any] = {
        "app_generation": getattr(app, "consumer_generation_id", None),
        "assignment": sorted(map(tuple, consumer.assignment())),
        "faust_paused": sorted(map(tuple, getattr(consumer, "_paused_partitions", ()) or ())),
        "faust_active": sorted(map(tuple, getattr(consumer, "_active_partitions", ()) or ())),
        "faust_buffered": sorted(map(tuple, getattr(consumer, "_buffered_partitions", ()) or ())),
        "flow_active": getattr(consumer, "flow_active", None),
        "flow_control_active": app.flow_control.is_active(),
        "in_recovery": getattr(app, "in_recovery", None),
        "unacked_messages": len(getattr(consumer, "_unacked_messages", ()) or ()),
        "read_offsets": {
            f"{tp.topic}:{tp.partition}": v for tp, v in getattr(consumer, "_read_offset", {}).items()
        },
        "committed_offsets": {
            f"{tp.topic}:{tp.partition}": v for tp, v in getattr(consumer, "_committed_offset", {}).items()
        },
        "fetcher_state": getattr(getattr(app, "_fetcher", None), "state", None),
    }
    recovery = getattr(getattr(app, "tables", None), "_recovery", None)
    if recovery is not None:
        state["recovery_completed"] = recovery.completed.is_set()
        state["recovery_signal_start"] = recovery.signal_recovery_start.is_set()
        state["recovery_generation"] = getattr(recovery, "_generation_id", None)
    thread = getattr(consumer, "_thread", None)
    aio = getattr(thread, "_consumer", None)
    if aio is not None:
        coordinator = getattr(aio, "_coordinator", None)
        state["coordinator_generation"] = getattr(coordinator, "generation", None)
        state["member_id"] = getattr(coordinator, "member_id", None)
        state["aiokafka_paused"] = sorted(map(tuple, aio.paused()))
        positions = {}
        subscription = getattr(getattr(aio, "_subscription", None), "subscription", None)
        assignment = getattr(subscription, "assignment", None)
        if assignment is not None:
            for tp in assignment.tps:
                tps = assignment.state_value(tp)
                positions[f"{tp.topic}:{tp.partition}"] = {
                    "position": tps.position if tps.has_valid_position else None,
                    "paused": tps.paused,
                    "awaiting_reset": tps.awaiting_reset,
                }
        state["aiokafka_positions"] = positions
    return state


def install_stall_watch(
    app: Any,
    stall_after_s: float,
    on_stall: Callable[[], None],
    is_input: Callable[[Any], bool],
    slack: int = 0,
) -> None:
    """Check every CHECK_INTERVAL_S; on a standstill with records waiting, log the consumer's state and call on_stall."""
    watch = StallWatch(stall_after_s)

    @app.timer(interval=CHECK_INTERVAL_S)
    async def watch_for_stall() -> None:
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if is_input(tp)]
        positions = {tp: (consumer._read_offset.get(tp), consumer._committed_offset.get(tp)) for tp in tps}
        still_s = watch.observe(time.monotonic(), positions)
        if app.in_recovery:  # restoring tables from their changelogs: inputs wait on purpose
            watch.checked(time.monotonic())
            return
        if not tps or not watch.due(still_s):
            return
        ends = await consumer.highwaters(*tps)
        waiting = waiting_partitions(
            {tp: committed for tp, (_read, committed) in positions.items()}, ends, slack
        )
        if not waiting:
            watch.checked(time.monotonic())
            return
        watch.reported()
        on_stall()
        cry(file=sys.stderr)  # every thread's and asyncio task's stack: where each one waits
        log.warning(
            "worker stalled: no input position moved for %.0f s with records waiting %s; consumer state: %s",
            still_s,
            {f"{tp.topic}:{tp.partition}": v for tp, v in waiting.items()},
            consumer_state(app),
        )


def log_consumer_state(app: Any) -> None:
    """On demand (the worker's SIGUSR2): log the consumer's flow state."""
    log.warning("consumer state: %s", consumer_state(app))
