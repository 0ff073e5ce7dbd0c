"""Child process of pipeline_bench.py: a minimal Faust app whose only agent counts raw events.

Same app settings as streamproc.stages.app.create_app (minus the tables): raw bytes topic, 4 partitions,
stream_buffer_maxsize 8192, commit every second. `--mode take` iterates stream.take_events(1000,
within=0.01) like streamproc's agents; `--mode iter` uses a plain `async for value in stream`;
`--mode layout` counts with three such agents over five topics, as streamproc's worker subscribes.
`--uvloop` runs it on uvloop, as streamproc's worker runs (Faust's default is asyncio's own loop).
When `--n` events have been counted it writes {"count", "first_ts", "last_ts"} (time.time()) to
`--out`; the parent then stops the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import faust


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--mode", choices=["take", "iter", "layout"], default="take")
    parser.add_argument(
        "--layout-topics",
        default="",
        help="--mode layout: comma list of 4 more topics, laid out over three counting agents "
        "as streamproc's worker lays out its five (1+2 with --topic, 3+4, 5)",
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="install uvloop first, as streamproc's worker does"
    )
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()

    app = faust.App(
        args.app_id,
        broker=",".join(f"kafka://{hp}" for hp in args.bootstrap.split(",")),
        store="memory://",
        datadir=args.datadir,
        topic_partitions=args.partitions,
        topic_allow_declare=True,
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=8192,
        logging_config=None,
        loghandlers=[],
    )
    topic = app.topic(
        args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    state = {"count": 0, "first_ts": None, "last_ts": None, "written": False}
    out = Path(args.out)

    def record(n: int) -> None:
        now = time.time()
        if state["first_ts"] is None:
            state["first_ts"] = now
        state["count"] += n
        state["last_ts"] = now
        if state["count"] >= args.n and not state["written"]:
            state["written"] = True
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: state[k] for k in ("count", "first_ts", "last_ts")}))
            tmp.rename(out)

    if args.mode == "take":

        @app.agent(topic, name="bench.count-take")
        async def count_take(stream: faust.StreamT) -> None:
            async for events in stream.take_events(1000, within=0.01):
                record(len(events))
    elif args.mode == "layout":  # the worker's three agents over five topics, only --topic holding events

        def raw_topics(*names: str) -> faust.TopicT:
            return app.topic(
                *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )

        user_events, transactions, labels, by_terminal = args.layout_topics.split(",")
        for name, channel in (
            ("users", raw_topics(args.topic, user_events)),
            ("route", raw_topics(transactions, labels)),
            ("terminal", raw_topics(by_terminal)),
        ):

            @app.agent(channel, name=f"bench.count-{name}")
            async def count_layout(stream: faust.StreamT) -> None:
                async for events in stream.take_events(1000, within=0.01):
                    record(len(events))
    else:

        @app.agent(topic, name="bench.count-iter")
        async def count_iter(stream: faust.StreamT) -> None:
            async for _value in stream:
                record(1)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
