"""The main job: Faust worker(s) + scoring worker(s) + replay, with a live terminal summary.

On a local Apache Kafka by default (`streamproc.kafka.local_kafka`: one KRaft node, or three with
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
from collections.abc import Sequence
from pathlib import Path

from streamproc.config import Settings
from streamproc.demo.processes import (
    Chaos,
    Pipeline,
    wait_for_pipeline,
)
from streamproc.demo.summary import Summary, output_consumer, output_topics
from streamproc.feed.replay import detect_format, read_events, replay, with_id_prefix
from streamproc.kafka.admin import create_topics, topic_end_offsets, wipe
from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.records import position_of, value_of
from streamproc.kafka.runtime import KafkaError

SUMMARY_EVERY_S = 2.0
MIB = 2**20


# replay format -> the models.train data set that reads the same file (a checkpoint fit for its events)
TRAINABLE_DATA_SETS = {
    "fraud": "fraud-handbook",
    "movielens": "movielens-small",
    "yoochoose": "yoochoose",
    "taobao": "taobao",
}


def checkpoint_for(
    configured: Path, chosen: bool, data: Path | None, fmt: str
) -> tuple[Path, list[str], str]:
    """The checkpoint the demo serves, the models.train arguments that make it when it is absent and a line
    saying why. The configured one when it was chosen (--checkpoint,
    STREAMPROC_CHECKPOINT) or the generator feeds the demo (its default checkpoint was trained on that
    stream); for a data file, one trained on that file (the synthetic checkpoint's item ids mean nothing to
    another data set's users), kept beside the configured one as `<data set>-<file name>`."""
    default_train = ["--preset", "demo"]
    if chosen or data is None or fmt == "generator":
        return configured, default_train, f"serving {configured}"
    fmt = detect_format(data) if fmt == "auto" else fmt
    data_set = TRAINABLE_DATA_SETS.get(fmt)
    if data_set is None:
        return (
            configured,
            default_train,
            f"serving {configured} (trained on the synthetic stream: models.train has no data set for "
            f"--format {fmt}; pass --checkpoint to serve your own)",
        )
    path = configured.parent / f"{data_set}-{data.stem}"
    why = f"serving {path}, trained on {data} (--checkpoint serves another)"
    return path, ["--dataset", data_set, "--data", str(data)], why


def ensure_checkpoint(path: Path, train_args: Sequence[str] = ("--preset", "demo")) -> None:
    """Train the checkpoint with models.train `train_args` (default: the demo preset on the built-in
    synthetic data) if there is none yet."""
    if (path / "config.json").exists():
        return
    command = [sys.executable, "-m", "models.train", *train_args, "--out", str(path)]
    print(
        f"no checkpoint at {path}: training it once (python -m models.train {' '.join(command[3:])})",
        flush=True,
    )
    subprocess.run(command, check=True)


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


def run_demo(
    settings: Settings,
    data: Path | None = None,
    fmt: str = "auto",
    rate: float = 1000.0,
    limit: int | None = None,
    labels: str = "topic",
    label_delay_ms: int = 86_400_000,
    external: bool = False,
    namespace: str = "demo",
    brokers: int = 1,
    workers: int = 1,
    scorers: int = 1,
    chaos: bool = False,
    checkpoint_chosen: bool = False,
) -> int:
    """Run the pipeline and replay `data` into it (scored by `checkpoint_for`'s choice), on a local Kafka of `brokers` nodes (fresh each run) or
    (`external`) on the Kafka at settings.bootstrap_servers, there with its topics, app id and scorer group
    prefixed by `namespace` (none if empty) so that it stays apart from a pipeline the cluster runs; 0 when
    done or stopped by Ctrl-C, 1 on failure."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, train_args, why = checkpoint_for(settings.checkpoint, checkpoint_chosen, data, fmt)
    print(why, flush=True)
    ensure_checkpoint(checkpoint, train_args)
    settings = settings.with_overrides(checkpoint=checkpoint)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    kafka: LocalKafka | None = None
    if external:  # its topics, committed offsets and the worker's state carry over from earlier runs
        if namespace:
            settings = settings.namespaced(namespace)
        settings = settings.with_overrides(
            data_dir=state_dir_for(settings.data_dir, settings.bootstrap_servers)
        )
    else:
        # A fresh cluster and fresh worker state per run: the replay sends the same events each time.
        wipe(settings.data_dir / "kafka")
        wipe(settings.data_dir / "faust")
        try:
            kafka = LocalKafka(
                settings.data_dir / "kafka", nodes=brokers, partitions=settings.partitions
            ).start()
        except KafkaError as exc:
            print(f"demo failed: {exc}", file=sys.stderr, flush=True)
            return 1
        settings = settings.with_overrides(
            bootstrap_servers=kafka.bootstrap_servers,
            data_dir=settings.data_dir / "faust",
            replication_factor=kafka.replication_factor,
        )
    status = 0
    try:
        status = _run(
            settings,
            kafka,
            logs,
            data,
            fmt,
            rate,
            limit,
            labels,
            label_delay_ms,
            external,
            workers,
            scorers,
            chaos,
        )
    finally:
        if kafka is not None:
            kafka.stop()
    return status


def _run(
    settings: Settings,
    kafka: LocalKafka | None,
    logs: Path,
    data: Path | None,
    fmt: str,
    rate: float,
    limit: int | None,
    labels: str,
    label_delay_ms: int,
    external: bool,
    workers: int,
    scorers: int,
    chaos: bool,
) -> int:
    create_topics(
        settings.kafka_common(), settings.all_topics(), settings.partitions, settings.replication_factor
    )
    if external:
        since = topic_end_offsets(
            settings.kafka_common(), (settings.clicks_topic, settings.transactions_topic)
        )
        outputs_from = topic_end_offsets(settings.kafka_common(), output_topics(settings))
    else:
        since = {}
        outputs_from = {(t, p): 0 for t in output_topics(settings) for p in range(settings.partitions)}
    if kafka is not None:
        where = (
            f"local Apache Kafka, {kafka.nodes} KRaft node{'s' if kafka.nodes > 1 else ''} on "
            f"{settings.bootstrap_servers} (started in {kafka.started_in_s:.1f} s, replication factor "
            f"{kafka.replication_factor}, logs in {kafka.folder})"
        )
    else:
        where = f"Kafka at {settings.bootstrap_servers}, topics {settings.clicks_topic}, {settings.transactions_topic}, ..."
    print(
        f"{where}; worker metrics :{settings.worker_metrics_port}/metrics, "
        f"scorer metrics :{settings.scorer_metrics_port}/metrics; logs in {logs}",
        flush=True,
    )
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
            produced = replay(
                settings,
                events,
                rate=rate,
                limit=limit,
                progress=False,
                on_delivered=count_delivered,
                labels=labels,
                label_delay_ms=label_delay_ms,
                on_labels_delivered=count_labels,
            )
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
                    summary.add(position_of(msg)[0], json.loads(value_of(msg)), settings)
            if replay_error:
                raise RuntimeError(f"replay failed: {replay_error[0]}")
            pipeline.check()
            if chaos_monkey is not None:
                chaos_monkey.tick(produced)
            if time.monotonic() >= next_summary:
                print(summary.render(produced, settings, kafka_status(), labels_sent), flush=True)
                next_summary += SUMMARY_EVERY_S
            settled = chaos_monkey is None or chaos_monkey.finished()
            if (
                limit is not None
                and settled
                and not producer_thread.is_alive()
                and summary.done() >= produced
            ):
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
