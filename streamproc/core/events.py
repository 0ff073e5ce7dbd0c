"""Wire types (clicks, transactions, fraud labels, sequence updates, scores, dead letters) and their strict validation."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

CLICK_ACTIONS = frozenset(
    {"view", "click", "cart", "remove_from_cart", "fav", "purchase", "rate", "search", "share", "review"}
)
TX_ACTION = "transaction"
MIN_TS_MS = 631_152_000_000  # 1990-01-01 (MovieLens starts in 1995); epoch seconds fall below it
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_ID_LEN = 128
MAX_TEXT_LEN = 512
MAX_AMOUNT = 1e9
MAX_VALUE = 1e6  # a click's value: a rating, a price, a quantity; |value| above it is refused (bad_value)
DEAD_LETTER_PREFIX_BYTES = 512  # what a dead letter keeps of a message too large to keep whole
_CURRENCY = re.compile(r"^[A-Z]{3}$")

REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "bad_id",
    "bad_timestamp",
    "bad_amount",
    "bad_currency",
    "bad_label",
    "bad_value",
    "unknown_action",
    "too_long",
    "too_large",  # the whole message is over the input size limit (Settings.max_input_bytes)
    "future_timestamp",  # event time too far ahead of its partition's event-time clock or of the wall clock
    "bad_sequence_update",  # scoring worker: an update it cannot read
    "non_finite_score",  # scoring worker: the model gave a score that is not a finite number
)


class InvalidEvent(ValueError):
    """An input message that breaks the contract; `reason` is one of REASONS, `detail` says where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A validated input event: the window record (docs/contracts.md) plus what is not a feature."""

    record: dict[str, Any]
    label: int | None = None  # transactions in replays only; never part of the record

    @property
    def user_id(self) -> str:
        return str(self.record["user_id"])

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])

    @property
    def ts_ms(self) -> int:
        return int(self.record["ts_ms"])


def _require(msg: dict[str, Any], name: str) -> Any:
    if name not in msg or msg[name] is None:
        raise InvalidEvent("missing_field", f"'{name}' is required")
    return msg[name]


def _id(msg: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = _require(msg, name) if required else msg.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidEvent("bad_type", f"'{name}' must be a string or an integer, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise InvalidEvent("bad_id", f"'{name}' is empty")
    if len(text) > MAX_ID_LEN:
        raise InvalidEvent("too_long", f"'{name}' is longer than {MAX_ID_LEN} characters")
    return text


def _text(msg: dict[str, Any], name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"'{name}' must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_LEN:
        raise InvalidEvent("too_long", f"'{name}' is longer than {MAX_TEXT_LEN} characters")
    return value.strip() or None


def _number(msg: dict[str, Any], name: str, reason: str, required: bool) -> float | None:
    value = _require(msg, name) if required else msg.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("bad_type", f"'{name}' must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidEvent(reason, f"'{name}' must be finite, got {value}")
    return number


def check_size(raw: bytes | None, max_bytes: int) -> None:
    """Refuse a message over `max_bytes` before it is decoded (reason too_large)."""
    if raw is not None and len(raw) > max_bytes:
        raise InvalidEvent(
            "too_large", f"the message has {len(raw):,} bytes, over the limit of {max_bytes:,}"
        )


def _value(msg: dict[str, Any]) -> float | None:
    value = _number(msg, "value", "bad_value", required=False)
    if value is not None and abs(value) > MAX_VALUE:
        raise InvalidEvent("bad_value", f"'value' {value:g} is outside -{MAX_VALUE:g}..{MAX_VALUE:g}")
    return value


def parse_ts_ms(value: Any) -> int:
    """Event time as epoch milliseconds from an integer of milliseconds or an ISO-8601 string."""
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "'ts' must be epoch milliseconds or ISO-8601, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidEvent("bad_timestamp", f"'ts' is not finite: {value}")
        ts_ms = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidEvent("bad_timestamp", f"'ts' is not ISO-8601: {value!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts_ms = int(parsed.timestamp() * 1000)
    else:
        raise InvalidEvent(
            "bad_timestamp", f"'ts' must be epoch milliseconds or ISO-8601, got {type(value).__name__}"
        )
    if not MIN_TS_MS <= ts_ms <= MAX_TS_MS:
        raise InvalidEvent(
            "bad_timestamp", f"'ts' {ts_ms} is outside 1990..2100 (epoch milliseconds expected)"
        )
    return ts_ms


def decode_json(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise InvalidEvent("invalid_json", "empty message")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(msg).__name__}")
    return msg


def validate_click(msg: dict[str, Any]) -> ValidEvent:
    action = _require(msg, "action")
    if not isinstance(action, str):
        raise InvalidEvent("bad_type", "'action' must be a string")
    action = action.strip().lower()
    if action not in CLICK_ACTIONS:
        raise InvalidEvent("unknown_action", f"'action' {action!r} is not one of {sorted(CLICK_ACTIONS)}")
    record = {
        "event_id": _id(msg, "event_id"),
        "kind": "click",
        "user_id": _id(msg, "user_id"),
        "ts_ms": parse_ts_ms(_require(msg, "ts")),
        "item_id": _id(msg, "item_id"),
        "action": action,
        "amount": None,
        "value": _value(msg),
        "title": _text(msg, "title"),
        "category": _text(msg, "category"),
    }
    return ValidEvent(record)


def validate_transaction(msg: dict[str, Any]) -> ValidEvent:
    amount = _number(msg, "amount", "bad_amount", required=True)
    assert amount is not None
    if not 0.0 <= amount <= MAX_AMOUNT:
        raise InvalidEvent("bad_amount", f"'amount' {amount} is outside 0..{MAX_AMOUNT:g}")
    currency = _require(msg, "currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise InvalidEvent(
            "bad_currency", f"'currency' must be an ISO-4217 code such as EUR, got {currency!r}"
        )
    terminal = _terminal(msg)
    label = _label(msg, required=False)
    record = {
        "event_id": _id(msg, "event_id"),
        "kind": "transaction",
        "user_id": _id(msg, "user_id"),
        "ts_ms": parse_ts_ms(_require(msg, "ts")),
        "item_id": terminal,
        "action": TX_ACTION,
        "amount": amount,
        "value": None,
        "title": _text(msg, "merchant"),
        "category": _text(msg, "category"),
    }
    return ValidEvent(record, label=label)


@dataclass(frozen=True, slots=True)
class FraudLabel:
    """A verdict on a past transaction that arrives after it (a chargeback, a confirmed or cleared case).

    label 1: the transaction was fraud; label 0: it was not, which retracts an earlier label 1.
    `ts_ms` is the transaction's own time: the verdict counts on that day at that terminal.
    """

    event_id: str
    transaction_id: str
    terminal_id: str
    ts_ms: int
    label: int
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "transaction_id": self.transaction_id,
            "terminal_id": self.terminal_id,
            "ts_ms": self.ts_ms,
            "label": self.label,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FraudLabel:
        return cls(
            str(d["event_id"]),
            str(d["transaction_id"]),
            str(d["terminal_id"]),
            int(d["ts_ms"]),
            int(d["label"]),
            d.get("source"),
        )


def _label(msg: dict[str, Any], required: bool) -> int | None:
    label = _require(msg, "label") if required else msg.get("label")
    if label is not None and (isinstance(label, bool) or label not in (0, 1)):
        raise InvalidEvent("bad_label", f"'label' must be 0 or 1, got {label!r}")
    return None if label is None else int(label)


def _terminal(msg: dict[str, Any]) -> str:
    terminal = _id(msg, "terminal_id", required=False) or _id(msg, "merchant_id", required=False)
    if terminal is None:
        raise InvalidEvent("missing_field", "'terminal_id' or 'merchant_id' is required")
    return terminal


def validate_fraud_label(raw: bytes | None) -> FraudLabel:
    """Decode and validate one `fraud-labels` message; raises InvalidEvent."""
    msg = decode_json(raw)
    event_id, transaction_id = _id(msg, "event_id"), _id(msg, "transaction_id")
    assert event_id is not None and transaction_id is not None
    terminal = _terminal(msg)
    label = _label(msg, required=True)
    assert label is not None
    return FraudLabel(
        event_id, transaction_id, terminal, parse_ts_ms(_require(msg, "ts")), label, _text(msg, "source")
    )


def validate(kind: str, raw: bytes | None) -> ValidEvent:
    """Decode and validate one raw message of `kind` ("click" or "transaction"); raises InvalidEvent."""
    msg = decode_json(raw)
    return validate_click(msg) if kind == "click" else validate_transaction(msg)


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    error: InvalidEvent,
    now_ms: int,
    whole: bool = True,
) -> bytes:
    """The dead-letter message: where the message came from, why it was refused, its size and SHA-256, and
    its bytes (base64): whole, or (`whole=False`, for a message too large to keep) the first
    DEAD_LETTER_PREFIX_BYTES only. The key is kept up to the same length."""
    b64 = lambda data: None if data is None else base64.b64encode(data).decode()  # noqa: E731
    return orjson.dumps(
        {
            "reason": error.reason,
            "detail": error.detail,
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": b64(key if whole or key is None else key[:DEAD_LETTER_PREFIX_BYTES]),
            "raw_b64": b64(raw) if whole else None,
            "raw_prefix_b64": None
            if whole
            else b64(raw[:DEAD_LETTER_PREFIX_BYTES] if raw is not None else None),
            "raw_bytes": None if raw is None else len(raw),
            "raw_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
            "dead_lettered_ts_ms": now_ms,
        }
    )


def dead_letters(
    raw: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    error: InvalidEvent,
    now_ms: int,
    max_whole_bytes: int,
) -> tuple[bytes, bytes]:
    """(the dead letter to send, the reduced one to send if Kafka refuses it): whole when the message is
    at most `max_whole_bytes`, else reduced (its size, hash and prefix) in both."""
    reduced = dead_letter(raw, key, topic, partition, offset, error, now_ms, whole=False)
    small = (raw is None or len(raw) <= max_whole_bytes) and (key is None or len(key) <= max_whole_bytes)
    return (dead_letter(raw, key, topic, partition, offset, error, now_ms) if small else reduced), reduced


def encode(obj: dict[str, Any]) -> bytes:
    """Compact JSON (orjson: the pipeline's hot path encodes every window once per event)."""
    return orjson.dumps(obj)


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)
