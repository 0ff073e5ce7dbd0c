"""Workaround for the embedded broker, enabled only for broker_flavour="tansu".

Tansu 0.6 answers ListOffsets(latest) with the start of the last record batch + 1 instead of the
true end offset, while Fetch responses carry the correct high watermark. Faust's changelog
recovery reads the high water through ListOffsets, so a restart either crashes
(ConsistencyError) or rebuilds a table a few records short. `fetch_high_watermarks` reads the high
watermark from a Fetch response instead, and `install_faust_highwater_probe` puts it in place of
Faust's lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamproc.broker import client_config

_INSTALLED: dict[str, Any] = {}


def fetch_high_watermarks(
    kafka: str | Mapping[str, Any],
    partitions: Iterable[tuple[str, int]],
    listed: Mapping[tuple[str, int], int] | None = None,
    timeout_s: float = 15.0,
) -> dict[tuple[str, int], int]:
    """High watermark of each (topic, partition) as a Fetch response reports it.

    `kafka`: bootstrap servers, or client options (Settings.kafka_common). `listed` are the (possibly
    low) ListOffsets answers; fetching starts one record before them, so each fetch returns at least the
    partition's last record batch together with its high watermark.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    listed = listed or {}
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": "streamproc-highwater-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, max(int(listed.get((t, p), 0)) - 1, 0)) for t, p in wanted])
        found: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(found))
                raise TimeoutError(f"no fetch response with a high watermark for {missing}")
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"high watermark probe failed: {msg.error()}")
            for t, p in wanted:
                if (t, p) not in found:
                    _low, high = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
                    if high >= 0:
                        found[(t, p)] = int(high)
        return found
    finally:
        consumer.close()


def true_ends(
    kafka: str | Mapping[str, Any], listed: Mapping[tuple[str, int], int], tansu: bool, timeout_s: float = 15.0
) -> dict[tuple[str, int], int]:
    """The end offsets ListOffsets `listed`, taken from a Fetch response instead on the embedded broker
    (`tansu`), whose ListOffsets answers short."""
    return fetch_high_watermarks(kafka, list(listed), listed, timeout_s) if tansu else dict(listed)


def install_faust_highwater_probe(kafka: str | Mapping[str, Any]) -> None:
    """Make Faust's aiokafka consumer thread take high watermarks from Fetch responses."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if "original" not in _INSTALLED:
        _INSTALLED["original"] = "installed"
        original = thread_cls._highwaters

        async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
            listed = await original(self, partitions)
            keys = {(tp.topic, tp.partition): tp for tp in partitions}
            loop = asyncio.get_running_loop()
            probed = await loop.run_in_executor(
                None,
                fetch_high_watermarks,
                _INSTALLED["kafka"],
                list(keys),
                {(tp.topic, tp.partition): v for tp, v in listed.items() if v is not None},
            )
            return {keys[k]: max(v, int(listed.get(keys[k]) or 0)) for k, v in probed.items()}

        thread_cls._highwaters = _highwaters
    _INSTALLED["kafka"] = kafka
