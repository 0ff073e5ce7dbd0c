"""The local Kafka's lifecycle: a failed start leaves no broker running, and a second start is refused."""

from __future__ import annotations

import socket

import pytest

from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import KafkaError, free_port

pytestmark = pytest.mark.integration


def occupied_port_pair() -> tuple[int, socket.socket]:
    """A free port P whose neighbour P + 1 is now held by a listening socket (closed by the caller)."""
    for _ in range(50):
        port = free_port()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            holder.bind(("127.0.0.1", port + 1))
        except OSError:
            holder.close()
            continue
        holder.listen()
        return port, holder
    raise RuntimeError("no free port pair found")


def test_a_failed_start_stops_the_nodes_that_did_start(tmp_path):
    port, holder = occupied_port_pair()  # node 2's client port (port + 1) is taken: node 2 cannot start
    kafka = LocalKafka(tmp_path / "kafka", nodes=2, port=port)
    try:
        with pytest.raises(KafkaError, match="node 2 exited"):
            kafka.start(timeout_s=90)
        # node 1 was stopped, not left running
        assert [node.process for node in kafka.members] == [None, None]
    finally:
        holder.close()
        kafka.stop()


def test_a_second_start_is_refused(tmp_path):
    with LocalKafka(tmp_path / "kafka") as kafka:
        with pytest.raises(KafkaError, match="already started"):
            kafka.start()
        assert kafka.members[0].alive()  # the running node is untouched
