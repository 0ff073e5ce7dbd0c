"""The demo runs its own embedded broker: it refuses --bootstrap-servers instead of ignoring it."""

from __future__ import annotations

import pytest

from streamproc import cli


def test_demo_refuses_a_bootstrap_server_with_the_way_to_a_real_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--bootstrap-servers", "kafka:9092", "demo", "--limit", "5"]) == 2
    error = capsys.readouterr().err
    assert "embedded broker" in error and "streamproc worker" in error and "Running against a real Kafka" in error
