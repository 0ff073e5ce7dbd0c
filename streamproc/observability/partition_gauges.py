"""Per-partition gauges both processes export, computed at scrape time: the input partitions each reads, and its lag.

`streamproc_input_partitions{topic}` says how many partitions of an input topic the process reads
now: a readiness signal (the demo waits for it before it replays; a Faust worker reports 0 while it
restores its tables from their changelogs). `streamproc_consumer_lag{topic,partition}` is the records
between the process's read position and the partition's high watermark.

Nothing is book-kept: `PartitionCollector` is a prometheus_client custom collector that asks the
process's consumer for its assignment on every scrape (`read_faust_assignment`,
`read_confluent_assignment`: local state only, no broker request), so a partition moved to another
process disappears from this one's page at the next scrape and a page is never older than its scrape.
`partition_families` is the pure part, `records_behind` the arithmetic.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamproc.observability.metrics import Metrics

log = logging.getLogger(__name__)

LAG = "streamproc_consumer_lag"
LAG_HELP = "Records between this process's read position and the high watermark, per input partition"
PARTITIONS = "streamproc_input_partitions"
PARTITIONS_HELP = (
    "Partitions of each input topic this process reads now (0 while a worker restores its tables)"
)


def records_behind(next_offset: int | None, highwater: int | None) -> int | None:
    """Records from `next_offset` (the next one the process will read) to the high watermark; None if unknown."""
    if highwater is None or highwater < 0:
        return None
    return max(0, highwater - max(0, next_offset or 0))


@dataclass(frozen=True)
class Assignment:
    """A process's input partitions at one moment and the records behind on each (None: not known yet).

    `reading=False` (a changelog recovery): the partitions are held but not read, so each topic counts 0.
    """

    lag: Mapping[tuple[str, int], int | None] = field(default_factory=dict)
    reading: bool = True


def partition_families(input_topics: Iterable[str], now: Assignment) -> list[GaugeMetricFamily]:
    """The two gauge families for one assignment: every input topic counted (0 when none of it is held)."""
    partitions = GaugeMetricFamily(PARTITIONS, PARTITIONS_HELP, labels=["topic"])
    counts = Counter(topic for topic, _partition in now.lag)
    for topic in sorted(set(input_topics) | set(counts)):
        partitions.add_metric([topic], counts[topic] if now.reading else 0)
    lag = GaugeMetricFamily(LAG, LAG_HELP, labels=["topic", "partition"])
    for (topic, partition), behind in sorted(now.lag.items()):
        if behind is not None:
            lag.add_metric([topic, str(partition)], behind)
    return [partitions, lag]


class PartitionCollector(Collector):
    """Reads the assignment on each scrape; a failed read (a consumer not started or already closed) is no partitions."""

    def __init__(self, input_topics: Iterable[str], read: Callable[[], Assignment]) -> None:
        self.input_topics = tuple(input_topics)
        self.read = read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # the names alone, so that registering neither reads the consumer nor clashes silently
        yield from partition_families((), Assignment())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            now = self.read()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the consumer's life cycle
            log.debug("no assignment to report: %r", exc)
            now = Assignment(reading=False)
        yield from partition_families(self.input_topics, now)


def register_partition_gauges(
    metrics: Metrics, input_topics: Iterable[str], read: Callable[[], Assignment]
) -> PartitionCollector:
    collector = PartitionCollector(input_topics, read)
    metrics.registry.register(collector)
    return collector


def read_faust_assignment(app: Any, is_input: Callable[[Any], bool]) -> Callable[[], Assignment]:
    """The Faust worker's input partitions and lag, from Faust's read offsets and the high watermarks of
    aiokafka's last fetch responses. Runs on the scrape's thread: reads only, and nothing before the
    worker has made its consumer (reading `app.consumer` earlier would make one on the wrong thread)."""

    def read() -> Assignment:
        consumer = app._consumer  # private: `app.consumer` would create it
        if consumer is None:
            return Assignment(reading=False)
        lag: dict[tuple[str, int], int | None] = {}
        for tp in consumer.assignment():
            if not is_input(tp):
                continue
            read_offset = consumer._read_offset.get(tp)  # the last offset handed to a stream
            next_offset = read_offset + 1 if read_offset is not None else consumer._committed_offset.get(tp)
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch response for it yet
                highwater = None
            lag[(tp.topic, tp.partition)] = records_behind(next_offset, highwater)
        return Assignment(lag, reading=not app.in_recovery)

    return read


def read_confluent_assignment(consumer: Any) -> Callable[[], Assignment]:
    """A confluent-kafka consumer's partitions and lag: its positions and the high watermarks of its last
    fetch responses (`cached=True`, no broker request); librdkafka's calls are safe from the scrape's thread."""

    def read() -> Assignment:
        assignment = consumer.assignment()
        lag: dict[tuple[str, int], int | None] = {}
        for tp in consumer.position(assignment) if assignment else []:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            lag[(tp.topic, tp.partition)] = records_behind(tp.offset, high) if tp.offset >= 0 else None
        return Assignment(lag)

    return read
