"""A real Prometheus server for tests: start it on loopback, scrape given targets, query it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

# Bypass any http(s)_proxy from the environment: every request goes to 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_POLL_S = 0.1

# Grafana's built-in interval variables; anything else left in an expression is an error.
_GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")
# `$name`, `${name}`, `${name:format}`; `$1` (label_replace) is PromQL's own and stays.
_GRAFANA_VAR = re.compile(r"\$\{?([A-Za-z_]\w*)(?::\w+)?\}?")


def find_binary(name: str) -> str:
    """Path of a Prometheus binary; skip the test without it, fail under CI=true."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path:
        return path
    message = f"{name} not found: install it with `apt-get install -y prometheus` (Debian package)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI is set, so a missing {name} is a failure")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusServer:
    """A running Prometheus process; `query` and `wait_for` use its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    config_path: Path
    _closed: bool = field(default=False, repr=False)

    def query(self, expr: str) -> list[Any]:
        """Instant query; returns the `result` list (vector), or `[result]` for scalars and strings."""
        params = urllib.parse.urlencode({"query": expr})
        try:
            with _OPENER.open(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:  # 400/422 carry the PromQL error in the body
            detail = err.read().decode(errors="replace")
            raise PrometheusQueryError(f"{expr!r}: HTTP {err.code}: {detail}") from err
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{expr!r}: {body}")
        data = body["data"]
        if data["resultType"] in ("vector", "matrix"):
            return list(data["result"])
        return [data["result"]]

    def wait_for(
        self,
        expr: str,
        deadline_s: float,
        until: Callable[[list[Any]], bool] = bool,
    ) -> list[Any]:
        """Poll `expr` until `until(result)` holds (default: non-empty); fail after `deadline_s`."""
        deadline = time.monotonic() + deadline_s
        result: list[Any] = []
        while True:
            self._check_alive()
            result = self.query(expr)
            if until(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expr!r} gave {result!r} after {deadline_s}s\n{self.log_tail()}")
            time.sleep(_POLL_S)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}\n{self.log_tail()}")


class PrometheusQueryError(RuntimeError):
    """The HTTP API rejected a query (bad PromQL) or answered an error."""


def write_config(
    path: Path,
    targets: dict[str, list[str]],
    scrape_interval: str = "1s",
    rule_files: list[str] | None = None,
) -> Path:
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(
    tmp_path: Path,
    targets: dict[str, list[str]],
    scrape_interval: str = "1s",
    rule_files: list[str] | None = None,
    ready_deadline_s: float = 30.0,
) -> PrometheusServer:
    """Start /usr/bin/prometheus on a free loopback port scraping `targets` ({job: ['127.0.0.1:PORT']}).

    Returns once /-/ready answers 200. Call `.stop()` (or use it as a context manager).
    """
    binary = find_binary("prometheus")
    root = tmp_path / "prometheus"
    root.mkdir(parents=True, exist_ok=True)
    config_path = write_config(root / "prometheus.yml", targets, scrape_interval, rule_files)
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    server = PrometheusServer(process, f"http://127.0.0.1:{port}", log_path, config_path)
    try:
        _wait_ready(server, ready_deadline_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: PrometheusServer, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        server._check_alive()
        try:
            with _OPENER.open(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"prometheus not ready after {deadline_s}s\n{server.log_tail()}")
        time.sleep(_POLL_S)


def dashboard_exprs(path: Path | str, rate_interval: str = "30s") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target in a Grafana dashboard, rows included.

    Grafana's interval variables ($__rate_interval, ${__interval}, $__range) become `rate_interval`
    so the queries run on a plain Prometheus; any other template variable raises ValueError.
    """
    dashboard = json.loads(Path(path).read_text())
    found: list[tuple[str, str]] = []
    for panel in _walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                found.append((panel.get("title", ""), _substitute(expr, rate_interval)))
    return found


def _walk_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_walk_panels(panel.get("panels", [])))  # collapsed rows nest their panels
    return flat


def _substitute(expr: str, rate_interval: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _GRAFANA_INTERVALS:
            return rate_interval
        raise ValueError(f"template variable ${name} in {expr!r} has no test value")

    return _GRAFANA_VAR.sub(replace, expr)
