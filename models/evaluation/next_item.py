"""Next-item and time-to-next evaluation on leave-one-out splits: the baselines, the checkpoints, their
ranks, MAE / RMSE of the time to the next event, and the plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models import metrics  # noqa: E402
from models.data import datasets as ds  # noqa: E402
from models.evaluation import baselines as bl  # noqa: E402
from models.evaluation.checkpoint_ranking import MAX_WINDOW, CheckpointItemScores, loo_windows  # noqa: E402
from models.evaluation.cold_start import GenrePopularity, cold_warm_rows, hold_out, protocol  # noqa: E402
from models.evaluation.report import markdown_table
from models.evaluation.time_to_next import loo_tables
from models.features.featurize import Window, catalogue_texts  # noqa: E402

NEXT_ITEM_BASELINES = ("pop", "markov", "sasrec", "gru")  # the default --model list
BASELINES = (*NEXT_ITEM_BASELINES, "genre_pop")  # genre_pop: popularity within the user's genres


KS = (5, 10, 20)


def seqrec_config(args: argparse.Namespace, arch: str, n_items: int) -> bl.SeqRecConfig:
    return bl.SeqRecConfig(
        arch=arch,
        n_items=n_items,
        max_len=args.max_len,
        d_model=args.d_model,
        dropout=args.dropout,
        lr=args.lr,
        max_epochs=args.epochs,
        time_budget_s=args.time_budget_s,
        seed=args.seed,
        device=args.device,
    )


def checkpoint_next_item(
    path: str,
    log: ds.EventLog,
    data: bl.LooData,
    n_negatives: int,
    seed: int,
    device: str = "auto",
    held_out: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, pd.Series]]:
    """Validation, test and sampled-test ranks of a checkpoint, by the same full ranking as the baselines
    (its whole catalogue scored, history masked), and its time-to-next predictions (hours, by user) before
    each user's validation and test events.

    A checkpoint with text item vectors ranks the items it never trained on from their text (the log's
    catalogue is added to its Scorer, as the stream would add them); one with id vectors alone cannot
    (they score -inf). `held_out` is the cold-start protocol evaluated (None: none); the checkpoint must
    have been trained under the same one."""
    from models.serving.scorer import Scorer

    scorer = Scorer.load(path, device=device)
    trained_without = scorer.ckpt.extra.get("held_out_items")
    if (trained_without or None) != (held_out or None):
        raise ValueError(
            f"{path} was trained with held-out items {trained_without}, evaluated with {held_out}: "
            "train and evaluate with the same --cold-items and --cold-seed"
        )
    scorer.add_items(catalogue_texts(log.records))
    val_windows, test_windows = loo_windows(log, data)
    val = bl.next_item_ranks(
        CheckpointItemScores(scorer, val_windows, data), data.val_input, data.val_target, data.n_items
    )
    test = bl.next_item_ranks(
        CheckpointItemScores(scorer, test_windows, data), data.test_input, data.test_target, data.n_items
    )
    sampled = bl.next_item_ranks(
        CheckpointItemScores(scorer, test_windows, data),
        data.test_input,
        data.test_target,
        data.n_items,
        n_negatives,
        seed,
    )
    hours = {
        split: pd.Series(
            [
                s.time_to_next_s / 3600
                for start in range(0, len(windows), 256)
                for s in scorer.score([Window(events=w[-MAX_WINDOW:]) for w in windows[start : start + 256]])
            ],
            index=data.users,
        )
        for split, windows in (("val", val_windows), ("test", test_windows))
    }
    return val, test, sampled, hours


def history_plot(lengths: np.ndarray, ranks_by_model: dict[str, np.ndarray], path: Path) -> None:
    """Test NDCG@10 by training-history length (quartile buckets)."""
    edges = np.unique(np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0]))
    bucket = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{int(edges[b])}-{int(edges[b + 1])}" for b in range(len(edges) - 1)]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(ranks_by_model), 1)
    for i, (name, ranks) in enumerate(ranks_by_model.items()):
        values = [metrics.ndcg(ranks[bucket == b], 10) for b in range(len(labels))]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_xlabel("history length (items)")
    ax.set_ylabel("test NDCG@10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_plot(histories: dict[str, bl.TrainHistory], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, h in histories.items():
        left.plot(np.arange(1, len(h.loss) + 1), h.loss, label=name)
        right.plot(h.val_epochs, h.val_ndcg10, marker="o", label=name)
    left.set(xlabel="epoch", ylabel="training cross-entropy")
    right.set(xlabel="epoch", ylabel="validation NDCG@10")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def checkpoint_curves_plot(folders: dict[str, Path], path: Path) -> bool:
    """Training loss and the validation-sample metric by step from each checkpoint's metrics.json history:
    risk AP for a risk-only model, else item NDCG@10 (else the validation loss). False (no file) when
    no checkpoint has a history."""
    runs = {}
    for name, folder in folders.items():
        metrics_file, config_file = Path(folder) / "metrics.json", Path(folder) / "config.json"
        history = json.loads(metrics_file.read_text()).get("history") if metrics_file.is_file() else None
        if not history:
            continue
        weights = json.loads(config_file.read_text())["extra"].get("train_config", {}).get("loss_weights", {})
        last = history[-1]
        if "risk_ap" in last and weights.get("item", 1.0) == 0:
            metric = "risk_ap"
        else:
            metric = next((m for m in ("item_ndcg10", "risk_ap") if m in last), "loss")
        runs[name] = (history, metric)
    if not runs:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4 + 0.12 * len(runs)))
    for name, (history, metric) in runs.items():
        steps = [h["step"] for h in history]
        left.plot(steps, [h["train_loss"] for h in history])
        right.plot(steps, [h.get(metric, np.nan) for h in history], marker="o", label=f"{name}: {metric}")
    left.set(xlabel="step", ylabel="training loss (last batch)")
    right.set(xlabel="step", ylabel="validation sample")
    fig.legend(loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * ((len(runs) + 1) // 2), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def next_item_ranks(
    name: str,
    args: argparse.Namespace,
    log: ds.EventLog,
    data: bl.LooData,
    histories: dict[str, bl.TrainHistory],
    time_to_next: dict[str, dict[str, pd.Series]],
    held_out: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation, test and sampled-test ranks of one baseline or checkpoint;
    training curves go to `histories`, a checkpoint's time-to-next predictions to `time_to_next`.
    `held_out`: the cold-start protocol the log was held out by (None: none)."""
    if name in ("pop", "markov"):
        score_fn: bl.ScoreFn = (bl.MostPopular() if name == "pop" else bl.Markov()).fit(data)
    elif name == "genre_pop":
        categories = {str(r["item_id"]): r["category"] or "" for r in log.records}
        score_fn = GenrePopularity().fit(data, categories)
    elif name in ("sasrec", "gru"):
        config = seqrec_config(args, name, data.n_items)
        model, histories[name] = bl.train_seqrec(data, config, log=lambda m: print(m, flush=True))
        score_fn = bl.seqrec_scorer(model)
    else:
        val, test, sampled, time_to_next[name] = checkpoint_next_item(
            name, log, data, args.negatives, args.seed, args.device, held_out
        )
        return val, test, sampled
    val = bl.next_item_ranks(score_fn, data.val_input, data.val_target, data.n_items)
    test = bl.next_item_ranks(score_fn, data.test_input, data.test_target, data.n_items)
    sampled = bl.next_item_ranks(
        score_fn, data.test_input, data.test_target, data.n_items, args.negatives, args.seed
    )
    return val, test, sampled


def run_next_item(args: argparse.Namespace, out: Path) -> str:
    log = ds.load(args.dataset, args.data_dir)
    cold: set[str] | None = None
    held_out = None
    if args.cold_items is not None:
        log, cold = hold_out(log, args.cold_items, args.cold_seed)
        held_out = protocol(args.cold_items, args.cold_seed, cold)
    data = bl.loo_data(log)
    cold_rows: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []
    test_ranks: dict[str, np.ndarray] = {}
    histories: dict[str, bl.TrainHistory] = {}
    time_to_next: dict[str, dict[str, pd.Series]] = {}
    for name in args.model:
        val, test, sampled = next_item_ranks(name, args, log, data, histories, time_to_next, held_out)
        test_ranks[name] = test
        if cold is not None:
            cold_rows += cold_warm_rows(name, val, test, data, cold)
        for split, ranks in (("val", val), ("test", test)):
            row: dict[str, object] = {"model": name, "split": split} | metrics.ranking_report(ranks, KS)
            use_sampled = split == "test"
            row[f"HR@10 ({args.negatives} neg)"] = metrics.hit_rate(sampled, 10) if use_sampled else "-"
            row[f"NDCG@10 ({args.negatives} neg)"] = metrics.ndcg(sampled, 10) if use_sampled else "-"
            rows.append(row)
    history_plot(
        np.array([len(s) for s in data.test_input]), test_ranks, out.with_name(out.stem + "_by_history.png")
    )
    checkpoints = {name: Path(name) for name in args.model if name not in BASELINES}
    checkpoint_curves_plot(checkpoints, out.with_name(out.stem + "_checkpoint_training.png"))
    parts = [markdown_table(rows)]
    if cold is not None:
        parts.append(
            f"Cold start: {len(cold)} of {data.n_items} items held out of training (never a target, never an "
            "input), kept in the catalogue; NDCG@10 / HR@10 (full ranking, as above) on the users whose "
            "target is one of them (cold) and on the others (warm):\n\n" + markdown_table(cold_rows)
        )
    if histories:
        curves_plot(histories, out.with_name(out.stem + "_training.png"))
        parts.append(
            "\n".join(
                f"- {n}: {len(h.loss)} epochs in {h.seconds:.0f} s, best validation NDCG@10 {max(h.val_ndcg10):.4f}"
                f" (epoch {h.val_epochs[int(np.argmax(h.val_ndcg10))]})"
                for n, h in histories.items()
            )
        )
    if not log.synthetic_time:  # real timestamps: time to next is measurable
        parts.append(
            "Time to next event (hours; within 1 h / 24 h / 7 days: does the user return by then):\n\n"
            + loo_tables(log, time_to_next)
        )
    notes = (
        f"{len(data.train)} users, {data.n_items} items. Full ranking over all items with the user's history "
        "masked, ties counted pessimistically; sampled: uniform negatives not in the history (seeded). "
        f"Data notes: {log.notes}."
    )
    return "\n\n".join([notes, *parts])
