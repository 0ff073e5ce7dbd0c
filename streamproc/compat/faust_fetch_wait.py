"""Faust hard-codes its aiokafka consumer's fetch wait (1,500 ms) and minimum (1 byte); this sets both.

aiokafka sends one fetch per broker and leaves out of it the partitions whose records the worker has not
taken yet, so a worker that lags a little sends fetches for quiet partitions only, and Kafka holds each
for the whole wait: with 1,500 ms, 1.5 s per stage (docs/benchmarks.md, the soak).
"""

from __future__ import annotations

from typing import Any

from streamproc.compat.patching import replace_method

_FETCH = {"wait_ms": 1500, "min_bytes": 1}  # read by every consumer created after install


def install(fetch_wait_ms: int, fetch_min_bytes: int = 1) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    _FETCH.update(wait_ms=fetch_wait_ms, min_bytes=fetch_min_bytes)

    def replacement(original: Any) -> Any:
        def _create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
            consumer = original(self, *args, **kwargs)
            for field in ("_fetch_max_wait_ms", "_fetch_min_bytes"):
                if not hasattr(consumer, field):
                    raise RuntimeError(
                        f"aiokafka's consumer has no {field}: {__name__} cannot set the fetch wait"
                    )
            consumer._fetch_max_wait_ms = _FETCH[
                "wait_ms"
            ]  # read by AIOKafkaConsumer.start() for its Fetcher
            consumer._fetch_min_bytes = _FETCH["min_bytes"]
            return consumer

        return _create_worker_consumer

    replace_method(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", replacement, __name__)
