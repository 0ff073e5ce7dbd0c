"""A batch's messages become committable only when the agent body finished it (agents.acked_only_when_settled)."""

import asyncio

import faust
import pytest
from faust.types import Message

from streamproc.stages.agents import acked_only_when_settled


def _delivered_events(app: faust.App, n: int) -> list[faust.EventT]:
    """Events as Faust's conductor hands them to one stream: each message referenced once."""
    events = []
    for offset in range(n):
        message = Message("clicks", 0, offset, 0.0, 0, {}, b"u1", b"{}", None)
        message.incref()
        events.append(faust.Event(app, message.key, message.value, {}, message))
    return events


def _take_events_finally(events: list[faust.EventT]) -> list[bool]:
    """What Faust's `take_events` does after each batch, whether or not its body raised: ack every event."""
    return [event.ack() for event in events]


@pytest.fixture
def app() -> faust.App:
    return faust.App("ack-test", broker="kafka://127.0.0.1:1")


def test_a_settled_batch_is_acknowledged(app: faust.App) -> None:
    events = _delivered_events(app, 3)
    with acked_only_when_settled(events):
        pass
    assert _take_events_finally(events) == [True, True, True]
    assert all(event.message.acked for event in events)


@pytest.mark.parametrize("failure", [RuntimeError("output not acknowledged"), asyncio.CancelledError()])
def test_a_batch_whose_body_failed_is_never_acknowledged(app: faust.App, failure: BaseException) -> None:
    events = _delivered_events(app, 3)
    with pytest.raises(type(failure)):
        with acked_only_when_settled(events):
            raise failure
    assert _take_events_finally(events) == [False, False, False]
    assert not any(event.message.acked for event in events)


def test_without_the_hold_faust_acknowledges_a_failed_batch(app: faust.App) -> None:
    """The behaviour the hold exists for: take_events' finally alone commits a batch whose body raised."""
    events = _delivered_events(app, 2)
    assert _take_events_finally(events) == [True, True]
