"""A memory budget for the embedded broker, which keeps every record in memory and never deletes one.

The demo's broker (Tansu, in-memory storage) has no retention, compaction or DeleteRecords, so its
resident memory grows by the bytes of every record produced (measured: 50,000 records of 10 KB
took it from 15 to 499 MiB). In the demo that is about 4.5 KB per replayed event (input, internal
topics, the lz4-compressed sequence update and scores: 18,576 generator events took it from 15 to
99 MiB), so about 4 GiB an hour at 250 events/s and 15 GiB an hour at 1,000. Rather than fill the
machine, the demo stops its replay at a budget, lets the pipeline finish what was sent, and says why.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
MIB = 1 << 20


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def total_memory_bytes() -> int:
    """The machine's physical memory (MemTotal)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def default_budget_bytes() -> int:
    """Half the machine: room left for the Faust worker, the scoring worker and the rest."""
    return total_memory_bytes() // 2


def until_set(items: Iterable[T], stop: threading.Event) -> Iterator[T]:
    """The items, ending early (before the next one) once `stop` is set."""
    for item in items:
        if stop.is_set():
            return
        yield item
