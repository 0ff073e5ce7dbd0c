"""What counting a RocksDB table's keys costs the Faust worker's event loop: Faust's `len(table)` against
streamproc.stages.table_size's sliced count, and RocksDB's own estimate next to the true count.

A real RocksDB database (rocksdict, raw mode, as Faust's store opens it) is filled with --keys keys of
--value-bytes each, written --rounds times over (as write-behind overwrites each user's state).
  Faust len(table)  one pass over the keys in Python (Faust's Store._size), as the worker did every 10 s:
                    the event loop runs nothing else until it ends
  sliced count      streamproc.stages.table_size.count_keys, with a ticker task measuring the longest time the
                    event loop went without a turn
  estimate          RocksDB's "rocksdb.estimate-num-keys" property
Not a timed test: prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt, header, table
from faust.stores.rocksdb import Store as RocksDBStore
from rocksdict import Options, Rdict, WriteBatch

from streamproc.stages.table_size import count_keys, next_count_in_s

OFFSET_KEY = RocksDBStore.offset_key  # what Faust keeps in each partition's database


def fill(db: Rdict, keys: int, value_bytes: int, rounds: int) -> None:
    value = b"x" * value_bytes
    for _round in range(rounds):
        for start in range(0, keys, 10_000):
            batch = WriteBatch(raw_mode=True)
            for k in range(start, min(keys, start + 10_000)):
                batch.put(f"user-{k:09d}".encode(), value)
            db.write(batch)
    db.put(OFFSET_KEY, b"0")


def faust_len(db: Rdict) -> int:
    """Faust's RocksDB Store._size1 for one partition (rocksdict): every key but the offset key."""
    return sum(1 for key in db.keys() if key != OFFSET_KEY)


async def sliced(db: Rdict) -> tuple[int, float, float, float]:
    """(keys, wall seconds, busy seconds, longest event-loop gap in seconds) of one sliced count."""
    gaps: list[float] = []
    started = time.perf_counter()
    counting = asyncio.create_task(count_keys([db], OFFSET_KEY))

    async def ticker() -> None:
        last = time.perf_counter()
        while not counting.done():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    await asyncio.gather(counting, ticker())
    keys, busy = counting.result()
    return keys, time.perf_counter() - started, busy, max(gaps, default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", default="10000,100000,500000", help="comma-separated table sizes")
    parser.add_argument("--value-bytes", type=int, default=2_000, help="a user state is 2-10 KB")
    parser.add_argument("--rounds", type=int, default=3, help="times each key is written")
    args = parser.parse_args(argv)

    rows = []
    for keys in (int(k) for k in args.keys.split(",")):
        folder = Path(tempfile.mkdtemp(prefix="table-size-bench-"))
        db = Rdict(str(folder / "db"), options=Options(raw_mode=True))
        try:
            fill(db, keys, args.value_bytes, args.rounds)
            started = time.perf_counter()
            exact = faust_len(db)
            faust_s = time.perf_counter() - started
            counted, wall, busy, gap = asyncio.run(sliced(db))
            estimate = db.property_int_value("rocksdb.estimate-num-keys")
            rows.append(
                [
                    f"{keys:,}",
                    f"{exact:,}",
                    fmt(faust_s * 1000),
                    fmt(faust_s / exact * 1e6, 1),
                    f"{counted:,}",
                    fmt(wall * 1000),
                    fmt(gap * 1000, 1),
                    fmt(next_count_in_s(busy, 10.0)),
                    f"{estimate:,}",
                ]
            )
        finally:
            db.close()
            shutil.rmtree(folder, ignore_errors=True)
        print(rows[-1], file=sys.stderr)

    print(
        header(
            "table_size_bench: counting a RocksDB table's keys",
            {"workload": f"{args.value_bytes:,}-byte values, each key written {args.rounds} times"},
            broker=False,
        )
    )
    print(
        table(
            [
                "keys",
                "Faust len(table)",
                "event loop stopped for (ms)",
                "us per key",
                "sliced count",
                "sliced count took (ms)",
                "longest event-loop gap (ms)",
                "next count in (s)",
                "RocksDB estimate-num-keys",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
