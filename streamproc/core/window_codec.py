"""JSON for user windows that re-uses each user's previous window encoding instead of encoding it again.

Every sequence update carries the user's whole window (up to 50 events), and every state write
carries it again; encoding those windows was the Faust worker's largest item of its own. A user's
next window is nearly always the previous one less its oldest events, plus the new event: the
encoder keeps, per user, the window it encoded last (the record objects), its bytes and each
record's length, and when the new window's records are those same objects, in the same order, it
cuts the dropped records off the front of the old bytes and appends the new record. Anything else
(an out-of-order insert, a state read back from RocksDB, a window it no longer holds) is encoded in
full. Records are never changed after they enter a window, so an object's bytes stay valid.
Memory: each held user's window bytes (about 10 KB at 50 events), for as many users as the state
cache holds, next to the decoded states themselves (several times larger).
"""

from __future__ import annotations

from collections import OrderedDict
from operator import is_
from typing import Any

import orjson

Record = dict[str, Any]


class _Encoded:
    __slots__ = ("records", "data", "lengths")

    def __init__(self, records: list[Record], data: bytes, lengths: list[int]) -> None:
        self.records = records  # the window's record objects, oldest first
        self.data = data  # b"[" + the records' JSON joined by b"," + b"]"
        self.lengths = lengths  # each record's JSON length in `data`


def _encode_in_full(window: list[Record]) -> _Encoded:
    parts = [orjson.dumps(record) for record in window]
    return _Encoded(list(window), b"[" + b",".join(parts) + b"]", [len(p) for p in parts])


def _extend(previous: _Encoded, window: list[Record]) -> _Encoded | None:
    """`window` encoded from `previous` when it is previous's records less some at the front plus one new
    record at the end (the records compared by identity); None otherwise."""
    records = previous.records
    drop = len(records) + 1 - len(window)  # records leaving at the front
    if not window or not 0 <= drop <= len(records) or not all(map(is_, window, records[drop:])):
        return None
    start = 1 + sum(previous.lengths[:drop]) + drop  # after b"[" and the dropped records with their commas
    new = orjson.dumps(window[-1])
    if start < len(previous.data) - 1:  # records kept: one copy of their bytes, no intermediate ones
        data = b"".join((b"[", memoryview(previous.data)[start:-1], b",", new, b"]"))
    else:
        data = b"[" + new + b"]"
    return _Encoded(list(window), data, previous.lengths[drop:] + [len(new)])


class WindowEncodings:
    """Per key (user), the window encoded last; at most `max_keys`, least recently used first out."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._by_key: OrderedDict[bytes, _Encoded] = OrderedDict()
        self.reused = 0  # windows encoded from the previous one (for tests and benchmarks)
        self.encoded = 0  # windows encoded in full

    def __len__(self) -> int:
        return len(self._by_key)

    def window(self, key: bytes, window: list[Record]) -> bytes:
        """`orjson.dumps(window)`, the same bytes, re-using the key's previous window where it can."""
        previous = self._by_key.get(key)
        encoded = _extend(previous, window) if previous is not None else None
        if encoded is None:
            encoded = _encode_in_full(window)
            self.encoded += 1
        else:
            self.reused += 1
        self._by_key[key] = encoded
        self._by_key.move_to_end(key)
        if len(self._by_key) > self.max_keys:
            self._by_key.popitem(last=False)
        return encoded.data

    def update(self, key: bytes, update: dict[str, Any]) -> bytes:
        """A sequence update's JSON, its window (under "window") through `window`."""
        return orjson.dumps({**update, "window": orjson.Fragment(self.window(key, update["window"]))})

    def state(self, key: bytes, state: dict[str, Any]) -> bytes:
        """A user state's JSON; its window (under "w") is the bytes encoded last for the key when the
        records are the same objects (the usual case: the state's window is the last update's)."""
        previous = self._by_key.get(key)
        window = state["w"]
        if (
            previous is not None
            and len(previous.records) == len(window)
            and all(map(is_, window, previous.records))
        ):
            return orjson.dumps({**state, "w": orjson.Fragment(previous.data)})
        return orjson.dumps(state)

    def forget(self) -> None:
        self._by_key.clear()
