"""The main job: Faust worker + scoring worker + replay, with a live terminal summary.

On the embedded broker by default (started, and its topics and the worker's state wiped, per run);
on a Kafka the caller names (`external`), whose topics keep earlier runs' records: the summary then
counts only outputs derived from this run's input, by their lineage offsets.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from streamproc.broker import EmbeddedBroker, create_topics, wipe
from streamproc.config import Settings
from streamproc.memory_guard import MIB, default_budget_bytes, rss_bytes, until_set
from streamproc.readiness import wait_until_ready
from streamproc.replay import read_events, replay
from streamproc.tansu_compat import true_ends

SUMMARY_EVERY_S = 2.0
READY_TIMEOUT_S = 300.0
BROKER_FULL = 3  # exit status: the replay stopped at the broker's memory budget


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

    def done(self) -> int:
        return len(self.scored) + len(self.dead_lettered)

    def render(self, produced: int, settings: Settings, broker_rss: int = 0, labels_sent: int = 0) -> str:
        lat = sorted(self.latencies_ms)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0)  # noqa: E731
        elapsed = time.monotonic() - self.first_score_at if self.first_score_at else 0.0
        rate = len(self.scored) / elapsed if elapsed > 0 else 0.0
        lines = [
            f"--- produced {produced}  scored {len(self.scored)}  dead-lettered {len(self.dead_lettered)}  "
            f"({rate:.0f} scored/s)  latency ms p50 {pct(0.5)} p95 {pct(0.95)} p99 {pct(0.99)}"
            + (f"  fraud labels sent {labels_sent}" if labels_sent else "")
            + (f"  broker memory {broker_rss / MIB:,.0f} MiB" if broker_rss else ""),
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


def end_offsets(settings: Settings, topics: tuple[str, ...]) -> dict[Partition, int]:
    """The end offset of every partition of `topics` now (on the embedded broker, from a Fetch response:
    its ListOffsets answers short, see tansu_compat)."""
    consumer = Consumer({**settings.kafka_common(), "group.id": "streamproc-demo-offsets", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=30)
        listed = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1]
                  for t in topics for p in sorted(metadata.topics[t].partitions)}
        return true_ends(settings.kafka_common(), listed, settings.broker_flavour == "tansu")
    finally:
        consumer.close()


def output_consumer(settings: Settings, start: dict[Partition, int]) -> Consumer:
    """A consumer of the output topics from `start` (every partition of the output topics); no group join."""
    consumer = Consumer({
        **settings.kafka_common(),
        "group.id": f"streamproc-demo-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
    return consumer


def check_children(children: dict[str, subprocess.Popen], logs: Path) -> None:
    for name, child in children.items():
        if child.poll() is not None:
            raise RuntimeError(f"the {name} process exited with code {child.returncode}; see {logs / (name + '.log')}")


def wait_for_pipeline(settings: Settings, children: dict[str, subprocess.Popen], logs: Path) -> None:
    """Replay only once the worker and the scoring worker read all their input partitions, so that the
    latencies shown are the pipeline's, not its start-up's."""
    if not (settings.worker_metrics_port and settings.scorer_metrics_port):
        print("metrics ports disabled: replaying without waiting for the pipeline to be ready", flush=True)
        return
    n = settings.partitions
    waited = wait_until_ready({
        f"http://127.0.0.1:{settings.worker_metrics_port}/metrics": {t: n for t in settings.worker_input_topics()},
        f"http://127.0.0.1:{settings.scorer_metrics_port}/metrics": {settings.sequence_updates_topic: n},
    }, timeout_s=READY_TIMEOUT_S, check_alive=lambda: check_children(children, logs))
    print(f"pipeline ready after {waited:.1f} s: replaying", flush=True)


def broker_full_message(produced: int, rss: int, budget: int) -> str:
    return (f"stopped the replay after {produced} events: the embedded broker keeps every record in memory "
            f"(no retention) and holds {rss / MIB:,.0f} MiB, over its budget of {budget / MIB:,.0f} MiB "
            f"(--broker-max-rss-mib); replay less (--limit), or run the demo against a real Kafka "
            f"(--bootstrap-servers; README, 'Running against a real Kafka')")


def state_dir_for(data_dir: Path, bootstrap_servers: str) -> Path:
    """The worker's state directory for a Kafka cluster: tables recovered from one cluster's changelogs
    must not meet another cluster's offsets."""
    return data_dir / ("faust-" + re.sub(r"[^A-Za-z0-9.-]+", "_", bootstrap_servers))


def run_demo(settings: Settings, data: Path | None = None, fmt: str = "auto", rate: float = 1000.0,
             limit: int | None = None, broker_max_rss_mib: int | None = None, labels: str = "topic",
             label_delay_ms: int = 86_400_000, external: bool = False, namespace: str = "demo") -> int:
    """Run the pipeline and replay `data` into it, on the embedded broker or (`external`) on the Kafka at
    settings.bootstrap_servers, there with its topics, app id and scorer group prefixed by `namespace`
    (none if empty) so that it stays apart from a pipeline the cluster runs; 0 when done or stopped by
    Ctrl-C, 1 on failure, BROKER_FULL when the replay stopped at the embedded broker's memory budget
    (everything sent is still scored before the demo exits)."""
    budget = broker_max_rss_mib * MIB if broker_max_rss_mib else default_budget_bytes()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(settings.checkpoint)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    broker = None
    if external:  # its topics, committed offsets and the worker's state carry over from earlier runs
        if namespace:
            settings = settings.namespaced(namespace)
        settings = settings.with_overrides(data_dir=state_dir_for(settings.data_dir, settings.bootstrap_servers))
    else:
        broker = EmbeddedBroker(log_path=logs / "broker.log").start()
        # The embedded broker keeps nothing across restarts, so neither may the worker's tables.
        settings = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers, broker_flavour="tansu",
                                           data_dir=settings.data_dir / "faust")
        wipe(settings.data_dir)
    create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions)
    if external:
        since = end_offsets(settings, (settings.clicks_topic, settings.transactions_topic))
        outputs_from = end_offsets(settings, output_topics(settings))
    else:
        since = {}
        outputs_from = {(t, p): 0 for t in output_topics(settings) for p in range(settings.partitions)}
    where = (f"Kafka at {settings.bootstrap_servers}, topics {settings.clicks_topic}, {settings.transactions_topic}, ..."
             if external else f"embedded broker on {settings.bootstrap_servers}")
    print(f"{where}; worker metrics :{settings.worker_metrics_port}/metrics, "
          f"scorer metrics :{settings.scorer_metrics_port}/metrics; logs in {logs}", flush=True)
    env = settings_env(settings)
    children = {
        name: subprocess.Popen([sys.executable, "-m", "streamproc.cli", name], env=env,
                               stdout=open(logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        for name in ("worker", "score")
    }
    produced = labels_sent = 0
    replay_error: list[BaseException] = []
    stop_replay = threading.Event()

    def count_delivered(n: int) -> None:
        nonlocal produced
        produced = n

    def count_labels(n: int) -> None:
        nonlocal labels_sent
        labels_sent = n

    def produce() -> None:
        nonlocal produced
        try:
            produced = replay(settings, until_set(read_events(data, fmt), stop_replay), rate=rate, limit=limit,
                              progress=False, on_delivered=count_delivered, labels=labels, label_delay_ms=label_delay_ms,
                              on_labels_delivered=count_labels)
        except BaseException as exc:  # reported by the main thread
            replay_error.append(exc)

    summary = Summary(since=since)
    consumer = output_consumer(settings, outputs_from)
    producer_thread = threading.Thread(target=produce, name="replay", daemon=True)
    status = 0
    try:
        wait_for_pipeline(settings, children, logs)
        producer_thread.start()
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        rss = 0
        while True:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if not msg.error():
                    summary.add(msg.topic(), json.loads(msg.value()), settings)
            if replay_error:
                raise RuntimeError(f"replay failed: {replay_error[0]}")
            check_children(children, logs)
            if time.monotonic() >= next_summary:
                rss = rss_bytes(broker.process.pid) if broker and broker.process else 0
                print(summary.render(produced, settings, rss, labels_sent), flush=True)
                next_summary += SUMMARY_EVERY_S
                if rss > budget and not stop_replay.is_set():
                    stop_replay.set()
                    print(broker_full_message(produced, rss, budget) + "; scoring what was sent", flush=True)
            ending = limit is not None or stop_replay.is_set()
            if ending and not producer_thread.is_alive() and summary.done() >= produced:
                print(summary.render(produced, settings, labels_sent=labels_sent), flush=True)
                if stop_replay.is_set():
                    print(broker_full_message(produced, rss, budget), file=sys.stderr, flush=True)
                    status = BROKER_FULL
                break
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        consumer.close()
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker:
            broker.stop()
    if status in (0, BROKER_FULL):
        print(" ".join(f"{t}={summary.counts[t]}" for t in output_topics(settings)), flush=True)
    return status
