"""deploy/: promtool on the Prometheus config and alert rules, and the Grafana dashboard against the metrics
(the compose stack: test_compose.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamproc.observability.metrics import create_metrics
from tests.deploy.deploy_files import (
    ALERTS_DAILY_TEST_YML,
    ALERTS_TEST_YML,
    ALERTS_YML,
    DASHBOARD_JSON,
    DEPLOY,
    PROMETHEUS_YML,
    load_yaml,
)
from tests.prometheus_server import PrometheusServer, dashboard_exprs, find_binary, start_prometheus

WORKER_JOB, SCORER_JOB = "streamproc-worker", "streamproc-scorer"

# The metrics the processes expose (streamproc/observability/metrics.py): kind, name as exposed, label names.
CATALOG: list[tuple[str, str, tuple[str, ...]]] = [
    ("counter", "streamproc_events_in_total", ("topic",)),
    ("counter", "streamproc_events_accepted_total", ("topic",)),
    ("counter", "streamproc_duplicate_events_total", ("topic",)),
    ("counter", "streamproc_dead_letters_total", ("topic", "reason")),
    ("counter", "streamproc_fraud_labels_total", ("outcome",)),
    ("histogram", "streamproc_fraud_label_delay_days", ()),
    ("counter", "streamproc_sequence_updates_total", ()),
    ("gauge", "streamproc_table_keys", ("table",)),
    ("counter", "streamproc_scores_published_total", ("topic",)),
    ("histogram", "streamproc_risk_score", ("kind",)),
    ("counter", "streamproc_fraud_alerts_total", ()),
    ("counter", "streamproc_model_inputs_missing_total", ()),
    ("gauge", "streamproc_model_info", ("model_version", "device")),
    ("histogram", "streamproc_event_to_score_seconds", ()),
    ("histogram", "streamproc_batch_size", ()),
    ("histogram", "streamproc_model_batch_seconds", ()),
    ("gauge", "streamproc_consumer_lag", ("topic", "partition")),
    ("gauge", "streamproc_input_partitions", ("topic",)),
    ("gauge", "streamproc_encoder_cache_hit_ratio", ()),
    ("counter", "streamproc_state_writes_total", ("table",)),
    ("histogram", "streamproc_state_flush_seconds", ()),
    ("counter", "streamproc_worker_stalls_total", ()),
    ("counter", "streamproc_commit_failures_total", ("reason",)),
    ("histogram", "streamproc_transaction_step_seconds", ("step",)),
]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KNOWN_METRICS = {name for _, name, _ in CATALOG} | {
    name + suffix for kind, name, _ in CATALOG if kind == "histogram" for suffix in HISTOGRAM_SUFFIXES
}
STANDARD_METRIC = re.compile(r"^(up|scrape_[a-z_]+|process_[a-z_]+|python_[a-z_]+)$")

ALERTS = {
    "StreamprocConsumerLagGrowing",
    "StreamprocDeadLetterRateHigh",
    "StreamprocScorerDeadLetters",
    "StreamprocFraudLabelsUnmatched",
    "StreamprocFraudAlertShareShifted",
    "StreamprocFraudLabelsLate",
    "StreamprocModelInputsMissing",
    "StreamprocScoreLatencyHigh",
    "StreamprocWorkerDown",
    "StreamprocScorerDown",
    "StreamprocNoScoresPublished",
    "StreamprocWorkerStalled",
    "StreamprocCommitsFailing",
}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"] if "alert" in rule]


def panels() -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD_JSON.read_text())["panels"]:
        flat += [panel, *panel.get("panels", [])]
    return [panel for panel in flat if panel.get("type") != "row"]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
_PROMQL_WORDS |= {"offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions, keywords or labels)."""
    stripped = _STRING.sub('""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges and subqueries
    stripped = _GROUPING.sub("", stripped)  # label lists of by/without/on/ignoring/group_*
    return {name for name in _IDENTIFIER.findall(stripped) if name.lower() not in _PROMQL_WORDS}


def unknown_metrics(exprs: list[str]) -> set[str]:
    used = set().union(*(metric_names(expr) for expr in exprs))
    return {name for name in used if name not in KNOWN_METRICS and not STANDARD_METRIC.match(name)}


def run_promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [find_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# --- the metric-name extractor itself ------------------------------------------------------------


def test_metric_names_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x", le!="1e3"}[5m:30s])))'
        " > 0.5 and on (job) b_total offset 5m unless ignoring(instance) up == 0"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}
    assert unknown_metrics(["rate(streamproc_events_in_totl[1m])"]) == {"streamproc_events_in_totl"}


# --- Prometheus config and rules (promtool) ------------------------------------------------------


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # promtool resolves rule_files next to the config; check a copy laid out as compose mounts it.
    shutil.copy(PROMETHEUS_YML, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS_YML, tmp_path / "alerts.yml")
    output = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "1 rule files found" in output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_pass_promtool() -> None:
    output = run_promtool("check", "rules", str(ALERTS_YML))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_alert_unit_tests_pass_promtool() -> None:
    output = run_promtool("test", "rules", ALERTS_TEST_YML.name, ALERTS_DAILY_TEST_YML.name, cwd=DEPLOY)
    assert output.count("SUCCESS") == 2


def test_alert_unit_tests_fail_on_a_broken_rule(tmp_path: Path) -> None:
    # The unit tests must be able to fail: raise the dead-letter threshold above the test's 10%.
    broken = ALERTS_YML.read_text().replace("> 0.05", "> 0.2")
    assert broken != ALERTS_YML.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(ALERTS_TEST_YML, tmp_path / "alerts_test.yml")
    result = subprocess.run(
        [find_binary("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "StreamprocDeadLetterRateHigh" in result.stdout + result.stderr


def test_scrape_config_targets_both_jobs_every_5s() -> None:
    config = load_yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs[WORKER_JOB]["dns_sd_configs"][0]
    assert (worker_sd["names"], worker_sd["port"]) == (["worker"], 9101)
    assert jobs[SCORER_JOB]["static_configs"][0]["targets"] == ["scorer:9102"]


def test_every_alert_has_severity_annotations_and_unit_tests() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    tests = load_yaml(ALERTS_TEST_YML)["tests"] + load_yaml(ALERTS_DAILY_TEST_YML)["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, name
        own = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in own), f"{name}: no firing case"
        assert any(not case.get("exp_alerts") for case in own), f"{name}: no silent case"


def test_alerts_use_only_exposed_metrics() -> None:
    assert unknown_metrics([rule["expr"] for rule in alert_rules()]) == set()


# --- Grafana dashboard -----------------------------------------------------------------------------


def test_dashboard_identity_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    assert dashboard["uid"] == "streamproc"
    assert 36 <= dashboard["schemaVersion"] <= 41
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))


def test_every_panel_queries_prometheus() -> None:
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("expr"), f"{panel['title']}: target without expr"
            assert target["datasource"]["type"] == "prometheus", panel["title"]


def test_the_catalog_lists_every_metric_the_processes_define() -> None:
    exposed = set()
    for family in create_metrics().registry.collect():
        exposed.add(family.name + "_total" if family.type == "counter" else family.name)
    assert exposed <= {name for _, name, _ in CATALOG}, exposed - {name for _, name, _ in CATALOG}


def test_dashboard_covers_every_metric_and_uses_no_other() -> None:
    exprs = [expr for _, expr in dashboard_exprs(DASHBOARD_JSON)]
    assert unknown_metrics(exprs) == set()
    used = set().union(*(metric_names(expr) for expr in exprs))
    for kind, name, _ in CATALOG:
        shown = {name + suffix for suffix in HISTOGRAM_SUFFIXES} if kind == "histogram" else {name}
        assert used & shown, f"{name} is on no panel"
    assert "up" in used


def test_dashboard_exprs_pass_promtool(tmp_path: Path) -> None:
    # promtool parses recording rules; every dashboard query becomes one.
    exprs = dashboard_exprs(DASHBOARD_JSON)
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", str(rules_file))
    assert f"SUCCESS: {len(rules)} rules found" in output


# --- dashboard and alert queries against a real Prometheus scraping the metric catalog -------------


@pytest.fixture(scope="module")
def catalog_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping an exporter with every catalog metric, once as each job."""
    registry = CollectorRegistry()
    label_values = {
        "topic": "clicks",
        "reason": "invalid_json",
        "table": "user_windows",
        "partition": "0",
        "outcome": "counted",
        "kind": "transaction",
        "model_version": "demo-0123abcd",
        "device": "cpu",
        "step": "commit",
    }
    for kind, name, labels in CATALOG:
        base = name.removesuffix("_total")
        if kind == "counter":
            metric: Any = Counter(base, base, labels, registry=registry)
        elif kind == "gauge":
            metric = Gauge(base, base, labels, registry=registry)
        else:
            metric = Histogram(base, base, labels, registry=registry)
        child = metric.labels(*(label_values[label] for label in labels)) if labels else metric
        if kind == "counter":
            child.inc(3)
        elif kind == "gauge":
            child.set(0.75)
        else:
            child.observe(0.2)
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    address = f"127.0.0.1:{httpd.server_port}"
    server = start_prometheus(
        tmp_path_factory.mktemp("catalog"), {WORKER_JOB: [address], SCORER_JOB: [address]}
    )
    try:
        # Two scrapes of each job, so that rate() over the dashboard's 30s range has samples.
        server.wait_for("count_over_time(up[1m]) >= 2", 30, until=lambda r: len(r) == 2)
        yield server
    finally:
        server.stop()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, runnable expr, legend format) in dashboard order."""
    targets = [
        (panel["title"], target) for panel in panels() for target in panel["targets"] if target.get("expr")
    ]
    exprs = dashboard_exprs(DASHBOARD_JSON)
    assert [title for title, _ in targets] == [title for title, _ in exprs]
    return [
        (title, expr, target.get("legendFormat", ""))
        for (title, target), (_, expr) in zip(targets, exprs, strict=True)
    ]


@pytest.mark.parametrize(
    ("title", "expr", "legend"),
    [pytest.param(*query, id=f"{query[0]}: {query[2]}") for query in dashboard_queries()],
)
def test_dashboard_query_returns_series(
    catalog_prometheus: PrometheusServer, title: str, expr: str, legend: str
) -> None:
    result = catalog_prometheus.query(expr)
    assert result, f"{title}: {expr} returned nothing"
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for series in result:  # a legend label missing from the result would render empty
        assert legend_labels <= set(series["metric"]), f"{title}: {series['metric']} lacks {legend_labels}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expr_evaluates(catalog_prometheus: PrometheusServer, rule: dict[str, Any]) -> None:
    # A steady, healthy catalog: no alert condition holds (and every query is valid PromQL).
    assert catalog_prometheus.query(rule["expr"]) == [], rule["alert"]
