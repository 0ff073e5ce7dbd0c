"""Topic creation tries again after a failure on the way (a connection librdkafka closed under the request,
met on a fresh three-node cluster) and stops at once on a refusal. The admin client is a recording fake:
this is the retry logic alone; real creations are in every integration test."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamproc.kafka import admin


class Future:
    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc

    def result(self, timeout: float | None = None) -> None:
        if self.exc is not None:
            raise self.exc


class Partition:
    leader = 1


class TopicMetadata:
    error = None
    partitions = {0: Partition()}


class Metadata:
    def __init__(self, topics: dict[str, TopicMetadata]) -> None:
        self.topics = topics


class FakeAdmin:
    """Creates every topic asked for but fails `fail` (with `error`) on the first request."""

    def __init__(self, fail: str, error: KafkaError) -> None:
        self.fail, self.error = fail, error
        self.created: dict[str, TopicMetadata] = {}
        self.requests: list[list[str]] = []

    def list_topics(self, timeout: float) -> Metadata:
        return Metadata(dict(self.created))

    def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, Future]:
        self.requests.append([t.topic for t in new])
        out = {}
        for t in new:
            if len(self.requests) == 1 and t.topic == self.fail:
                out[t.topic] = Future(KafkaException(self.error))
            else:
                self.created[t.topic] = TopicMetadata()
                out[t.topic] = Future()
        return out


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeAdmin) -> None:
    monkeypatch.setattr(admin, "AdminClient", lambda _config: fake)


def test_a_creation_that_failed_on_the_way_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAdmin(
        "b", KafkaError(KafkaError._DESTROY_BROKER, "Broker handle destroyed without termination")
    )
    install(monkeypatch, fake)
    admin.create_topics("localhost:9092", ["a", "b", "a"], partitions=2)
    assert fake.requests == [["a", "b"], ["b"]]
    assert set(fake.created) == {"a", "b"}


def test_a_refusal_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAdmin("b", KafkaError(KafkaError.INVALID_REPLICATION_FACTOR, "3 > brokers"))
    install(monkeypatch, fake)
    with pytest.raises(admin.BrokerError, match="could not create topic b"):
        admin.create_topics("localhost:9092", ["a", "b"], partitions=2, replication_factor=3)
    assert fake.requests == [["a", "b"]]
