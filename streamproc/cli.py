"""The command line: broker, worker, score, replay, demo, alerts, recs, label, train."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from streamproc.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings().with_overrides(
        bootstrap_servers=args.bootstrap_servers,
        data_dir=getattr(args, "data_dir", None),
        checkpoint=getattr(args, "checkpoint", None),
        partitions=getattr(args, "partitions", None),
        device=getattr(args, "device", None),
        alert_threshold=getattr(args, "alert_threshold", None),
        batch_max_size=getattr(args, "batch_max_size", None),
        batch_max_wait_ms=getattr(args, "batch_max_wait_ms", None),
    )


def cmd_broker(args: argparse.Namespace) -> int:
    """A local Apache Kafka (KRaft) for development: kept under --data-dir across restarts; exits with the
    reason when a broker process dies."""
    from streamproc.kafka.admin import create_topics
    from streamproc.kafka.local_kafka import LocalKafka
    from streamproc.kafka.runtime import KafkaError

    settings = _settings(args)
    folder = args.kafka_dir or settings.data_dir / "kafka"
    if args.fresh:
        from streamproc.kafka.admin import wipe

        wipe(folder)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    kafka = LocalKafka(folder, nodes=args.brokers, port=args.port, partitions=settings.partitions)
    try:
        kafka.start()
    except KafkaError as exc:
        kafka.stop()
        print(f"streamproc broker: {exc}", file=sys.stderr)
        return 2
    try:
        create_topics(
            kafka.bootstrap_servers, settings.all_topics(), settings.partitions, kafka.replication_factor
        )
        print(
            f"Apache Kafka ({kafka.nodes} KRaft node{'s' if kafka.nodes > 1 else ''}) on {kafka.bootstrap_servers}, "
            f"started in {kafka.started_in_s:.1f} s; data and logs in {folder}; Ctrl-C stops it",
            flush=True,
        )
        while not stop.wait(1.0):
            dead = kafka.dead()
            if dead:
                node = dead[0]
                print(
                    f"streamproc broker: Kafka node {node.node_id} exited with code "
                    f"{node.process.returncode if node.process else '?'}; its log ({node.log_path}) ends:\n"
                    f"{kafka.log_tail(node, 1500)}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        kafka.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streamproc.stages.faust_worker import run_worker

    run_worker(_settings(args), logging.INFO if args.verbose else logging.WARNING)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from models.serving.scorer import Scorer
    from streamproc.observability.metrics import create_metrics, serve
    from streamproc.scoring.worker import ScoringWorker

    settings = _settings(args)
    if not settings.checkpoint.exists():
        print(
            f"no checkpoint at {settings.checkpoint}; make one with: "
            f"python -m models.train --preset demo --out {settings.checkpoint}",
            file=sys.stderr,
        )
        return 2
    import torch

    torch.set_num_threads(settings.torch_threads)
    metrics = create_metrics(with_process=True)
    scorer = Scorer.load(settings.checkpoint, device=settings.device, top_k=settings.top_k)
    serve(metrics, settings.scorer_metrics_port)
    worker = ScoringWorker(settings, scorer, metrics)
    worker.warm_up()
    worker.install_signal_handlers()
    worker.run()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamproc.feed.replay import read_events, replay
    from streamproc.kafka.admin import create_topics

    settings = _settings(args)
    create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions)
    events = read_events(args.path, args.format, seed=args.seed)
    n = replay(
        settings,
        events,
        rate=args.rate,
        limit=args.limit,
        labels=args.labels,
        label_delay_ms=int(args.label_delay_hours * 3_600_000),
    )
    print(f"replayed {n} events", flush=True)
    return 0


def _external_kafka(args: argparse.Namespace) -> bool:
    """Whether a Kafka is named by flag or environment (the demo starts a local Kafka otherwise)."""
    return bool(args.bootstrap_servers or os.environ.get("STREAMPROC_BOOTSTRAP_SERVERS"))


def cmd_demo(args: argparse.Namespace) -> int:
    from streamproc.demo.run import run_demo

    external = _external_kafka(args)
    return run_demo(
        _settings(args),
        data=args.data,
        fmt=args.format,
        rate=args.rate,
        limit=args.limit,
        labels=args.labels,
        label_delay_ms=int(args.label_delay_hours * 3_600_000),
        external=external,
        namespace=args.namespace,
        brokers=args.brokers,
        workers=args.workers,
        scorers=args.scorers,
        chaos=args.chaos,
        checkpoint_chosen=args.checkpoint is not None or "STREAMPROC_CHECKPOINT" in os.environ,
    )


def cmd_label(args: argparse.Namespace) -> int:
    from streamproc.feed.fraud_labels import label_message, send_label
    from streamproc.kafka.admin import create_topics

    settings = _settings(args)
    create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions)
    ts = int(args.ts) if args.ts.isdigit() else args.ts  # epoch milliseconds, or ISO-8601 as given
    message = label_message(
        args.transaction_id, args.terminal, ts, fraud=not args.genuine, source=args.source
    )
    send_label(settings, message)
    print(f"sent {message}", flush=True)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from streamproc.kafka.consumers import follow_alerts

    return follow_alerts(_settings(args), from_beginning=args.from_beginning, max_alerts=args.max)


def cmd_recs(args: argparse.Namespace) -> int:
    from streamproc.kafka.consumers import show_recommendations

    return show_recommendations(_settings(args), args.user)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from models.train import main as train_main

    train_main(rest)  # raises on a failure: a traceback and exit code 1
    return 0


def add_label_flags(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--labels",
        choices=["inline", "topic"],
        default=default,
        help="transactions' fraud labels: inline as recorded, or taken out and sent to fraud-labels "
        f"--label-delay-hours after each transaction, as a live system gets them (default {default})",
    )
    p.add_argument(
        "--label-delay-hours",
        type=float,
        default=24.0,
        help="event time from a transaction to its fraud label (--labels topic; default 24)",
    )


KAFKA_COMMANDS = {"worker", "score", "replay", "label", "alerts", "recs"}  # and the demo on a named Kafka


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamproc", description=__doc__)
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (default: $STREAMPROC_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "broker", help="start a local Apache Kafka (KRaft), kept under the data dir across restarts"
    )
    p.add_argument(
        "--port", type=int, default=9092, help="the first broker's client port (the next ones follow)"
    )
    p.add_argument(
        "--brokers", type=int, default=1, choices=[1, 2, 3, 4, 5], help="KRaft nodes (3: replication 3)"
    )
    p.add_argument("--data-dir", type=Path)
    p.add_argument(
        "--kafka-dir", type=Path, help="where the brokers keep their logs (default DATA_DIR/kafka)"
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete what an earlier run of the brokers kept first"
    )
    p.add_argument("--partitions", type=int)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="the Faust worker (validation, windows, sequence updates)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--partitions", type=int)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("score", help="the scoring worker")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--device")
    p.add_argument("--alert-threshold", type=float)
    p.add_argument("--batch-max-size", type=int)
    p.add_argument("--batch-max-wait-ms", type=int)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("replay", help="produce a data set's events into the input topics")
    p.add_argument("path", type=Path, nargs="?", help="data file or folder (none: the built-in generator)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "fraud", "movielens", "yoochoose", "taobao", "jsonl", "generator"],
    )
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--partitions", type=int)
    add_label_flags(p, default="inline")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "demo",
        help="worker + scoring worker + replay, with a live summary, on a local Apache Kafka "
        "(or on the Kafka that --bootstrap-servers names)",
    )
    p.add_argument("--data", type=Path, help="data set to replay (default: the built-in generator)")
    p.add_argument("--format", default="auto")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--limit", type=int, help="exit 0 once this many replayed events are scored")
    p.add_argument(
        "--brokers",
        type=int,
        default=1,
        choices=[1, 3],
        help="KRaft nodes of the local Kafka (3: replication factor 3, min.insync.replicas 2)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="Faust worker processes (they share the partitions)"
    )
    p.add_argument("--scorers", type=int, default=1, help="scoring worker processes")
    p.add_argument(
        "--chaos",
        action="store_true",
        help="SIGKILL the last broker at a quarter of the replay and the last Faust worker at a half, "
        "each restarted 10 s later (by time without --limit)",
    )
    p.add_argument(
        "--namespace",
        default="demo",
        help="on a real Kafka, prefix the demo's topics, Faust app id and scorer group with this, so "
        "that it never reads or writes a pipeline the cluster runs ('' keeps the configured names)",
    )
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--partitions", type=int)
    p.add_argument("--alert-threshold", type=float)
    add_label_flags(p, default="topic")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("label", help="send a verdict on a past transaction (from an alert) to fraud-labels")
    p.add_argument("transaction_id", help="the transaction's event_id (an alert's event_id)")
    p.add_argument("--terminal", required=True, help="its terminal or merchant id (an alert's item_id)")
    p.add_argument("--ts", required=True, help="its time, epoch ms or ISO-8601 (an alert's event_ts_ms)")
    p.add_argument("--genuine", action="store_true", help="not fraud: retracts an earlier fraud label")
    p.add_argument("--source", help="where the verdict comes from, e.g. chargeback, analyst")
    p.add_argument("--partitions", type=int)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("alerts", help="follow fraud-alerts as an analyst would")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, help="stop after this many alerts")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("recs", help="a user's latest next-action scores")
    p.add_argument("user")
    p.set_defaults(func=cmd_recs)

    p = sub.add_parser("train", help="train a model (python -m models.train ...)", add_help=False)
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "train":
        return cmd_train(args, rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "demo" and _external_kafka(args) and args.brokers != 1:
        parser.error(
            "demo --brokers starts a local Kafka; it does not go with a Kafka named by --bootstrap-servers"
        )
    if args.command in KAFKA_COMMANDS or (args.command == "demo" and _external_kafka(args)):
        from streamproc.kafka.reachability import KafkaUnreachable, check_kafka

        settings = _settings(args)
        try:
            check_kafka(settings.kafka_common(), settings.kafka_check_timeout_s)
        except KafkaUnreachable as exc:
            print(f"streamproc {args.command}: {exc}", file=sys.stderr)
            return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
