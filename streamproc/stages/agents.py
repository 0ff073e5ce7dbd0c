"""Thin Faust agents: decode -> validate -> pure state transition -> table -> emit update or dead letter.

Three stages, each keyed so that a table key always lives in the partition of the events that
change it:
  transactions, fraud-labels (any key) -> validate -> streamproc.transactions-by-terminal (key terminal)
  by-terminal                 -> terminal velocity table -> streamproc.user-events (key user; transactions only)
  clicks + user-events        -> user window + velocity table -> sequence-updates (key user)
Events are taken in batches (what each batch does is in streamproc.stages.batches) and their states
updated in memory (streamproc.stages.write_behind); each
changed key is written to RocksDB and its changelog once per batch (state_flush="batch") or once
per commit (state_flush="commit"), in the context of that key's own last event. Exactly-once (the
default): the three stages share one transactional producer, and each commit is one transaction with
the input offsets (streamproc.stages.transactions). At-least-once: every output is acknowledged before
the offsets are acknowledged or committed (redelivered offsets change no state twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import faust
from faust.types import TableT

from streamproc.config import Settings
from streamproc.core.event_time import EventTimeClocks
from streamproc.core.processing import (
    State,
    new_terminal_state,
    new_user_state,
)
from streamproc.core.window_codec import WindowEncodings
from streamproc.kafka.output_producer import OutputProducer
from streamproc.observability.metrics import Metrics
from streamproc.stages.app import Topology
from streamproc.stages.batches import StageBatches
from streamproc.stages.table_size import install_table_size_reporter
from streamproc.stages.transactions import StageTransactions, worker_transactional_id
from streamproc.stages.write_behind import StateCache, WriteBehind

TAKE_MAX = 4000  # events per batch: more events per key per batch, fewer changelog records
TAKE_WITHIN_S = 0.01


@contextmanager
def acked_only_when_settled(
    events: Sequence[faust.EventT], transactions: StageTransactions | None = None
) -> Iterator[None]:
    """Hold each event's message until the body completes, so that an exception or a cancellation leaves
    the batch unacknowledged (redelivered after a restart) rather than committed with its work undone.

    `take_events` acknowledges every event of a batch in its `finally`, also when the agent body raised
    or was cancelled (SIGTERM mid-batch). One extra reference per message makes that acknowledgement
    final only after the body has released it, which it does only on success.
    """
    for event in events:
        event.message.incref()
    try:
        yield
    except Exception as exc:
        if transactions is not None:  # part of its records may be in the open transaction
            transactions.failed_batch(exc)
        raise
    for event in events:
        event.message.decref()


def register_agents(topo: Topology, settings: Settings, metrics: Metrics) -> WriteBehind:
    """The three agents and their table states; the WriteBehind returned (also `app.write_behind`) holds the
    states, the producers and, under exactly-once, the transactions."""
    app = topo.app

    def count_flush(table: str, written: int, seconds: float) -> None:
        metrics.state_writes.labels(table).inc(written)
        metrics.state_flush.observe(seconds)

    write_behind = WriteBehind(on_flush=count_flush)
    app.write_behind = write_behind  # type: ignore[attr-defined]  # flushed in Faust's commit (compat.faust_commit_hook)

    exactly_once = settings.processing_guarantee == "exactly_once"
    shared_out = (
        write_behind.producer(OutputProducer(settings, "stages", worker_transactional_id(settings)))
        if exactly_once
        else None
    )

    def new_producer(name: str) -> OutputProducer:
        if shared_out is not None:  # one transaction holds what every stage sends
            return shared_out
        return write_behind.producer(OutputProducer(settings, name))

    def new_cache(
        table: TableT,
        new_state: Callable[[], State],
        out: OutputProducer,
        encode_state: Callable[[bytes, State], bytes] | None = None,
    ) -> StateCache:
        return write_behind.cache(
            StateCache(
                table, new_state, out, settings.state_cache_keys, encode_state, hold_writes=exactly_once
            )
        )

    route_out = new_producer("route-transactions")
    terminal_out = new_producer("terminal-velocity")
    terminal_states = new_cache(topo.terminals, new_terminal_state, terminal_out)
    user_out = new_producer("user-windows")
    windows = WindowEncodings(settings.state_cache_keys)
    user_states = new_cache(topo.users, new_user_state, user_out, windows.state)
    stages = StageBatches(settings, metrics, EventTimeClocks(settings.max_event_ahead_ms), windows)
    transactions = (
        StageTransactions(settings, metrics, shared_out, write_behind.caches)
        if shared_out is not None
        else None
    )
    write_behind.transactions = transactions

    async def before_batch() -> bool:
        """False: skip the batch (an abandoned transaction: it is read again after the group rejoin)."""
        return transactions is None or await transactions.before_batch()

    async def after_batch(out: OutputProducer, states: StateCache | None = None) -> None:
        """Per batch (state_flush="batch"): write the states and wait for every record before the batch is
        acknowledged. Write-behind (state_flush="commit"): serve delivery callbacks, and write the states
        early only when too many keys are dirty (memory bound); the commit flushes the rest."""
        if settings.state_flush == "batch":
            await write_behind.flush_stage(out, states)
            return
        out.poll()
        if states is not None and states.dirty_keys > settings.state_cache_keys:
            states.write_dirty()

    @app.agent(topo.tx_inputs, name="streamproc.route-transactions")
    async def route_transactions(stream: faust.StreamT) -> None:
        out = route_out
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            if not await before_batch():
                continue
            with acked_only_when_settled(events, transactions):
                stages.route_batch(out, events)
                await after_batch(out)

    @app.agent(topo.tx_by_terminal, name="streamproc.terminal-velocity")
    async def terminal_velocity(stream: faust.StreamT) -> None:
        out, states = terminal_out, terminal_states
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            if not await before_batch():
                continue
            with acked_only_when_settled(events, transactions):
                stages.terminal_batch(out, states, events)
                await after_batch(out, states)

    @app.agent(topo.user_inputs, name="streamproc.user-windows")
    async def user_windows(stream: faust.StreamT) -> None:
        out, states = user_out, user_states
        async for events in cast(faust.Stream, stream).take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            if not await before_batch():
                continue
            with acked_only_when_settled(events, transactions):
                stages.user_batch(out, states, events)
                await after_batch(out, states)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's receiver type rejects coroutines
    async def forget_states(app: faust.App, revoked: set, **kwargs: Any) -> None:
        """Revocation committed (and so flushed) what it could; another worker may now change these states."""
        write_behind.forget_states()
        windows.forget()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as above
    async def read_on_from_the_last_commit(app: faust.App, assigned: set, **kwargs: Any) -> None:
        """After a rejoin that followed an abandoned transaction: batches are processed again."""
        if transactions is not None:
            transactions.rewound()

    install_table_size_reporter(
        app, (topo.users, topo.terminals), lambda table, keys: metrics.table_keys.labels(table).set(keys)
    )
    return write_behind
