"""What a record read from Kafka always has, typed: librdkafka's accessors may return None (a tombstone's
value, the offset of a record not yet produced); a record consumed without error has a topic, a partition
and an offset, and these say so once instead of at every call."""

from __future__ import annotations

from confluent_kafka import Message


class MissingField(ValueError):
    """A record lacks a field it always has where it was read."""


def value_of(msg: Message) -> bytes:
    value = msg.value()
    if value is None:
        raise MissingField(f"a record of {msg.topic()}[{msg.partition()}] at {msg.offset()} has no value")
    return value


def position_of(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed or acknowledged record."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise MissingField(f"a record without a position: {topic}[{partition}] at {offset}")
    return topic, partition, offset
