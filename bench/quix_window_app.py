"""Child process of pipeline_bench.py: the peer job on Quix Streams (runs in a venv that has quixstreams).

Per user (the message key), a window of the last `--window` events (event-time ordered, duplicate
event ids ignored) kept in Quix's RocksDB state with its changelog topic, and one output message per
input event: {"user_id", "event_id", "emitted_ts_ms", "window"} to `--output`. It imports nothing
from streamproc, so it can run under a different interpreter (Quix pins an older confluent-kafka).
When `--n` events have been processed it writes {"count", "first_ts", "last_ts"} to `--out`.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import time
from pathlib import Path
from typing import Any

from quixstreams import Application


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        use_changelog_topics=True,
        commit_interval=1.0,
        loglevel="WARNING",
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="json")
    sink = app.topic(args.output, key_serializer="bytes", value_serializer="json")
    progress: dict[str, Any] = {"count": 0, "first_ts": None, "last_ts": None, "written": False}
    out = Path(args.out)
    max_events = args.window

    def window(value: dict[str, Any], state: Any) -> dict[str, Any]:
        now = time.time()
        if progress["first_ts"] is None:
            progress["first_ts"] = now
        events: list[dict[str, Any]] = state.get("w", [])
        if not any(e["event_id"] == value["event_id"] for e in events):
            pos = bisect.bisect_right([e["ts"] for e in events], value["ts"])
            events.insert(pos, value)
            events = events[-max_events:]
            state.set("w", events)
        progress["count"] += 1
        progress["last_ts"] = now
        if progress["count"] >= args.n and not progress["written"]:
            progress["written"] = True
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: progress[k] for k in ("count", "first_ts", "last_ts")}))
            tmp.rename(out)
        return {
            "user_id": value["user_id"],
            "event_id": value["event_id"],
            "emitted_ts_ms": int(now * 1000),
            "window": events,
        }

    sdf = app.dataframe(source)
    sdf = sdf.apply(window, stateful=True)
    sdf.to_topic(sink)
    logging.getLogger().setLevel(logging.WARNING)
    app.run()


if __name__ == "__main__":
    main()
