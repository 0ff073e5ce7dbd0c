"""Scale-out on a real cluster: three Kafka brokers, two Faust workers, two scoring workers; a broker and a
worker are SIGKILLed mid-replay and restarted, and nothing is lost."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import free_port
from streamproc.observability.readiness import input_partitions, read_metrics
from tests.integration.helpers import make_settings, wait_until_worker_caught_up
from tests.integration.pipeline_data import assert_windows_match_from_scratch, produce, synthetic_events

pytestmark = pytest.mark.integration


class PartitionWatch(threading.Thread):
    """Polls the workers' /metrics: the most input partitions each has read at once during the run."""

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.ports, self.most = ports, Counter[str]()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):  # the workers' metrics pages, twice a second
            for name, port in self.ports.items():
                page = read_metrics(f"http://127.0.0.1:{port}/metrics")
                if page is not None:
                    self.most[name] = max(self.most[name], sum(input_partitions(page).values()))


def test_three_brokers_survive_a_broker_and_a_worker_killed_mid_replay(
    tiny_checkpoint, tmp_path, processes, reader
):
    with LocalKafka(tmp_path / "kafka", nodes=3) as kafka:
        assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
        s = make_settings(kafka, tmp_path, tiny_checkpoint, replication_factor=3)
        second = s.with_overrides(
            data_dir=tmp_path / "faust-2", worker_metrics_port=free_port(), scorer_metrics_port=free_port()
        )
        workers = [processes("worker", s), processes("worker", second)]
        scorers = [processes("score", s), processes("score", second)]
        watch = PartitionWatch({"worker-1": s.worker_metrics_port, "worker-2": second.worker_metrics_port})
        watch.start()
        events = synthetic_events(3000, seed=11)
        thirds = [events[i : i + 1000] for i in range(0, 3000, 1000)]
        r = reader(s, [s.sequence_updates_topic, s.risk_scores_topic])
        scored = lambda: {m["event_id"] for m in r.messages[s.risk_scores_topic]}  # noqa: E731

        produce(s, thirds[0])
        r.poll_until(lambda: len(scored()) >= 500, deadline_s=300, watch=workers + scorers)
        kafka.kill(2)  # a broker lost mid-stream: its partitions' leadership moves to the other two
        produce(s, thirds[1])  # acks=all with min.insync.replicas 2: accepted by the two left
        r.poll_until(lambda: len(scored()) >= 1500, deadline_s=300, watch=workers + scorers)
        kafka.restart(2)
        workers[1].kill()  # a Faust worker lost: its partitions move to the other one
        produce(s, thirds[2])
        r.poll_until(lambda: len(scored()) >= 2500, deadline_s=300, watch=[workers[0], *scorers])
        workers[1] = processes("worker", second)
        accepted = {m["event_id"] for _, m in events}
        r.poll_until(lambda: scored() >= accepted, deadline_s=300, watch=workers + scorers)
        watch.stopping.set()

        assert scored() == accepted  # every accepted event scored, none lost
        assert watch.most["worker-1"] > 0 and watch.most["worker-2"] > 0, watch.most  # both held partitions
        assert len(kafka.dead()) == 0
        wait_until_worker_caught_up(s)
        r.read_to_end(s.sequence_updates_topic, deadline_s=120)
        assert_windows_match_from_scratch(s, events, r.messages[s.sequence_updates_topic])
        for p in (*workers, *scorers):  # before their cluster stops
            p.stop()
