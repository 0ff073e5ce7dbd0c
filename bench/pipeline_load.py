"""The load and the score reader `latency_bench.py` and `soak_bench.py` share: endless synthetic events
(models.data.synthetic, each chunk with its own ids and a later start), and a thread that reads
risk-scores (`RiskScoreThread`; `ScoreReader` keeps each score's lineage stamps); `wait_scored` polls it for a set of event ids.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from _common import Child
from confluent_kafka import Consumer

from models.data import synthetic
from models.features.aggregates import DAY_MS
from streamproc.config import Settings


def event_source(n_users: int, days: int, seed: int):  # type: ignore[no-untyped-def]
    """Endless synthetic events: chunks of (n_users, days), each with its own ids and later start time."""
    chunk = 0
    while True:
        start = synthetic.START_MS + chunk * days * DAY_MS
        for topic, msg in synthetic.generate(n_users=n_users, days=days, seed=seed + chunk, start_ms=start):
            msg = dict(msg)
            msg["event_id"] = f"k{chunk}-{msg['event_id']}"
            yield topic, msg
        chunk += 1


class RiskScoreThread(threading.Thread):
    """Reads risk-scores from the beginning until `stopping` is set; `keep` gets each batch of messages
    with its arrival time (ms) under `lock`."""

    def __init__(self, settings: Settings, group_prefix: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"{group_prefix}-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self.consumer.subscribe([settings.risk_scores_topic])
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(num_messages=5000, timeout=0.05)
                arrival = int(time.time() * 1000)
                scores = [json.loads(msg.value()) for msg in messages if not msg.error()]
                if scores:
                    with self.lock:
                        self.keep(scores, arrival)
        finally:
            self.consumer.close()

    def keep(self, scores: list[dict[str, Any]], arrival_ms: int) -> None:
        raise NotImplementedError


class ScoreReader(RiskScoreThread):
    """Keeps (event_id, ingest_ms, scored_ms, arrival_ms, source topic, emitted_ms) of every score."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "bench-lat")
        self.rows: list[tuple[str, int, int, int, str, int | None]] = []

    def keep(self, scores: list[dict[str, Any]], arrival_ms: int) -> None:
        for v in scores:
            lineage = v.get("lineage") or {}
            ingest = lineage.get("ingest_ts_ms")
            if ingest is not None:
                self.rows.append(
                    (
                        v["event_id"],
                        int(ingest),
                        int(v["scored_ts_ms"]),
                        arrival_ms,
                        str(lineage.get("topic")),
                        lineage.get("emitted_ts_ms"),
                    )
                )

    def snapshot(self) -> list[tuple[str, int, int, int, str, int | None]]:
        with self.lock:
            return list(self.rows)


def check_alive(children: list[Child]) -> None:
    for c in children:
        if not c.alive():
            raise RuntimeError(f"{c.argv[-1]} died:\n{c.log_tail()}")


def wait_scored(reader: ScoreReader, ids: set[str], timeout_s: float, children: list[Child]) -> float | None:
    """Seconds until every id in `ids` has a score (None on timeout)."""
    t0 = time.monotonic()
    seen: set[str] = set()
    index = 0
    while time.monotonic() - t0 < timeout_s:
        check_alive(children)
        rows = reader.snapshot()
        seen.update(r[0] for r in rows[index:])
        index = len(rows)
        if ids <= seen:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None
