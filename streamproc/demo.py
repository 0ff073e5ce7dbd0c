"""The main job: Faust worker(s) + scoring worker(s) + replay, with a live terminal summary.

On a local Apache Kafka by default (`streamproc.local_kafka`: one KRaft node, or three with
`brokers=3`), started fresh for each run under the data dir, with the workers' state; on a Kafka the
caller names (`external`), whose topics keep earlier runs' records: the summary then counts only
outputs derived from this run's input, by their lineage offsets. `chaos` SIGKILLs a broker and a Faust
worker mid-replay and restarts them, so that a user sees the pipeline ride through both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from streamproc.broker import create_topics, topic_end_offsets, wipe
from streamproc.config import Settings
from streamproc.local_kafka import KafkaError, LocalKafka, die_with_parent, free_port
from streamproc.readiness import wait_until_ready
from streamproc.replay import read_events, replay, with_id_prefix

SUMMARY_EVERY_S = 2.0
READY_TIMEOUT_S = 300.0
MIB = 2**20
CHAOS_DOWN_S = 10.0  # how long a killed broker or worker stays down


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same Settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"STREAMPROC_{name.upper()}"] = str(value)
    return env


def ensure_checkpoint(path: Path) -> None:
    """Train the default small checkpoint on the built-in synthetic data if there is none yet."""
    if (path / "config.json").exists():
        return
    print(f"no checkpoint at {path}: training the default one (python -m models.train --preset demo --out {path})",
          flush=True)
    subprocess.run([sys.executable, "-m", "models.train", "--preset", "demo", "--out", str(path)], check=True)


Partition = tuple[str, int]


@dataclass
class Summary:
    """What the output topics have shown so far of this run's input: the outputs of input offsets
    before `since` (per input topic and partition; absent: 0) belong to earlier runs and are ignored."""

    since: dict[Partition, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    scored: set[str] = field(default_factory=set)
    dead_lettered: set[tuple[str, int, int]] = field(default_factory=set)
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=5000))
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))
    last_recs: dict[str, Any] | None = None
    first_score_at: float | None = None
    rate_mark: tuple[float, int] | None = None

    def is_this_runs(self, topic: str, partition: int, offset: int) -> bool:
        return offset >= self.since.get((topic, partition), 0)

    def add(self, topic: str, value: dict[str, Any], settings: Settings) -> None:
        origin = value.get("lineage") if topic != settings.dead_letter_topic else {
            "topic": value.get("source_topic"), "partition": value.get("partition"), "offset": value.get("offset")}
        if origin and not self.is_this_runs(origin["topic"], origin["partition"], origin["offset"]):
            return
        self.counts[topic] += 1
        if topic == settings.risk_scores_topic:
            self.scored.add(value["event_id"])
            ingest = (value.get("lineage") or {}).get("ingest_ts_ms")
            if ingest:
                self.latencies_ms.append(value["scored_ts_ms"] - ingest)
            self.first_score_at = self.first_score_at or time.monotonic()
        elif topic == settings.fraud_alerts_topic:
            self.alerts.append(value)
        elif topic == settings.next_action_topic:
            self.last_recs = value
        elif topic == settings.dead_letter_topic and value.get("source_topic") in (
                settings.clicks_topic, settings.transactions_topic):  # fraud labels are not scored
            self.dead_lettered.add((value["source_topic"], value["partition"], value["offset"]))

    def recent_rate(self) -> float:
        """Scores per second since the previous call (the first call: since the first score), so
        that the summary shows the current rate, not an average since the start."""
        now = time.monotonic()
        since, count_then = self.rate_mark or (self.first_score_at or now, 0)
        elapsed = now - since
        if elapsed < 0.5:  # too short to say; the next call measures from the same mark
            return 0.0
        self.rate_mark = (now, len(self.scored))
        return (len(self.scored) - count_then) / elapsed

    def done(self) -> int:
        return len(self.scored) + len(self.dead_lettered)

    def render(self, produced: int, settings: Settings, kafka_status: str = "", labels_sent: int = 0) -> str:
        lat = sorted(self.latencies_ms)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0)  # noqa: E731
        rate = self.recent_rate()
        lines = [
            f"--- produced {produced}  scored {len(self.scored)}  dead-lettered {len(self.dead_lettered)}  "
            f"({rate:.0f} scored/s)  latency ms p50 {pct(0.5)} p95 {pct(0.95)} p99 {pct(0.99)}"
            + (f"  fraud labels sent {labels_sent}" if labels_sent else "")
            + (f"  {kafka_status}" if kafka_status else ""),
        ]
        for alert in self.alerts:
            lines.append(f"  ALERT risk {alert['risk']:.2f} user {alert['user_id']} event {alert['event_id']} "
                         f"{alert.get('kind')} at {alert.get('item_id')} amount {alert.get('amount')}")
        if self.last_recs:
            items = ", ".join(i["item_id"] for i in self.last_recs["top_items"][:5])
            action = max(self.last_recs["next_action"].items(), key=lambda kv: kv[1])[0]
            lines.append(f"  recs for user {self.last_recs['user_id']}: next items {items}; likely next action {action}")
        return "\n".join(lines)


def output_topics(settings: Settings) -> tuple[str, ...]:
    return (settings.risk_scores_topic, settings.next_action_topic, settings.fraud_alerts_topic,
            settings.dead_letter_topic)


def output_consumer(settings: Settings, start: dict[Partition, int]) -> Consumer:
    """A consumer of the output topics from `start` (every partition of the output topics); no group join."""
    consumer = Consumer({
        **settings.kafka_common(),
        "group.id": f"streamproc-demo-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
    return consumer


def check_children(children: dict[str, subprocess.Popen], logs: Path, restarting: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for name, child in children.items():
        if child.poll() is not None and name not in restarting:
            raise RuntimeError(f"the {name} process exited with code {child.returncode}; see {logs / (name + '.log')}")


@dataclass
class Pipeline:
    """The demo's worker and scoring-worker processes, each with its own log, metrics port and (workers) state."""

    settings: Settings
    logs: Path
    workers: int = 1
    scorers: int = 1
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    restarting: set[str] = field(default_factory=set)

    def start(self) -> Pipeline:
        base = settings_env(self.settings)
        for role, count in (("worker", self.workers), ("score", self.scorers)):
            for i in range(count):
                name = role if count == 1 else f"{role}-{i + 1}"
                env = dict(base)
                if i:  # the first keeps the configured port, so that a dashboard finds it
                    env[f"STREAMPROC_{'WORKER' if role == 'worker' else 'SCORER'}_METRICS_PORT"] = str(free_port())
                if role == "worker" and count > 1:  # each Faust worker keeps its own RocksDB state
                    env["STREAMPROC_DATA_DIR"] = str(self.settings.data_dir / name)
                self.envs[name] = env
                self.launch(name)
        return self

    def launch(self, name: str) -> None:
        role = name.split("-")[0]
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "streamproc.cli", role], env=self.envs[name], preexec_fn=die_with_parent,
            stdout=open(self.logs / f"{name}.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def metrics_urls(self, role: str) -> tuple[str, ...]:
        key = "STREAMPROC_WORKER_METRICS_PORT" if role == "worker" else "STREAMPROC_SCORER_METRICS_PORT"
        return tuple(f"http://127.0.0.1:{env[key]}/metrics" for name, env in self.envs.items()
                     if name.split("-")[0] == role and env[key] != "0")

    def check(self) -> None:
        check_children(self.children, self.logs, self.restarting)

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def wait_for_pipeline(settings: Settings, pipeline: Pipeline) -> None:
    """Replay only once the workers and the scoring workers read all their input partitions (summed over
    each group's processes), so that the latencies shown are the pipeline's, not its start-up's."""
    workers, scorers = pipeline.metrics_urls("worker"), pipeline.metrics_urls("score")
    if not (workers and scorers):
        print("metrics ports disabled: replaying without waiting for the pipeline to be ready", flush=True)
        return
    n = settings.partitions
    waited = wait_until_ready({
        workers: {t: n for t in settings.worker_input_topics()},
        scorers: {settings.sequence_updates_topic: n},
    }, timeout_s=READY_TIMEOUT_S, check_alive=pipeline.check)
    print(f"pipeline ready after {waited:.1f} s: replaying", flush=True)


def state_dir_for(data_dir: Path, bootstrap_servers: str) -> Path:
    """The worker's state directory for a Kafka cluster: tables recovered from one cluster's changelogs
    must not meet another cluster's offsets."""
    return data_dir / ("faust-" + re.sub(r"[^A-Za-z0-9.-]+", "_", bootstrap_servers))


def folder_bytes(path: Path) -> int:
    """Bytes the files under `path` take on disk (the local Kafka's logs): allocated blocks, not sizes, since
    Kafka's index files are sparse (10 MiB each, mostly holes)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # a segment deleted by retention meanwhile
    return total


@dataclass
class Chaos:
    """SIGKILL the last broker at a quarter of the replay and the last Faust worker at a half, each restarted
    CHAOS_DOWN_S later (by event count with a limit, else 20 s and 40 s into the replay). Runs on the demo's
    main thread (`tick`), which starts every process: a child dies with the thread that started it."""

    kafka: LocalKafka | None
    pipeline: Pipeline
    limit: int | None
    say: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    done: set[str] = field(default_factory=set)
    restarts: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def due(self, step: str, produced: int, fraction: float, after_s: float) -> bool:
        if step in self.done:
            return False
        reached = produced >= self.limit * fraction if self.limit else time.monotonic() - self.started >= after_s
        if reached:
            self.done.add(step)
        return reached

    def tick(self, produced: int) -> None:
        now = time.monotonic()
        for entry in [r for r in self.restarts if r[0] <= now]:
            self.restarts.remove(entry)
            entry[1]()
        if self.kafka is not None and self.kafka.nodes > 1 and self.due("broker", produced, 0.25, 20):
            kafka, index = self.kafka, self.kafka.nodes - 1
            kafka.kill(index)
            self.say(f"chaos: SIGKILLed Kafka broker {index + 1} of {kafka.nodes} after {produced} events; "
                     f"restarting it in {CHAOS_DOWN_S:.0f} s")

            def restart_broker() -> None:
                kafka.restart(index, wait=False)
                self.say(f"chaos: Kafka broker {index + 1} restarted")

            self.restarts.append((now + CHAOS_DOWN_S, restart_broker))
        if self.due("worker", produced, 0.5, 40):
            name = [n for n in self.pipeline.children if n.startswith("worker")][-1]
            self.pipeline.restarting.add(name)
            self.pipeline.children[name].kill()
            self.pipeline.children[name].wait()
            self.say(f"chaos: SIGKILLed Faust {name} after {produced} events; restarting it in {CHAOS_DOWN_S:.0f} s")

            def restart_worker() -> None:
                self.pipeline.launch(name)
                self.pipeline.restarting.discard(name)
                self.say(f"chaos: Faust {name} restarted")

            self.restarts.append((now + CHAOS_DOWN_S, restart_worker))

    def finished(self) -> bool:
        return not self.restarts


def run_demo(settings: Settings, data: Path | None = None, fmt: str = "auto", rate: float = 1000.0,
             limit: int | None = None, labels: str = "topic", label_delay_ms: int = 86_400_000,
             external: bool = False, namespace: str = "demo", brokers: int = 1, workers: int = 1,
             scorers: int = 1, chaos: bool = False) -> int:
    """Run the pipeline and replay `data` into it, on a local Kafka of `brokers` nodes (fresh each run) or
    (`external`) on the Kafka at settings.bootstrap_servers, there with its topics, app id and scorer group
    prefixed by `namespace` (none if empty) so that it stays apart from a pipeline the cluster runs; 0 when
    done or stopped by Ctrl-C, 1 on failure."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(settings.checkpoint)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    kafka: LocalKafka | None = None
    if external:  # its topics, committed offsets and the worker's state carry over from earlier runs
        if namespace:
            settings = settings.namespaced(namespace)
        settings = settings.with_overrides(data_dir=state_dir_for(settings.data_dir, settings.bootstrap_servers))
    else:
        # A fresh cluster and fresh worker state per run: the replay sends the same events each time.
        wipe(settings.data_dir / "kafka")
        wipe(settings.data_dir / "faust")
        try:
            kafka = LocalKafka(settings.data_dir / "kafka", nodes=brokers, partitions=settings.partitions).start()
        except KafkaError as exc:
            print(f"demo failed: {exc}", file=sys.stderr, flush=True)
            return 1
        settings = settings.with_overrides(bootstrap_servers=kafka.bootstrap_servers, data_dir=settings.data_dir / "faust",
                                           replication_factor=kafka.replication_factor)
    status = 0
    try:
        status = _run(settings, kafka, logs, data, fmt, rate, limit, labels, label_delay_ms, external, workers,
                      scorers, chaos)
    finally:
        if kafka is not None:
            kafka.stop()
    return status


def _run(settings: Settings, kafka: LocalKafka | None, logs: Path, data: Path | None, fmt: str, rate: float,
         limit: int | None, labels: str, label_delay_ms: int, external: bool, workers: int, scorers: int,
         chaos: bool) -> int:
    create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions, settings.replication_factor)
    if external:
        since = topic_end_offsets(settings.kafka_common(), (settings.clicks_topic, settings.transactions_topic))
        outputs_from = topic_end_offsets(settings.kafka_common(), output_topics(settings))
    else:
        since = {}
        outputs_from = {(t, p): 0 for t in output_topics(settings) for p in range(settings.partitions)}
    if kafka is not None:
        where = (f"local Apache Kafka, {kafka.nodes} KRaft node{'s' if kafka.nodes > 1 else ''} on "
                 f"{settings.bootstrap_servers} (started in {kafka.started_in_s:.1f} s, replication factor "
                 f"{kafka.replication_factor}, logs in {kafka.folder})")
    else:
        where = f"Kafka at {settings.bootstrap_servers}, topics {settings.clicks_topic}, {settings.transactions_topic}, ..."
    print(f"{where}; worker metrics :{settings.worker_metrics_port}/metrics, "
          f"scorer metrics :{settings.scorer_metrics_port}/metrics; logs in {logs}", flush=True)
    pipeline = Pipeline(settings, logs, workers, scorers).start()
    produced = labels_sent = 0
    replay_error: list[BaseException] = []

    def count_delivered(n: int) -> None:
        nonlocal produced
        produced = n

    def count_labels(n: int) -> None:
        nonlocal labels_sent
        labels_sent = n

    events = read_events(data, fmt, endless=True)  # the generator runs for hours; a data set ends
    if external:  # the cluster may have seen this data: fresh event ids, or every event is a duplicate
        events = with_id_prefix(events, f"run{int(time.time())}-")

    def produce() -> None:
        nonlocal produced
        try:
            produced = replay(settings, events, rate=rate, limit=limit, progress=False,
                              on_delivered=count_delivered, labels=labels, label_delay_ms=label_delay_ms,
                              on_labels_delivered=count_labels)
        except BaseException as exc:  # reported by the main thread
            replay_error.append(exc)

    def say(line: str) -> None:
        print(line, flush=True)

    def kafka_status() -> str:
        if kafka is None:
            return ""
        up = kafka.nodes - len(kafka.dead())
        return f"kafka {up}/{kafka.nodes} up, {folder_bytes(kafka.folder) / MIB:,.0f} MiB on disk"

    summary = Summary(since=since)
    consumer = output_consumer(settings, outputs_from)
    producer_thread = threading.Thread(target=produce, name="replay", daemon=True)
    status = 0
    try:
        wait_for_pipeline(settings, pipeline)
        chaos_monkey = Chaos(kafka, pipeline, limit, say) if chaos else None
        producer_thread.start()
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        while True:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if not msg.error():
                    summary.add(msg.topic(), json.loads(msg.value()), settings)
            if replay_error:
                raise RuntimeError(f"replay failed: {replay_error[0]}")
            pipeline.check()
            if chaos_monkey is not None:
                chaos_monkey.tick(produced)
            if time.monotonic() >= next_summary:
                print(summary.render(produced, settings, kafka_status(), labels_sent), flush=True)
                next_summary += SUMMARY_EVERY_S
            settled = chaos_monkey is None or chaos_monkey.finished()
            if limit is not None and settled and not producer_thread.is_alive() and summary.done() >= produced:
                print(summary.render(produced, settings, kafka_status(), labels_sent), flush=True)
                break
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        consumer.close()
        pipeline.stop()
    if status == 0:
        print(" ".join(f"{t}={summary.counts[t]}" for t in output_topics(settings)), flush=True)
    return status
