"""Write-behind states (streamproc.stages.write_behind): read once, written once per flush, in the key's partition.

The table and producer here are small fakes that record calls; the real RocksDB store, changelog
and commit are exercised by the integration tests (tests/integration/test_pipeline.py).
"""

import asyncio
from types import SimpleNamespace

import faust
import pytest
from faust.types import TP, Message

from streamproc.compat import faust_commit_hook
from streamproc.core.events import decode, encode
from streamproc.stages.write_behind import (
    StateCache,
    WriteBehind,
    in_context_of,
    put_all,
)

CHANGELOG = "app-user-state-changelog"


class FakeStore(dict):
    """A store that records which partition (from the current event) each write went to."""

    def __init__(self) -> None:
        super().__init__()
        self.partition_of: dict[bytes, int] = {}
        self.persisted: dict[TP, int] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        from faust.streams import current_event

        self.partition_of[key] = current_event().message.partition
        super().__setitem__(key, value)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


class FakeTable:
    name = "user-state"

    def __init__(self) -> None:
        self.data = FakeStore()
        self.reads: list[bytes] = []
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: CHANGELOG)

    def get(self, key: bytes) -> bytes | None:
        self.reads.append(key)
        return self.data.get(key)


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes, int | None, bool]] = []
        self.acked: dict[tuple[str, int], int] = {}
        self.generation = 0
        self.settled: list[int] = []

    def produce(self, topic, key, value, partition=None, track=False) -> None:
        self.records.append((topic, key, value, partition, track))

    def cut(self) -> int:
        self.generation += 1
        return self.generation - 1

    async def settle_through(self, generation: int) -> None:
        self.settled.append(generation)


@pytest.fixture
def app() -> faust.App:
    return faust.App("write-behind-test", broker="kafka://127.0.0.1:1")


def event(app: faust.App, key: bytes, partition: int, offset: int = 0) -> faust.EventT:
    message = Message("clicks", partition, offset, 0.0, 0, {}, key, b"{}", None)
    return faust.Event(app, key, b"{}", {}, message)


def new_state() -> dict:
    return {"n": 0}


def test_a_key_is_read_once_and_written_once_per_flush_in_its_own_partition(app: faust.App) -> None:
    table, out = FakeTable(), FakeProducer()
    dict.__setitem__(table.data, b"u1", b'{"n": 5}')  # written before this run
    cache = StateCache(table, new_state, out, max_clean_keys=10)
    for offset in range(3):
        cache.get_for_update(b"u1", event(app, b"u1", partition=2, offset=offset))["n"] += 1
    cache.get_for_update(b"u2", event(app, b"u2", partition=1))["n"] += 1
    assert table.reads == [b"u1", b"u2"]
    assert cache.dirty_keys == 2
    assert cache.write_dirty() == 2
    assert decode(table.data[b"u1"]) == {"n": 8} and decode(table.data[b"u2"]) == {"n": 1}
    assert table.data.partition_of == {b"u1": 2, b"u2": 1}
    assert sorted(out.records) == sorted(
        [
            (CHANGELOG, b"u1", encode({"n": 8}), 2, True),
            (CHANGELOG, b"u2", encode({"n": 1}), 1, True),
        ]
    )
    assert cache.dirty_keys == 0 and cache.write_dirty() == 0 and len(out.records) == 2


def test_clean_states_are_reused_and_the_least_recently_used_leave_first(app: faust.App) -> None:
    table, out = FakeTable(), FakeProducer()
    cache = StateCache(table, new_state, out, max_clean_keys=2)
    for key in (b"a", b"b", b"c"):
        cache.get_for_update(key, event(app, key, 0))["n"] = 1
    cache.write_dirty()
    assert len(cache) == 2  # "a" left the cache
    table.reads.clear()
    for key in (b"b", b"c", b"a"):
        assert cache.get_for_update(key, event(app, key, 0)) == {"n": 1}
    assert table.reads == [b"a"]
    assert cache.lookups == {"dirty": 0, "clean": 2, "table": 4}


def test_forgotten_states_are_read_again_from_the_table(app: faust.App) -> None:
    table, out = FakeTable(), FakeProducer()
    cache = StateCache(table, new_state, out, max_clean_keys=10)
    cache.get_for_update(b"u", event(app, b"u", 0))["n"] = 3
    cache.write_dirty()
    cache.get_for_update(b"u", event(app, b"u", 0))["n"] = 99  # dirty, never written
    cache.forget()
    assert cache.get_for_update(b"u", event(app, b"u", 0)) == {"n": 3}


def test_a_peek_creates_no_state_and_writes_only_what_is_marked_dirty(app: faust.App) -> None:
    table, out = FakeTable(), FakeProducer()
    dict.__setitem__(table.data, b"t1", b'{"n": 2}')
    cache = StateCache(table, new_state, out, max_clean_keys=10)
    assert cache.peek(b"t-unknown", event(app, b"t-unknown", 0)) is None
    assert cache.peek(b"t1", event(app, b"t1", 1)) == {"n": 2}
    assert cache.write_dirty() == 0 and len(cache) == 1 and table.reads == [b"t-unknown", b"t1"]
    state = cache.peek(b"t1", event(app, b"t1", 1))  # held in memory now: not read again
    state["n"] += 1
    cache.mark_dirty(b"t1", state, event(app, b"t1", 1, offset=9))
    assert table.reads == [b"t-unknown", b"t1"] and cache.write_dirty() == 1
    assert out.records == [(CHANGELOG, b"t1", encode({"n": 3}), 1, True)] and b"t-unknown" not in table.data


def test_only_the_changelogs_acknowledged_offsets_are_persisted(app: faust.App) -> None:
    table, out = FakeTable(), FakeProducer()
    cache = StateCache(table, new_state, out, max_clean_keys=10)
    out.acked = {(CHANGELOG, 0): 41, (CHANGELOG, 3): 7, ("sequence-updates", 0): 1000}
    cache.persist_offsets()
    assert table.data.persisted == {TP(CHANGELOG, 0): 41, TP(CHANGELOG, 3): 7}
    assert out.acked == {("sequence-updates", 0): 1000}


def test_a_flush_writes_every_cache_then_waits_for_every_producers_generation(app: faust.App) -> None:
    flushed: list[tuple[str, int]] = []
    write_behind = WriteBehind(on_flush=lambda table, written, seconds: flushed.append((table, written)))
    outs = [write_behind.producer(FakeProducer()) for _ in range(2)]
    table = FakeTable()
    cache = write_behind.cache(StateCache(table, new_state, outs[1], max_clean_keys=10))
    cache.get_for_update(b"u", event(app, b"u", 1))["n"] = 1
    outs[1].acked = {(CHANGELOG, 1): 0}
    asyncio.run(write_behind.flush())
    assert [o.settled for o in outs] == [[0], [0]]
    assert [o.generation for o in outs] == [1, 1]
    assert table.data.persisted == {TP(CHANGELOG, 1): 0}
    assert flushed == [("user-state", 1)]


def test_a_failed_flush_commits_nothing_and_crashes_the_consumer() -> None:
    from faust.transport import consumer as faust_consumer

    faust_commit_hook.install()
    crashed: list[BaseException] = []

    class FailingFlush:
        async def flush(self) -> None:
            raise RuntimeError("outputs not acknowledged")

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    # a consumer with nothing else: reaching Faust's own commit would fail on the missing attributes
    consumer = SimpleNamespace(app=SimpleNamespace(write_behind=FailingFlush()), crash=crash)
    did_commit = asyncio.run(faust_consumer.Consumer._commit_offsets(consumer, {TP("clicks", 0): 10}))
    assert did_commit is False
    assert [str(e) for e in crashed] == ["outputs not acknowledged"]


def test_states_reach_the_rocksdb_database_of_their_events_partition(tmp_path) -> None:
    """The real store (rocksdict in a real directory): one write batch per partition, each key readable
    in its own partition's database only, and after the store is reopened."""

    def rocksdb_table(app_id: str) -> tuple[faust.App, faust.Table]:
        app = faust.App(app_id, broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path))
        return app, app.Table("users", key_type=bytes, value_type=bytes, partitions=4)

    app, table = rocksdb_table("put-all-test")
    store = table.data
    assert store.use_rocksdict
    put_all(
        store,
        [
            (event(app, b"u1", 3), b"u1", b'{"n":1}'),
            (event(app, b"u2", 1), b"u2", b'{"n":2}'),
            (event(app, b"u3", 3), b"u3", b'{"n":3}'),
        ],
    )
    with in_context_of(event(app, b"u1", 3)):
        assert table.get(b"u1") == b'{"n":1}' and table.get(b"u3") == b'{"n":3}'
    assert store._db_for_partition(1)[b"u2"] == b'{"n":2}'
    assert b"u2" not in store._db_for_partition(3) and b"u1" not in store._db_for_partition(1)
    for db in store._dbs.values():
        db.close()

    app, table = rocksdb_table("put-all-test")  # the same directory, opened again
    assert table.data._db_for_partition(3)[b"u1"] == b'{"n":1}'
