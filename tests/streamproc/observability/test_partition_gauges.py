"""The per-partition gauges, computed at scrape time: records behind, readiness counts, revoked partitions gone."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer
from prometheus_client import generate_latest

from streamproc.kafka.runtime import free_port
from streamproc.observability.metrics import Metrics, create_metrics, serve
from streamproc.observability.partition_gauges import (
    Assignment,
    read_confluent_assignment,
    records_behind,
    register_partition_gauges,
)
from streamproc.observability.readiness import input_partitions, missing_partitions, wait_until_ready


def test_records_behind() -> None:
    assert records_behind(10, 25) == 15
    assert records_behind(25, 25) == 0
    assert records_behind(30, 25) == 0  # a stale high watermark never gives a negative lag
    assert records_behind(None, 7) == 7  # nothing read or committed yet: all of it waits
    assert records_behind(3, None) is None and records_behind(3, -1) is None


def sample(metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class Held:
    """An assignment a test changes between scrapes, as a consumer's changes between them."""

    def __init__(self, lag: dict[tuple[str, int], int | None], reading: bool = True) -> None:
        self.now = Assignment(lag, reading)

    def __call__(self) -> Assignment:
        return self.now


def gauges(topics: tuple[str, ...], held: Held) -> Metrics:
    metrics = create_metrics()
    register_partition_gauges(metrics, topics, held)
    return metrics


def test_gauges_follow_the_assignment_at_each_scrape() -> None:
    held = Held({("clicks", 0): 5, ("clicks", 1): None, ("transactions", 0): 0})
    metrics = gauges(("clicks", "transactions", "fraud-labels"), held)
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 2
    assert sample(metrics, "streamproc_input_partitions", topic="transactions") == 1
    assert (
        sample(metrics, "streamproc_input_partitions", topic="fraud-labels") == 0
    )  # an input held nowhere here
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") == 5
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="1") is None  # unknown yet
    # a rebalance takes clicks/0 and every transactions partition away: the next scrape shows it
    held.now = Assignment({("clicks", 1): 9})
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 1
    assert sample(metrics, "streamproc_input_partitions", topic="transactions") == 0
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") is None
    assert sample(metrics, "streamproc_consumer_lag", topic="transactions", partition="0") is None
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="1") == 9


def test_a_worker_restoring_its_tables_reads_no_partition_but_reports_lag() -> None:
    metrics = gauges(("clicks",), Held({("clicks", 0): 40}, reading=False))
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 0
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") == 40


def test_a_consumer_that_cannot_answer_reads_nothing_and_the_page_is_still_served() -> None:
    def closed() -> Assignment:
        raise RuntimeError("Consumer closed")

    metrics = create_metrics()
    register_partition_gauges(metrics, ("sequence-updates",), closed)
    metrics.batch_size.observe(3)
    page = generate_latest(metrics.registry).decode()
    assert input_partitions(page) == {"sequence-updates": 0}
    assert "streamproc_consumer_lag{" not in page
    assert "streamproc_batch_size_count 1.0" in page


def test_a_real_confluent_consumer_is_read_on_the_scrape() -> None:
    # no broker: nothing assigned while it lives, and a closed consumer raises, which reads as nothing
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "gauges"})
    metrics = create_metrics()
    register_partition_gauges(metrics, ("sequence-updates",), read_confluent_assignment(consumer))
    assert read_confluent_assignment(consumer)() == Assignment({})
    assert sample(metrics, "streamproc_input_partitions", topic="sequence-updates") == 0
    consumer.close()
    with pytest.raises(RuntimeError):
        read_confluent_assignment(consumer)()
    assert sample(metrics, "streamproc_input_partitions", topic="sequence-updates") == 0


def test_registering_twice_on_one_registry_fails_loudly() -> None:
    metrics = gauges(("clicks",), Held({}))
    with pytest.raises(ValueError, match="Duplicated"):
        register_partition_gauges(metrics, ("clicks",), Held({}))


def test_readiness_reads_the_exposed_page() -> None:
    metrics = gauges((), Held({("clicks", 0): 0, ("clicks", 1): 0, ("user-events", 0): 0}))
    reported = input_partitions(generate_latest(metrics.registry).decode())
    assert reported == {"clicks": 2, "user-events": 1}
    assert missing_partitions({"clicks": 2, "user-events": 2, "transactions": 2}, reported) == {
        "user-events": 1,
        "transactions": 0,
    }
    assert missing_partitions({"clicks": 2}, reported) == {}


def served(held: Held) -> str:
    port = free_port()
    serve(gauges(("clicks",), held), port, addr="127.0.0.1")
    return f"http://127.0.0.1:{port}/metrics"


def test_wait_until_ready_polls_a_served_page_and_names_what_is_missing() -> None:
    held = Held({("clicks", 0): 0})
    url = served(held)
    with pytest.raises(TimeoutError, match="'clicks': 1"):
        wait_until_ready({url: {"clicks": 2}}, timeout_s=0.6)
    held.now = Assignment({("clicks", 0): 0, ("clicks", 1): 3})
    assert wait_until_ready({url: {"clicks": 2}}, timeout_s=5) < 5

    def worker_died() -> None:
        raise RuntimeError("the worker process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until_ready({url: {"clicks": 3}}, timeout_s=5, check_alive=worker_died)


def test_a_group_of_processes_is_ready_once_their_partitions_add_up() -> None:
    # two Faust workers share the input partitions: neither reads them all, together they do
    first, second = Held({("clicks", 0): 0, ("clicks", 1): 0}), Held({})
    urls = (served(first), served(second))
    with pytest.raises(TimeoutError, match="'clicks': 2"):
        wait_until_ready({urls: {"clicks": 4}}, timeout_s=0.6)
    second.now = Assignment({("clicks", 2): 0, ("clicks", 3): 0})
    assert wait_until_ready({urls: {"clicks": 4}}, timeout_s=5) < 5
