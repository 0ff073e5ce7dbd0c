"""Run the Faust worker: topics created, Faust patches installed, agents registered, /metrics served."""

from __future__ import annotations

import logging

import faust
import uvloop

from streamproc.compat import install_faust_patches, mode_sigusr2
from streamproc.config import Settings
from streamproc.kafka.admin import check_partitions, create_topics, topic_max_message_bytes
from streamproc.observability.metrics import create_metrics, serve
from streamproc.observability.partition_gauges import read_faust_assignment, register_partition_gauges
from streamproc.observability.stall_watch import install_stall_watch, log_consumer_state
from streamproc.stages.agents import register_agents
from streamproc.stages.app import create_app, faust_internal_topics, quiet_faust_logging


def build_worker(settings: Settings, log_level: int = logging.WARNING) -> faust.Worker:
    uvloop.install()  # the event loop's own overhead is a tenth of the worker's time; uvloop runs it in C
    install_faust_patches(settings)
    create_topics(
        settings.kafka_common(), settings.all_topics(), settings.partitions, settings.replication_factor
    )
    internal = faust_internal_topics(settings)
    for name, (partitions, config) in internal.items():
        create_topics(settings.kafka_common(), [name], partitions, settings.replication_factor, config=config)
    check_partitions(
        settings.kafka_common(),
        [*settings.worker_input_topics(), *(t for t, (n, _) in internal.items() if n > 1)],
        settings.partitions,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = create_metrics(with_process=True)
    topo = create_app(settings)
    write_behind = register_agents(topo, settings, metrics)
    dead_letter_limit = topic_max_message_bytes(settings.kafka_common(), settings.dead_letter_topic)
    for out in write_behind.producers:  # a dead letter too large to go whole goes reduced, never refused
        out.limit_topic(settings.dead_letter_topic, dead_letter_limit)
    if write_behind.transactions is not None:
        write_behind.transactions.start()
    inputs = frozenset(settings.worker_input_topics())
    install_stall_watch(
        topo.app,
        settings.stall_report_s,
        metrics.worker_stalls.inc,
        is_input=lambda tp: tp.topic in inputs,
        slack=1 if settings.processing_guarantee == "exactly_once" else 0,  # a commit marker ends a partition
    )
    register_partition_gauges(metrics, inputs, read_faust_assignment(topo.app, lambda tp: tp.topic in inputs))
    serve(metrics, settings.worker_metrics_port)
    worker = faust.Worker(
        topo.app, loglevel=logging.getLevelName(log_level), quiet=True, redirect_stdouts=False
    )
    quiet_faust_logging(log_level)
    mode_sigusr2.install(
        worker, lambda: log_consumer_state(topo.app)
    )  # not pdb: a stack and consumer-state log
    return worker


def run_worker(settings: Settings, log_level: int = logging.WARNING) -> None:
    """Block until the worker is stopped (SIGINT/SIGTERM stop it cleanly)."""
    build_worker(settings, log_level).execute_from_commandline()
