"""Every client starts from its role's defaults: producers idempotent, acks=all, murmur2-keyed."""

from __future__ import annotations

from streamproc.config import Settings
from streamproc.kafka.clients import consumer_config, producer_config


def test_a_producer_is_idempotent_acknowledged_by_all_replicas_and_keyed_as_faust_keys() -> None:
    settings = Settings(bootstrap_servers="k1:9092", app_id="app", producer_linger_ms=7)
    config = producer_config(settings, "labels")
    assert config["partitioner"] == "murmur2_random"
    assert (config["enable.idempotence"], config["acks"], config["linger.ms"]) == (True, "all", 7)
    assert (config["bootstrap.servers"], config["client.id"]) == ("k1:9092", "app-labels")


def test_a_role_states_only_what_it_does_differently() -> None:
    settings = Settings()
    config = producer_config(settings, "replay", {"linger.ms": 5})
    assert config["linger.ms"] == 5 and config["partitioner"] == "murmur2_random"


def test_a_consumer_commits_only_when_told_and_uses_the_configured_group_timeouts() -> None:
    settings = Settings(session_timeout_ms=12_000, heartbeat_interval_ms=3_000)
    config = consumer_config(settings, "readers", {"auto.offset.reset": "earliest"})
    assert config["group.id"] == "readers" and config["enable.auto.commit"] is False
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (12_000, 3_000)
    assert config["auto.offset.reset"] == "earliest"
    assert config["isolation.level"] == "read_committed"  # an aborted transaction's records stay unseen
