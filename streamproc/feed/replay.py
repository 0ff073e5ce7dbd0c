"""Replay a public data set (or the built-in generator) into the input topics at a given rate.

Formats: the Fraud Handbook transactions (parquet), MovieLens ratings (ratings.csv with movies.csv
beside it), YooChoose clicks (tsv), Taobao UserBehavior (csv), and JSON lines of wire messages
({"topic": ..., "message": {...}}). Every message is keyed by its user id with the Java-compatible
murmur2 partitioner, the same one Faust uses, so clicks and re-keyed transactions co-partition.

Transaction labels go inline (as recorded in the data set) or, as they reach a live system, later
and apart: `labels="topic"` strips them and sends each fraud's label to `fraud-labels` once the
replay's event time has passed the transaction's time plus a delay (a chargeback's).
"""

from __future__ import annotations

import csv
import heapq
import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streamproc.config import Settings
from streamproc.core.events import InvalidEvent, parse_ts_ms
from streamproc.feed.fraud_labels import label_message
from streamproc.kafka.clients import new_producer

Message = tuple[
    str, dict[str, Any]
]  # (logical topic: "clicks" | "transactions" | "fraud_labels", wire message)
LABEL_MODES = ("inline", "topic")
TAOBAO_ACTIONS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}
FORMATS = ("auto", "fraud", "movielens", "yoochoose", "taobao", "jsonl", "generator")


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "fraud"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name == "ratings.csv" or (path.is_dir() and (path / "ratings.csv").exists()):
        return "movielens"
    if name.endswith(".tsv") or "yoochoose" in str(path).lower():
        return "yoochoose"
    if "userbehavior" in name or "taobao" in str(path).lower():
        return "taobao"
    raise ValueError(f"cannot tell the format of {path}; pass --format one of {FORMATS[1:]}")


def read_fraud_handbook(path: Path) -> Iterator[Message]:
    import pyarrow.parquet as pq

    columns = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
    table = pq.read_table(path, columns=columns)  # TX_FRAUD_SCENARIO is never read
    frame = table.to_pandas().sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    ts_ms = frame["TX_DATETIME"].astype("datetime64[ms]").astype("int64").to_numpy()
    for tx_id, ts, customer, terminal, amount, fraud in zip(
        frame["TRANSACTION_ID"].to_numpy(),
        ts_ms,
        frame["CUSTOMER_ID"].to_numpy(),
        frame["TERMINAL_ID"].to_numpy(),
        frame["TX_AMOUNT"].to_numpy(),
        frame["TX_FRAUD"].to_numpy(),
        strict=True,
    ):
        yield (
            "transactions",
            {
                "event_id": f"tx-{int(tx_id)}",
                "user_id": f"c{int(customer)}",
                "amount": float(amount),
                "currency": "EUR",
                "terminal_id": f"t{int(terminal)}",
                "ts": int(ts),
                "label": int(fraud),
            },
        )


def read_movielens(path: Path) -> Iterator[Message]:
    directory = path if path.is_dir() else path.parent
    movies: dict[str, tuple[str, str]] = {}
    movies_csv = directory / "movies.csv"
    if movies_csv.exists():
        with movies_csv.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                movies[row["movieId"]] = (row["title"], row["genres"].replace("|", ", "))
    with (directory / "ratings.csv").open(newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: (int(r["timestamp"]), r["userId"]))
    for row in rows:
        title, genres = movies.get(row["movieId"], (None, None))
        yield (
            "clicks",
            {
                "event_id": f"ml-{row['userId']}-{row['movieId']}-{row['timestamp']}",
                "user_id": f"u{row['userId']}",
                "item_id": f"m{row['movieId']}",
                "action": "rate",
                "value": float(row["rating"]),
                "ts": int(row["timestamp"]) * 1000,
                "title": title,
                "category": genres,
            },
        )


def read_yoochoose(path: Path) -> Iterator[Message]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = sorted(reader, key=lambda r: float(r["Time"]))
    for n, row in enumerate(rows):
        yield (
            "clicks",
            {
                "event_id": f"yc-{row['SessionId']}-{n}",
                "user_id": f"s{row['SessionId']}",
                "item_id": f"i{row['ItemId']}",
                "action": "click",
                "ts": int(float(row["Time"]) * 1000),
            },
        )


def read_taobao(path: Path) -> Iterator[Message]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = sorted(csv.reader(f), key=lambda r: int(r[4]))
    for n, (user, item, category, behavior, ts) in enumerate(rows):
        yield (
            "clicks",
            {
                "event_id": f"tb-{user}-{n}",
                "user_id": f"u{user}",
                "item_id": f"i{item}",
                "action": TAOBAO_ACTIONS.get(behavior, behavior),
                "category": f"cat{category}",
                "ts": int(ts) * 1000,
            },
        )


def read_jsonl(path: Path) -> Iterator[Message]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                yield row["topic"], row["message"]


ENDLESS_CHUNKS_BEFORE_START = 120  # the endless stream starts this many chunks before synthetic.START_MS


def read_generator(
    seed: int = 7, n_users: int = 500, days: int = 30, endless: bool = False
) -> Iterator[Message]:
    """The built-in generator's stream: `n_users` users over `days` days (about 120,000 events at the
    defaults). `endless`: chunk after chunk of `days`, the same users and shop, each chunk with its own
    event ids and the next days of event time; it starts ENDLESS_CHUNKS_BEFORE_START chunks before the
    generator's usual start (2025-01-01 less about ten years), so that it stays behind the wall clock,
    which the pipeline's event-time guard bounds (at 1,000 events/s: about 2 minutes of replay per
    chunk, so it reaches the wall clock after about 5 hours)."""
    from models.data import synthetic

    if not endless:
        yield from synthetic.generate(n_users=n_users, days=days, seed=seed)
        return
    chunk = 0
    while True:
        start_ms = synthetic.START_MS + (chunk - ENDLESS_CHUNKS_BEFORE_START) * days * 86_400_000
        for topic, message in synthetic.generate(
            n_users=n_users, days=days, seed=seed + chunk, start_ms=start_ms
        ):
            yield (
                topic,
                (message if chunk == 0 else {**message, "event_id": f"c{chunk}-{message['event_id']}"}),
            )
        chunk += 1


def with_id_prefix(events: Iterable[Message], prefix: str) -> Iterator[Message]:
    """The events with `prefix` before every event id (and a fraud label's transaction id): a replay that
    sends a data set again to a pipeline that saw it, whose users' states would take the same ids as
    duplicates and score nothing."""
    for topic, message in events:
        if isinstance(message, dict):
            message = dict(message)
            for name in ("event_id", "transaction_id"):
                if isinstance(message.get(name), str | int):
                    message[name] = f"{prefix}{message[name]}"
        yield topic, message


def read_events(
    path: Path | None, fmt: str = "auto", seed: int = 7, endless: bool = False
) -> Iterator[Message]:
    """The events of a data set in event-time order, as (topic, wire message); no path: the generator
    (`endless`: see read_generator)."""
    if path is None or fmt == "generator":
        return read_generator(seed, endless=endless)
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {
        "fraud": read_fraud_handbook,
        "movielens": read_movielens,
        "yoochoose": read_yoochoose,
        "taobao": read_taobao,
        "jsonl": read_jsonl,
    }
    return readers[fmt](path)


def labels_as_topic(events: Iterable[Message], delay_ms: int) -> Iterator[Message]:
    """The events with their transactions' labels taken out; each fraud's label follows as a `fraud_labels`
    message once the events' time passes the transaction's time + `delay_ms` (those still due, at the end).

    Messages whose time cannot be read pass through unchanged (the pipeline dead-letters them).
    """
    due: list[tuple[int, int, dict[str, Any]]] = []  # (due time, sequence, label message)
    for n, (topic, message) in enumerate(events):
        try:
            now = parse_ts_ms(message.get("ts")) if isinstance(message, dict) else None
        except InvalidEvent:
            now = None
        if topic == "transactions" and now is not None and "label" in message:
            message = dict(message)
            event_id, terminal = (
                message.get("event_id"),
                message.get("terminal_id") or message.get("merchant_id"),
            )
            # a transaction without its ids is dead-lettered by the worker: no label can name it
            if message.pop("label") == 1 and event_id and terminal:
                label = label_message(event_id, terminal, message["ts"], source="replay")
                heapq.heappush(due, (now + delay_ms, n, label))
        while due and now is not None and due[0][0] <= now:
            yield "fraud_labels", heapq.heappop(due)[2]
        yield topic, message
    while due:
        yield "fraud_labels", heapq.heappop(due)[2]


def message_key(topic: str, message: Any) -> bytes | None:
    """Events by user (murmur2, as Faust, so a user's events co-partition), fraud labels by terminal."""
    if not isinstance(message, dict):
        return None
    if topic == "fraud_labels":
        return str(message.get("terminal_id") or message.get("merchant_id") or "").encode()
    return str(message.get("user_id", "")).encode()


def producer_for(settings: Settings) -> Producer:
    return new_producer(settings, "replay", {"linger.ms": 5, "queue.buffering.max.messages": 500_000})


def replay(
    settings: Settings,
    events: Iterable[Message],
    rate: float = 0.0,
    limit: int | None = None,
    progress: bool = True,
    on_delivered: Callable[[int], None] | None = None,
    labels: str = "inline",
    label_delay_ms: int = 86_400_000,
    on_labels_delivered: Callable[[int], None] | None = None,
) -> int:
    """Produce events at `rate` per second (0: as fast as possible); return how many events to be scored
    (clicks and transactions) were acknowledged. `limit` counts those events too; `labels="topic"` sends
    the transactions' fraud labels apart (labels_as_topic), which `rate` also paces.

    `on_delivered(n)` is called with the running count of acknowledged events (the demo's live summary),
    `on_labels_delivered(n)` with that of acknowledged fraud labels.
    """
    from tqdm import tqdm

    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    producer = producer_for(settings)
    topics = {
        "clicks": settings.clicks_topic,
        "transactions": settings.transactions_topic,
        "fraud_labels": settings.fraud_labels_topic,
    }
    errors: list[str] = []
    delivered = labels_delivered = 0

    def on_delivery(error: Any, msg: Any) -> None:
        nonlocal delivered, labels_delivered
        if error is not None:
            errors.append(str(error))
        elif msg.topic() == settings.fraud_labels_topic:
            labels_delivered += 1
            if on_labels_delivered is not None:
                on_labels_delivered(labels_delivered)
        else:
            delivered += 1
            if on_delivered is not None:
                on_delivered(delivered)

    started = time.monotonic()
    stream: Iterable[Message] = islice(events, limit) if limit is not None else events
    if labels == "topic":
        stream = labels_as_topic(stream, label_delay_ms)
    for n, (topic, message) in enumerate(
        tqdm(stream, total=limit, unit="ev", disable=not progress, mininterval=0.5)
    ):
        if rate > 0:
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting for a result
        raw = bytes(message) if isinstance(message, bytes | bytearray) else json.dumps(message).encode()
        while True:
            try:
                producer.produce(
                    topics[topic], key=message_key(topic, message), value=raw, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if n == 0:
            # An idempotent producer's first send waits for its producer id (a round trip or
            # more to the broker): pace from the first acknowledgement, so that the wait does not queue the next events.
            producer.flush(30)
            started = time.monotonic()
    producer.flush(120)
    if errors:
        raise RuntimeError(f"{len(errors)} messages were not acknowledged, e.g. {errors[:3]}")
    return delivered
