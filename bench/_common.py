"""Shared helpers of the benchmark scripts: machine header, isolated settings, child processes, tables."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py` without PYTHONPATH
    sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from streamproc.config import Settings  # noqa: E402
from streamproc.demo.processes import settings_env  # noqa: E402
from streamproc.kafka.local_kafka import LocalKafka  # noqa: E402
from streamproc.kafka.runtime import die_with_parent, free_port  # noqa: E402


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def header(title: str, extra: dict[str, str] | None = None, broker: bool = True) -> str:
    """Markdown header: what ran, where, with which versions, and the exact command line."""
    rows = {
        "CPU": cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "cores usable (affinity)": str(len(os.sched_getaffinity(0)))
        if hasattr(os, "sched_getaffinity")
        else "?",
        "RAM": ram_gib(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": _version("torch"),
        "faust-streaming": _version("faust-streaming"),
        "confluent-kafka": _version("confluent-kafka"),
        "broker": f"Apache Kafka {kafka_version()} (KRaft, one node, log on local disk, loopback), started by the bench",
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if not broker:  # the bench starts none
        del rows["broker"]
    rows |= extra or {}
    lines = [f"# {title}", "", "| machine | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    lines += ["", "Command:", "", "```", f"cd {REPO} && PYTHONPATH={REPO} {cmd}", "```", ""]
    return "\n".join(lines)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def kafka_version() -> str:
    """The version of the local Kafka's jars (deploy/kafka/pom.xml)."""
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    found = re.search(r"<artifactId>kafka_2.13</artifactId>\s*<version>([^<]+)</version>", pom)
    return found.group(1) if found else "?"


def start_kafka(work: Path, nodes: int = 1) -> LocalKafka:
    """A fresh local Kafka under `work` (its start-up time on stderr)."""
    kafka = LocalKafka(work / "kafka", nodes=nodes).start()
    print(
        f"Kafka ({nodes} node{'s' if nodes > 1 else ''}) started in {kafka.started_in_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return kafka


def bench_settings(broker: LocalKafka, data_root: Path, **overrides: Any) -> Settings:
    """Settings with topics, app id and groups of their own (Settings.namespaced)."""
    p = f"b{uuid.uuid4().hex[:8]}"
    return Settings(bootstrap_servers=broker.bootstrap_servers).namespaced(
        p,
        data_dir=data_root / p / "faust",
        worker_metrics_port=free_port(),
        scorer_metrics_port=free_port(),
        **overrides,
    )


def alternating_runs(guarantees: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, guarantee) in run order: the given order, then reversed, alternately (A B, B A, ...): a run
    finds the broker and the page cache warmer than the run before it, which would favour whichever came
    second."""
    return [(r, g) for r in range(rounds) for g in (guarantees if r % 2 == 0 else guarantees[::-1])]


def machine_cpu_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of every CPU since boot, from /proc/stat ((0, 0) where it cannot be read).
    Steal is the time a virtual machine's CPUs were ready to run but the host ran something else: a noisy
    neighbour, invisible in the processes' own CPU time, that stretches every latency measured meanwhile."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def scrape_metrics(port: int) -> str | None:
    """A local process's /metrics page (None where it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def transaction_steps(port: int) -> dict[str, tuple[float, float]]:
    """step -> (seconds, count) of a process's exactly-once commits so far, from its /metrics
    (`streamproc_transaction_step_seconds`); empty where it has none (at-least-once) or cannot be read."""
    text = scrape_metrics(port)
    if text is None:
        return {}
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "streamproc_transaction_step_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum") or sample.name.endswith("_count"):
                pair = found.setdefault(sample.labels["step"], [0.0, 0.0])
                pair[0 if sample.name.endswith("_sum") else 1] = sample.value
    return {step: (pair[0], pair[1]) for step, pair in found.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far, from /proc (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class Child:
    """A child process (its own session), output in a log file; stopped with SIGTERM then SIGKILL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(env or os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(REPO),
            stdout=open(log_path, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 20) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def streamproc_child(
    command: str, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> Child:
    """`streamproc <command>` (worker | score) with these settings, as the integration tests start it."""
    env = settings_env(settings) | (extra_env or {})
    return Child([sys.executable, "-m", "streamproc.cli", command], log_path, env)


def add_checkpoint_argument(parser: argparse.ArgumentParser, default: Path = Path("/tmp/bench_ckpt")) -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=default,
        help=f"trained checkpoint (python -m models.train --preset demo --out {default} --threads 1)",
    )


def require_checkpoint(parser: argparse.ArgumentParser, checkpoint: Path) -> None:
    """Stop with the command that trains one when `checkpoint` holds none."""
    if not (checkpoint / "config.json").exists():
        parser.error(
            f"no checkpoint at {checkpoint}; train one: python -m models.train --preset demo "
            f"--out {checkpoint} --threads 1"
        )
