"""deploy/: the docker-compose stack and the Dockerfile agree with the settings, the topics and the scrape config."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamproc.config import Settings
from tests.deploy.deploy_files import COMPOSE_YML, DEPLOY, DOCKERFILE, PROVISIONING, load_yaml

STREAMPROC_ENV = {
    "STREAMPROC_BOOTSTRAP_SERVERS",
    "STREAMPROC_DATA_DIR",
    "STREAMPROC_PARTITIONS",
    "STREAMPROC_CHECKPOINT",
    "STREAMPROC_WORKER_METRICS_PORT",
    "STREAMPROC_SCORER_METRICS_PORT",
    "STREAMPROC_ALERT_THRESHOLD",
}
# Variables read by the third-party images, by service.
IMAGE_ENV = {"kafka": re.compile(r"^(KAFKA_\w+|CLUSTER_ID)$"), "grafana": re.compile(r"^GF_\w+$")}
# every topic but the worker's two internal re-keyed ones (it creates those at start)
TOPICS = [
    t
    for t in Settings().all_topics()
    if t not in (Settings().tx_by_terminal_topic, Settings().user_events_topic)
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_YML)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "kafka-init", "worker", "scorer", "prometheus", "grafana"} <= set(services)
    kafka = environment(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert "kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    init_script = " ".join(services["kafka-init"]["command"])
    for topic in TOPICS:
        assert re.search(rf"(?<![\w.-]){re.escape(topic)}(?![\w.-])", init_script), topic
    assert "--partitions 8" in init_script
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_workers_and_gpu_scorer(compose: dict[str, Any]) -> None:
    worker, scorer = compose["services"]["worker"], compose["services"]["scorer"]
    assert worker["command"] == ["streamproc", "worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert environment(worker)["STREAMPROC_BOOTSTRAP_SERVERS"] == "kafka:9092"
    data_dir = environment(worker)["STREAMPROC_DATA_DIR"]
    assert data_dir in worker["volumes"]  # per-replica volume on the RocksDB directory

    assert scorer["command"] == ["streamproc", "score"]
    devices = scorer["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert environment(scorer)["STREAMPROC_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert environment(scorer)["STREAMPROC_CHECKPOINT"]
    for service in (worker, scorer):
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_compose_topics_and_workers_agree_on_partitions(compose: dict[str, Any]) -> None:
    # Faust's tables need their changelogs co-partitioned with the input topics; the worker checks
    # this at start (streamproc.kafka.admin.check_partitions) and refuses to run otherwise.
    init = "\n".join(compose["services"]["kafka-init"]["command"])
    created = set(re.findall(r"--partitions (\d+)", init))
    assert len(created) == 1
    for name in ("worker", "scorer"):
        assert {environment(compose["services"][name])["STREAMPROC_PARTITIONS"]} == created, name


def test_compose_metrics_ports_match_the_scrape_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert environment(services["worker"])["STREAMPROC_WORKER_METRICS_PORT"] == "9101"
    assert environment(services["scorer"])["STREAMPROC_SCORER_METRICS_PORT"] == "9102"
    assert "9101" in [str(port) for port in services["worker"]["expose"]]
    assert "9102" in [str(port) for port in services["scorer"]["expose"]]


def test_compose_env_vars_are_known(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for var in environment(service):
            if var.startswith("STREAMPROC_"):
                assert var in STREAMPROC_ENV, f"{name}: unknown setting {var}"
            else:
                allowed = IMAGE_ENV.get(name)
                assert allowed and allowed.match(var), f"{name}: {var} is neither STREAMPROC_ nor the image's"
    # ${VAR} interpolation from the host ($$ is a literal $ for the container's shell).
    text = COMPOSE_YML.read_text().replace("$$", "")
    for var in re.findall(r"\$\{?([A-Za-z_]\w*)", text):
        assert var in STREAMPROC_ENV or var.startswith("GF_"), f"interpolated {var}"
    dockerfile_env = re.findall(r"^ENV\s+(STREAMPROC_\w+)", DOCKERFILE.read_text(), flags=re.M)
    assert set(dockerfile_env) <= STREAMPROC_ENV


def test_compose_mounts_config_where_it_is_read(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus_mounts = {m.split(":")[1]: m.split(":")[0] for m in services["prometheus"]["volumes"]}
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    assert prometheus_mounts["/etc/prometheus/alerts.yml"] == "./alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]

    grafana_mounts = {m.split(":")[1]: m.split(":")[0] for m in services["grafana"]["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = load_yaml(PROVISIONING / "dashboards" / "streamproc.yml")["providers"][0]
    dashboard_dir = provider["options"]["path"]
    assert grafana_mounts[f"{dashboard_dir}/dashboard.json"] == "./grafana/dashboard.json"
    datasource = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")

    for name, service in services.items():  # every bind-mounted file of ours exists
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_dockerfile_installs_the_project() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.M)
    assert re.search(r"^RUN pip install \.$", text, flags=re.M)
    assert "TORCH_INDEX_URL" in text
    compose = load_yaml(COMPOSE_YML)["services"]
    assert "/cu" in compose["scorer"]["build"]["args"]["TORCH_INDEX_URL"]  # CUDA torch for the GPU
