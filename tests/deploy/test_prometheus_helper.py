"""tests/prometheus_server.py against a real Prometheus scraping an in-test prometheus_client exporter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.prometheus_server import (
    PrometheusQueryError,
    PrometheusServer,
    dashboard_exprs,
    find_binary,
    start_prometheus,
)

JOB = "helper-test"
DEADLINE_S = 20.0


@dataclass
class Exporter:
    address: str
    events: Counter


def value_of(result: list[Any]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    events = Counter("streamproc_helper_events", "Events counted by the helper test.", registry=registry)
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(f"127.0.0.1:{httpd.server_port}", events)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    find_binary("prometheus")
    server = start_prometheus(tmp_path_factory.mktemp("prom"), {JOB: [exporter.address]})
    try:
        yield server
    finally:
        server.stop()


def test_scraped_value_equals_counter_value(prometheus: PrometheusServer, exporter: Exporter) -> None:
    exporter.events.inc(7)
    series = "streamproc_helper_events_total"

    result = prometheus.wait_for(series, DEADLINE_S, until=lambda r: bool(r) and value_of(r) >= 7)
    assert value_of(result) == 7.0
    assert result[0]["metric"] == {"__name__": series, "job": JOB, "instance": exporter.address}

    exporter.events.inc(3)
    result = prometheus.wait_for(series, DEADLINE_S, until=lambda r: value_of(r) != 7.0)
    assert value_of(result) == 10.0
    assert value_of(prometheus.query(f'up{{job="{JOB}"}}')) == 1.0


def test_wait_for_times_out_on_missing_series(prometheus: PrometheusServer) -> None:
    with pytest.raises(TimeoutError, match="streamproc_no_such_metric"):
        prometheus.wait_for("streamproc_no_such_metric", deadline_s=0.3)


def test_query_reports_promql_errors(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusQueryError, match="HTTP 400"):
        prometheus.query("sum(rate(streamproc_helper_events_total[1m])")


def test_query_returns_scalars_as_one_element_list(prometheus: PrometheusServer) -> None:
    result = prometheus.query("scalar(vector(2.5))")
    assert len(result) == 1 and float(result[0][1]) == 2.5


def test_stop_ends_the_process(exporter: Exporter, tmp_path: Path) -> None:
    find_binary("prometheus")
    server = start_prometheus(tmp_path, {JOB: [exporter.address]})
    server.stop()
    assert server.process.poll() is not None
    server.stop()  # idempotent


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_binary_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="streamproc-no-such-binary not found"):
        find_binary("streamproc-no-such-binary")


def write_dashboard(path: Path, panels: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"uid": "t", "panels": panels}))
    return path


def test_dashboard_exprs_replaces_grafana_intervals(tmp_path: Path) -> None:
    dashboard = write_dashboard(
        tmp_path / "d.json",
        [
            {"title": "rate", "targets": [{"expr": "rate(a_total[$__rate_interval])"}]},
            {
                "type": "row",
                "title": "collapsed",
                "panels": [
                    {
                        "title": "nested",
                        "targets": [
                            {"expr": "increase(b_total[${__range}]) / ${__interval:raw}"},
                            {"refId": "B", "datasource": {"uid": "x"}},  # no expr: ignored
                        ],
                    }
                ],
            },
            {"title": "relabel", "targets": [{"expr": 'label_replace(up, "x", "$1", "job", "(.*)")'}]},
        ],
    )

    assert dashboard_exprs(dashboard, rate_interval="45s") == [
        ("rate", "rate(a_total[45s])"),
        ("nested", "increase(b_total[45s]) / 45s"),
        ("relabel", 'label_replace(up, "x", "$1", "job", "(.*)")'),
    ]


def test_dashboard_exprs_rejects_unknown_variables(tmp_path: Path) -> None:
    dashboard = write_dashboard(
        tmp_path / "d.json", [{"title": "p", "targets": [{"expr": 'up{job="$job"}'}]}]
    )
    with pytest.raises(ValueError, match=r"\$job"):
        dashboard_exprs(dashboard)
