"""The local Kafka's process helpers: a listener's port is taken outside the kernel's ephemeral range."""

from __future__ import annotations

from streamproc.kafka.runtime import ephemeral_port_floor, free_port


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < ephemeral_port_floor() for port in ports)
