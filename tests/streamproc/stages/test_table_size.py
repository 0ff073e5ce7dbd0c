"""Counting a RocksDB table's keys in slices: exact, and the event loop runs between slices."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from faust.stores.rocksdb import Store as RocksDBStore
from rocksdict import Options, Rdict, WriteBatch

from streamproc.stages.table_size import CHECK_CLOCK_EVERY, MAX_SHARE, count_keys, next_count_in_s

OFFSET_KEY = RocksDBStore.offset_key  # what Faust keeps in each partition's database


@pytest.fixture
def partitions(tmp_path: Path):
    """Two real RocksDB partition databases as Faust opens them (raw mode): 3,000 and 1,000 keys, each
    with Faust's offset key, written twice over (as write-behind overwrites states)."""
    dbs = [Rdict(str(tmp_path / f"p{n}"), options=Options(raw_mode=True)) for n in range(2)]
    for db, keys in zip(dbs, (3_000, 1_000), strict=True):
        for _round in range(2):
            batch = WriteBatch(raw_mode=True)
            for k in range(keys):
                batch.put(f"user-{k:05d}".encode(), b"x" * 200)
            db.write(batch)
        db.put(OFFSET_KEY, b"41")
    yield dbs
    for db in dbs:
        db.close()


def test_counts_every_key_once_however_the_count_is_sliced(partitions):
    ticks = (
        itertools.count()
    )  # a clock that says a slice is over at every look: a new iterator every 256 keys
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    keys, _busy = asyncio.run(
        count_keys(partitions, OFFSET_KEY, slice_s=0.5, clock=lambda: float(next(ticks)), pause=pause)
    )
    assert keys == 4_000
    assert (
        len(pauses) == 3_001 // CHECK_CLOCK_EVERY + 1_001 // CHECK_CLOCK_EVERY
    )  # one per 256 keys of a database
    assert asyncio.run(count_keys(partitions, OFFSET_KEY))[0] == 4_000  # unsliced
    assert asyncio.run(count_keys(partitions))[0] == 4_002  # the offset keys, when not skipped


def test_keys_deleted_and_added_between_slices_are_not_counted_twice(partitions):
    db = partitions[1]
    ticks = itertools.count()
    first_pause = True

    async def pause(_seconds: float) -> None:  # the worker runs between slices: it deletes and adds keys
        nonlocal first_pause
        if first_pause:  # the first slice counted Faust's offset key and user-00000..user-00254
            db.delete(b"user-00254")  # the last key counted: the next slice starts after where it was
            db.put(b"user-00254-b", b"y")  # after the resume point: counted
            db.put(b"user-00000-a", b"y")  # before it: not counted in this count
            first_pause = False

    keys, _busy = asyncio.run(
        count_keys([db], OFFSET_KEY, slice_s=0.5, clock=lambda: float(next(ticks)), pause=pause)
    )
    assert not first_pause
    assert keys == 1_000 + 1  # user-00254 counted before it went, user-00254-b after
    assert asyncio.run(count_keys([db], OFFSET_KEY))[0] == 1_000 - 1 + 2


def test_the_event_loop_runs_while_a_large_table_is_counted(partitions):
    async def main() -> tuple[int, int]:
        turns = 0
        counting = asyncio.create_task(count_keys(partitions, OFFSET_KEY, slice_s=0.0))

        async def other_work() -> None:
            nonlocal turns
            while not counting.done():
                turns += 1
                await asyncio.sleep(0)

        await asyncio.gather(counting, other_work())
        return counting.result()[0], turns

    keys, turns = asyncio.run(main())
    assert keys == 4_000 and turns >= 4_000 // CHECK_CLOCK_EVERY - 2


def test_counts_are_spaced_so_that_counting_takes_at_most_its_share():
    assert next_count_in_s(0.001, 10.0) == 10.0
    assert next_count_in_s(2.0, 10.0) == pytest.approx(2.0 / MAX_SHARE)
