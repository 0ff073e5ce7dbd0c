"""The files under deploy/ that the deploy tests read, and a YAML loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus.yml"
ALERTS_YML = DEPLOY / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "alerts_test.yml"
ALERTS_DAILY_TEST_YML = DEPLOY / "alerts_daily_test.yml"  # the alerts that compare with the last day
COMPOSE_YML = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
