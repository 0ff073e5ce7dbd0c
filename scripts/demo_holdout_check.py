"""How a checkpoint scores the demo's own stream, which it was not trained on (a held-out check).

Usage: PYTHONPATH=. python scripts/demo_holdout_check.py [--checkpoint checkpoints/demo] [--threshold 0.5]

The demo replays `streamproc.feed.replay.read_generator()` (seed 7, 500 users, 30 days); the demo
checkpoint trains on the preset's stream (seed 0, 300 users, 60 days). This replays the demo stream
offline as the pipeline would (the user's last 50 events, `models.features.replay.replay_aggregates`, which
the pipeline's tables compute alike) and prints, for every transaction, fraud AP, ROC-AUC and the
alerts at the threshold; for every click with a later click of the same user, whether that next
click is in the top 10 (HR@10; every 5th click, to keep it short).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from models.data import synthetic
from models.features.featurize import Window
from models.features.replay import replay_aggregates
from models.serving.scorer import Scorer
from streamproc.feed.replay import read_generator

WINDOW = 50
BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="checkpoints/demo")
    parser.add_argument("--threshold", type=float, default=0.5, help="the alert threshold (default 0.5)")
    args = parser.parse_args()
    messages = list(read_generator())
    labels = {m["event_id"]: int(m["label"]) for topic, m in messages if topic == "transactions"}
    records = sorted((synthetic.to_record(topic, m) for topic, m in messages), key=lambda r: r["ts_ms"])
    aggregates = replay_aggregates(records, labels)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_user[record["user_id"]].append(record)
    tx_windows, tx_ids, click_windows, next_items = [], [], [], []
    clicks_seen = 0
    for events in by_user.values():
        clicks = [i for i, e in enumerate(events) if e["kind"] == "click"]
        next_click = dict(zip(clicks, clicks[1:], strict=False))
        for i, event in enumerate(events):
            window = Window(
                events=events[max(0, i + 1 - WINDOW) : i + 1], aggregates=aggregates[event["event_id"]]
            )
            if event["kind"] == "transaction":
                tx_windows.append(window)
                tx_ids.append(event["event_id"])
            elif i in next_click:
                clicks_seen += 1
                if clicks_seen % 5:
                    continue
                click_windows.append(window)
                next_items.append(events[next_click[i]]["item_id"])
    scorer = Scorer.load(args.checkpoint)
    risk = np.array(
        [s.risk for b in range(0, len(tx_windows), BATCH) for s in scorer.score(tx_windows[b : b + BATCH])]
    )
    y = np.array([labels[i] for i in tx_ids])
    alerts = risk >= args.threshold
    hits = sum(
        nxt in [item for item, _ in s.top_items[:10]]
        for b in range(0, len(click_windows), BATCH)
        for s, nxt in zip(scorer.score(click_windows[b : b + BATCH]), next_items[b : b + BATCH], strict=True)
    )
    print(
        f"checkpoint {args.checkpoint} (model {scorer.model_version}) on the demo stream (seed 7, 500 users, 30 days)"
    )
    print(
        f"transactions {len(y):,}, frauds {int(y.sum()):,}: AP {average_precision_score(y, risk):.3f}, "
        f"ROC-AUC {roc_auc_score(y, risk):.3f}; at threshold {args.threshold}: {int(alerts.sum()):,} alerts, "
        f"precision {(alerts & (y == 1)).sum() / max(1, alerts.sum()):.2f}, recall {(alerts & (y == 1)).sum() / max(1, y.sum()):.2f}"
    )
    print(
        f"next click in the top 10 (HR@10): {hits / max(1, len(next_items)):.3f} over {len(next_items):,} clicks"
    )


if __name__ == "__main__":
    main()
