"""What the local Kafka runs on: a Java new enough, Kafka's jars fetched once by Maven from the project's
pom, and the process helpers its nodes and the demo's children share (a free port, death with the parent)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # streamproc/kafka/ -> the checkout
POM = REPO / "deploy" / "kafka" / "pom.xml"
DEFAULT_LIB = REPO / "var" / "kafka" / "lib"
MIN_JAVA = 11  # Kafka 3.9's broker runs on Java 11 or newer (17 recommended)
INSTALL_HINT = (
    "install a JDK and Maven, e.g. `apt-get install openjdk-17-jre-headless maven` (or `make system-deps`)"
)


class KafkaError(RuntimeError):
    """The local Kafka could not be fetched, formatted or started; the message says why."""


def die_with_parent() -> None:
    """subprocess preexec_fn: the child gets SIGTERM when the thread that started it ends (Linux
    PR_SET_PDEATHSIG), so that a demo or test killed outright leaves no broker or worker behind."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed parent, as before
        pass


LISTEN_PORTS_BELOW = 32768  # Linux's default ephemeral range starts here (net.ipv4.ip_local_port_range)
LISTEN_PORTS_FROM = 15000
_ports_handed_out: set[int] = set()


def ephemeral_port_floor() -> int:
    """The lowest port the kernel gives an outgoing connection (the default where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS_BELOW


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server started soon after, never the same twice in a process.

    Chosen below the ephemeral range: a port the kernel hands out there (bind to 0) can be taken by any
    outgoing connection (a broker's to its peers, a client's) before the server binds it, which failed a
    three-broker test with "Address already in use". Outside that range only another listener can take it."""
    import random
    import socket

    floor = min(ephemeral_port_floor(), 65536)
    candidates = range(LISTEN_PORTS_FROM, floor) if floor - LISTEN_PORTS_FROM >= 1000 else range(1024, floor)
    pick = random.SystemRandom()
    for _ in range(100):
        port = pick.choice(candidates) if len(candidates) else 0
        if port in _ports_handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        _ports_handed_out.add(port)
        return port
    raise OSError(f"no free port for a listener on {host} between {candidates.start} and {candidates.stop}")


def java_major(java: str) -> int:
    """The major version of a `java` binary (8 for 1.8, 17 for 17.0.15)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        raise KafkaError(f"cannot read the version of {java}: {out.strip()[:200]}")
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The java binary ($JAVA_HOME/bin/java, else the PATH's), checked to be new enough."""
    home = os.environ.get("JAVA_HOME")
    java = (
        str(Path(home) / "bin" / "java")
        if home and (Path(home) / "bin" / "java").exists()
        else shutil.which("java")
    )
    if java is None:
        raise KafkaError(f"the local Kafka needs Java {MIN_JAVA} or newer and none was found: {INSTALL_HINT}")
    if (major := java_major(java)) < MIN_JAVA:
        raise KafkaError(
            f"the local Kafka needs Java {MIN_JAVA} or newer, {java} is Java {major}: {INSTALL_HINT}"
        )
    return java


def ensure_kafka_jars(lib: Path | None = None, pom: Path = POM) -> Path:
    """The folder of the broker's jars, fetched by Maven from `pom` on first use (again when the pom changes).

    Safe to call from several processes at once: the fetch runs under a lock file, into a temporary
    folder that is renamed into place when complete.
    """
    lib = lib or Path(os.environ.get("STREAMPROC_KAFKA_LIB", DEFAULT_LIB))
    if not pom.exists():
        raise KafkaError(f"{pom} not found: the local Kafka runs from a checkout of the project")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    stamp = lib / ".pom-sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == digest:  # another process fetched them meanwhile
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError(
                f"the local Kafka's jars are fetched by Maven and `mvn` was not found: {INSTALL_HINT}"
            )
        staging = lib.parent / f".{lib.name}-{uuid.uuid4().hex[:8]}"
        print(f"fetching Apache Kafka's jars with Maven ({pom} -> {lib}), once", flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaError(
                f"Maven could not fetch Kafka's jars (exit {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        (staging / ".pom-sha256").write_text(digest)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        print(
            f"fetched {len(list(lib.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s", flush=True
        )
    return lib
