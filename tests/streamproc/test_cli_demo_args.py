"""The demo runs its own embedded broker: it refuses --bootstrap-servers instead of ignoring it. Label modes."""

from __future__ import annotations

import pytest

from streamproc import cli
from streamproc.config import Settings
from streamproc.demo import Summary


def test_demo_refuses_a_bootstrap_server_with_the_way_to_a_real_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--bootstrap-servers", "kafka:9092", "demo", "--limit", "5"]) == 2
    error = capsys.readouterr().err
    assert "embedded broker" in error and "streamproc worker" in error and "Running against a real Kafka" in error


def test_demo_and_replay_default_to_their_label_modes_and_the_summary_counts_labels_sent() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).labels == "topic"  # as a live system gets them
    assert parser.parse_args(["replay", "x.parquet"]).labels == "inline"  # the data set as recorded
    assert parser.parse_args(["replay", "x.parquet", "--labels", "topic", "--label-delay-hours", "2"]).label_delay_hours == 2
    summary = Summary()
    assert "fraud labels sent 3" in summary.render(10, Settings(), labels_sent=3)
    assert "fraud labels" not in summary.render(10, Settings())
