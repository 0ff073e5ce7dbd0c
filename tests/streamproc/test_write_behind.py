"""Held acknowledgements of the write-behind agents, with Faust's own Message and Event objects.

The output producer is a stand-in here (what is tested is when Faust may commit); the integration
tests run the same code against the real broker and RocksDB.
"""

import asyncio

import faust
import pytest
from faust.types import Message

from streamproc.state_cache import FlushPolicy
from streamproc.write_behind import WriteBehind, flush_when_due


class RecordingOutput:
    """The OutputProducer surface WriteBehind uses: produce, settle (optionally failing) and acked offsets."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.settled = 0
        self.acked: dict[tuple[str, int], int] = {}

    def produce(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no table, so nothing is produced by the flush itself")

    async def settle(self) -> None:
        if self.fail:
            raise RuntimeError("outputs not acknowledged")
        self.settled += 1


def _delivered_events(app: faust.App, n: int, first_offset: int = 0) -> list[faust.EventT]:
    """Events as Faust's conductor hands them to one stream: each message referenced once."""
    events = []
    for offset in range(first_offset, first_offset + n):
        message = Message("clicks", 0, offset, 0.0, 0, {}, b"u1", b"{}", None)
        message.incref()
        events.append(faust.Event(app, message.key, message.value, {}, message))
    return events


def _take_events_finally(events: list[faust.EventT]) -> list[bool]:
    """What Faust's `take_events` does after each batch, whether or not its body raised: ack every event."""
    return [event.ack() for event in events]


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


@pytest.fixture
def app() -> faust.App:
    return faust.App("write-behind-test", broker="kafka://127.0.0.1:1")


def _writer(out: RecordingOutput, clock: Clock, interval_ms: int = 1000, max_events: int = 100) -> WriteBehind:
    return WriteBehind(out, FlushPolicy(interval_ms, max_events), clock_ms=clock)  # type: ignore[arg-type]


def test_held_inputs_survive_take_events_acknowledgement_until_the_flush(app: faust.App) -> None:
    async def scenario() -> None:
        out, clock = RecordingOutput(), Clock()
        writer = _writer(out, clock)
        first, second = _delivered_events(app, 2), _delivered_events(app, 3, first_offset=2)
        writer.hold(first)
        assert _take_events_finally(first) == [False, False]
        clock.now_ms = 400
        writer.hold(second)
        assert _take_events_finally(second) == [False, False, False]
        clock.now_ms = 999
        assert not writer.due()  # the interval counts from the oldest held input
        clock.now_ms = 1000
        assert writer.due()
        await writer.flush()
        assert out.settled == 1 and writer.held_events == 0 and not writer.due()
        assert all(event.message.acked for event in first + second)

    asyncio.run(scenario())


def test_the_event_bound_forces_a_flush_before_the_interval(app: faust.App) -> None:
    async def scenario() -> None:
        writer = _writer(RecordingOutput(), Clock(), max_events=4)
        writer.hold(_delivered_events(app, 3))
        assert not writer.due()
        writer.hold(_delivered_events(app, 1, first_offset=3))
        assert writer.due()

    asyncio.run(scenario())


def test_a_failed_flush_acknowledges_nothing_and_the_writer_refuses_further_batches(app: faust.App) -> None:
    async def scenario() -> None:
        out, clock = RecordingOutput(fail=True), Clock()
        writer = _writer(out, clock, interval_ms=0)
        events = _delivered_events(app, 3)
        writer.hold(events)
        _take_events_finally(events)
        with pytest.raises(RuntimeError, match="not acknowledged"):
            await writer.flush()
        writer.fail(RuntimeError("outputs not acknowledged"))
        assert not any(event.message.acked for event in events)
        assert not writer.due()
        with pytest.raises(RuntimeError, match="failed earlier"):
            writer.hold(_delivered_events(app, 1, first_offset=3))

    asyncio.run(scenario())


def test_the_timer_flushes_a_quiet_stream_and_a_failure_there_is_fatal(app: faust.App) -> None:
    async def scenario() -> None:
        clock = Clock()
        writer = _writer(RecordingOutput(), clock)
        events = _delivered_events(app, 2)
        writer.hold(events)
        _take_events_finally(events)
        fatal: list[BaseException] = []
        timer = asyncio.ensure_future(flush_when_due(writer, 0.001, fatal.append))
        try:
            clock.now_ms = 1000
            await _until(lambda: all(event.message.acked for event in events))
            failing = _writer(RecordingOutput(fail=True), clock)
            failing.hold(_delivered_events(app, 1, first_offset=2))
            clock.now_ms = 3000
            failing_timer = asyncio.ensure_future(flush_when_due(failing, 0.001, fatal.append))
            await _until(lambda: bool(fatal))
            failing_timer.cancel()
        finally:
            timer.cancel()
        assert isinstance(fatal[0], RuntimeError) and failing.failed is fatal[0]

    asyncio.run(scenario())


async def _until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.001)


def test_a_paused_consumer_makes_the_timer_flush_at_once(app: faust.App) -> None:
    """Faust's rebalance and shutdown pause the consumer and then wait for every held input."""
    async def scenario() -> None:
        writer = _writer(RecordingOutput(), Clock(), interval_ms=60_000)
        events = _delivered_events(app, 2)
        writer.hold(events)
        _take_events_finally(events)
        paused = asyncio.Event()
        timer = asyncio.ensure_future(flush_when_due(writer, 0.001, pytest.fail, urgent=paused.is_set))
        try:
            await asyncio.sleep(0.02)
            assert not any(event.message.acked for event in events)  # interval far off, consumer running
            paused.set()
            await _until(lambda: all(event.message.acked for event in events))
        finally:
            timer.cancel()

    asyncio.run(scenario())
