"""The per-partition gauges: records behind, readiness counts, and no series left for revoked partitions."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from streamproc.kafka.runtime import free_port
from streamproc.observability.metrics import create_metrics, serve
from streamproc.observability.partition_gauges import PartitionGauges, records_behind
from streamproc.observability.readiness import input_partitions, missing_partitions, wait_until_ready


def test_records_behind() -> None:
    assert records_behind(10, 25) == 15
    assert records_behind(25, 25) == 0
    assert records_behind(30, 25) == 0  # a stale high watermark never gives a negative lag
    assert records_behind(None, 7) == 7  # nothing read or committed yet: all of it waits
    assert records_behind(3, None) is None and records_behind(3, -1) is None


def sample(metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_gauges_follow_the_assignment() -> None:
    metrics = create_metrics()
    gauges = PartitionGauges(metrics)
    gauges.update({("clicks", 0): 5, ("clicks", 1): None, ("transactions", 0): 0})
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 2
    assert sample(metrics, "streamproc_input_partitions", topic="transactions") == 1
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") == 5
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="1") is None  # unknown yet
    # a rebalance takes clicks/0 and every transactions partition away
    gauges.update({("clicks", 1): 9})
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 1
    assert sample(metrics, "streamproc_input_partitions", topic="transactions") == 0
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") is None
    assert sample(metrics, "streamproc_consumer_lag", topic="transactions", partition="0") is None
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="1") == 9


def test_a_worker_restoring_its_tables_reads_no_partition_but_reports_lag() -> None:
    metrics = create_metrics()
    PartitionGauges(metrics).update({("clicks", 0): 40}, reading=False)
    assert sample(metrics, "streamproc_input_partitions", topic="clicks") == 0
    assert sample(metrics, "streamproc_consumer_lag", topic="clicks", partition="0") == 40


def test_readiness_reads_the_exposed_page() -> None:
    metrics = create_metrics()
    PartitionGauges(metrics).update({("clicks", 0): 0, ("clicks", 1): 0, ("user-events", 0): 0})
    reported = input_partitions(generate_latest(metrics.registry).decode())
    assert reported == {"clicks": 2, "user-events": 1}
    assert missing_partitions({"clicks": 2, "user-events": 2, "transactions": 2}, reported) == {
        "user-events": 1,
        "transactions": 0,
    }
    assert missing_partitions({"clicks": 2}, reported) == {}


def test_wait_until_ready_polls_a_served_page_and_names_what_is_missing() -> None:
    port = free_port()
    metrics = create_metrics()
    serve(metrics, port, addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    PartitionGauges(metrics).update({("clicks", 0): 0})
    with pytest.raises(TimeoutError, match="'clicks': 1"):
        wait_until_ready({url: {"clicks": 2}}, timeout_s=0.6)
    PartitionGauges(metrics).update({("clicks", 0): 0, ("clicks", 1): 3})
    assert wait_until_ready({url: {"clicks": 2}}, timeout_s=5) < 5

    def worker_died() -> None:
        raise RuntimeError("the worker process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until_ready({url: {"clicks": 3}}, timeout_s=5, check_alive=worker_died)


def test_a_group_of_processes_is_ready_once_their_partitions_add_up() -> None:
    # two Faust workers share the input partitions: neither reads them all, together they do
    urls = []
    gauges = []
    for _ in range(2):
        port = free_port()
        metrics = create_metrics()
        serve(metrics, port, addr="127.0.0.1")
        urls.append(f"http://127.0.0.1:{port}/metrics")
        gauges.append(PartitionGauges(metrics))
    gauges[0].update({("clicks", 0): 0, ("clicks", 1): 0})
    with pytest.raises(TimeoutError, match="'clicks': 2"):
        wait_until_ready({tuple(urls): {"clicks": 4}}, timeout_s=0.6)
    gauges[1].update({("clicks", 2): 0, ("clicks", 3): 0})
    assert wait_until_ready({tuple(urls): {"clicks": 4}}, timeout_s=5) < 5
