"""A record read from Kafka: its value and position, or a clear error where librdkafka gives None."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from streamproc.kafka.records import MissingField, position_of, value_of


def test_a_record_gives_its_value_and_position() -> None:
    msg = Message(topic="clicks", partition=2, offset=41, key=b"u1", value=b'{"a": 1}')
    assert value_of(msg) == b'{"a": 1}'
    assert position_of(msg) == ("clicks", 2, 41)


def test_a_tombstone_names_where_it_was_read() -> None:
    with pytest.raises(MissingField, match=r"risk-scores\[0\] at 7 has no value"):
        value_of(Message(topic="risk-scores", partition=0, offset=7, key=b"u1", value=None))


def test_a_record_without_a_position_is_refused() -> None:
    with pytest.raises(MissingField, match="without a position"):
        position_of(Message(topic="clicks", value=b"{}"))  # as a record not yet produced
