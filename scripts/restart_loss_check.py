"""Kill the Faust worker twice mid-stream (the second time with its data directory lost) and count lost events.

Usage: PYTHONPATH=. python scripts/restart_loss_check.py [--runs N] [--burn K] [--set FIELD=VALUE ...] [--keep DIR]
Each run: a fresh local Kafka, 3,000 synthetic events in thirds; SIGKILL after 500 sequence updates,
restart; SIGKILL after 1,500 distinct updates, wipe the data directory, restart. Prints, per run,
the accepted events that never got a sequence update within 150 s of the last restart, and
whether a worker reported a stall (streamproc.observability.stall_watch). --burn K keeps K busy processes
running beside it (the stall has come under load); --set overrides a Settings field (e.g.
faust_fetch_wait_ms=50); --keep copies the worker logs of runs that lost events or stalled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamproc.config import Settings
from streamproc.kafka.admin import create_topics
from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import free_port
from tests.integration.conftest import Process, TopicReader
from tests.integration.pipeline_data import produce, synthetic_events


def one_run(work: Path, checkpoint: Path, overrides: dict[str, str]) -> int:
    with LocalKafka(work / "kafka") as broker:
        s = Settings(bootstrap_servers=broker.bootstrap_servers).namespaced(
            "check",
            data_dir=work / "faust",
            checkpoint=checkpoint,
            worker_metrics_port=free_port(),
            scorer_metrics_port=free_port(),
            **overrides,
        )
        create_topics(s.bootstrap_servers, s.all_topics(), s.partitions)
        workers: list[Process] = []

        def start() -> Process:
            workers.append(Process("worker", s, work))
            return workers[-1]

        events = synthetic_events(3000, seed=5)
        reader = TopicReader(s, [s.sequence_updates_topic])
        updated = lambda: {m["event_id"] for m in reader.messages[s.sequence_updates_topic]}  # noqa: E731
        try:
            worker = start()
            produce(s, events[:1000])
            reader.poll_until(lambda: len(reader.messages[s.sequence_updates_topic]) >= 500, 300)
            worker.kill()
            produce(s, events[1000:2000])
            worker = start()
            reader.poll_until(lambda: len(updated()) >= 1500, 300)
            worker.kill()
            shutil.rmtree(s.data_dir)
            produce(s, events[2000:])
            start()
            want = {m["event_id"] for _, m in events}
            deadline = time.monotonic() + 150
            reader.poll_until(lambda: updated() >= want or time.monotonic() > deadline, 200)
            return len(want - updated())
        finally:
            reader.close()
            for p in workers:
                if p.alive():
                    p.kill()


def burn() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burn", type=int, default=0, help="busy processes beside the check")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a Settings override"
    )
    parser.add_argument(
        "--keep", type=Path, help="copy the worker logs of runs that lost events or stalled here"
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burn)]
    for b in burners:
        b.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "tiny"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "models.train",
                    "--preset",
                    "tiny",
                    "--out",
                    str(checkpoint),
                    "--threads",
                    "1",
                ],
                check=True,
                capture_output=True,
            )
            print("| run | events lost of 3,000 | stall reported | seconds |\n|---|---|---|---|", flush=True)
            for n in range(args.runs):
                work = Path(tmp) / f"run{n}"
                work.mkdir()
                started = time.monotonic()
                lost = one_run(work, checkpoint, overrides)
                logs = sorted(work.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
                stalled = any("worker stalled" in p.read_text(errors="replace") for p in logs)
                print(
                    f"| {n + 1} | {lost} | {'yes' if stalled else 'no'} | {time.monotonic() - started:.0f} |",
                    flush=True,
                )
                if args.keep and (lost or stalled):
                    for i, p in enumerate(logs):
                        (args.keep / f"run{n + 1}").mkdir(parents=True, exist_ok=True)
                        shutil.copy(p, args.keep / f"run{n + 1}" / f"{i}-{p.name}")
    finally:
        for b in burners:
            b.terminate()


if __name__ == "__main__":
    main()
