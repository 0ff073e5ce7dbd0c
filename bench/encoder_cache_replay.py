"""The encoder part of `scorer_bench.py`: MovieLens-small's event texts as the scoring worker meets them,
through the encoder's LRU cache (hit rate by cache size) and through a real TextEncoder (events/s).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from models.features.featurize import event_text
from models.model.encoder import TextCache, TextEncoder
from streamproc.core.events import MIN_TS_MS, InvalidEvent, validate
from streamproc.feed.replay import read_events


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def movielens_texts(path: Path) -> tuple[list[str | None], list[bool], Counter[str]]:
    """Per event of a MovieLens replay, in event-time order: its text, whether streamproc.core.events.validate
    accepts it, and the rejections by reason.

    MovieLens-small has ratings from 1996 on, which older validators refused (bad_timestamp: before
    2000-01-01); such a record is made with the timestamp check aside (the text does not depend on
    the time) and counted as not accepted.
    """
    texts: list[str | None] = []
    accepted: list[bool] = []
    rejected: Counter[str] = Counter()
    for topic, msg in read_events(path):
        kind = "click" if topic == "clicks" else "transaction"
        try:
            record = validate(kind, json.dumps(msg).encode()).record
            ok = True
        except InvalidEvent as error:
            rejected[error.reason] += 1
            ok = False
            try:
                record = validate(kind, json.dumps({**msg, "ts": MIN_TS_MS}).encode()).record
            except InvalidEvent:
                continue
        texts.append(event_text(record))
        accepted.append(ok)
    return texts, accepted, rejected


_DUMMY: Any = object()


def movielens_hit_rate(
    texts: list[str | None], accepted: list[bool], rejected: Counter[str], cache_size: int
) -> list[dict[str, Any]]:
    """Cache lookups per event: over the events the validator accepts, and over all events."""
    rows = []
    for name, keep in (
        ("accepted by streamproc.core.events.validate", accepted),
        ("all events (timestamp check aside)", [True] * len(texts)),
    ):
        cache = TextCache(cache_size)
        kept = [t for t, k in zip(texts, keep, strict=True) if k]
        with_text = [t for t in kept if t is not None]
        for text in with_text:
            if cache.get(text) is None:
                cache.put(text, _DUMMY)
        rows.append(
            {
                "name": name,
                "events": len(kept),
                "with_text": len(with_text),
                "distinct": len(set(with_text)),
                "hits": cache.hits,
                "misses": cache.misses,
                "hit_rate": cache.hit_rate,
            }
        )
    rows[0]["rejected"] = dict(rejected)
    return rows


def movielens_replay_encode(
    events: list[str | None], device: str, cache_size: int, batch_events: int
) -> dict[str, Any]:
    """Replay MovieLens-small's event texts through a real TextEncoder, as the scoring worker meets them:
    batches of `batch_events` events in event-time order, each batch's texts encoded (distinct misses
    only) or served from the LRU cache. Times the whole replay, weights loading excluded."""
    texts = [t for t in events if t is not None]
    encoder = TextEncoder(device=device, cache_size=cache_size)
    encoder.encode(["view | warm-up | Home"])  # loads the weights
    encoder.cache = TextCache(cache_size)
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch_events):
        encoder.encode(texts[start : start + batch_events])
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "events": len(events),
        "with_text": len(texts),
        "encoded": len(set(texts)),
        "seconds": seconds,
        "hit_rate": encoder.cache.hit_rate,
        "batch": batch_events,
    }
