"""Fixtures of the tests against a real Apache Kafka: the broker, pipeline processes, topic readers
(the helpers they use are in helpers.py; the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.kafka.admin import create_topics
from streamproc.kafka.local_kafka import LocalKafka
from tests.integration.helpers import (
    Process,
    TopicReader,
)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """One Apache Kafka (a single KRaft node) for the session; tests keep apart by their own topic names."""
    with LocalKafka(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[str, Settings], Process]]:
    started: list[Process] = []

    def start(command: str, settings: Settings) -> Process:
        create_topics(
            settings.kafka_common(), settings.all_topics(), settings.partitions, settings.replication_factor
        )
        p = Process(command, settings, tmp_path)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def reader() -> Iterator[Callable[[Settings, list[str]], TopicReader]]:
    readers: list[TopicReader] = []

    def make(settings: Settings, topics: list[str]) -> TopicReader:
        r = TopicReader(settings, topics)
        readers.append(r)
        return r

    yield make
    for r in readers:
        r.close()
