"""Command line evaluation: baselines or a checkpoint on one data set -> markdown table, report and plots."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models import baselines as bl  # noqa: E402
from models import datasets as ds  # noqa: E402
from models import metrics, risk_trees  # noqa: E402
from models.features import Window  # noqa: E402

NEXT_ITEM_LOADERS: dict[str, Callable[[str], ds.EventLog]] = {
    "ml1m": ds.load_ml1m,
    "beauty": ds.load_beauty,
    "movielens-small": ds.load_movielens_small,
}
NEXT_ITEM_BASELINES = ("pop", "markov", "sasrec", "gru")
GBDT_GRID = {"n_estimators": (100, 300), "num_leaves": (15, 63), "learning_rate": (0.05, 0.1)}
KS = (5, 10, 20)
FoldScorer = Callable[[list[str], list[str]], np.ndarray]  # (train event ids, test event ids) -> test scores


def result_row(model: str, split: str, metrics: Mapping[str, object]) -> dict[str, object]:
    """One row of a results table: the model, the split, then its metrics."""
    return {"model": model, "split": split, **metrics}


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows of equal keys -> a markdown table (floats with 4 decimals)."""
    cols = list(rows[0])
    fmt = [[f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in fmt])


# ---------------------------------------------------------------- next item


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


class CheckpointItemScores:
    """A baselines.ScoreFn over a checkpoint: LooData histories in, (B, n_items + 1) scores out.

    The checkpoint scores event records (times, actions, text), not item indices, so it is given each
    user's records in the order next_item_ranks passes the histories, and checks that each history
    ends with its window's last item. Catalogue items the checkpoint does not know score -inf.
    """

    def __init__(self, scorer: Any, windows: list[list[dict]], data: bl.LooData) -> None:
        self.scorer, self.windows, self.data = scorer, windows, data
        self.position = 0
        index = {item: i + 1 for i, item in enumerate(data.items)}
        pairs = [(j, index[item]) for j, item in enumerate(scorer.item_ids) if item in index]
        self.source = np.array([j for j, _ in pairs], dtype=np.int64)
        self.target = np.array([i for _, i in pairs], dtype=np.int64)
        self.index = index

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        windows = self.windows[self.position : self.position + len(histories)]
        self.position += len(histories)
        for history, window in zip(histories, windows, strict=True):
            if len(history) and self.index[window[-1]["item_id"]] != history[-1]:
                raise ValueError("checkpoint windows out of step with the histories")
        logits = self.scorer.item_scores([Window(events=w[-200:]) for w in windows])
        scores = np.full((len(histories), self.data.n_items + 1), -np.inf)
        scores[:, self.target] = logits[:, self.source]
        return scores


def checkpoint_next_item(
    path: str, log: ds.EventLog, data: bl.LooData, n_negatives: int, seed: int, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Series]:
    """Validation, test and sampled-test ranks of a checkpoint, by the same full ranking as the
    baselines (its whole catalogue scored, history masked), and its time-to-next prediction (hours)
    before each user's test event."""
    from models.scorer import Scorer

    scorer = Scorer.load(path, device=device)
    train_recs: dict[str, list[dict]] = {u: [] for u in data.users}
    val_recs: dict[str, dict] = {}
    split_of = log.require_split()
    for r in log.records:
        split = split_of[r["event_id"]]
        if split == "train" and r["user_id"] in train_recs:
            train_recs[r["user_id"]].append(r)
        elif split == "val":
            val_recs[r["user_id"]] = r
    val_windows = [train_recs[u] for u in data.users]
    test_windows = [train_recs[u] + [val_recs[u]] for u in data.users]
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
    hours = [
        s.time_to_next_s / 3600
        for start in range(0, len(test_windows), 256)
        for s in scorer.score([Window(events=w[-200:]) for w in test_windows[start : start + 256]])
    ]
    return val, test, sampled, pd.Series(hours, index=data.users)


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


def time_to_next_rows(log: ds.EventLog, predicted: dict[str, pd.Series]) -> list[dict[str, object]]:
    """MAE / RMSE (hours) of the gap before each user's test event: global and per-user median training
    gap, and each checkpoint's prediction (hours, indexed by user)."""
    frame = pd.DataFrame(
        {"user": [r["user_id"] for r in log.records], "ts": [r["ts_ms"] for r in log.records]}
    )
    split = log.require_split()
    frame["split"] = [split[r["event_id"]] for r in log.records]
    frame["gap_h"] = frame.groupby("user", sort=False)["ts"].diff() / 3_600_000
    train_gaps = frame[frame["split"] == "train"].dropna()
    truth = frame[frame["split"] == "test"].set_index("user")["gap_h"]
    per_user = train_gaps.groupby("user")["gap_h"].median().reindex(truth.index)
    global_median = float(train_gaps["gap_h"].median())
    rows = []
    for name, pred in (
        ("global median gap", np.full(len(truth), global_median)),
        ("user median gap", per_user),
        *((name, hours.reindex(truth.index)) for name, hours in predicted.items()),
    ):
        pred = np.nan_to_num(np.asarray(pred, dtype=float), nan=global_median)
        rows.append(
            {"model": name, "MAE (h)": metrics.mae(truth, pred), "RMSE (h)": metrics.rmse(truth, pred)}
        )
    return rows


def next_item_ranks(
    name: str,
    args: argparse.Namespace,
    log: ds.EventLog,
    data: bl.LooData,
    histories: dict[str, bl.TrainHistory],
    time_to_next: dict[str, pd.Series],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation, test and sampled-test ranks of one baseline or checkpoint;
    training curves go to `histories`, a checkpoint's time-to-next predictions to `time_to_next`."""
    if name in ("pop", "markov"):
        score_fn: bl.ScoreFn = (bl.MostPopular() if name == "pop" else bl.Markov()).fit(data)
    elif name in ("sasrec", "gru"):
        config = seqrec_config(args, name, data.n_items)
        model, histories[name] = bl.train_seqrec(data, config, log=lambda m: print(m, flush=True))
        score_fn = bl.seqrec_scorer(model)
    else:
        val, test, sampled, time_to_next[name] = checkpoint_next_item(
            name, log, data, args.negatives, args.seed, args.device
        )
        return val, test, sampled
    val = bl.next_item_ranks(score_fn, data.val_input, data.val_target, data.n_items)
    test = bl.next_item_ranks(score_fn, data.test_input, data.test_target, data.n_items)
    sampled = bl.next_item_ranks(
        score_fn, data.test_input, data.test_target, data.n_items, args.negatives, args.seed
    )
    return val, test, sampled


def run_next_item(args: argparse.Namespace, out: Path) -> str:
    log = NEXT_ITEM_LOADERS[args.dataset](args.data_dir)
    data = bl.loo_data(log)
    rows: list[dict[str, object]] = []
    test_ranks: dict[str, np.ndarray] = {}
    histories: dict[str, bl.TrainHistory] = {}
    time_to_next: dict[str, pd.Series] = {}
    for name in args.model:
        val, test, sampled = next_item_ranks(name, args, log, data, histories, time_to_next)
        test_ranks[name] = test
        for split, ranks in (("val", val), ("test", test)):
            row: dict[str, object] = {"model": name, "split": split} | metrics.ranking_report(ranks, KS)
            use_sampled = split == "test"
            row[f"HR@10 ({args.negatives} neg)"] = metrics.hit_rate(sampled, 10) if use_sampled else "-"
            row[f"NDCG@10 ({args.negatives} neg)"] = metrics.ndcg(sampled, 10) if use_sampled else "-"
            rows.append(row)
    history_plot(
        np.array([len(s) for s in data.test_input]), test_ranks, out.with_name(out.stem + "_by_history.png")
    )
    checkpoints = {name: Path(name) for name in args.model if name not in NEXT_ITEM_BASELINES}
    checkpoint_curves_plot(checkpoints, out.with_name(out.stem + "_checkpoint_training.png"))
    parts = [markdown_table(rows)]
    if histories:
        curves_plot(histories, out.with_name(out.stem + "_training.png"))
        parts.append(
            "\n".join(
                f"- {n}: {len(h.loss)} epochs in {h.seconds:.0f} s, best validation NDCG@10 {max(h.val_ndcg10):.4f}"
                f" (epoch {h.val_epochs[int(np.argmax(h.val_ndcg10))]})"
                for n, h in histories.items()
            )
        )
    if args.dataset == "movielens-small":
        parts.append(
            "Time to next event (test event of each user):\n\n"
            + markdown_table(time_to_next_rows(log, time_to_next))
        )
    notes = (
        f"{len(data.train)} users, {data.n_items} items. Full ranking over all items with the user's history "
        "masked, ties counted pessimistically; sampled: uniform negatives not in the history (seeded). "
        f"Data notes: {log.notes}."
    )
    return "\n\n".join([notes, *parts])


# ---------------------------------------------------------------- fraud


def customer_windows(log: ds.EventLog, ids: Sequence[str], window: int = 50) -> list[Window]:
    """Each transaction as the pipeline hands it over: the customer's last `window` events, its aggregates."""
    position = {r["event_id"]: i for i, r in enumerate(log.records)}
    windows = []
    for e in ids:
        i = position[e]
        user = log.records[i]["user_id"]
        first = i
        while first > 0 and i - first < window - 1 and log.records[first - 1]["user_id"] == user:
            first -= 1
        windows.append(Window(events=log.records[first : i + 1], aggregates=log.aggregates[e]))  # type: ignore[index]
    return windows


def checkpoint_fraud_scores(
    path: str, log: ds.EventLog, ids: Sequence[str], window: int = 50, device: str = "auto"
) -> np.ndarray:
    """Risk of each transaction from a checkpoint: the customer's last `window` events and its aggregates."""
    from models.scorer import Scorer

    return scorer_risks(Scorer.load(path, device=device), customer_windows(log, ids, window))


def scorer_risks(scorer: Any, windows: Sequence[Window], batch: int = 512) -> np.ndarray:
    """(N,) risk of each window from a models.scorer.Scorer, in batches."""
    return np.array(
        [s.risk for k in range(0, len(windows), batch) for s in scorer.score(windows[k : k + batch])]
    )


def fraud_plots(test: pd.DataFrame, scores: dict[str, np.ndarray], path_stem: Path) -> None:
    fig, (pr, cal) = plt.subplots(1, 2, figsize=(10, 4))
    y = test["label"].to_numpy()
    for name, s in scores.items():
        precision, recall = metrics.precision_recall_curve(y, s)
        pr.step(recall, precision, where="post", label=f"{name} (AP {metrics.average_precision(y, s):.3f})")
        bins = np.clip((s * 10).astype(int), 0, 9)
        filled = [b for b in range(10) if (bins == b).any()]
        cal.plot(
            [s[bins == b].mean() for b in filled], [y[bins == b].mean() for b in filled], "o-", label=name
        )
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall, test week(s)")
    cal.plot([0, 1], [0, 1], "k--", lw=0.8)
    cal.set(xlabel="mean predicted risk", ylabel="observed fraud rate", title="calibration (10 bins)")
    pr.legend()
    fig.tight_layout()
    fig.savefig(path_stem.with_name(path_stem.stem + "_pr_calibration.png"), dpi=120)
    plt.close(fig)


def rank_mean(members: list[dict[ds.Fold, np.ndarray]], splits: dict) -> FoldScorer:
    """Fold scorer averaging the members' already computed fold scores after a per-fold rank transform."""
    by_ids = {tuple(splits[f][1]): f for f in splits}

    def score(train_ids: list[str], test_ids: list[str]) -> np.ndarray:
        fold = by_ids[tuple(test_ids)]
        ranks = [pd.Series(m[fold]).rank(pct=True).to_numpy() for m in members]
        return np.mean(ranks, axis=0)

    return score


def temporal_root(spec: str) -> Path:
    """Folder of a temporal spec's per-fold checkpoints (one subfolder per training-week start)."""
    return Path("checkpoints") / ("fraud_" + hashlib.sha1(spec.encode()).hexdigest()[:8])


def temporal_fold_scorer(spec: str, log: ds.EventLog, args: argparse.Namespace) -> FoldScorer:
    """Train our temporal model on each fold's training week and score its assessment events.

    spec is `temporal` or `temporal:FIELD=VALUE,...` (models.train TrainConfig overrides). Inputs of a
    training window: the customer's events from `history_days` before the training week (no labels);
    only training-week transactions carry risk labels; the last training day is the early-stopping
    validation set. Checkpoints go to checkpoints/fraud_<spec hash>/<train_start>.
    """

    from models import train as tr

    assignments = [a for a in spec.partition(":")[2].split(",") if a]
    base = tr.TrainConfig(
        d_model=32,
        n_layers=1,
        max_len=30,
        dropout=0.1,
        batch_size=128,
        lr=3e-3,
        max_seconds=90,
        eval_every=100,
        patience=4,
        sampling="labelled",
        use_text=False,
        val_windows=20_000,
        loss_weights={"item": 0.0, "action": 0.0, "risk": 1.0, "time": 0.0},
        device=args.device,
    )
    config = tr.apply_overrides(base, assignments)
    root = temporal_root(spec)
    ts = np.fromiter((r["ts_ms"] for r in log.records), dtype=np.int64, count=len(log.records))
    history_ms = 21 * 86_400_000

    def score(train_ids: list[str], test_ids: list[str]) -> np.ndarray:
        train_set = set(train_ids)
        train_ms = np.array([ts[i] for i, r in enumerate(log.records) if r["event_id"] in train_set])
        first, last = int(train_ms.min()), int(train_ms.max())
        last_day = (last // 86_400_000) * 86_400_000
        keep = [r for r, t in zip(log.records, ts, strict=True) if first - history_ms <= t <= last]
        labels = {e: log.labels[e] for e in train_ids}  # type: ignore[index]
        val_ids = {e for e in train_ids if ts_of[e] >= last_day}
        fit_ids = {r["event_id"] for r in keep} - val_ids
        out = root / str(dt.datetime.fromtimestamp(first / 1000, dt.UTC).date())
        summary = tr.fit(keep, labels, log.aggregates, config, out, fit_ids, val_ids)
        print(json.dumps({"fold": str(out), "best": summary["best"]}), flush=True)
        return checkpoint_fraud_scores(str(out), log, test_ids, device=args.device)

    ts_of = dict(zip((r["event_id"] for r in log.records), ts.tolist(), strict=True))
    return score


LIGHTGBM_FEATURES = {  # --model name -> feature columns of models.baselines.fraud_frame
    "lightgbm": bl.FRAUD_FEATURES,  # the handbook's
    "lightgbm_ratios": risk_trees.RATIO_FEATURES,  # + the derived ratios the temporal model also reads
    "lightgbm_history": risk_trees.HISTORY_FEATURES,  # + the terminal's known fraud history (v6 trees)
}
SERVED_TREES = "risk_trees"  # --model name: the bag a risk_trees checkpoint carries, alone


def run_fraud(args: argparse.Namespace, out: Path) -> str:
    valid_folds = ds.prequential_folds(args.valid_start, n_folds=4)
    test_folds = ds.prequential_folds(args.test_start, n_folds=args.test_folds)
    log = ds.load_fraud_handbook(args.data_dir, since=min(f.train_start for f in valid_folds + test_folds))
    frame = bl.fraud_frame(log)
    splits = {f: ds.fold_event_ids(log, f) for f in valid_folds + test_folds}
    grid = [dict(zip(GBDT_GRID, v, strict=True)) for v in itertools.product(*GBDT_GRID.values())]
    if args.lightgbm_params:  # one setting (e.g. the one an earlier grid run chose) instead of the grid
        grid = [
            {k: float(v) if "." in v else int(v) for k, v in (a.split("=") for a in args.lightgbm_params)}
        ]

    def lgbm(params: dict[str, float | int], features: tuple[str, ...]) -> FoldScorer:
        def score(train_ids: list[str], test_ids: list[str]) -> np.ndarray:
            model = bl.fit_lightgbm(frame.loc[train_ids], params, args.seed, features)
            return np.asarray(model.predict_proba(frame.loc[test_ids, list(features)]))[:, 1]

        return score

    def served_trees(train_ids: list[str], test_ids: list[str]) -> np.ndarray:
        columns = list(risk_trees.TREE_FEATURES)
        train = frame.loc[train_ids]
        bag = risk_trees.fit(
            train[columns].to_numpy(),
            train["label"].to_numpy(),
            risk_trees.PARAMS,
            args.seed,
            risk_trees.BAGS,
        )
        return risk_trees.RiskTrees(bag).log_odds(frame.loc[test_ids, columns].to_numpy())

    def checkpoint(path: str) -> FoldScorer:
        return lambda train_ids, test_ids: checkpoint_fraud_scores(path, log, test_ids, device=args.device)

    fold_scores: dict[str, dict[ds.Fold, np.ndarray]] = {}  # model label -> fold -> assessment scores

    def mean_report(
        scorer: FoldScorer, folds: list[ds.Fold], label: str = ""
    ) -> tuple[dict[str, float], np.ndarray]:
        scores = [scorer(*splits[f]) for f in folds]
        fold_scores.setdefault(label, {}).update(zip(folds, scores, strict=True))
        reports = [bl.fraud_report(frame.loc[splits[f][1]], s) for f, s in zip(folds, scores, strict=True)]
        return pd.DataFrame(reports).mean().to_dict(), np.concatenate(scores)

    rows: list[dict[str, object]] = []
    test_scores: dict[str, np.ndarray] = {}
    for name in args.model:
        if name in LIGHTGBM_FEATURES:
            features = LIGHTGBM_FEATURES[name]
            search = [
                (params, mean_report(lgbm(params, features), valid_folds, f"{name} {params}")[0])
                for params in grid
            ]
            rows += [result_row(f"{name} {p}", "valid (4 folds)", m) for p, m in search]
            best = max(search, key=lambda s: s[1]["AP"])[0]
            label, scorer = f"{name} {best} (best validation AP)", lgbm(best, features)
            fold_scores[name] = fold_scores[f"{name} {best}"]
        elif name == SERVED_TREES:
            label, scorer = f"{name} (bag of {risk_trees.BAGS}, {risk_trees.PARAMS})", served_trees
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        elif name.startswith("ensemble"):
            members = name.removeprefix("ensemble:").split("+")
            label, scorer = (
                f"{name} (mean of per-fold ranks of {', '.join(members)})",
                rank_mean([fold_scores[m] for m in members], splits),
            )
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds)[0]))
        elif name.startswith("temporal"):
            label, scorer = name, temporal_fold_scorer(name, log, args)
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        else:
            label, scorer = name, checkpoint(name)
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        if test_folds:  # --test-folds 0: validation only, for choosing settings
            test, test_scores[name] = mean_report(scorer, test_folds, name)
            rows.append(result_row(label, f"test ({len(test_folds)} week)", test))
        print(markdown_table(rows[-1:]), flush=True)
    test_ids = [e for f in test_folds for e in splits[f][1]]
    if test_ids:
        fraud_plots(frame.loc[test_ids], test_scores, out)
    folds = {
        f"{name} {fold.train_start}": temporal_root(name) / str(fold.train_start)
        for name in args.model
        if name.startswith("temporal")
        for fold in valid_folds + test_folds
    }
    checkpoint_curves_plot(folds, out.with_name(out.stem + "_training.png"))
    fold_text = (
        "; ".join(
            f"train {f.train_start}..{f.train_end} test {f.test_start}..{f.test_end}" for f in test_folds
        )
        or "none (validation only)"
    )
    notes = (
        f"Prequential protocol: validation folds train from {valid_folds[0].train_start} weekly, assessed "
        f"{valid_folds[0].test_start}..{valid_folds[-1].test_end} (end exclusive); test folds: {fold_text}. "
        "Known-compromised customers dropped from assessment days; hyper-parameters chosen by mean validation AP. "
        f"Data notes: {log.notes}."
    )
    return notes + "\n\n" + markdown_table(rows)


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, choices=[*NEXT_ITEM_LOADERS, "fraud"])
    p.add_argument("--data-dir", required=True, help="data folder, or the parquet file for fraud")
    p.add_argument(
        "--model",
        nargs="+",
        help="baseline names (pop markov sasrec gru | lightgbm lightgbm_ratios lightgbm_history risk_trees) or checkpoint paths",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="markdown report path; plots are written next to it"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negatives", type=int, default=100, help="sampled negatives for the sampled metrics")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--time-budget-s", type=float, default=540.0, help="per neural model training budget")
    p.add_argument("--valid-start", type=dt.date.fromisoformat, default=dt.date(2018, 6, 20))
    p.add_argument("--test-start", type=dt.date.fromisoformat, default=dt.date(2018, 7, 25))
    p.add_argument("--test-folds", type=int, default=1, help="fraud: 0 scores the validation folds only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu or cuda[:N]")
    p.add_argument(
        "--lightgbm-params",
        nargs="*",
        metavar="NAME=VALUE",
        help="fraud: score this LightGBM setting only instead of searching GBDT_GRID",
    )
    args = p.parse_args(argv)
    if args.model is None:
        args.model = ["lightgbm"] if args.dataset == "fraud" else list(NEXT_ITEM_BASELINES)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = run_fraud(args, args.out) if args.dataset == "fraud" else run_next_item(args, args.out)
    command = "python -m models.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = f"# {args.dataset}: {', '.join(args.model)}\n\nCommand: `{command}`\n\n{body}\n"
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
