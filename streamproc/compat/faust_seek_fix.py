"""Workaround for a Faust race that loses input events after a rebalance; installed for every broker.

After a rebalance, Faust's recovery resumes the input partitions, then seeks them to the committed
offsets, then clears the agents' queues. Records fetched before the seek keep flowing from the
batch in hand while the seek runs: Faust's gap detection takes the jump back to the committed
offset as a hole in the partition, counts the offsets in between as acknowledged, and commits
past events that the queue-clearing then threw away. Seen here as 6 to 273 events of 3,000 lost
after a worker restart.

`install_seek_guard` closes that race:
  * a fetched batch stops being delivered once a seek starts (as Faust already does on a new
    consumer generation), and the read offset a seek set is restored if a record that was in
    delivery when the seek started overwrote it; the partitions are then read again from the
    committed offsets. A batch whose fetch was still in flight when a seek ran is dropped and the
    partitions are sought again: its records may have come from the offsets the seek set, and
    dropping them without a new seek left aiokafka past records nobody processed. With a short
    fetch wait that happened on most restarts: the restarted worker read nothing more (the
    "restart stall") and its inputs' records were lost;
  * a commit never moves past an offset that was neither acknowledged nor seen as a real hole
    (Faust lets exactly one missing offset through: it compares with "> 1" where the committed
    offset is already the next one to read);
  * a hole that starts at the committed offset is recorded as one (Faust starts holes one past it, and
    after a seek misses them, forgetting that its committed offset is the next one to read; its holes also
    take in the record that followed them, counted twice). On a topic written in transactions the offset
    after a commit is always a commit marker, which no consumer sees: without this, the commit guard above
    held such a partition at its first marker for ever;
  * a partition with no committed offset is read again from its beginning. aiokafka's
    seek-to-committed leaves such a partition where the fetch before the seek left it, so the
    records that fetch delivered, then dropped from the cleared queues, were never read again.
    Seen here after a restart of a worker that had committed nothing yet on its intermediate
    topics: a user's transactions were skipped, and with write-behind state, lost from the window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from streamproc.compat.patching import replace_method

log = logging.getLogger(__name__)


def install_seek_guard() -> None:
    from faust.transport import consumer as faust_consumer

    cls = faust_consumer.Consumer

    def perform_seek_replacement(original_perform_seek: Any) -> Any:
        async def perform_seek(self: Any) -> None:
            self._streamproc_seek_epoch = getattr(self, "_streamproc_seek_epoch", 0) + 1
            self._streamproc_seeking = True
            self._streamproc_next_offset = {}  # each partition is read from its committed offset again
            try:
                await original_perform_seek(self)
            finally:
                self._streamproc_seeking = False
            self._streamproc_read_after_seek = dict(self._read_offset)

        return perform_seek

    def getmany_replacement(original_getmany: Any) -> Any:
        async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
            async for item in deliver_until_seek(self, original_getmany(self, timeout)):
                yield item

        return getmany

    def new_offset_replacement(original_new_offset: Any) -> Any:
        def _new_offset(self: Any, tp: Any) -> int | None:
            if skips_unprocessed_offset(self._acked[tp], self._committed_offset[tp], self._gap[tp]):
                return None
            return original_new_offset(self, tp)

        return _new_offset

    def seek_to_committed_replacement(original_seek_to_committed: Any) -> Any:
        async def seek_to_committed(self: Any) -> Any:
            committed = await original_seek_to_committed(self)
            never = never_committed_stream_partitions(committed, self.app.tables.changelog_topics)
            if never and self.app.conf.consumer_auto_offset_reset == "earliest":
                for tp in (
                    never
                ):  # as aiokafka seeks a partition to its committed offset (a log start above 0 resets)
                    self._thread.seek(tp, 0)
            return committed

        return seek_to_committed

    def add_gap_replacement(original_add_gap: Any) -> Any:
        async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
            committed = self._committed_offset[tp]
            if committed is not None:
                offset_from = max(offset_from, committed)  # the next offset to read may be the hole's first
            if offset_from < offset_to:  # `offset_to` is the record that came after the hole, acked by itself
                gaps = self._gap[tp]
                gaps.addi(offset_from, offset_to)  # intervals exclude their end
                await asyncio.sleep(0)  # as Faust: other tasks run while a long gap is merged
                gaps.merge_overlaps()

        return _add_gap

    for name in ("perform_seek", "getmany", "_new_offset", "_add_gap"):  # check all before replacing any
        if not hasattr(cls, name):
            raise RuntimeError(f"faust's Consumer has no {name}: {__name__} needs faust-streaming 0.15")
    replace_method(cls, "perform_seek", perform_seek_replacement, __name__)
    replace_method(cls, "getmany", getmany_replacement, __name__)
    replace_method(cls, "_new_offset", new_offset_replacement, __name__)
    replace_method(cls, "_add_gap", add_gap_replacement, __name__)
    replace_method(
        faust_consumer.ThreadDelegateConsumer, "seek_to_committed", seek_to_committed_replacement, __name__
    )


async def deliver_until_seek(
    consumer: Any, records: AsyncIterator[tuple[Any, Any]]
) -> AsyncIterator[tuple[Any, Any]]:
    """Yield a fetched batch's records until a seek starts; then restore the read offset the seek set."""
    epoch = getattr(consumer, "_streamproc_seek_epoch", 0)
    try:
        async for tp, message in records:
            if getattr(consumer, "_streamproc_seek_epoch", 0) != epoch:
                # A seek ran while this batch was being fetched. If the fetch finished before the seek,
                # the seek already put the partitions back; if after, the records came from the
                # offsets the seek set and aiokafka's positions are now past them: seek again, so that
                # they are read once more rather than skipped. Nothing was delivered since that seek.
                await seek_again(consumer)
                return
            if getattr(consumer, "_gap", None) is not None:
                record_hole(consumer, tp, message.offset)
            yield tp, message
            # the caller has now delivered the record and set its read offset
            if getattr(consumer, "_streamproc_seek_epoch", 0) != epoch:
                if not getattr(consumer, "_streamproc_seeking", False):
                    consumer._read_offset[tp] = consumer._streamproc_read_after_seek.get(tp)
                return
    finally:
        await records.aclose()  # type: ignore[attr-defined]


def record_hole(consumer: Any, tp: Any, offset: int) -> None:
    """Record the offsets between the one expected next in `tp` and the record at `offset` as a hole.

    Faust's own hole detection compares with its read offset, which after a seek holds the committed offset
    (the next one to read) rather than the last one read, so it misses a hole of one at the committed
    offset: on a topic written in transactions, the commit marker that always follows a commit. The
    offset expected next is the committed one after a seek, then one past each record delivered."""
    expected_by_tp = getattr(consumer, "_streamproc_next_offset", None)
    if expected_by_tp is None:
        expected_by_tp = consumer._streamproc_next_offset = {}
    expected = expected_by_tp.get(tp)
    if expected is None:
        expected = consumer._committed_offset.get(tp)
    if expected is not None and offset > expected:
        consumer._gap[tp].addi(expected, offset)
    expected_by_tp[tp] = offset + 1


async def seek_again(consumer: Any) -> None:
    """Seek every partition to its committed offset again (as Faust does when it fetched while flow was off)."""
    log.info(
        "a batch was fetched across a seek: dropped, and every partition sought to its committed offset again"
    )
    try:
        await consumer.perform_seek()
    except Exception as exc:  # a rebalance under way seeks again itself once it completes
        log.warning("seek after a batch fetched across a seek failed: %r", exc)


def skips_unprocessed_offset(acked: list[int], committed: int | None, gaps: Any) -> bool:
    """Whether committing `acked` would pass offset `committed` (the next one to read) unprocessed."""
    return bool(acked) and committed is not None and min(acked) > committed and not gaps.overlaps(committed)


def never_committed_stream_partitions(committed: Any, changelog_topics: Any) -> list[Any]:
    """The partitions of `committed` (partition -> committed offset) with nothing committed that agents read.

    Changelog partitions are positioned by Faust's table recovery, and the leader-election topic
    by Faust itself, not by the committed offsets.
    """
    return [
        tp
        for tp, offset in committed.items()
        if not offset and tp.topic not in changelog_topics and "__assignor-__leader" not in tp.topic
    ]
