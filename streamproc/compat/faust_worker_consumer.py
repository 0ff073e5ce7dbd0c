"""Faust hard-codes its aiokafka consumer's fetch wait (1,500 ms) and minimum (1 byte), and reads committed
records only under its own exactly-once mode (which streamproc does not use); this sets all three.

aiokafka sends one fetch per broker and leaves out of it the partitions whose records the worker has not
taken yet, so a worker that lags a little sends fetches for quiet partitions only, and Kafka holds each
for the whole wait: with 1,500 ms, 1.5 s per stage (docs/benchmarks.md, the soak).

Under streamproc's exactly-once (`stages.transactions`) the worker's intermediate topics and changelogs
are written in transactions: it must read them, and recover its tables, with isolation_level
"read_committed", or it would apply what an aborted transaction wrote.
"""

from __future__ import annotations

from typing import Any

from streamproc.compat.patching import replace_method

# read by every consumer created after install
_CONFIG: dict[str, Any] = {"wait_ms": 1500, "min_bytes": 1, "isolation_level": "read_uncommitted"}
_FIELDS = {
    "wait_ms": "_fetch_max_wait_ms",
    "min_bytes": "_fetch_min_bytes",
    "isolation_level": "_isolation_level",
}


def install(fetch_wait_ms: int, fetch_min_bytes: int = 1, isolation_level: str = "read_committed") -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    _CONFIG.update(wait_ms=fetch_wait_ms, min_bytes=fetch_min_bytes, isolation_level=isolation_level)

    def replacement(original: Any) -> Any:
        def _create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
            consumer = original(self, *args, **kwargs)
            for name, field in _FIELDS.items():
                if not hasattr(consumer, field):
                    raise RuntimeError(f"aiokafka's consumer has no {field}: {__name__} cannot set it")
                setattr(consumer, field, _CONFIG[name])  # read by AIOKafkaConsumer.start() for its Fetcher
            return consumer

        return _create_worker_consumer

    replace_method(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", replacement, __name__)
