"""The peers `pipeline_bench.py` measures the streamproc Faust worker (its row c) against, over the same
pre-produced click events, and what the rows share: (a) a raw confluent-kafka consumer keeping per-user
windows in this process, (b) a minimal Faust app that only counts (`faust_count_app.py`, own process),
(d) Quix Streams doing the window job (`quix_window_app.py`, own process); a result row, and the reader
that counts an output topic's distinct event ids.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from _common import Child
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamproc.config import Settings
from streamproc.kafka.admin import create_topics

HERE = Path(__file__).resolve().parent
_EVENT_ID = re.compile(rb'"event_id":\s*"([^"]+)"')
_EMITTED = re.compile(rb'"emitted_ts_ms":\s*(\d+)')


def result(name: str, count: int, first: float | None, last: float | None, note: str = "") -> dict[str, Any]:
    seconds = (last - first) if first is not None and last is not None else None
    rate = count / seconds if seconds and seconds > 0 else None
    return {"name": name, "count": count, "seconds": seconds, "rate": rate, "note": note}


def failed(name: str, why: str) -> dict[str, Any]:
    return {"name": name, "count": 0, "seconds": None, "rate": None, "note": why}


def read_updates(bootstrap: str, topic: str, n: int, timeout_s: float) -> tuple[set[bytes], list[int]]:
    """Distinct event ids and emitted_ts_ms values of an output topic, read from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "isolation.level": "read_committed",  # what an exactly-once worker committed, nothing aborted
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])  # no group join
    ids: set[bytes] = set()
    emitted: list[int] = []
    deadline = time.monotonic() + timeout_s
    last_msg = time.monotonic()
    try:
        while len(ids) < n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=2000, timeout=0.5)
            if messages:
                last_msg = time.monotonic()
            elif time.monotonic() - last_msg > (10.0 if ids else 60.0):
                break  # topic exhausted: the producer stopped short of n
            for msg in messages:
                if msg.error():
                    continue
                head = msg.value()[:400]
                m = _EVENT_ID.search(head)
                e = _EMITTED.search(head)
                if m:
                    ids.add(m.group(1))
                if e:
                    emitted.append(int(e.group(1)))
    finally:
        consumer.close()
    return ids, emitted


# -- (a) -------------------------------------------------------------------------------------------
def run_raw_consumer(settings: Settings, n: int, window: int, timeout_s: float) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
        }
    )
    consumer.subscribe([settings.clicks_topic])
    windows: dict[bytes, deque[dict[str, Any]]] = {}
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while count < n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=1000, timeout=0.5)
            for msg in messages:
                if msg.error():
                    continue
                if first is None:
                    first = time.perf_counter()
                event = json.loads(msg.value())
                w = windows.get(msg.key())
                if w is None:
                    w = windows[msg.key()] = deque(maxlen=window)
                w.append(event)
                count += 1
            if messages and first is not None:
                last = time.perf_counter()
    finally:
        consumer.close()
    note = f"{len(windows)} user windows" + ("" if count >= n else f"; TIMED OUT at {count}/{n}")
    return result(
        "(a) raw confluent-kafka consumer, dict of per-user last-50 deques", count, first, last, note
    )


# -- (b) -------------------------------------------------------------------------------------------
def wait_for_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if not child.alive():
            return None
        time.sleep(0.2)
    return None


def run_faust_count(settings: Settings, n: int, mode: str, work: Path, timeout_s: float) -> dict[str, Any]:
    label = {
        "take": "(b) Faust raw consume, stream.take_events(1000, within=0.01)",
        "take-uvloop": "(b) Faust raw consume, stream.take_events(1000, within=0.01) on uvloop, the worker's loop",
        "iter": "(b) Faust raw consume, plain `async for value in stream`",
        "layout": "(b) Faust raw consume, the worker's layout: three take_events agents over its five topics",
    }[mode]
    tag = f"faust-{mode}-{uuid.uuid4().hex[:6]}"
    mode, loop = (mode.removesuffix("-uvloop"), ["--uvloop"]) if mode.endswith("-uvloop") else (mode, [])
    out = work / f"{tag}.json"
    child = Child(
        [
            sys.executable,
            str(HERE / "faust_count_app.py"),
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic",
            settings.clicks_topic,
            "--app-id",
            f"bench-{tag}",
            "--partitions",
            str(settings.partitions),
            "--n",
            str(n),
            "--mode",
            mode,
            "--datadir",
            str(work / tag),
            "--layout-topics",
            ",".join(
                (
                    settings.user_events_topic,
                    settings.transactions_topic,
                    settings.fraud_labels_topic,
                    settings.tx_by_terminal_topic,
                )
            ),
            "--out",
            str(out),
            *loop,
        ],
        work / f"{tag}.log",
    )
    try:
        res = wait_for_file(out, child, timeout_s)
    finally:
        child.stop()
    if res is None:
        return failed(
            label, f"no result (child {'died' if not child.alive() else 'timed out'}); log {child.log_path}"
        )
    return result(label, res["count"], res["first_ts"], res["last_ts"], "agent only counts events")


# -- (d) -------------------------------------------------------------------------------------------
def quix_python(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable]
    for python in candidates:
        if (
            python
            and subprocess.run([python, "-c", "import quixstreams"], capture_output=True).returncode == 0
        ):
            return python
    return None


def run_quix(
    settings: Settings, n: int, window: int, work: Path, timeout_s: float, python: str | None
) -> dict[str, Any]:
    label = "(d) Quix Streams: last-50 window in RocksDB state + changelog, one output per event"
    py = quix_python(python)
    if py is None:
        return failed(
            label,
            "NOT RUN: quixstreams is not importable (pass --quix-python; see 'The scripts' in docs/benchmarks.md)",
        )
    version = subprocess.run(
        [py, "-c", "import quixstreams; print(quixstreams.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    tag = f"quix-{uuid.uuid4().hex[:6]}"
    output = f"{settings.clicks_topic}-{tag}-out"
    create_topics(settings.bootstrap_servers, [output], settings.partitions)
    out = work / f"{tag}.json"
    child = Child(
        [
            py,
            str(HERE / "quix_window_app.py"),
            "--bootstrap",
            settings.bootstrap_servers,
            "--input",
            settings.clicks_topic,
            "--output",
            output,
            "--group",
            f"bench-{tag}",
            "--state-dir",
            str(work / tag),
            "--window",
            str(window),
            "--n",
            str(n),
            "--out",
            str(out),
        ],
        work / f"{tag}.log",
        env=dict(os.environ),
    )
    try:
        res = wait_for_file(out, child, timeout_s)
        time.sleep(1.0)  # let the last outputs be produced
    finally:
        child.stop()
    if res is None:
        tail = " ".join(child.log_tail(400).split())
        return failed(
            label,
            f"quixstreams {version}: no result ({'died' if child.proc.returncode not in (None, 0, -15) else 'timed out'}): {tail}",
        )
    ids, emitted = read_updates(settings.bootstrap_servers, output, n, 120)
    if not emitted:
        return failed(label, f"quixstreams {version}: processed {res['count']} but no output read")
    return result(
        label,
        len(ids),
        min(emitted) / 1000,
        max(emitted) / 1000,
        f"quixstreams {version}; first→last emitted_ts_ms of the outputs; distinct event ids",
    )
