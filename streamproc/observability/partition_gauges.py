"""Per-partition gauges both processes export: the input partitions each reads, and its lag on each.

`streamproc_input_partitions{topic}` says how many partitions of an input topic the process reads
now: a readiness signal (the demo waits for it before it replays; a Faust worker reports 0 while it
restores its tables from their changelogs). `streamproc_consumer_lag{topic,partition}` is the records
between the process's read position and the partition's high watermark. `records_behind` is the pure
part; `PartitionGauges` keeps the label sets equal to the current assignment, so that a partition
moved to another process is not reported by both; `install_faust_partition_gauges` drives it from a
Faust timer (the scoring worker calls `PartitionGauges.update` from its loop).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from streamproc.observability.metrics import Metrics

FAUST_REPORT_EVERY_S = 1.0


def records_behind(next_offset: int | None, highwater: int | None) -> int | None:
    """Records from `next_offset` (the next one the process will read) to the high watermark; None if unknown."""
    if highwater is None or highwater < 0:
        return None
    return max(0, highwater - max(0, next_offset or 0))


class PartitionGauges:
    """Sets the gauges from one process's assignment; removes the series of partitions it no longer holds."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._lag_labels: set[tuple[str, str]] = set()
        self._topics: set[str] = set()

    def update(self, lag: Mapping[tuple[str, int], int | None], reading: bool = True) -> None:
        """`lag`: every assigned (topic, partition) and its records behind (None: not known yet).

        `reading=False` (a changelog recovery) reports the partitions as held but not read: count 0.
        """
        counts = Counter(topic for topic, _partition in lag)
        for topic in self._topics | set(counts):
            self.metrics.input_partitions.labels(topic).set(counts.get(topic, 0) if reading else 0)
        self._topics |= set(counts)
        current = {(topic, str(partition)) for topic, partition in lag}
        for labels in self._lag_labels - current:
            self.metrics.consumer_lag.remove(*labels)
        self._lag_labels &= current
        for (topic, partition), behind in lag.items():
            if behind is not None:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(behind)
                self._lag_labels.add((topic, str(partition)))


def install_faust_partition_gauges(
    app: Any, metrics: Metrics, is_input: Callable[[Any], bool]
) -> PartitionGauges:
    """Every FAUST_REPORT_EVERY_S: the worker's input partitions and lag, from Faust's read offsets and the
    high watermarks of aiokafka's last fetch responses (no broker request)."""
    gauges = PartitionGauges(metrics)

    @app.timer(interval=FAUST_REPORT_EVERY_S)
    async def report_partitions() -> None:
        consumer = app.consumer
        lag: dict[tuple[str, int], int | None] = {}
        for tp in consumer.assignment():
            if not is_input(tp):
                continue
            read = consumer._read_offset.get(tp)  # the last offset handed to a stream
            next_offset = read + 1 if read is not None else consumer._committed_offset.get(tp)
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch response for it yet
                highwater = None
            lag[(tp.topic, tp.partition)] = records_behind(next_offset, highwater)
        gauges.update(lag, reading=not app.in_recovery)

    return gauges
