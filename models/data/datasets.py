"""Data adapters: every offline data set becomes one `EventLog` of contract-shaped event records."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from models.features import aggregates as agg
from models.features.replay import replay_aggregates

SYNTHETIC_STEP_MS = 60_000
RECORD_KEYS = (
    "event_id",
    "kind",
    "user_id",
    "ts_ms",
    "item_id",
    "action",
    "amount",
    "value",
    "title",
    "category",
)


@dataclass
class EventLog:
    """A data set as contract event records (sorted by user, then time, ties in file order).

    `split` maps event_id -> "train" | "val" | "test" for leave-one-out data sets and is None for
    the fraud data, whose protocol is time-based (`prequential_folds`, `fold_event_ids`).
    """

    name: str
    records: list[dict]
    labels: dict[str, int] | None
    aggregates: dict[str, dict[str, float]] | None
    has_text: bool
    split: dict[str, str] | None
    synthetic_time: bool = False
    notes: str = ""

    def require_split(self) -> dict[str, str]:
        """event id -> "train" / "val" / "test"; ValueError for a log loaded without its split."""
        if self.split is None:
            raise ValueError(f"{self.name} has no train/val/test split")
        return self.split

    def sequences(self, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, list[str]]:
        """Item ids per user, oldest first, keeping only events whose split is in `splits`."""
        out: dict[str, list[str]] = {}
        for r in self.records:
            if self.split is None or self.split[r["event_id"]] in splits:
                out.setdefault(r["user_id"], []).append(r["item_id"])
        return out


class Fold(NamedTuple):
    """One prequential fold; every end is exclusive (dates are UTC days)."""

    train_start: dt.date
    train_end: dt.date
    test_start: dt.date
    test_end: dt.date


def _frame_to_records(df: pd.DataFrame) -> list[dict]:
    """Sort by user then time (stable) and emit plain dicts with exactly the contract keys."""
    df = df.sort_values(["user_id", "ts_ms"], kind="stable")
    df = df.astype({"event_id": str, "user_id": str, "item_id": str, "ts_ms": "int64"})
    for key in RECORD_KEYS:
        if key not in df:
            df[key] = None
    records = df[list(RECORD_KEYS)].to_dict("records")
    for r in records:  # NaN from pandas -> None, numpy scalars -> Python scalars (JSON-serialisable)
        r["ts_ms"] = int(r["ts_ms"])
        for key in ("amount", "value", "title", "category"):
            v = r[key]
            r[key] = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    return records


def _loo_split(df: pd.DataFrame) -> pd.Series:
    """Per-user leave-one-out over a frame already sorted by user then time: last test, second last val."""
    from_end = df.groupby("user_id", sort=False).cumcount(ascending=False)
    return pd.Series(np.select([from_end == 0, from_end == 1], ["test", "val"], "train"), index=df.index)


def _sequence_log(name: str, df: pd.DataFrame, has_text: bool, notes: str) -> EventLog:
    """Shared tail of the leave-one-out click loaders: synthetic time from the position."""
    df = df.assign(kind="click", action="rate", ts_ms=df["pos"].astype("int64") * SYNTHETIC_STEP_MS)
    df["event_id"] = df["user_id"].astype(str) + ":" + df["pos"].astype(str)
    split = dict(zip(df["event_id"], df["split"], strict=True))
    return EventLog(
        name, _frame_to_records(df), None, None, has_text, split, synthetic_time=True, notes=notes
    )


def _file_in(path: str | Path, default_name: str) -> Path:
    """`path` itself when it is a file, else `default_name` in that folder."""
    path = Path(path)
    return path if path.is_file() else path / default_name


def load_ml1m(data_dir: str | Path) -> EventLog:
    """MovieLens-1M leave-one-out sequences (DiffuRec preprocessing) with titles and genres: the folder
    (ml1m_sequences_loo.csv and movies.csv) or the sequences file, with movies.csv beside it."""
    seq_file = _file_in(data_dir, "ml1m_sequences_loo.csv")
    seq = pd.read_csv(seq_file)
    movies = pd.read_csv(seq_file.parent / "movies.csv").rename(columns={"genres": "category"})
    df = seq.merge(movies, on="movie_id", how="left").rename(columns={"movie_id": "item_id"})
    notes = "no timestamps in the published sequences: ts_ms = pos * 60 s (synthetic); split as published"
    return _sequence_log("ml1m", df, True, notes)


def load_beauty(data_dir: str | Path) -> EventLog:
    """Amazon Beauty 5-core leave-one-out sequences (S3Rec preprocessing); re-indexed ids, no text: the
    folder or the file (any file of the same columns: user_idx, pos, item_idx, split)."""
    seq = pd.read_csv(_file_in(data_dir, "amazon_beauty_sequences_loo.csv"))
    df = seq.rename(columns={"user_idx": "user_id", "item_idx": "item_id"})
    notes = "ids only; no timestamps: ts_ms = pos * 60 s (synthetic); split as published"
    return _sequence_log("beauty", df, False, notes)


SEQUENCE_COLUMNS = {  # load_sequences: the names each column may have (first found wins)
    "user_id": ("user_id", "user", "user_idx", "userId", "session_id", "SessionId"),
    "item_id": ("item_id", "item", "item_idx", "movie_id", "movieId", "ItemId"),
    "timestamp": ("timestamp", "ts", "time", "Time"),  # seconds since the epoch
    "pos": ("pos", "position"),
}


def load_sequences(path: str | Path) -> EventLog:
    """Any sequence file (CSV, or Parquet by its suffix): a user column, an item column, a timestamp (seconds)
    or a position column to order each user's events, and optionally `split` (train / val / test; without
    it, per-user leave-one-out: last event test, second last validation) and `title` / `category` (event
    text). Column names are matched as SEQUENCE_COLUMNS lists; ValueError names what is missing."""
    path = Path(path)
    raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    found = {
        key: next((name for name in names if name in raw.columns), None)
        for key, names in SEQUENCE_COLUMNS.items()
    }
    missing = [key for key in ("user_id", "item_id") if found[key] is None]
    if missing or (found["timestamp"] is None and found["pos"] is None):
        raise ValueError(
            f"{path}: needs a user, an item and a timestamp or position column; missing {missing or ['order']}"
            f" (names accepted: {SEQUENCE_COLUMNS}); columns found: {list(raw.columns)}"
        )
    df = pd.DataFrame({"user_id": raw[found["user_id"]], "item_id": raw[found["item_id"]]})
    for text in ("title", "category"):
        if text in raw.columns:
            df[text] = raw[text].astype(str)
    real_time = found["timestamp"] is not None
    df["ts_ms"] = (
        raw[found["timestamp"]].astype("int64") * 1000
        if real_time
        else raw[found["pos"]].astype("int64") * SYNTHETIC_STEP_MS
    )
    df = df.assign(kind="click", action="rate", event_id=np.arange(len(df)).astype(str))
    df = df.sort_values(["user_id", "ts_ms"], kind="stable")
    if "split" in raw.columns:
        parts = raw.loc[df.index, "split"].astype(str)
        unknown = sorted(set(parts) - {"train", "val", "test"})
        if unknown:
            raise ValueError(f"{path}: split values must be train, val or test; found {unknown}")
    else:
        parts = _loo_split(df)
    split = dict(zip(df["event_id"], parts, strict=True))
    has_text = "title" in df.columns or "category" in df.columns
    notes = (
        f"{path.name}: event_id = row number; "
        + ("real timestamps" if real_time else "no timestamps: ts_ms = position * 60 s (synthetic)")
        + ("; split as given" if "split" in raw.columns else "; split per user: last test, second last val")
    )
    return EventLog(
        path.stem,
        _frame_to_records(df),
        None,
        None,
        has_text,
        split,
        synthetic_time=not real_time,
        notes=notes,
    )


def load_movielens_small(data_dir: str | Path) -> EventLog:
    """MovieLens latest-small ratings with real timestamps; per-user chronological leave-one-out: the folder
    or its ratings.csv (movies.csv beside it), as the replay takes either."""
    ratings_file = _file_in(data_dir, "ratings.csv")
    ratings = pd.read_csv(ratings_file)
    movies = pd.read_csv(ratings_file.parent / "movies.csv")
    df = ratings.merge(movies, on="movieId", how="left").rename(
        columns={"userId": "user_id", "movieId": "item_id", "rating": "value", "genres": "category"}
    )
    df["event_id"] = np.arange(len(df)).astype(str)
    df = df.assign(kind="click", action="rate", ts_ms=df["timestamp"].astype("int64") * 1000)
    df = df.sort_values(["user_id", "ts_ms"], kind="stable")
    split = dict(zip(df["event_id"], _loo_split(df), strict=True))
    notes = "event_id = row number in ratings.csv; split per user: last event test, second last validation"
    return EventLog("movielens-small", _frame_to_records(df), None, None, True, split, notes=notes)


def load_fraud_handbook(
    path: str | Path, since: str | dt.date | None = None, with_aggregates: bool = True
) -> EventLog:
    """Fraud Handbook simulated transactions; TX_FRAUD_SCENARIO is never read (not even loaded).

    With `since`, only transactions from that UTC day on are kept; the replay starts KEEP_DAYS earlier,
    which is all the history any aggregate reads, so their aggregates equal those of a full replay.
    """
    columns = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
    first_ms = None if since is None else date_ms(_read_date(since))
    filters = None
    if first_ms is not None:
        warm_start = pd.Timestamp(first_ms - agg.KEEP_DAYS * agg.DAY_MS, unit="ms")
        filters = [("TX_DATETIME", ">=", warm_start.to_datetime64())]
    raw = pd.read_parquet(path, columns=columns, filters=filters).sort_values("TRANSACTION_ID", kind="stable")
    df = pd.DataFrame(
        {
            "event_id": raw["TRANSACTION_ID"].astype(str),
            "kind": "transaction",
            "user_id": raw["CUSTOMER_ID"],
            "ts_ms": raw["TX_DATETIME"].astype("datetime64[ms]").astype("int64"),
            "item_id": raw["TERMINAL_ID"],
            "action": "transaction",
            "amount": raw["TX_AMOUNT"].astype(float),
        }
    )
    labels = dict(zip(df["event_id"], raw["TX_FRAUD"].astype(int).tolist(), strict=True))
    records = _frame_to_records(df)
    aggregates = replay_aggregates(records, labels) if with_aggregates else None
    if first_ms is not None:
        records = [r for r in records if r["ts_ms"] >= first_ms]
        kept = {r["event_id"] for r in records}
        labels = {e: y for e, y in labels.items() if e in kept}
        aggregates = None if aggregates is None else {e: a for e, a in aggregates.items() if e in kept}
    notes = "TX_DATETIME read as UTC; aggregates replayed with models.features.aggregates (7-day label delay)"
    return EventLog("fraud-handbook", records, labels, aggregates, False, None, notes=notes)


def _read_date(value: str | dt.date) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def prequential_folds(
    start_date: str | dt.date,
    n_folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    step_days: int = 7,
) -> list[Fold]:
    """Handbook prequential folds: fold k trains from start_date + k*step_days, tests after the delay.

    Validation: start_date 2018-06-20 (assessed 07-04 .. 07-31); test: 2018-07-25 (first week 08-08 .. 08-14).
    """
    first = _read_date(start_date)
    folds = []
    for k in range(n_folds):
        train_start = first + dt.timedelta(days=k * step_days)
        train_end = train_start + dt.timedelta(days=train_days)
        test_start = train_end + dt.timedelta(days=delay_days)
        folds.append(Fold(train_start, train_end, test_start, test_start + dt.timedelta(days=test_days)))
    return folds


def date_ms(day: dt.date) -> int:
    """Epoch milliseconds of 00:00 UTC on `day`."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def fold_event_ids(log: EventLog, fold: Fold, delay_days: int = 7) -> tuple[list[str], list[str]]:
    """Training and assessment event ids of one fold, as the handbook's `get_train_test_set`.

    Assessment drops, on each test day D, the customers already known to be defrauded: those with a
    fraud between the training start and day D - delay_days - 1 (labels known by then).
    """
    if log.labels is None:
        raise ValueError(f"{log.name} has no labels")
    ts = np.fromiter((r["ts_ms"] for r in log.records), dtype=np.int64, count=len(log.records))
    ids = np.array([r["event_id"] for r in log.records])
    users = np.array([r["user_id"] for r in log.records])
    fraud = np.array([log.labels[e] for e in ids], dtype=bool)
    day = ts // agg.DAY_MS
    train_first, test_first = date_ms(fold.train_start) // agg.DAY_MS, date_ms(fold.test_start) // agg.DAY_MS
    train = (day >= train_first) & (day < date_ms(fold.train_end) // agg.DAY_MS)
    test = (day >= test_first) & (day < date_ms(fold.test_end) // agg.DAY_MS)
    # first day on which each defrauded customer's fraud became known; a test event is kept if before that
    fraud_days = pd.Series(day[fraud & (day >= train_first)], index=users[fraud & (day >= train_first)])
    known_from = (fraud_days.groupby(level=0).min() + delay_days + 1).reindex(users).to_numpy()
    keep = np.isnan(known_from) | (day < np.nan_to_num(known_from, nan=0))
    return ids[train].tolist(), ids[test & keep].tolist()


def load_yoochoose(path: str | Path) -> EventLog:
    """YooChoose session clicks (tab-separated SessionId, ItemId, Time in s); a session is the user."""
    raw = pd.read_csv(path, sep="\t")
    df = pd.DataFrame(
        {
            "event_id": np.arange(len(raw)).astype(str),
            "kind": "click",
            "user_id": raw["SessionId"],
            "ts_ms": (raw["Time"] * 1000).round().astype("int64"),
            "item_id": raw["ItemId"],
            "action": "click",
        }
    )
    df = df.sort_values(["user_id", "ts_ms"], kind="stable")
    split = dict(zip(df["event_id"], _loo_split(df), strict=True))
    return EventLog(
        "yoochoose", _frame_to_records(df), None, None, False, split, notes="event_id = row number"
    )


TAOBAO_ACTIONS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}


def load_taobao(path: str | Path) -> EventLog:
    """Tianchi UserBehavior CSV (no header: user, item, category, behavior, timestamp in s)."""
    raw = pd.read_csv(path, header=None, names=["user_id", "item_id", "category", "behavior", "timestamp"])
    df = raw.assign(
        event_id=np.arange(len(raw)).astype(str),
        kind="click",
        ts_ms=raw["timestamp"].astype("int64") * 1000,
        action=raw["behavior"].map(TAOBAO_ACTIONS),
        category=raw["category"].astype(str),
    )
    df = df.sort_values(["user_id", "ts_ms"], kind="stable")
    split = dict(zip(df["event_id"], _loo_split(df), strict=True))
    return EventLog("taobao", _frame_to_records(df), None, None, False, split, notes="event_id = row number")


DATASETS: dict[str, Callable[[str | Path], EventLog]] = {  # the --dataset names of train and evaluate
    "ml-1m": load_ml1m,
    "amazon-beauty": load_beauty,
    "movielens-small": load_movielens_small,
    "fraud-handbook": load_fraud_handbook,
    "yoochoose": load_yoochoose,
    "taobao": load_taobao,
    "sequences": load_sequences,
}
ALIASES = {"ml1m": "ml-1m", "beauty": "amazon-beauty", "fraud": "fraud-handbook"}  # earlier evaluate names
LEAVE_ONE_OUT = ("ml-1m", "amazon-beauty", "movielens-small", "sequences")  # next-item evaluation


def dataset_name(name: str) -> str:
    """The data set's name in DATASETS, for that name or an alias; ValueError otherwise."""
    name = ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)} (or {sorted(ALIASES)})")
    return name


def dataset_argument(name: str) -> str:
    """argparse `type` of --dataset: the canonical name, or the error that lists the known ones."""
    try:
        return dataset_name(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def load(name: str, path: str | Path) -> EventLog:
    """A data set by its --dataset name (or alias) from `path` (a file or folder, as its loader expects)."""
    return DATASETS[dataset_name(name)](path)
