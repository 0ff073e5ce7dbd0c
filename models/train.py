"""Multi-task training of the temporal model on event logs; `python -m models.train --preset demo --out DIR`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.data import synthetic
from models.data.datasets import DATASETS, dataset_argument
from models.data.datasets import load as load_dataset
from models.evaluation import cold_start
from models.model.device import resolve_device
from models.training import loop
from models.training.train_config import (
    DATASET_DEFAULTS,
    DEFAULT_PRESET,
    PRESETS,
    TrainConfig,
    apply_overrides,
)


def fit_event_log(
    log: Any, config: TrainConfig, out: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train on a models.data.datasets.EventLog: its published split when it has one, else a time split.
    Events of the cold-start protocol's HELD_OUT split are neither trained on nor replayed."""
    config = replace(config, use_text=config.use_text and bool(log.has_text))
    if log.split is None:
        return loop.fit(log.records, log.labels, log.aggregates, config, out, extra=extra)
    records = [r for r in log.records if log.split[r["event_id"]] != cold_start.HELD_OUT]
    train_ids = {event_id for event_id, part in log.split.items() if part == "train"}
    val_ids = {event_id for event_id, part in log.split.items() if part == "val"}
    return loop.fit(records, log.labels, log.aggregates, config, out, train_ids, val_ids, extra)


def synthetic_records(spec: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Contract records and transaction labels of the synthetic stream."""
    records, labels = [], {}
    for topic, msg in synthetic.generate(**spec):
        records.append(synthetic.to_record(topic, msg))
        if topic == "transactions":
            labels[msg["event_id"]] = int(msg["label"])
    return records, labels


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="synthetic stream and setting (default: demo); with --dataset, a base setting instead of TrainConfig()",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", choices=["transformer", "gru"])
    parser.add_argument("--no-text", action="store_true", help="train without text embeddings")
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", help="auto (default: cuda when available, else cpu), cpu or cuda[:N]")
    parser.add_argument(
        "--dataset",
        type=dataset_argument,
        metavar="{" + ",".join(DATASETS) + "}",
        help="train on a data set, not synthetic (with its DATASET_DEFAULTS setting, about 15 minutes); "
        "`sequences` reads any sequence file (models.data.datasets.load_sequences)",
    )
    parser.add_argument("--data", help="path of the data set (file or folder, as its loader expects)")
    parser.add_argument(
        "--set",
        nargs="*",
        action="extend",  # --set A B and --set A --set B alike (with the default, the last --set alone counted)
        default=[],
        metavar="FIELD=VALUE",
        help="TrainConfig overrides, e.g. --set max_len=50 lr=3e-3 sampling=user_last loss_weights.time=0",
    )
    cold_start.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.cold_items is not None and args.dataset is None:
        parser.error("--cold-items needs a leave-one-out --dataset")
    return args


def config_for(args: argparse.Namespace) -> TrainConfig:
    """The base setting, then the data set's defaults, then the flags, then --set.

    The base is the --preset's setting; without one, TrainConfig() for a data set (the demo preset's
    choices, such as no item ids, belong to the synthetic fraud stream, not to a recommender's data)
    and the demo preset for the synthetic stream.
    """
    if args.preset or not args.dataset:
        base = PRESETS[args.preset or DEFAULT_PRESET][1]
    else:
        base = TrainConfig()
    config = apply_overrides(base, DATASET_DEFAULTS.get(args.dataset or "", []))
    overrides: dict[str, Any] = {"use_text": False} if args.no_text else {}
    overrides |= {"kind": args.kind} if args.kind else {}
    overrides |= {"max_seconds": args.max_seconds} if args.max_seconds else {}
    overrides |= {"device": args.device} if args.device else {}
    return apply_overrides(replace(config, **overrides), args.set)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = config_for(args)
    if args.dataset:
        log = load_dataset(args.dataset, args.data)
        extra = None
        if args.cold_items is not None:
            log, cold = cold_start.hold_out(log, args.cold_items, args.cold_seed)
            extra = {"held_out_items": cold_start.protocol(args.cold_items, args.cold_seed, cold)}
        summary = fit_event_log(log, config, args.out, extra)
        if args.cold_items is not None:  # the held-out items stand for the items the stream will bring
            bonus = cold_start.choose_new_item_bonus(args.out, log, device=str(resolve_device(config.device)))
            if bonus is not None:
                summary["new_item_bonus"] = bonus
    else:
        records, labels = synthetic_records(PRESETS[args.preset or DEFAULT_PRESET][0])
        summary = loop.fit(records, labels, None, config, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
