"""Fraud evaluation on weekly folds: LightGBM baselines (grid chosen on the validation folds), the served
risk trees, temporal checkpoints and rank ensembles, with AP / ROC-AUC and plots."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
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
from models.evaluation.next_item import checkpoint_curves_plot
from models.evaluation.report import markdown_table, result_row
from models.features.featurize import Window  # noqa: E402
from models.model import risk_trees  # noqa: E402
from models.training.train_config import FRAUD_TEMPORAL, apply_overrides

GBDT_GRID = {"n_estimators": (100, 300), "num_leaves": (15, 63), "learning_rate": (0.05, 0.1)}


FoldScorer = Callable[[list[str], list[str]], np.ndarray]  # (train event ids, test event ids) -> test scores


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
    from models.serving.scorer import Scorer

    return scorer_risks(Scorer.load(path, device=device), customer_windows(log, ids, window))


def scorer_risks(scorer: Any, windows: Sequence[Window], batch: int = 512) -> np.ndarray:
    """(N,) risk of each window from a models.serving.scorer.Scorer, in batches."""
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

    from models.training import loop

    assignments = [a for a in spec.partition(":")[2].split(",") if a]
    config = apply_overrides(replace(FRAUD_TEMPORAL, device=args.device), assignments)
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
        summary = loop.fit(keep, labels, log.aggregates, config, out, fit_ids, val_ids)
        print(json.dumps({"fold": str(out), "best": summary["best"]}), flush=True)
        return checkpoint_fraud_scores(str(out), log, test_ids, device=args.device)

    ts_of = dict(zip((r["event_id"] for r in log.records), ts.tolist(), strict=True))
    return score


LIGHTGBM_FEATURES = {  # --model name -> feature columns of models.evaluation.baselines.fraud_frame
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
    fold_reports: dict[str, dict[ds.Fold, dict[str, float]]] = {}  # model label -> fold -> its figures

    def mean_report(
        scorer: FoldScorer, folds: list[ds.Fold], label: str = ""
    ) -> tuple[dict[str, float], np.ndarray]:
        scores = [scorer(*splits[f]) for f in folds]
        fold_scores.setdefault(label, {}).update(zip(folds, scores, strict=True))
        reports = [bl.fraud_report(frame.loc[splits[f][1]], s) for f, s in zip(folds, scores, strict=True)]
        fold_reports.setdefault(label, {}).update(zip(folds, reports, strict=True))
        return pd.DataFrame(reports).mean().to_dict(), np.concatenate(scores)

    def week_rows(label: str, key: str, folds: list[ds.Fold], split: str) -> list[dict[str, object]]:
        """Each assessment week's figures beside the mean (weeks differ by more than settings do)."""
        if len(folds) < 2:
            return []
        return [result_row(label, f"{split} week {f.test_start}", fold_reports[key][f]) for f in folds]

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
            fold_reports[name] = fold_reports[f"{name} {best}"]
        elif name == SERVED_TREES:
            label, scorer = f"{name} (bag of {risk_trees.BAGS}, {risk_trees.PARAMS})", served_trees
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        elif name.startswith("ensemble"):
            members = name.removeprefix("ensemble:").split("+")
            label, scorer = (
                f"{name} (mean of per-fold ranks of {', '.join(members)})",
                rank_mean([fold_scores[m] for m in members], splits),
            )
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        elif name.startswith("temporal"):
            label, scorer = name, temporal_fold_scorer(name, log, args)
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        else:
            label, scorer = name, checkpoint(name)
            rows.append(result_row(label, "valid (4 folds)", mean_report(scorer, valid_folds, name)[0]))
        rows += week_rows(label, name, valid_folds, "valid")
        if test_folds:  # --test-folds 0: validation only, for choosing settings
            test, test_scores[name] = mean_report(scorer, test_folds, name)
            rows.append(
                result_row(label, f"test ({len(test_folds)} week{'s' * (len(test_folds) > 1)})", test)
            )
            rows += week_rows(label, name, test_folds, "test")
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
