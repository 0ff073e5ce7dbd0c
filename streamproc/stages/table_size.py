"""How many keys a Faust RocksDB table holds, counted in short slices so that the worker never stalls.

`len(table)` on Faust's RocksDB store walks every key of every partition in one go on the event
loop: 6.5-7 us a key with 2 KB states (`bench/table_size_bench.py`: 3.3 s for 500,000 keys), so the
report every 10 s would stop a worker holding a million users for 7 s of every 10. RocksDB's own
"estimate-num-keys" is cheap but counts overwrites until compaction (100,000 keys written three
times read as 240,001), and states are overwritten at every commit. So the count walks the keys
itself, a slice of at most `slice_s` at a time, and lets the event loop run between slices; each
slice opens a fresh iterator at the key after the last one counted, so no RocksDB snapshot stays
pinned across a long count. The caller spaces whole counts so that counting costs at most
MAX_SHARE of the worker's time (`next_count_in_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

CHECK_CLOCK_EVERY = 256  # keys between looks at the clock
MAX_SHARE = 0.01  # of the worker's time spent counting, at most, between two counts
REPORT_EVERY_S = 10.0

log = logging.getLogger(__name__)


async def count_keys(
    dbs: Iterable[Any],
    skip: bytes | None = None,
    slice_s: float = 0.005,
    clock: Callable[[], float] = time.perf_counter,
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[int, float]:
    """(keys in the rocksdict databases less `skip` where present, seconds spent counting outside pauses).

    Keys written or deleted while the count runs may or may not be counted; every key present from start
    to end is counted once.
    """
    total, busy = 0, 0.0
    for db in dbs:
        if skip is not None and db.get(skip) is not None:
            total -= 1
        started = clock()
        iterator = db.iter()
        iterator.seek_to_first()
        seen = 0
        while iterator.valid():
            seen += 1
            if seen % CHECK_CLOCK_EVERY == 0 and clock() - started > slice_s:
                last = iterator.key()
                del iterator
                busy += clock() - started
                await pause(0)
                started = clock()
                iterator = db.iter()
                iterator.seek(last)  # the last key counted, or the first after it if it went meanwhile
                if iterator.valid() and iterator.key() == last:
                    iterator.next()
                continue
            iterator.next()
        busy += clock() - started
        total += seen
    return total, busy


def next_count_in_s(busy_s: float, every_s: float) -> float:
    """Seconds to wait before the next count: `every_s`, or longer when a count took more than MAX_SHARE of that."""
    return max(every_s, busy_s / MAX_SHARE)


async def table_keys(table: Any) -> tuple[int, float]:
    """(keys, seconds counting) of a Faust table: sliced over its RocksDB partitions, else `len` (memory store)."""
    store = table.data
    if not getattr(store, "use_rocksdict", False):
        return len(table), 0.0
    return await count_keys(list(store._dbs_for_actives()), skip=store.offset_key)


def install_table_size_reporter(
    app: Any, tables: Iterable[Any], report: Callable[[str, int], None], every_s: float = REPORT_EVERY_S
) -> None:
    """A Faust task that reports each table's key count every `every_s`, or less often when counting is slow."""
    tables = list(tables)

    @app.task
    async def report_table_sizes() -> None:
        while True:
            busy = 0.0
            for table in tables:
                try:
                    keys, seconds = await table_keys(table)
                except Exception:  # noqa: BLE001 - a partition closed by a rebalance mid-count: count again later
                    log.info(
                        "table %s: count abandoned, retried in %.0f s", table.name, every_s, exc_info=True
                    )
                    continue
                busy += seconds
                report(table.name, keys)
            await asyncio.sleep(next_count_in_s(busy, every_s))
