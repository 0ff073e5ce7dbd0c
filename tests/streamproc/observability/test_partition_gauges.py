"""The per-partition gauges, computed at scrape time: records behind, readiness counts, revoked partitions gone."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer
from prometheus_client import generate_latest

from streamproc.kafka.runtime import free_port
from streamproc.observability.metrics import Metrics, create_metrics, serve
from streamproc.observability.partition_gauges import (
    Assignment,
    OnOwnerThread,
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


def test_a_scrape_is_answered_on_the_consumers_own_thread() -> None:
    # confluent-kafka: another thread's call waits while the owner is in consume(), so the owner reads
    threads: list[str] = []

    def read() -> Assignment:
        threads.append(threading.current_thread().name)
        return Assignment({("sequence-updates", 0): len(threads)})

    on_owner = OnOwnerThread(read, wait_s=5.0)
    stop = threading.Event()

    def owner_loop() -> None:
        while not stop.is_set():
            on_owner.answer()
            stop.wait(0.01)  # the owner's consume(timeout=...)

    owner = threading.Thread(target=owner_loop, name="owner")
    owner.start()
    try:
        metrics = create_metrics()
        register_partition_gauges(metrics, ("sequence-updates",), on_owner)
        assert sample(metrics, "streamproc_consumer_lag", topic="sequence-updates", partition="0") == 1
        assert sample(metrics, "streamproc_consumer_lag", topic="sequence-updates", partition="0") == 2
        assert threads == ["owner", "owner"]  # read only when asked, never on the scrape's thread
    finally:
        stop.set()
        owner.join()
    on_owner.close()
    started = time.monotonic()
    assert on_owner() == Assignment(reading=False)  # closed: at once, no wait for a loop that is gone
    assert time.monotonic() - started < 1.0


def asked(on_owner: OnOwnerThread) -> None:
    deadline = time.monotonic() + 5
    while not on_owner.asked():
        assert time.monotonic() < deadline, "no scrape is waiting"
        time.sleep(0.001)


def test_a_busy_owner_leaves_the_scrape_the_last_answer() -> None:
    on_owner = OnOwnerThread(lambda: Assignment({("sequence-updates", 1): 7}), wait_s=0.05)
    assert on_owner() == Assignment(reading=False)  # the owner is not looping yet: nothing read
    waiting = threading.Thread(target=on_owner)
    on_owner.wait_s = 5.0
    waiting.start()
    asked(on_owner)
    on_owner.answer()
    waiting.join()
    on_owner.wait_s = 0.05
    assert on_owner() == Assignment({("sequence-updates", 1): 7})  # the owner is busy now: the last answer


def test_a_read_that_fails_on_the_owner_reads_as_no_partitions() -> None:
    def read() -> Assignment:
        raise RuntimeError("Consumer closed")

    on_owner = OnOwnerThread(read, wait_s=5.0)
    metrics = create_metrics()
    register_partition_gauges(metrics, ("sequence-updates",), on_owner)
    pages: list[str] = []
    scrape = threading.Thread(target=lambda: pages.append(generate_latest(metrics.registry).decode()))
    scrape.start()
    asked(on_owner)
    on_owner.answer()
    scrape.join()
    assert input_partitions(pages[0]) == {"sequence-updates": 0}
    assert "streamproc_consumer_lag{" not in pages[0]
