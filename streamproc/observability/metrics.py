"""Prometheus metrics of the pipeline, on an injected registry; base units, `_total` counters, no user ids."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# fine near 0 (most events) and near 1 (alerts), so that a shift in either tail shows
RISK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
# around the 7 days the terminal risk features assume (models.features.aggregates.LABEL_DELAY_DAYS)
LABEL_DELAY_BUCKETS_DAYS = (0.25, 0.5, 1, 2, 3, 5, 7, 10, 14, 21, 30, 38)
MODEL_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_in: Counter
    events_accepted: Counter
    duplicate_events: Counter
    dead_letters: Counter
    fraud_labels: Counter
    fraud_label_delay: Histogram
    sequence_updates: Counter
    table_keys: Gauge
    scores_published: Counter
    risk_score: Histogram
    fraud_alerts: Counter
    model_inputs_missing: Counter
    model_info: Gauge
    event_to_score: Histogram
    batch_size: Histogram
    model_batch: Histogram
    encoder_cache_hit_ratio: Gauge
    state_writes: Counter
    state_flush: Histogram
    worker_stalls: Counter
    commit_failures: Counter
    transaction_steps: Histogram


def create_metrics(registry: CollectorRegistry | None = None, with_process: bool = False) -> Metrics:
    """All streamproc metrics on `registry` (a fresh one by default, with process/python collectors if asked)."""
    registry = registry or CollectorRegistry(auto_describe=True)
    if with_process:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return Metrics(
        registry=registry,
        events_in=Counter(
            "streamproc_events_in", "Raw messages read from the input topics", ["topic"], registry=registry
        ),
        events_accepted=Counter(
            "streamproc_events_accepted",
            "Input events that passed validation, each once (a redelivered or re-sent event is scored again, not counted again)",
            ["topic"],
            registry=registry,
        ),
        duplicate_events=Counter(
            "streamproc_duplicate_events",
            "Input events whose event id their user's state had already applied under another offset (sent twice by a producer): not applied or scored again",
            ["topic"],
            registry=registry,
        ),
        dead_letters=Counter(
            "streamproc_dead_letters",
            "Input messages sent to the dead-letter topic",
            ["topic", "reason"],
            registry=registry,
        ),
        fraud_labels=Counter(
            "streamproc_fraud_labels",
            "Fraud labels applied to terminal states, by what they did (processing.LABEL_OUTCOMES)",
            ["outcome"],
            registry=registry,
        ),
        fraud_label_delay=Histogram(
            "streamproc_fraud_label_delay_days",
            "For each fraud label counted: its terminal's newest transaction minus the labelled one, in days of event time (the terminal risk features assume labels known within 7)",
            buckets=LABEL_DELAY_BUCKETS_DAYS,
            registry=registry,
        ),
        sequence_updates=Counter(
            "streamproc_sequence_updates", "Sequence updates emitted for scoring", registry=registry
        ),
        table_keys=Gauge(
            "streamproc_table_keys", "Keys held in each table on this worker", ["table"], registry=registry
        ),
        scores_published=Counter(
            "streamproc_scores_published",
            "Score messages acknowledged by the broker",
            ["topic"],
            registry=registry,
        ),
        risk_score=Histogram(
            "streamproc_risk_score",
            "Published risk scores, by the scored event's kind (click, transaction)",
            ["kind"],
            buckets=RISK_BUCKETS,
            registry=registry,
        ),
        fraud_alerts=Counter(
            "streamproc_fraud_alerts",
            "Fraud alerts published (risk at or above alert_threshold), acknowledged",
            registry=registry,
        ),
        model_inputs_missing=Counter(
            "streamproc_model_inputs_missing",
            "Scored events whose sequence update lacked an aggregate the model reads (read as 0): a Faust worker older than the checkpoint",
            registry=registry,
        ),
        model_info=Gauge(
            "streamproc_model_info",
            "1 for the checkpoint this scoring worker serves, and its device",
            ["model_version", "device"],
            registry=registry,
        ),
        event_to_score=Histogram(
            "streamproc_event_to_score_seconds",
            "From the input event's broker timestamp to its score's acknowledgement",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        batch_size=Histogram(
            "streamproc_batch_size", "Windows per scoring batch", buckets=BATCH_BUCKETS, registry=registry
        ),
        model_batch=Histogram(
            "streamproc_model_batch_seconds",
            "Model time per scoring batch",
            buckets=MODEL_BUCKETS_S,
            registry=registry,
        ),
        encoder_cache_hit_ratio=Gauge(
            "streamproc_encoder_cache_hit_ratio",
            "Share of event texts served from the encoder cache",
            registry=registry,
        ),
        state_writes=Counter(
            "streamproc_state_writes",
            "Table states written to RocksDB and the changelog (once per changed key per batch or per commit)",
            ["table"],
            registry=registry,
        ),
        state_flush=Histogram(
            "streamproc_state_flush_seconds",
            "Time to write the changed states and have every output acknowledged (per batch, or before each commit)",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        commit_failures=Counter(
            "streamproc_commit_failures",
            "Offset commits that failed (Kafka unreachable, the group's assignment lost): the records after the last committed offset are read again",
            ["reason"],
            registry=registry,
        ),
        transaction_steps=Histogram(
            "streamproc_transaction_step_seconds",
            "Exactly-once commits that completed, by step: states (changelog records into the transaction), offsets "
            "(send_offsets_to_transaction), commit (commit_transaction), apply (RocksDB writes after it); the "
            "Faust worker's agents wait through all four, the scoring worker has offsets and commit",
            ["step"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        worker_stalls=Counter(
            "streamproc_worker_stalls",
            "Times the Faust worker read nothing for stall_report_s while records waited in its input partitions",
            registry=registry,
        ),
    )


class StepTimes:
    """The steps of one exactly-once commit: `step(name)` ends the step named (timed since the previous one or
    since this object was made); `observe(metrics)` records them once the commit has completed, so that a
    failed commit (counted in streamproc_commit_failures_total) leaves no part of itself in the histogram."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._steps: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self._steps.append((name, now - self._last))
        self._last = now

    def observe(self, metrics: Metrics) -> None:
        for name, seconds in self._steps:
            metrics.transaction_steps.labels(name).observe(seconds)


def serve(metrics: Metrics, port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics for this process on `port` (0 disables it)."""
    if port:
        start_http_server(port, addr=addr, registry=metrics.registry)
