"""Helpers of the tests against a real Apache Kafka: settings of their own, pipeline processes, topic
readers, and waits that fail at their deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamproc.config import Settings
from streamproc.demo.processes import settings_env
from streamproc.kafka.admin import create_topics, end_offsets, last_committed_offsets
from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import die_with_parent, free_port


def make_settings(broker: LocalKafka, tmp_path: Path, checkpoint: Path, **overrides: Any) -> Settings:
    """Settings with topic names, app id and consumer group of their own, so tests share one broker safely."""
    return Settings(bootstrap_servers=broker.bootstrap_servers).namespaced(
        f"t{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path / "faust",
        checkpoint=checkpoint,
        worker_metrics_port=free_port(),
        scorer_metrics_port=free_port(),
        **overrides,
    )


class Process:
    """A streamproc command in a child process, its output in a log file."""

    def __init__(self, command: str, settings: Settings, log_dir: Path) -> None:
        self.command, self.settings = command, settings
        self.log_path = log_dir / f"{command}-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc.cli", "--verbose", command],
            env=settings_env(settings),
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # noqa: SIM115
            preexec_fn=die_with_parent,  # a test run killed outright leaves no worker behind
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-12000:]


class TopicReader:
    """Reads topics from the beginning and keeps every JSON message, grouped by topic."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        # Subscribing to a topic that does not exist yet leaves librdkafka without it until its next
        # metadata refresh (5 minutes by default): create the topics first; kafka_common() refreshes often.
        create_topics(
            settings.kafka_common(), settings.all_topics(), settings.partitions, settings.replication_factor
        )
        self.consumer = Consumer(
            {
                **settings.kafka_common(),
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self.consumer.subscribe(topics)
        self.settings = settings
        self.messages: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self.next_offset: dict[tuple[str, int], int] = {}

    def poll_until(self, condition: Callable[[], bool], deadline_s: float, watch: list[Process] = ()) -> None:  # type: ignore[assignment]
        """Read until condition() holds; fail with the processes' logs at the deadline or if one dies."""
        deadline = time.monotonic() + deadline_s
        while not condition():
            for p in watch:
                assert p.alive(), f"{p.command} died:\n{p.log()}"
            assert time.monotonic() < deadline, "deadline passed; logs:\n" + "\n".join(p.log() for p in watch)
            for msg in self.consumer.consume(num_messages=2000, timeout=0.2):
                if not msg.error():
                    self.messages[msg.topic()].append(json.loads(msg.value()))
                    self.next_offset[(msg.topic(), msg.partition())] = msg.offset() + 1

    def read_to_end(self, topic: str, deadline_s: float) -> None:
        """Read `topic` up to the end it has now (by the consumer's position: the last records of a partition
        written in transactions are commit markers, which are never delivered)."""
        ends = end_offsets(
            self.settings.kafka_common(), [(topic, p) for p in range(self.settings.partitions)]
        )

        def at_end() -> bool:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in ends])
            return all(
                max(tp.offset, self.next_offset.get((tp.topic, tp.partition), 0))
                >= ends[(tp.topic, tp.partition)]
                for tp in positions
            )

        self.poll_until(at_end, deadline_s)

    def close(self) -> None:
        self.consumer.close()


def wait_until_worker_caught_up(settings: Settings, deadline_s: float = 120.0) -> None:
    """Poll until the Faust worker has committed each topic it reads up to its end.

    Then it writes nothing more: a check of its outputs or its changelogs sees the final state,
    not a moment while re-delivered events are still being processed. At the deadline the test fails:
    a check that followed would compare a state that is not final.
    """
    tps = [(t, p) for t in settings.worker_input_topics() for p in range(settings.partitions)]
    group = Consumer({**settings.kafka_common(), "group.id": settings.app_id, "enable.auto.commit": False})
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            # one past the last record a read_committed reader sees: under exactly-once a partition's end
            # offset is past a commit marker, which no reader reads and so no commit passes
            ends = {tp: last + 1 for tp, last in last_committed_offsets(settings.kafka_common(), tps).items()}
            committed = {
                (tp.topic, tp.partition): max(tp.offset, 0)
                for tp in group.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
            }
            behind = {tp: (committed[tp], ends[tp]) for tp in tps if committed[tp] < ends[tp]}
            if not behind:
                return
            assert time.monotonic() < deadline, (
                f"worker's (committed, end) offsets still behind after {deadline_s} s: {behind}"
            )
            time.sleep(0.5)  # between polls of the committed offsets
    finally:
        group.close()


def last_value_per_key(settings: Settings, topic: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Read a topic to its end: the last JSON value of each key (a table's final state, from its changelog).

    The end is one past each partition's last committed record, found before starting (under exactly-once the
    high watermark is past a commit marker, never delivered); a partition is done once its records up to there
    are read. Error events do not end a partition early.
    """
    tps = [(topic, p) for p in range(settings.partitions)]
    ends = {tp: last + 1 for tp, last in last_committed_offsets(settings.kafka_common(), tps).items()}
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for t, p in tps])
    values: dict[str, Any] = {}
    next_offset = {tp: 0 for tp in tps}
    deadline = time.monotonic() + timeout_s
    try:
        while any(next_offset[tp] < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, (
                f"{topic} not read to its end in {timeout_s} s: read up to {next_offset}, ends {ends}"
            )
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            next_offset[(msg.topic(), msg.partition())] = msg.offset() + 1
            values[msg.key().decode()] = json.loads(msg.value())
    finally:
        consumer.close()
    return values
