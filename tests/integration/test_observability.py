"""A real Prometheus scrapes a running worker and scoring worker; every dashboard panel's query returns data."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from streamproc.feed.replay import replay
from tests.integration.helpers import make_settings
from tests.integration.pipeline_data import INVALID, synthetic_events
from tests.prometheus_server import dashboard_exprs, start_prometheus

pytestmark = pytest.mark.integration
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboard.json"


def test_prometheus_scrapes_both_processes_and_every_dashboard_panel_has_data(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    s = make_settings(broker, tmp_path, tiny_checkpoint, batch_max_size=32)
    worker, scorer = processes("worker", s), processes("score", s)
    prom = start_prometheus(
        tmp_path,
        {
            "streamproc-worker": [f"127.0.0.1:{s.worker_metrics_port}"],
            "streamproc-scorer": [f"127.0.0.1:{s.scorer_metrics_port}"],
        },
    )
    events = synthetic_events(4000, seed=11)
    # a steady stream, with invalid messages among the valid ones, while the queries run
    invalid = [("clicks" if kind == "clicks" else "transactions", raw) for kind, raw, _ in INVALID]
    mixed = [
        e for n, e in enumerate(events) for e in ([e] + ([invalid[n % len(invalid)]] if n % 40 == 0 else []))
    ]
    # the transactions' fraud labels arrive apart, an hour of event time after each (5 frauds, 2 in the first 30)
    feeder = threading.Thread(
        target=replay,
        args=(s, iter(mixed)),
        daemon=True,
        kwargs={"rate": 150, "progress": False, "labels": "topic", "label_delay_ms": 3_600_000},
    )
    feeder.start()
    try:
        prom.wait_for('up{job="streamproc-worker"} == 1', deadline_s=180)
        prom.wait_for('up{job="streamproc-scorer"} == 1', deadline_s=180)
        prom.wait_for("streamproc_scores_published_total", deadline_s=400)
        for title, expr in dashboard_exprs(DASHBOARD):
            result = prom.wait_for(expr, deadline_s=180)
            assert result, f"panel {title!r}: {expr} returned nothing"
        accepted = prom.query('sum(streamproc_events_accepted_total{job="streamproc-worker"})')
        assert float(accepted[0]["value"][1]) > 0
        dead = prom.query('sum by (reason) (streamproc_dead_letters_total{job="streamproc-worker"})')
        assert {r["metric"]["reason"] for r in dead} <= {reason for _, _, reason in INVALID}
        # each process reads every partition of its inputs and reports its lag on each one
        expected = {("streamproc-worker", topic): s.partitions for topic in s.worker_input_topics()}
        expected[("streamproc-scorer", s.sequence_updates_topic)] = s.partitions
        prom.wait_for(
            "streamproc_input_partitions",
            deadline_s=60,
            until=lambda result: (
                {(r["metric"]["job"], r["metric"]["topic"]): float(r["value"][1]) for r in result} == expected
            ),
        )
        worker_lag = prom.wait_for(
            f'streamproc_consumer_lag{{job="streamproc-worker",topic="{s.clicks_topic}"}}',
            deadline_s=60,
            until=lambda r: len(r) == s.partitions,
        )
        scorer_lag = prom.wait_for(
            f'streamproc_consumer_lag{{job="streamproc-scorer",topic="{s.sequence_updates_topic}"}}',
            deadline_s=60,
            until=lambda r: len(r) == s.partitions,
        )
        assert all(float(r["value"][1]) >= 0 for r in worker_lag + scorer_lag)
        # every acknowledged risk score is in the risk histogram, by the kind of event scored, in one scrape
        unequal = prom.query(
            f"sum(streamproc_risk_score_count) != sum(streamproc_scores_published_total"
            f'{{topic="{s.risk_scores_topic}"}})'
        )
        assert unequal == [], unequal
        kinds = prom.query("sum by (kind) (streamproc_risk_score_count)")
        assert {r["metric"]["kind"] for r in kinds} == {"click", "transaction"}
        # the pipeline's sequence updates carry every aggregate the checkpoint reads
        missing = prom.query('sum(streamproc_model_inputs_missing_total{job="streamproc-scorer"})')
        assert float(missing[0]["value"][1]) == 0
        served = prom.query("streamproc_model_info == 1")
        assert [(r["metric"]["job"], r["metric"]["device"]) for r in served] == [("streamproc-scorer", "cpu")]
        assert worker.alive() and scorer.alive()
        # an operator's SIGUSR2 logs the worker's consumer state (what the stall watch logs on a stall)
        os.kill(worker.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while "consumer state:" not in worker.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"no consumer state logged after SIGUSR2:\n{worker.log()}"
            time.sleep(0.2)  # polling the log file
        state_line = next(
            line
            for line in worker.log_path.read_text(errors="replace").splitlines()
            if "consumer state:" in line
        )
        assert f"'{s.clicks_topic}'" in state_line and "'flow_active': True" in state_line, state_line
        assert worker.alive()
        stalls = prom.query('sum(streamproc_worker_stalls_total{job="streamproc-worker"})')
        assert float(stalls[0]["value"][1]) == 0
    finally:
        prom.stop()
