"""Wait until the pipeline's processes read every partition of their inputs, from their /metrics.

A replay started before the Faust worker and the scoring worker have joined their groups queues its
events behind the start-up (tens of seconds on two cores), and every latency it shows includes that
wait. `input_partitions` reads `streamproc_input_partitions` from a /metrics page (pure);
`wait_until_ready` polls the pages until each expected topic has all its partitions read, by one process
or summed over the processes of a consumer group (two Faust workers share the input partitions).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

POLL_S = 0.5


def input_partitions(metrics_text: str) -> dict[str, int]:
    """Topic -> partitions read, as `streamproc_input_partitions` reports them on a /metrics page."""
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "streamproc_input_partitions":
            for sample in family.samples:
                out[sample.labels["topic"]] = int(sample.value)
    return out


def missing_partitions(expected: Mapping[str, int], reported: Mapping[str, int]) -> dict[str, int]:
    """Topics of `expected` (topic -> partitions) not yet fully read, with how many partitions are read."""
    return {topic: reported.get(topic, 0) for topic, n in expected.items() if reported.get(topic, 0) < n}


def read_metrics(url: str, timeout_s: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a local /metrics URL
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return None  # not serving yet


def group_partitions(urls: tuple[str, ...]) -> dict[str, int]:
    """Topic -> partitions read by the processes of one group together (a page not served counts 0)."""
    total: Counter[str] = Counter()
    for url in urls:
        text = read_metrics(url)
        if text is not None:
            total.update(input_partitions(text))
    return dict(total)


def wait_until_ready(
    expected: Mapping[str | tuple[str, ...], Mapping[str, int]],
    timeout_s: float,
    check_alive: Callable[[], None] = lambda: None,
) -> float:
    """Poll the /metrics pages of `expected` until every topic is read; return the seconds waited.

    `expected`: a /metrics URL, or a tuple of URLs of one consumer group's processes (their partitions
    summed) -> {topic: partitions}. `check_alive` raises if a process died meanwhile; TimeoutError names
    what is still missing.
    """
    start = time.monotonic()
    missing: dict[str | tuple[str, ...], dict[str, int]] = {
        key: dict(topics) for key, topics in expected.items()
    }
    while True:
        for key in list(missing):
            still = missing_partitions(
                expected[key], group_partitions((key,) if isinstance(key, str) else key)
            )
            if still:
                missing[key] = still
            else:
                del missing[key]
        if not missing:
            return time.monotonic() - start
        check_alive()
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(
                f"not reading all input partitions after {timeout_s:.0f} s "
                f"(url -> topic: partitions read so far): {missing}"
            )
        time.sleep(POLL_S)  # polling the processes' /metrics pages
