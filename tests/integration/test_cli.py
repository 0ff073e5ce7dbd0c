"""The command line as a person runs it: the demo with --limit, and the output-topic consumers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from streamproc.broker import free_port

pytestmark = pytest.mark.integration


def test_demo_with_limit_exits_zero_after_every_event_is_scored(tiny_checkpoint, tmp_path):
    env_ports = ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(tmp_path / "var")]
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "demo", "--limit", "400", "--rate", "0", *env_ports],
        capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "STREAMPROC_WORKER_METRICS_PORT": str(free_port()),
             "STREAMPROC_SCORER_METRICS_PORT": str(free_port())},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", last))
    assert int(counts["risk-scores"]) >= 400 and int(counts["next-action-scores"]) >= 400, last
    assert "streamproc.dead-letters" in counts and "fraud-alerts" in counts
