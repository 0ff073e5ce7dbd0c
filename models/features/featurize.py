"""Pure featurization shared by training and serving: windows of event records -> model input arrays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from models.features.aggregates import AGGREGATE_FEATURES, DAY_MS

FEATURIZATION_VERSION = 1
PAD, OOV = 0, 1
NUMERIC_FEATURES = (
    "log_gap_s",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "log_amount",
    "has_amount",
    "value",
    "has_value",
)
# ratios of the 12 aggregates and the event's amount: what marks a compromised card in the handbook's
# simulator (amounts several times the card's usual spend) is a ratio, which neither trees nor the
# head's input projection form from separate log features; appended after AGGREGATE_FEATURES, so a
# checkpoint trained on the 12 alone reads its first 12 columns unchanged
DERIVED_FEATURES = (
    "amount_to_customer_avg_1d",
    "amount_to_customer_avg_7d",
    "amount_to_customer_avg_30d",
    "customer_avg_1d_to_30d",
    "customer_avg_7d_to_30d",
    "customer_rate_1d_to_30d",  # transactions per day over 1 day / over 30 days
    "customer_rate_7d_to_30d",
)
MODEL_AGGREGATES = AGGREGATE_FEATURES + DERIVED_FEATURES
_LOG_AGGREGATES = np.array([not name.startswith("terminal_risk") for name in AGGREGATE_FEATURES])
HOUR_MS = 3_600_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0


@dataclass
class Window:
    """One user window as the pipeline hands it over: event records oldest first + aggregates of the last."""

    events: list[dict[str, Any]]
    aggregates: dict[str, float] = field(default_factory=dict)


@dataclass
class Vocab:
    """Item-id and action vocabularies; index 0 is padding, 1 is out-of-vocabulary."""

    items: list[str]
    actions: list[str]
    _item_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _action_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._item_index = {item: i + 2 for i, item in enumerate(self.items)}
        self._action_index = {action: i + 2 for i, action in enumerate(self.actions)}

    @classmethod
    def build(cls, records: Iterable[dict[str, Any]], min_count: int = 1) -> Vocab:
        """Vocabulary of the items seen at least min_count times (most frequent first) and all actions."""
        item_counts: Counter[str] = Counter()
        actions: Counter[str] = Counter()
        for record in records:
            item_counts[str(record["item_id"])] += 1
            actions[str(record["action"])] += 1
        items = [item for item, n in item_counts.most_common() if n >= min_count]
        return cls(items=items, actions=sorted(actions))

    @property
    def n_items(self) -> int:
        return len(self.items) + 2

    @property
    def n_actions(self) -> int:
        return len(self.actions) + 2

    def item_ids(self, items: Sequence[Any]) -> np.ndarray:
        """(N,) int64 indices of item ids, OOV for unknown ones."""
        return np.fromiter(map(self._item_index.get, map(str, items), repeat(OOV)), np.int64, len(items))

    def action_ids(self, actions: Sequence[Any]) -> np.ndarray:
        """(N,) int64 indices of action names, OOV for unknown ones."""
        return np.fromiter(
            map(self._action_index.get, map(str, actions), repeat(OOV)), np.int64, len(actions)
        )

    def item_name(self, index: int) -> str:
        return self.items[index - 2] if index >= 2 else ("<pad>" if index == PAD else "<oov>")

    def action_name(self, index: int) -> str:
        return self.actions[index - 2] if index >= 2 else ("<pad>" if index == PAD else "<oov>")

    def to_dict(self) -> dict[str, list[str]]:
        return {"items": list(self.items), "actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> Vocab:
        return cls(items=list(data["items"]), actions=list(data["actions"]))


@dataclass
class EventColumns:
    """Per-event columns of a flat run of event records."""

    item: np.ndarray  # (N,) int64 vocab index
    action: np.ndarray  # (N,) int64 vocab index
    ts_ms: np.ndarray  # (N,) int64
    amount: np.ndarray  # (N,) float64, nan when absent
    value: np.ndarray  # (N,) float64, nan when absent
    is_transaction: np.ndarray  # (N,) bool
    texts: list[str | None]  # N stable texts (None: the event has no text)


@dataclass
class FeatureBatch:
    """Model inputs of B windows right-padded to T = max_len (the last real event is the scored one)."""

    item: np.ndarray  # (B, T) int64, PAD beyond length
    action: np.ndarray  # (B, T) int64
    numeric: np.ndarray  # (B, T, F) float32, F = len(NUMERIC_FEATURES)
    text_index: np.ndarray  # (B, T) int64 index into texts, -1 for no text / padding
    texts: list[str]  # U distinct texts of the batch
    aggregates: np.ndarray  # (B, A) float32, A = len(MODEL_AGGREGATES)
    lengths: np.ndarray  # (B,) int64 number of real events
    is_transaction: np.ndarray  # (B, T) bool

    @property
    def mask(self) -> np.ndarray:
        """(B, T) bool, True on real events."""
        return np.arange(self.item.shape[1])[None, :] < self.lengths[:, None]


def event_text(record: dict[str, Any]) -> str | None:
    """Short stable text of an event (no ids, amounts or times); None when it carries no text."""
    title, category = record.get("title"), record.get("category")
    if not title and not category:
        return None
    if record.get("kind") == "transaction":
        return f"transaction | {category or 'merchant'} | {title}" if title else f"transaction | {category}"
    if title and category:
        return f"{record.get('action')} | {title} | {category}"
    return f"{record.get('action')} | {title or category}"


def item_text(record: dict[str, Any]) -> str | None:
    """Short stable text of the item a click is about (title and category, no action); None for a payment
    terminal or an item without text: what text item vectors (models.evaluation.cold_start) are made of."""
    if record.get("kind") == "transaction":
        return None
    title, category = record.get("title"), record.get("category")
    if title and category:
        return f"{title} | {category}"
    return title or category or None


def catalogue_texts(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """item id -> item_text of the first record of each item that has one."""
    texts: dict[str, str] = {}
    for record in records:
        item = str(record["item_id"])
        if item not in texts:
            text = item_text(record)
            if text is not None:
                texts[item] = text
    return texts


def event_columns(records: Sequence[dict[str, Any]], vocab: Vocab) -> EventColumns:
    """Extract the per-event columns of records (one pass per field)."""
    n = len(records)
    return EventColumns(
        item=vocab.item_ids([r["item_id"] for r in records]),
        action=vocab.action_ids([r["action"] for r in records]),
        ts_ms=np.fromiter((r["ts_ms"] for r in records), dtype=np.int64, count=n),
        amount=np.array([r.get("amount") for r in records], dtype=np.float64),  # None -> nan
        value=np.array([r.get("value") for r in records], dtype=np.float64),
        is_transaction=np.fromiter((r.get("kind") == "transaction" for r in records), dtype=bool, count=n),
        texts=[event_text(r) for r in records],
    )


VALUE_CLIP = 1e6  # the pipeline refuses larger |value| (bad_value); every data set here stays far below


def numeric_features(
    ts_ms: np.ndarray, amount: np.ndarray, value: np.ndarray, is_first: np.ndarray
) -> np.ndarray:
    """(N, F) float32 time/amount features of a flat run of events; gaps restart where is_first."""
    gap_ms = np.diff(ts_ms, prepend=ts_ms[:1]) if len(ts_ms) else ts_ms
    gap_ms = np.where(is_first, 0, np.maximum(gap_ms, 0))
    hour = 2 * np.pi * (ts_ms % DAY_MS) / DAY_MS
    dow = 2 * np.pi * (((ts_ms // DAY_MS) + EPOCH_WEEKDAY) % 7 + (ts_ms % DAY_MS) / DAY_MS) / 7
    has_amount = ~np.isnan(amount)
    safe_amount = np.where(has_amount, amount, 0.0)
    has_value = ~np.isnan(value)
    out = np.stack(
        [
            np.log1p(gap_ms / 1000.0),
            np.sin(hour),
            np.cos(hour),
            np.sin(dow),
            np.cos(dow),
            np.sign(safe_amount) * np.log1p(np.abs(safe_amount)),
            has_amount,
            np.where(
                has_value, np.clip(value, -VALUE_CLIP, VALUE_CLIP), 0.0
            ),  # no float32 overflow, whatever comes
            has_value,
        ],
        axis=-1,
    )
    return out.astype(np.float32)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator in [0, 1e6], 1.0 (no change) where either is missing or the denominator is 0."""
    ok = (denominator > 0) & np.isfinite(numerator)
    with np.errstate(over="ignore"):
        ratio = np.where(ok, numerator, 0.0) / np.where(ok, denominator, 1.0)
    return np.where(ok, np.clip(ratio, 0.0, 1e6), 1.0)


def derived_aggregates(raw: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """(N, len(DERIVED_FEATURES)) float64 ratios from raw aggregates (N, A) and event amounts (N,), nan if none."""
    col = {name: raw[:, i] for i, name in enumerate(AGGREGATE_FEATURES)}
    avg = {w: col[f"customer_avg_amount_{w}d"] for w in (1, 7, 30)}
    per_day = {w: col[f"customer_nb_tx_{w}d"] / w for w in (1, 7, 30)}
    return np.stack(
        [
            _ratio(amount, avg[1]),
            _ratio(amount, avg[7]),
            _ratio(amount, avg[30]),
            _ratio(avg[1], avg[30]),
            _ratio(avg[7], avg[30]),
            _ratio(per_day[1], per_day[30]),
            _ratio(per_day[7], per_day[30]),
        ],
        axis=-1,
    ).reshape(len(raw), len(DERIVED_FEATURES))


def raw_aggregates(
    aggregates: Sequence[dict[str, float]], names: Sequence[str] = AGGREGATE_FEATURES
) -> np.ndarray:
    """(N, len(names)) float64 values of the named aggregates (AGGREGATE_FEATURES), missing names as 0."""
    return np.array([[a.get(name, 0.0) for name in names] for a in aggregates], dtype=np.float64).reshape(
        len(aggregates), len(names)
    )


def aggregate_matrix(aggregates: Sequence[dict[str, float]], amount: np.ndarray) -> np.ndarray:
    """(N, len(MODEL_AGGREGATES)) float32 model inputs of each event's aggregates and amount (nan if none):
    log1p of counts and mean amounts, risks as is, log of the derived ratios."""
    raw = raw_aggregates(aggregates)
    base = np.where(_LOG_AGGREGATES, np.log1p(np.maximum(raw, 0.0)), raw)
    derived = np.log(np.maximum(derived_aggregates(raw, np.asarray(amount, dtype=np.float64)), 1e-3))
    return np.concatenate([base, derived], axis=1).astype(np.float32)


def featurize(windows: Sequence[Window], vocab: Vocab, max_len: int) -> FeatureBatch:
    """Featurize windows, each left-truncated to its max_len most recent events."""
    kept = [w.events[-max_len:] if max_len else [] for w in windows]
    b = len(kept)
    lengths = np.fromiter(map(len, kept), dtype=np.int64, count=b)
    flat = [event for events in kept for event in events]
    cols = event_columns(flat, vocab)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rows = np.repeat(np.arange(b), lengths)
    positions = np.arange(len(flat)) - np.repeat(starts, lengths)
    numeric = numeric_features(cols.ts_ms, cols.amount, cols.value, positions == 0)

    last_amount = np.full(b, np.nan)  # the scored (last) event's amount, nan for empty windows
    last_amount[lengths > 0] = cols.amount[(starts + lengths - 1)[lengths > 0]]

    index: dict[str, int] = {}
    text_ids = np.fromiter(
        (-1 if t is None else index.setdefault(t, len(index)) for t in cols.texts),
        dtype=np.int64,
        count=len(flat),
    )

    def scatter(values: np.ndarray, fill: float | int | bool, dtype: Any) -> np.ndarray:
        out = np.full((b, max_len, *values.shape[1:]), fill, dtype=dtype)
        out[rows, positions] = values
        return out

    return FeatureBatch(
        item=scatter(cols.item, PAD, np.int64),
        action=scatter(cols.action, PAD, np.int64),
        numeric=scatter(numeric, 0.0, np.float32),
        text_index=scatter(text_ids, -1, np.int64),
        texts=list(index),
        aggregates=aggregate_matrix([w.aggregates for w in windows], last_amount),
        lengths=lengths,
        is_transaction=scatter(cols.is_transaction, False, bool),
    )
