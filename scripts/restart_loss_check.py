"""Kill the Faust worker twice mid-stream (the second time with its data directory lost) and count lost events.

Usage: PYTHONPATH=. python scripts/restart_loss_check.py [--runs N]
Each run: embedded broker, 3,000 synthetic events in thirds; SIGKILL after 500 sequence updates,
restart; SIGKILL after 1,500 distinct updates, wipe the data directory, restart. Prints, per run,
the accepted events that never got a sequence update within 150 s of the last restart.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamproc.broker import EmbeddedBroker, create_topics, free_port
from streamproc.config import Settings
from tests.integration.conftest import Process, TopicReader
from tests.integration.pipeline_data import produce, synthetic_events


def one_run(work: Path, checkpoint: Path) -> int:
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        s = Settings(bootstrap_servers=broker.bootstrap_servers, broker_flavour="tansu").namespaced(
            "check", data_dir=work / "faust", checkpoint=checkpoint,
            worker_metrics_port=free_port(), scorer_metrics_port=free_port())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "tiny"
        subprocess.run([sys.executable, "-m", "models.train", "--preset", "tiny", "--out", str(checkpoint),
                        "--threads", "1"], check=True, capture_output=True)
        print("| run | events lost of 3,000 |\n|---|---|", flush=True)
        for n in range(args.runs):
            work = Path(tmp) / f"run{n}"
            work.mkdir()
            print(f"| {n + 1} | {one_run(work, checkpoint)} |", flush=True)


if __name__ == "__main__":
    main()
