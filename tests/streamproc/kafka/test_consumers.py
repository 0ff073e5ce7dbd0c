"""The output-topic consumers' pure parts: which partition holds a user's scores."""

from __future__ import annotations

import pytest

from streamproc.kafka.consumers import partition_of


@pytest.mark.parametrize(
    ("key", "java_murmur2"),  # org.apache.kafka.common.utils.Utils.murmur2 test vectors
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"abc", 479470107),
    ],
)
def test_partition_of_is_kafkas_default_partitioner(key, java_murmur2):
    for partitions in (1, 4, 8, 12):
        assert partition_of(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions
