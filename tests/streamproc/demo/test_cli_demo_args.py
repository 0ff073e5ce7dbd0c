"""The demo's choice of broker, its count of this run's outputs, and label modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc import cli
from streamproc.config import Settings
from streamproc.demo import run as demo_run
from streamproc.demo import summary as demo_summary
from streamproc.demo.run import state_dir_for
from streamproc.demo.summary import Summary, duration, predictions_shown
from streamproc.kafka import reachability


@pytest.mark.parametrize(
    ("argv", "env", "external"),
    [
        (["demo"], {}, False),
        (["--bootstrap-servers", "kafka:9092", "demo"], {}, True),
        (["demo"], {"STREAMPROC_BOOTSTRAP_SERVERS": "kafka:9092"}, True),
    ],
)
def test_the_demo_runs_on_the_kafka_named_by_flag_or_environment_else_on_a_local_kafka(
    argv: list[str], env: dict[str, str], external: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMPROC_BOOTSTRAP_SERVERS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(demo_run, "run_demo", lambda settings, **kw: calls.append((settings, kw)) or 0)
    checked = []  # a named Kafka is checked first (streamproc.kafka.reachability); the local Kafka is not there yet
    monkeypatch.setattr(reachability, "check_kafka", lambda options, timeout_s: checked.append(options) or 1)
    assert cli.main([*argv, "--limit", "5"]) == 0
    assert [o["bootstrap.servers"] for o in checked] == (["kafka:9092"] if external else [])
    ((settings, kw),) = calls
    assert (
        kw["external"] is external and kw["limit"] == 5 and kw["namespace"] == "demo" and kw["brokers"] == 1
    )
    assert settings.bootstrap_servers == ("kafka:9092" if external else Settings().bootstrap_servers)


def test_the_summary_counts_only_outputs_of_input_from_its_start_offsets() -> None:
    settings = Settings()
    summary = Summary(since={("clicks", 0): 100, ("transactions", 1): 5})

    def score(event_id: str, topic: str, partition: int, offset: int) -> dict:
        return {
            "event_id": event_id,
            "scored_ts_ms": 10,
            "lineage": {"topic": topic, "partition": partition, "offset": offset, "ingest_ts_ms": 1},
        }

    for value in (
        score("old", "clicks", 0, 99),
        score("new", "clicks", 0, 100),
        score("other", "clicks", 2, 0),
        score("old-tx", "transactions", 1, 4),
    ):
        summary.add(settings.risk_scores_topic, value, settings)
    summary.add(
        settings.dead_letter_topic, {"source_topic": "transactions", "partition": 1, "offset": 3}, settings
    )
    summary.add(
        settings.dead_letter_topic, {"source_topic": "transactions", "partition": 1, "offset": 7}, settings
    )
    assert summary.scored == {"new", "other"} and summary.dead_lettered == {("transactions", 1, 7)}
    assert summary.counts == {settings.risk_scores_topic: 2, settings.dead_letter_topic: 1}
    assert summary.done() == 1  # "new" and "other" wait for their next-action scores
    summary.add(settings.next_action_topic, score("new", "clicks", 0, 100) | {"next_action": {}}, settings)
    summary.add(settings.next_action_topic, score("other", "clicks", 2, 0) | {"next_action": {}}, settings)
    assert summary.done() == 3


def test_each_kafka_cluster_gets_its_own_worker_state_directory() -> None:
    assert state_dir_for(Path("var"), "127.0.0.1:9092") == Path("var/faust-127.0.0.1_9092")
    assert state_dir_for(Path("var"), "k1:9092,k2:9092") != state_dir_for(Path("var"), "k1:9092")


def test_demo_and_replay_default_to_their_label_modes_and_the_summary_counts_labels_sent() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).labels == "topic"  # as a live system gets them
    assert parser.parse_args(["replay", "x.parquet"]).labels == "inline"  # the data set as recorded
    assert (
        parser.parse_args(
            ["replay", "x.parquet", "--labels", "topic", "--label-delay-hours", "2"]
        ).label_delay_hours
        == 2
    )
    summary = Summary()
    assert "fraud labels sent 3" in summary.render(10, Settings(), labels_sent=3)
    assert "fraud labels" not in summary.render(10, Settings())


def test_the_summary_rate_is_the_rate_since_its_previous_line(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([102.0, 104.0, 104.1])
    monkeypatch.setattr(demo_summary.time, "monotonic", lambda: next(clock))
    summary = Summary(first_score_at=100.0)
    summary.scored.update(f"e{i}" for i in range(300))
    assert summary.recent_rate() == 150.0  # 300 scores in the 2 s since the first
    summary.scored.update(f"f{i}" for i in range(100))
    assert summary.recent_rate() == 50.0  # 100 more in the next 2 s, not 400 / 4 s
    assert summary.recent_rate() == 0.0  # too short an interval to say


def test_the_demo_starts_three_brokers_only_locally() -> None:
    assert cli.build_parser().parse_args(["demo", "--brokers", "3", "--workers", "2", "--chaos"]).brokers == 3
    with pytest.raises(SystemExit) as refused:  # before any connection to that Kafka is tried
        cli.main(["--bootstrap-servers", "kafka:9092", "demo", "--brokers", "3"])
    assert refused.value.code == 2


def test_the_summary_shows_only_what_the_model_was_trained_to_predict() -> None:
    shop = {
        "top_items": [{"item_id": f"i{k}", "score": 1.0} for k in range(7)],
        "next_action": {"view": 0.2, "purchase": 0.7, "transaction": 0.1},
        "time_to_next_s": 5400.0,
    }
    assert predictions_shown(shop) == [
        "next items i0, i1, i2, i3, i4",
        "likely next action purchase",
        "next event in 1.5 h (median)",
    ]
    payments = {"top_items": [], "next_action": {"transaction": 1.0}, "time_to_next_s": 200_000.0}
    assert predictions_shown(payments) == ["next event in 2.3 days (median)"]
    assert [duration(s) for s in (30, 600, 7200, 86_400 * 3)] == ["30 s", "10 min", "2.0 h", "3.0 days"]


def test_the_demo_serves_a_checkpoint_trained_on_the_data_it_replays(tmp_path: Path) -> None:
    from models.data.datasets import DATASETS

    default = Path("checkpoints/demo")
    parquet = tmp_path / "transactions_2018.parquet"
    assert demo_run.checkpoint_for(default, False, None, "auto")[:2] == (default, ["--preset", "demo"])
    path, train_args, why = demo_run.checkpoint_for(default, False, parquet, "auto")
    assert path == Path("checkpoints/fraud-handbook-transactions_2018")
    assert train_args == ["--dataset", "fraud-handbook", "--data", str(parquet)]
    assert str(path) in why and "--checkpoint" in why
    assert demo_run.checkpoint_for(Path("mine"), True, parquet, "auto")[0] == Path("mine")  # chosen: served
    path, _, why = demo_run.checkpoint_for(default, False, tmp_path / "events.jsonl", "auto")
    assert path == default and "no data set" in why
    assert set(demo_run.TRAINABLE_DATA_SETS.values()) <= set(DATASETS)
