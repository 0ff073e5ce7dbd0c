"""Check that Kafka answers with these settings before a command starts, and stop with the reason if not.

librdkafka retries a refused connection for ever: a wrong password or an untrusted certificate shows
only as a stream of log lines and, at the first request that times out, "Broker transport failure".
The reason comes through the client's error callback. `check_kafka` asks for the cluster's metadata
with an admin client that collects those errors: it stops at once on an authentication or TLS error
(retrying cannot mend those), and after `timeout_s` on anything else (nothing listening, a name that
does not resolve), with what the client reported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# errors that the same settings will meet again on every retry
FATAL_CODES = {KafkaError._AUTHENTICATION: "authentication failed", KafkaError._SSL: "TLS failed"}
ATTEMPT_S = 1.0


class KafkaUnreachable(RuntimeError):
    """Kafka did not answer with these settings; the message says where and why."""


def describe(errors: list[KafkaError]) -> str:
    """The distinct reasons librdkafka reported, in order, without repeats."""
    seen: dict[str, None] = {}
    for error in errors:
        seen.setdefault(f"{FATAL_CODES.get(error.code(), error.name())}: {error.str()}", None)
    return "; ".join(seen) or "no reply"


def check_kafka(options: Mapping[str, Any], timeout_s: float = 60.0) -> int:
    """Return the number of brokers once the cluster's metadata arrives; raise KafkaUnreachable with the
    client's reasons on an authentication or TLS error (at once) or when `timeout_s` passes."""
    errors: list[KafkaError] = []
    where = f"{options.get('bootstrap.servers')} ({options.get('security.protocol', 'PLAINTEXT')})"
    config: dict[str, Any] = {
        **options,
        "error_cb": errors.append,
        "log_level": 0,
    }  # the reasons come back here
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return len(admin.list_topics(timeout=ATTEMPT_S).brokers)
        except KafkaException:
            pass
        admin.poll(0)  # serve the error callbacks
        fatal = [e for e in errors if e.code() in FATAL_CODES]
        if fatal:
            raise KafkaUnreachable(f"Kafka at {where} refused the connection: {describe(fatal)}")
        if time.monotonic() >= deadline:
            raise KafkaUnreachable(
                f"Kafka at {where} did not answer within {timeout_s:.0f} s: {describe(errors)}"
            )
