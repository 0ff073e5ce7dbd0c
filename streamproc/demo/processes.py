"""The demo's processes: Faust workers and scoring workers as children with their own logs, ports and state,
the wait until they read every partition, and the chaos that kills and restarts a broker and a worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from streamproc.config import Settings
from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.runtime import die_with_parent, free_port
from streamproc.observability.readiness import wait_until_ready

READY_TIMEOUT_S = 300.0
CHAOS_DOWN_S = 10.0  # how long a killed broker or worker stays down


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same Settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"STREAMPROC_{name.upper()}"] = str(value)
    return env


def check_children(
    children: dict[str, subprocess.Popen], logs: Path, restarting: Set[str] = frozenset()
) -> None:
    for name, child in children.items():
        if child.poll() is not None and name not in restarting:
            raise RuntimeError(
                f"the {name} process exited with code {child.returncode}; see {logs / (name + '.log')}"
            )


@dataclass
class Pipeline:
    """The demo's worker and scoring-worker processes, each with its own log, metrics port and (workers) state."""

    settings: Settings
    logs: Path
    workers: int = 1
    scorers: int = 1
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    restarting: set[str] = field(default_factory=set)

    def start(self) -> Pipeline:
        base = settings_env(self.settings)
        for role, count in (("worker", self.workers), ("score", self.scorers)):
            for i in range(count):
                name = role if count == 1 else f"{role}-{i + 1}"
                env = dict(base)
                if i:  # the first keeps the configured port, so that a dashboard finds it
                    env[f"STREAMPROC_{'WORKER' if role == 'worker' else 'SCORER'}_METRICS_PORT"] = str(
                        free_port()
                    )
                if role == "worker" and count > 1:  # each Faust worker keeps its own RocksDB state
                    env["STREAMPROC_DATA_DIR"] = str(self.settings.data_dir / name)
                self.envs[name] = env
                self.launch(name)
        return self

    def launch(self, name: str) -> None:
        role = name.split("-")[0]
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "streamproc.cli", role],
            env=self.envs[name],
            preexec_fn=die_with_parent,
            stdout=open(self.logs / f"{name}.log", "ab"),
            stderr=subprocess.STDOUT,
        )  # noqa: SIM115

    def metrics_urls(self, role: str) -> tuple[str, ...]:
        key = "STREAMPROC_WORKER_METRICS_PORT" if role == "worker" else "STREAMPROC_SCORER_METRICS_PORT"
        return tuple(
            f"http://127.0.0.1:{env[key]}/metrics"
            for name, env in self.envs.items()
            if name.split("-")[0] == role and env[key] != "0"
        )

    def check(self) -> None:
        check_children(self.children, self.logs, self.restarting)

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def wait_for_pipeline(settings: Settings, pipeline: Pipeline) -> None:
    """Replay only once the workers and the scoring workers read all their input partitions (summed over
    each group's processes), so that the latencies shown are the pipeline's, not its start-up's."""
    workers, scorers = pipeline.metrics_urls("worker"), pipeline.metrics_urls("score")
    if not (workers and scorers):
        print("metrics ports disabled: replaying without waiting for the pipeline to be ready", flush=True)
        return
    n = settings.partitions
    waited = wait_until_ready(
        {
            workers: {t: n for t in settings.worker_input_topics()},
            scorers: {settings.sequence_updates_topic: n},
        },
        timeout_s=READY_TIMEOUT_S,
        check_alive=pipeline.check,
    )
    print(f"pipeline ready after {waited:.1f} s: replaying", flush=True)


@dataclass
class Chaos:
    """SIGKILL the last broker at a quarter of the replay and the last Faust worker at a half, each restarted
    CHAOS_DOWN_S later (by event count with a limit, else 20 s and 40 s into the replay). Runs on the demo's
    main thread (`tick`), which starts every process: a child dies with the thread that started it."""

    kafka: LocalKafka | None
    pipeline: Pipeline
    limit: int | None
    say: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    done: set[str] = field(default_factory=set)
    restarts: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def due(self, step: str, produced: int, fraction: float, after_s: float) -> bool:
        if step in self.done:
            return False
        reached = (
            produced >= self.limit * fraction if self.limit else time.monotonic() - self.started >= after_s
        )
        if reached:
            self.done.add(step)
        return reached

    def tick(self, produced: int) -> None:
        now = time.monotonic()
        for entry in [r for r in self.restarts if r[0] <= now]:
            self.restarts.remove(entry)
            entry[1]()
        if self.kafka is not None and self.kafka.nodes > 1 and self.due("broker", produced, 0.25, 20):
            kafka, index = self.kafka, self.kafka.nodes - 1
            kafka.kill(index)
            self.say(
                f"chaos: SIGKILLed Kafka broker {index + 1} of {kafka.nodes} after {produced} events; "
                f"restarting it in {CHAOS_DOWN_S:.0f} s"
            )

            def restart_broker() -> None:
                kafka.restart(index, wait=False)
                self.say(f"chaos: Kafka broker {index + 1} restarted")

            self.restarts.append((now + CHAOS_DOWN_S, restart_broker))
        if self.due("worker", produced, 0.5, 40):
            name = [n for n in self.pipeline.children if n.startswith("worker")][-1]
            self.pipeline.restarting.add(name)
            self.pipeline.children[name].kill()
            self.pipeline.children[name].wait()
            self.say(
                f"chaos: SIGKILLed Faust {name} after {produced} events; restarting it in {CHAOS_DOWN_S:.0f} s"
            )

            def restart_worker() -> None:
                self.pipeline.launch(name)
                self.pipeline.restarting.discard(name)
                self.say(f"chaos: Faust {name} restarted")

            self.restarts.append((now + CHAOS_DOWN_S, restart_worker))

    def finished(self) -> bool:
        return not self.restarts
