"""Per-partition gauges both processes export, computed at scrape time: the input partitions each reads, and its lag.

`streamproc_input_partitions{topic}` says how many partitions of an input topic the process reads
now: a readiness signal (the demo waits for it before it replays; a Faust worker reports 0 while it
restores its tables from their changelogs). `streamproc_consumer_lag{topic,partition}` is the records
between the process's read position and the partition's high watermark.

Nothing is book-kept: `PartitionCollector` is a prometheus_client custom collector that asks the
process's consumer for its assignment on every scrape (`read_faust_assignment`,
`read_confluent_assignment`: local state only, no broker request), so a partition moved to another
process disappears from this one's page at the next scrape. aiokafka's state is read from the scrape's
thread; a confluent-kafka consumer is read on its own thread (`OnOwnerThread`), since another thread's
call waits while the owner is in `consume()`.
`partition_families` is the pure part, `records_behind` the arithmetic.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
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
    fetch responses (`cached=True`, no broker request). Call it on the consumer's own thread: another
    thread's call waits while the owner is in `consume()` (`OnOwnerThread` carries a scrape's request over)."""

    def read() -> Assignment:
        assignment = consumer.assignment()
        lag: dict[tuple[str, int], int | None] = {}
        for tp in consumer.position(assignment) if assignment else []:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            lag[(tp.topic, tp.partition)] = records_behind(tp.offset, high) if tp.offset >= 0 else None
        return Assignment(lag)

    return read


class OnOwnerThread:
    """Runs `read` on the thread that owns a consumer when a scrape asks for it.

    A scrape (the HTTP server's thread) calls the object and waits up to `wait_s` for the owner's loop,
    which calls `answer()` once per turn. An owner busy for longer (a long model batch) leaves the scrape
    the answer of an earlier scrape; one not looping yet, or stopped, reads as no partitions."""

    def __init__(self, read: Callable[[], Assignment], wait_s: float = 1.0) -> None:
        self.read = read
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._asked: Future[Assignment] | None = None
        self._last = Assignment(reading=False)
        self._closed = False

    def __call__(self) -> Assignment:
        with self._lock:
            if self._closed:
                return Assignment(reading=False)
            if self._asked is None:
                self._asked = Future()
            asked = self._asked
        try:
            return asked.result(timeout=self.wait_s)
        except FutureTimeout:
            return self._last

    def asked(self) -> bool:
        """Whether a scrape waits for the owner's next turn."""
        with self._lock:
            return self._asked is not None

    def answer(self) -> None:
        """On the owner's thread: read now if a scrape is waiting (a lock and a check when none is)."""
        with self._lock:
            asked, self._asked = self._asked, None
        if asked is None:
            return
        try:
            self._last = self.read()
        except Exception as exc:  # noqa: BLE001 - the scrape reports it as no partitions
            asked.set_exception(exc)
        else:
            asked.set_result(self._last)

    def close(self) -> None:
        """The consumer is closing: later scrapes read no partitions at once; a waiting one is answered so."""
        with self._lock:
            self._closed, asked, self._asked = True, self._asked, None
        if asked is not None:
            asked.set_result(Assignment(reading=False))
