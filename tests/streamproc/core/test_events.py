"""Validation of the wire contract: clear reasons for bad input, exact records for good input."""

import json
from datetime import UTC

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.core.events import (
    FraudLabel,
    InvalidEvent,
    dead_letter,
    parse_ts_ms,
    validate,
    validate_fraud_label,
)

CLICK = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i9",
    "action": "View",
    "ts": 1_700_000_000_000,
    "title": "Trail shoes",
    "category": "Sports",
    "value": 4.5,
}
TX = {
    "event_id": "t1",
    "user_id": 42,
    "amount": 12.5,
    "currency": "EUR",
    "terminal_id": "T7",
    "ts": "2018-04-01T00:00:31Z",
    "label": 1,
}


def raw(d) -> bytes:
    return json.dumps(d).encode()


def test_valid_click_becomes_a_contract_record():
    v = validate("click", raw(CLICK))
    assert v.record == {
        "event_id": "e1",
        "kind": "click",
        "user_id": "u1",
        "ts_ms": 1_700_000_000_000,
        "item_id": "i9",
        "action": "view",
        "amount": None,
        "value": 4.5,
        "title": "Trail shoes",
        "category": "Sports",
    }
    assert v.label is None


def test_valid_transaction_keeps_label_out_of_the_record():
    v = validate("transaction", raw(TX))
    assert v.record["ts_ms"] == 1_522_540_831_000
    assert v.record["item_id"] == "T7" and v.record["user_id"] == "42" and v.record["action"] == "transaction"
    assert "label" not in v.record and v.label == 1


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("click", b"{not json", "invalid_json"),
        ("click", b"[1, 2]", "not_an_object"),
        ("click", raw({**CLICK, "user_id": None}), "missing_field"),
        ("click", raw({k: v for k, v in CLICK.items() if k != "item_id"}), "missing_field"),
        ("click", raw({**CLICK, "action": "teleport"}), "unknown_action"),
        ("click", raw({**CLICK, "ts": "yesterday"}), "bad_timestamp"),
        ("click", raw({**CLICK, "ts": 1_700_000_000}), "bad_timestamp"),  # seconds, not milliseconds
        ("click", raw({**CLICK, "user_id": ["u"]}), "bad_type"),
        ("click", raw({**CLICK, "user_id": "  "}), "bad_id"),
        ("click", raw({**CLICK, "title": "x" * 600}), "too_long"),
        ("transaction", raw({**TX, "amount": -1}), "bad_amount"),
        ("transaction", raw({**TX, "amount": "12"}), "bad_type"),
        ("transaction", raw({**TX, "currency": "euro"}), "bad_currency"),
        ("transaction", raw({**TX, "label": 2}), "bad_label"),
        ("transaction", raw({k: v for k, v in TX.items() if k != "terminal_id"}), "missing_field"),
        ("transaction", b'{"amount": NaN, "event_id": "x"}', "invalid_json"),  # NaN is not JSON
        ("transaction", raw({**TX, "amount": 1e12}), "bad_amount"),
    ],
)
def test_invalid_input_has_a_clear_reason(kind, payload, reason):
    with pytest.raises(InvalidEvent) as info:
        validate(kind, payload)
    assert info.value.reason == reason
    assert info.value.detail


def test_dead_letter_keeps_raw_bytes_and_lineage():
    error = InvalidEvent("invalid_json", "not JSON")
    msg = json.loads(dead_letter(b"\xff\x00", b"k", "clicks", 3, 77, error, 123))
    import base64

    assert base64.b64decode(msg["raw_b64"]) == b"\xff\x00"
    assert (msg["source_topic"], msg["partition"], msg["offset"], msg["reason"]) == (
        "clicks",
        3,
        77,
        "invalid_json",
    )


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_validation(payload):
    for kind in ("click", "transaction"):
        try:
            validate(kind, payload)
        except InvalidEvent as error:
            assert error.reason


@given(st.integers(946_684_800_000, 4_102_444_800_000))
def test_iso_and_epoch_ms_agree(ts_ms):
    from datetime import datetime

    iso = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat()
    assert abs(parse_ts_ms(iso) - ts_ms) <= 1


LABEL = {
    "event_id": "l1",
    "transaction_id": "t1",
    "merchant_id": "M3",
    "ts": "2018-04-01T00:00:31Z",
    "label": 1,
    "source": "chargeback",
}


def test_valid_fraud_label_names_its_transaction_terminal_and_day():
    label = validate_fraud_label(raw(LABEL))
    assert label == FraudLabel("l1", "t1", "M3", 1_522_540_831_000, 1, "chargeback")
    assert FraudLabel.from_dict(label.as_dict()) == label


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (raw({**LABEL, "label": None}), "missing_field"),  # a verdict must say which
        (raw({**LABEL, "label": True}), "bad_label"),
        (raw({**LABEL, "label": "fraud"}), "bad_label"),
        (raw({k: v for k, v in LABEL.items() if k != "transaction_id"}), "missing_field"),
        (raw({k: v for k, v in LABEL.items() if k != "merchant_id"}), "missing_field"),
        (raw({k: v for k, v in LABEL.items() if k != "ts"}), "missing_field"),
        (raw({**LABEL, "ts": 1_522_540_831}), "bad_timestamp"),
        (raw({**LABEL, "source": 7}), "bad_type"),
        (b"[]", "not_an_object"),
    ],
)
def test_invalid_fraud_label_has_a_clear_reason(payload, reason):
    with pytest.raises(InvalidEvent) as info:
        validate_fraud_label(payload)
    assert info.value.reason == reason


@pytest.mark.parametrize("value", [1e308, -1e7, 1_000_000.5])
def test_a_click_value_outside_its_range_is_a_bad_value(value):
    # 1e308 passed before and turned every later score of the user into null (a float32 overflow)
    with pytest.raises(InvalidEvent) as exc:
        validate("click", raw(CLICK | {"value": value}))
    assert exc.value.reason == "bad_value"
    assert validate("click", raw(CLICK | {"value": -1e6})).record["value"] == -1e6


def test_a_message_over_the_size_limit_is_too_large_and_its_dead_letter_keeps_size_hash_and_prefix():
    import base64
    import hashlib

    from streamproc.core.events import DEAD_LETTER_PREFIX_BYTES, check_size, dead_letters

    big = b'{"event_id": "' + b"x" * 2_000_000 + b'"}'
    check_size(big, len(big))  # at the limit: fine
    with pytest.raises(InvalidEvent) as exc:
        check_size(big, 65_536)
    assert exc.value.reason == "too_large" and f"{len(big):,} bytes" in exc.value.detail
    whole, reduced = dead_letters(big, b"u1", "clicks", 2, 9, exc.value, 5, max_whole_bytes=65_536)
    assert whole is reduced and len(reduced) < 2_000
    letter = json.loads(reduced)
    assert letter["raw_b64"] is None and letter["raw_bytes"] == len(big)
    assert letter["raw_sha256"] == hashlib.sha256(big).hexdigest()
    assert base64.b64decode(letter["raw_prefix_b64"]) == big[:DEAD_LETTER_PREFIX_BYTES]
    assert (letter["reason"], letter["source_topic"], letter["partition"], letter["offset"]) == (
        "too_large",
        "clicks",
        2,
        9,
    )
    # a small message is kept whole, with its reduced form ready in case Kafka refuses the whole one
    whole, reduced = dead_letters(
        b"{bad", b"u1", "clicks", 2, 10, InvalidEvent("invalid_json", "x"), 5, 65_536
    )
    assert json.loads(whole)["raw_b64"] == base64.b64encode(b"{bad").decode() and whole is not reduced
    assert json.loads(reduced)["raw_b64"] is None and json.loads(reduced)["raw_bytes"] == 4
