"""One frozen Settings object, built from the environment (STREAMPROC_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a streamproc process needs to know; the only place that reads the environment."""

    model_config = SettingsConfigDict(env_prefix="STREAMPROC_", frozen=True, extra="forbid")

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    app_id: str = "streamproc"
    clicks_topic: str = "clicks"
    transactions_topic: str = "transactions"
    # verdicts on past transactions (chargebacks, confirmed or cleared cases) that feed the terminals' known frauds
    fraud_labels_topic: str = "fraud-labels"
    sequence_updates_topic: str = "sequence-updates"
    risk_scores_topic: str = "risk-scores"
    next_action_topic: str = "next-action-scores"
    fraud_alerts_topic: str = "fraud-alerts"
    dead_letter_topic: str = "streamproc.dead-letters"
    tx_by_terminal_topic: str = "streamproc.transactions-by-terminal"
    user_events_topic: str = "streamproc.user-events"  # validated events keyed by user_id (repartitioned)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    # how soon a client sees a topic created after it subscribed (librdkafka's default is 5 minutes)
    metadata_refresh_ms: int = Field(10_000, ge=1_000)
    rebalance_timeout_ms: int = 10_000
    # How every client connects (librdkafka's names; the Faust worker passes the same to aiokafka): TLS
    # verifies the brokers against ssl_ca_location (default: the system's CAs) and, with a certificate
    # and key, authenticates the client (mutual TLS); SASL authenticates with a username and password.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # every command first checks that Kafka answers: it stops at once on a refused login or TLS
    # handshake, and after this long when nothing answers
    kafka_check_timeout_s: float = Field(60.0, gt=0)

    # Faust worker
    data_dir: Path = Path("var/streamproc")
    # input messages over this size are dead-lettered (too_large) with their size, SHA-256 and first bytes
    max_input_bytes: int = Field(65_536, ge=1_024)
    # an event more than this ahead of its input partition's event-time clock (its newest accepted event, never
    # behind the wall clock) is dead-lettered (future_timestamp), never applied to state; 0 turns the guard off
    max_event_ahead_ms: int = Field(86_400_000, ge=0)
    window_max_events: int = Field(50, ge=1)
    window_max_age_ms: int = Field(30 * 86_400_000, ge=1)
    # When changed table states are written to RocksDB and the changelog: "commit" once per key per
    # commit (every commit_interval_ms), before the offsets are committed (write-behind: fewer writes,
    # faster); "batch" after every batch of events, before the batch is acknowledged.
    state_flush: Literal["batch", "commit"] = "commit"
    # how often the Faust worker commits; unset: worker_commit_interval_ms()
    commit_interval_ms: int | None = Field(None, ge=10)
    # per table: changed states held in memory before an early write, and unchanged ones kept for re-use
    state_cache_keys: int = Field(20_000, ge=1)
    # RocksDB memory per table partition: two memtables of this size (Faust's default: three of 64 MiB, which
    # a worker's RSS grew into by 80 MiB a minute in a soak) and a block cache of this size (Faust's: 2 GiB)
    rocksdb_write_buffer_mib: int = Field(16, ge=1)
    rocksdb_block_cache_mib: int = Field(32, ge=1)
    # The longest a Faust fetch waits for records (Faust's own default: 1,500 ms). Kafka answers as soon as
    # records arrive for a partition in the request, but aiokafka leaves out of its one fetch per broker the
    # partitions whose records the worker has not taken yet; once the worker lags a little, each fetch asks
    # only for quiet partitions and is held for the whole wait, which became 1.5 s per stage in a soak.
    faust_fetch_wait_ms: int = Field(100, ge=1)
    # the least data a fetch waits for (up to its fetch wait) on the worker's and the scorer's consumers:
    # above 1 byte a trickle of records no longer turns every fetch around at once (fewer fetches: less CPU)
    fetch_min_bytes: int = Field(1, ge=1)
    # log the consumer's state (and count a stall) when no input position moves for this long with records waiting
    stall_report_s: float = Field(60.0, gt=0)
    worker_metrics_port: int = 9101
    worker_web_port: int = 6066

    # Scoring worker
    checkpoint: Path = Path("checkpoints/demo")
    device: str | None = None
    batch_max_size: int = Field(256, ge=1)
    batch_max_wait_ms: int = Field(20, ge=0)
    alert_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # fraud alerts carry why: the trees' top feature contributions and the past events that moved the temporal
    # head's score most; about 17 ms of CPU each (bench/scorer_bench.py), so at most this many per batch, the
    # riskiest first (a flood of alerts must not stall scoring); 0: none
    alert_explanations_per_batch: int = Field(16, ge=0)
    top_k: int = Field(10, ge=1)
    scorer_group: str = "streamproc-scorer"
    # exactly_once: each worker's outputs, dead letters, state changelogs and input offsets commit together in
    # Kafka transactions (readers with isolation.level=read_committed see every output once, even across
    # crashes); at_least_once: outputs are acknowledged before their inputs are committed (a crash may re-send
    # some; states never count an event twice), for brokers without transactions (docs/guarantees.md)
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    # the Faust worker's transactional.id (exactly_once), as scorer_transactional_id for the scoring worker;
    # unset, each process takes "<app_id>-worker-<host>-<random>"
    worker_transactional_id: str | None = None
    # the scoring worker's transactional.id (exactly_once): give each instance a stable one (a StatefulSet pod's
    # name) and a restarted instance aborts its predecessor's open transaction at once; unset, each process takes
    # "<scorer_group>-<host>-<random>" and a crashed one's open transaction holds readers back until it times out
    scorer_transactional_id: str | None = None
    # how long a transaction may stay open before the broker aborts it (exactly_once); also the longest a
    # crashed worker's open transaction holds read_committed readers back
    transaction_timeout_ms: int = Field(10_000, ge=1_000)
    # exactly_once: the scoring worker commits its open transaction this often (and when it runs out of input):
    # fewer, larger transactions cost less throughput, and add up to this much to when scores become visible
    scorer_commit_interval_ms: int = Field(100, ge=0)
    scorer_metrics_port: int = 9102
    # librdkafka compression of what the agents write (sequence updates, changelogs, re-keyed events);
    # Faust (aiokafka) reads lz4, zstd and snappy back through cramjam
    output_compression: Literal["none", "lz4", "zstd", "gzip", "snappy"] = "lz4"
    torch_threads: int = Field(
        1, ge=1
    )  # CPU threads for the model; 1 keeps small batches fast beside the worker
    # librdkafka linger of the worker's output producers and the scoring worker's producer: the longest a
    # record waits for others to share its produce request (fewer requests: less broker CPU, more latency)
    producer_linger_ms: int = Field(2, ge=0)
    # the scoring worker's fetch.wait.max.ms (Kafka answers as soon as records arrive: this paces idle fetches)
    scorer_fetch_wait_ms: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (mutual TLS)")
        if self.ssl_certificate_location and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"a client certificate needs TLS: security_protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )
        if self.state_flush == "batch" and self.processing_guarantee == "exactly_once":
            raise ValueError(
                'state_flush "batch" goes with processing_guarantee at_least_once: under exactly_once the '
                "states are written in each commit's transaction"
            )
        return self

    def worker_commit_interval_ms(self) -> int:
        """The Faust worker's commit interval: `commit_interval_ms` when set, else 100 ms under exactly_once
        (a stage's outputs reach the next stage's read_committed consumer only at a commit, and a transaction
        crosses three stages; Kafka Streams' default under exactly-once too) and 1 s under at_least_once."""
        if self.commit_interval_ms is not None:
            return self.commit_interval_ms
        return 100 if self.processing_guarantee == "exactly_once" else 1_000

    def kafka_security(self) -> dict[str, Any]:
        """librdkafka's connection security options (none for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security.protocol": self.security_protocol}
        for name, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if value is not None and self.security_protocol.endswith("SSL"):
                options[name] = str(value)
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # _check_security
            options |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password.get_secret_value(),
            }
        return options

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka options shared by every confluent-kafka client, in their dotted names."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.app_id,
            "topic.metadata.refresh.interval.ms": self.metadata_refresh_ms,
            **self.kafka_security(),
        }

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced (None values are ignored), validated again."""
        values = self.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)

    def namespaced(self, prefix: str, **overrides: Any) -> Settings:
        """A copy whose topics, app id and scorer group start with `prefix`, so that several pipelines
        (tests, benchmarks, tenants) share one Kafka cluster without seeing each other's messages."""
        names = {
            field: f"{prefix}-{getattr(self, field)}"
            for field in (*self._TOPIC_FIELDS, "app_id", "scorer_group")
        }
        return self.with_overrides(**names, **overrides)

    _TOPIC_FIELDS = (
        "clicks_topic",
        "transactions_topic",
        "fraud_labels_topic",
        "sequence_updates_topic",
        "risk_scores_topic",
        "next_action_topic",
        "fraud_alerts_topic",
        "dead_letter_topic",
        "tx_by_terminal_topic",
        "user_events_topic",
    )

    def input_topics(self) -> tuple[str, ...]:
        """The topics producers write: events that are scored, and fraud labels that are not."""
        return (self.clicks_topic, self.transactions_topic, self.fraud_labels_topic)

    def worker_input_topics(self) -> tuple[str, ...]:
        """What the Faust worker consumes: the input topics and its two internal re-keyed topics."""
        return (*self.input_topics(), self.tx_by_terminal_topic, self.user_events_topic)

    def all_topics(self) -> tuple[str, ...]:
        """Every topic the pipeline reads or writes, created up front with `partitions` partitions."""
        return (
            self.clicks_topic,
            self.transactions_topic,
            self.fraud_labels_topic,
            self.tx_by_terminal_topic,
            self.user_events_topic,
            self.sequence_updates_topic,
            self.risk_scores_topic,
            self.next_action_topic,
            self.fraud_alerts_topic,
            self.dead_letter_topic,
        )
