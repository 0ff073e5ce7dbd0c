"""Kafka faults as a user meets them: the broker killed or frozen mid-replay, and the local broker command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import free_port
from streamproc.observability.readiness import read_metrics
from tests.integration.helpers import make_settings
from tests.integration.pipeline_data import produce, synthetic_events

pytestmark = pytest.mark.integration


def _replay_through_a_fault(kafka: LocalKafka, tmp_path, checkpoint, processes, reader, fault) -> str:
    """Replay 2,000 events; once 500 are scored, `fault(kafka)`; then every accepted event must be scored by
    the same worker and scoring-worker processes (none crashed, none was restarted). Returns the scoring
    worker's /metrics page at the end."""
    s = make_settings(kafka, tmp_path, checkpoint)
    worker, scorer = processes("worker", s), processes("score", s)
    events = synthetic_events(2000, seed=13)
    r = reader(s, [s.risk_scores_topic])
    scored = lambda: {m["event_id"] for m in r.messages[s.risk_scores_topic]}  # noqa: E731
    produce(s, events[:1000])
    r.poll_until(lambda: len(scored()) >= 500, deadline_s=300, watch=[worker, scorer])
    fault(kafka)
    produce(s, events[1000:])
    accepted = {m["event_id"] for _, m in events}
    r.poll_until(lambda: scored() >= accepted, deadline_s=300, watch=[worker, scorer])
    assert scored() == accepted
    assert worker.alive() and scorer.alive()
    page = read_metrics(f"http://127.0.0.1:{s.scorer_metrics_port}/metrics") or ""
    for p in (worker, scorer):
        assert p.stop() == 0, p.log()
    return page


def test_kafka_killed_and_restarted_mid_replay_loses_no_score(tiny_checkpoint, tmp_path, processes, reader):
    def kill_and_restart(kafka: LocalKafka) -> None:
        kafka.kill(0)
        time.sleep(10)  # the outage the workers wait through
        kafka.restart(0)

    with LocalKafka(tmp_path / "kafka") as kafka:
        _replay_through_a_fault(kafka, tmp_path, tiny_checkpoint, processes, reader, kill_and_restart)


def test_kafka_frozen_for_30_s_mid_replay_loses_no_score(tiny_checkpoint, tmp_path, processes, reader):
    # SIGSTOP: connections stay open but nothing answers (a long GC pause, a frozen VM). Sessions and
    # assignments are lost meanwhile; a failed commit in a rebalance callback used to kill the scoring worker.
    def freeze(kafka: LocalKafka) -> None:
        kafka.pause(0)
        time.sleep(30)  # the outage the workers wait through
        kafka.resume(0)

    with LocalKafka(tmp_path / "kafka") as kafka:
        page = _replay_through_a_fault(kafka, tmp_path, tiny_checkpoint, processes, reader, freeze)
    # the scoring worker's session expired during the freeze: its assignment was lost, counted, not fatal
    assert 'streamproc_commit_failures_total{reason="assignment_lost"}' in page


def test_the_broker_command_keeps_its_data_across_restarts_and_exits_when_kafka_dies(tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "streamproc.cli",
        "broker",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
    ]

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the broker is up (or the command failed)
        assert f"on 127.0.0.1:{port}" in line, line + proc.stderr.read() if proc.stderr else line
        return proc

    proc = start()
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    admin.create_topics([NewTopic("kept", 1, 1)])
    deadline = time.monotonic() + 30
    while "kept" not in admin.list_topics(timeout=5).topics:
        assert time.monotonic() < deadline
        time.sleep(0.1)  # topic creation is asynchronous
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    proc = start()  # the same storage, formatted once: the topic is still there
    assert "kept" in admin.list_topics(timeout=10).topics and "clicks" in admin.list_topics(timeout=10).topics
    java = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"{tmp_path}/kafka/node-1/server.properties"], capture_output=True, text=True
        ).stdout.split()
    ]
    assert len(java) == 1
    subprocess.run(["kill", "-9", str(java[0])], check=True)  # the broker process dies under the command
    assert proc.wait(30) == 1
    assert proc.stderr is not None and "Kafka node 1 exited with code" in proc.stderr.read()
