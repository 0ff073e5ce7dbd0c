"""The guard against Faust's post-rebalance event loss, on Faust's own commit code and on a scripted seek."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streamproc.compat.faust_seek_fix import (
    deliver_until_seek,
    install_seek_guard,
    record_hole,
    skips_unprocessed_offset,
)

TP0 = TP("clicks", 0)


def commit_state(acked: list[int], committed: int, gaps: IntervalTree | None = None) -> SimpleNamespace:
    """The attributes Faust's Consumer._new_offset reads, for one partition."""
    return SimpleNamespace(
        _acked=defaultdict(list, {TP0: list(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _gap=defaultdict(IntervalTree, {TP0: gaps if gaps is not None else IntervalTree()}),
    )


def test_faust_commit_never_passes_a_single_unprocessed_offset():
    install_seek_guard()
    # 385 is the next offset to read and was never processed; unguarded Faust commits 388 here
    assert Consumer._new_offset(commit_state([386, 387], committed=385), TP0) is None
    assert Consumer._new_offset(commit_state([385, 386, 387], committed=385), TP0) == 388


def test_a_real_hole_in_the_partition_may_still_be_committed_past():
    install_seek_guard()
    holes = IntervalTree.from_tuples([(385, 386)])  # offset 385 does not exist (e.g. compacted away)
    assert Consumer._new_offset(commit_state([386, 387], committed=385, gaps=holes), TP0) == 388


def test_a_commit_marker_at_the_committed_offset_is_a_hole_the_commit_passes():
    """On a topic written in transactions the next offset after a commit is its marker, never delivered: the
    record after it opens a hole at the committed offset itself, and the commit moves past it."""
    install_seek_guard()
    state = commit_state([], committed=303)
    asyncio.run(Consumer._add_gap(state, TP0, 303, 304))  # read offset 302, then record 304 arrives
    state._acked[TP0] += [304, 305]
    assert Consumer._new_offset(state, TP0) == 306


def test_after_a_seek_a_commit_marker_at_the_committed_offset_is_a_hole_too():
    install_seek_guard()
    state = commit_state([], committed=84)  # a restart: sought to 84, the marker of the last commit
    state._streamproc_next_offset = {}
    record_hole(state, TP0, 85)
    record_hole(state, TP0, 86)
    state._acked[TP0] += [85, 86]
    assert Consumer._new_offset(state, TP0) == 87
    # without the hole, 84 counts as never processed and the commit waits
    assert Consumer._new_offset(commit_state([85, 86], committed=84), TP0) is None


def test_skips_unprocessed_offset_is_false_without_a_commit_or_without_acks():
    assert not skips_unprocessed_offset([], 10, IntervalTree())
    assert not skips_unprocessed_offset([12], None, IntervalTree())
    assert not skips_unprocessed_offset([9, 10, 11], 10, IntervalTree())
    assert skips_unprocessed_offset([11], 10, IntervalTree())


def test_a_batch_fetched_before_a_seek_stops_and_the_seeks_read_offset_is_kept():
    consumer = SimpleNamespace(_read_offset={TP0: None})

    async def fetched_batch():
        for offset in range(100, 110):
            yield TP0, offset

    async def drain() -> list[int]:
        delivered = []
        async for tp, offset in deliver_until_seek(consumer, fetched_batch()):
            delivered.append(offset)
            if offset == 103:  # a seek to the committed offset 101 completes while 103 is delivered
                consumer._streamproc_seek_epoch = 1
                consumer._read_offset[tp] = 101
                consumer._streamproc_read_after_seek = {tp: 101}
            consumer._read_offset[tp] = offset  # what Faust's drain loop does after each delivery
        return delivered

    assert asyncio.run(drain()) == [100, 101, 102, 103]
    assert consumer._read_offset[TP0] == 101  # 101.. are read again, not taken for a hole


def test_partitions_with_nothing_committed_are_read_again_from_the_beginning():
    from faust.transport.consumer import ThreadDelegateConsumer

    from streamproc.compat.faust_seek_fix import never_committed_stream_partitions

    install_seek_guard()
    committed = {
        TP("clicks", 0): 120,
        TP("user-events", 1): None,
        TP("user-events", 2): 0,
        TP("app-user-state-changelog", 1): None,
        TP("app-__assignor-__leader", 0): None,
    }
    assert never_committed_stream_partitions(committed, {"app-user-state-changelog"}) == [
        TP("user-events", 1),
        TP("user-events", 2),
    ]

    seeks: list[tuple] = []

    def seek(tp, offset):
        seeks.append((tp, offset))

    async def original_seek(self):
        return committed

    consumer = SimpleNamespace(
        app=SimpleNamespace(
            tables=SimpleNamespace(changelog_topics={"app-user-state-changelog"}),
            conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
        ),
        _thread=SimpleNamespace(seek_to_committed=lambda: original_seek(None), seek=seek),
    )
    assert asyncio.run(ThreadDelegateConsumer.seek_to_committed(consumer)) == committed
    assert seeks == [(TP("user-events", 1), 0), (TP("user-events", 2), 0)]


def test_a_batch_whose_fetch_spanned_a_seek_is_dropped_and_the_partitions_are_sought_again():
    """The restart stall: the seek ran while the fetch was in flight, and the fetch then returned the
    records from the offsets the seek had set. Dropping them without a new seek left aiokafka past them."""
    seeks = []

    class FakeConsumer(SimpleNamespace):
        async def perform_seek(self):
            seeks.append(self._streamproc_seek_epoch)

    consumer = FakeConsumer(_read_offset={TP0: None}, _streamproc_seek_epoch=0)

    async def fetched_across_a_seek():
        consumer._streamproc_seek_epoch = 1  # the seek completes while the fetch is in flight
        for offset in range(0, 10):
            yield TP0, offset

    async def drain() -> list[int]:
        return [offset async for _, offset in deliver_until_seek(consumer, fetched_across_a_seek())]

    assert asyncio.run(drain()) == []
    assert seeks == [1]  # sought again: offsets 0.. are read once more instead of being skipped


def test_a_batch_fetched_without_a_seek_is_delivered_whole_and_seeks_nothing():
    seeks = []

    class FakeConsumer(SimpleNamespace):
        async def perform_seek(self):
            seeks.append(True)

    consumer = FakeConsumer(_read_offset={TP0: None}, _streamproc_seek_epoch=3)

    async def fetched_batch():
        for offset in range(5):
            yield TP0, offset

    async def drain() -> list[int]:
        return [offset async for _, offset in deliver_until_seek(consumer, fetched_batch())]

    assert asyncio.run(drain()) == [0, 1, 2, 3, 4] and seeks == []
