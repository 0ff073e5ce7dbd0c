"""Thin Faust agents: decode -> validate -> pure state transition -> state cache -> emit update or dead letter.

Three stages, each keyed so that a table key always lives in the partition of the events that
change it:
  transactions (any key)      -> validate -> streamproc.transactions-by-terminal (key terminal)
  by-terminal                 -> terminal velocity table -> streamproc.user-events (key user)
  clicks + user-events        -> user window + velocity table -> sequence-updates (key user)
Events are taken in batches and their outputs produced at once; states are written behind
(`streamproc.write_behind`): each changed key once per flush interval, to RocksDB and its changelog,
and the inputs are acknowledged only after that flush is acknowledged by the broker (at-least-once;
redelivered offsets change no state twice).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import faust

from streamproc.app import Topology
from streamproc.config import Settings
from streamproc.events import InvalidEvent, dead_letter, decode, encode, validate
from streamproc.metrics import Metrics
from streamproc.output_producer import OutputProducer
from streamproc.processing import (
    Lineage,
    apply_terminal_event,
    apply_user_event,
    new_terminal_state,
    new_user_state,
    sequence_update,
)
from streamproc.state_cache import FlushPolicy
from streamproc.write_behind import WriteBehind, flush_when_due

log = logging.getLogger(__name__)

TAKE_MAX = 4000  # events per batch
TAKE_WITHIN_S = 0.01
EXIT_AGENT_FAILED = 70  # EX_SOFTWARE


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lineage(event: faust.EventT) -> Lineage:
    msg = event.message
    return Lineage(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))


def exit_now(error: BaseException) -> None:
    """A batch or flush failed: stop at once, acknowledging nothing more, and restart from the last flush.

    Carrying on would apply later events to states missing the failed batch, and their offsets would
    then hide the failed batch from its redelivery. The process exits as under SIGKILL (RocksDB and
    the changelog are crash-safe) so that its supervisor restarts it.
    """
    log.critical("agent failed, stopping the worker: %r", error, exc_info=error)
    logging.shutdown()
    os._exit(EXIT_AGENT_FAILED)


def register_agents(
    topo: Topology, settings: Settings, metrics: Metrics, on_fatal: Callable[[BaseException], object] = exit_now
) -> list[WriteBehind]:
    """Register the three agents; returns their write-behind objects (one per agent)."""
    app = topo.app
    policy = FlushPolicy(settings.state_flush_interval_ms, settings.state_flush_max_events)
    tick_s = min(0.25, max(0.01, settings.state_flush_interval_ms / 4000))
    writers: list[WriteBehind] = []

    def write_behind(stage: str, table: faust.Table | None = None, new_state: Callable | None = None) -> WriteBehind:
        flush_seconds = metrics.state_flush_seconds.labels(stage)
        state_writes = metrics.state_writes.labels(stage)
        hits, misses = metrics.state_lookups.labels(stage, "memory"), metrics.state_lookups.labels(stage, "store")

        def on_flush(seconds: float, keys_written: int) -> None:
            flush_seconds.observe(seconds)
            state_writes.inc(keys_written)

        def on_lookup(in_memory: bool) -> None:
            (hits if in_memory else misses).inc()

        writer = WriteBehind(OutputProducer(settings, stage), policy, table, new_state, settings.state_cache_keys,
                             on_flush=on_flush, on_lookup=on_lookup)
        writers.append(writer)
        return writer

    async def run_batches(stream: faust.StreamT, writer: WriteBehind,
                          body: Callable[[WriteBehind, list[faust.EventT]], None]) -> None:
        """Take batches, hold their inputs, run `body` on each, flush when due (here or on the timer)."""
        paused = app.flow_control.is_active
        flusher = asyncio.ensure_future(flush_when_due(writer, tick_s, on_fatal, urgent=lambda: not paused()))
        try:
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
                async with writer.lock:
                    writer.hold(events)
                    try:
                        body(writer, events)
                        if writer.due():
                            await writer.flush()
                    except Exception as error:
                        writer.fail(error)
                        on_fatal(error)
                        raise
        finally:
            flusher.cancel()

    def send_dead_letter(out: OutputProducer, event: faust.EventT, error: InvalidEvent) -> None:
        msg = event.message
        metrics.dead_letters.labels(msg.topic, error.reason).inc()
        out.produce(settings.dead_letter_topic, msg.key,
                    dead_letter(msg.value, msg.key, msg.topic, msg.partition, msg.offset, error, _now_ms()))

    def route_batch(writer: WriteBehind, events: list[faust.EventT]) -> None:
        """Validate transactions and re-key the valid ones by terminal; dead-letter the rest."""
        out = writer.out
        events_in = metrics.events_in.labels(settings.transactions_topic)
        for event in events:
            events_in.inc()
            try:
                valid = validate("transaction", event.message.value)
            except InvalidEvent as error:
                send_dead_letter(out, event, error)
                continue
            payload = {"record": valid.record, "label": valid.label, "lineage": _lineage(event).as_dict()}
            out.produce(settings.tx_by_terminal_topic, valid.record["item_id"].encode(), encode(payload))

    def terminal_batch(writer: WriteBehind, events: list[faust.EventT]) -> None:
        """Fold transactions into their terminal's velocity state and pass them on keyed by user."""
        for event in events:
            msg = event.message
            payload = decode(msg.value)
            record = payload["record"]
            state = writer.state(msg.key, event)
            origin = payload["lineage"]  # the input transaction: re-sent copies and redeliveries share it
            source = f"{origin['topic']}:{origin['partition']}"
            payload["terminal"] = apply_terminal_event(state, record, payload.pop("label"), source, origin["offset"])
            writer.out.produce(settings.user_events_topic, record["user_id"].encode(), encode(payload))

    def user_batch(writer: WriteBehind, events: list[faust.EventT]) -> None:
        """Fold clicks and routed transactions into the user's window and emit one sequence update each."""
        out = writer.out
        clicks_in = metrics.events_in.labels(settings.clicks_topic)
        accepted = {topic: metrics.events_accepted.labels(topic) for topic in settings.input_topics()}
        for event in events:
            msg = event.message
            if msg.topic == settings.clicks_topic:
                clicks_in.inc()
                try:
                    valid = validate("click", msg.value)
                except InvalidEvent as error:
                    send_dead_letter(out, event, error)
                    continue
                record, lineage, terminal = valid.record, _lineage(event), {}
                user_key = record["user_id"].encode()
                if msg.key != user_key:  # keyed by something else: re-key so the user's state stays in one partition
                    rekeyed = {"record": record, "lineage": lineage.as_dict(), "terminal": {}}
                    out.produce(settings.user_events_topic, user_key, encode(rekeyed))
                    continue
            else:
                payload = decode(msg.value)
                record, lineage, terminal = payload["record"], Lineage.from_dict(payload["lineage"]), payload["terminal"]
            state = writer.state(msg.key, event)
            window, customer = apply_user_event(
                state, record, f"{msg.topic}:{msg.partition}", msg.offset,
                settings.window_max_events, settings.window_max_age_ms,
            )
            (accepted.get(lineage.topic) or metrics.events_accepted.labels(lineage.topic)).inc()
            update = sequence_update(record, window, customer | terminal, lineage, _now_ms())
            out.produce(settings.sequence_updates_topic, msg.key, encode(update))
            metrics.sequence_updates.inc()

    route_writer = write_behind("route-transactions")
    terminal_writer = write_behind("terminal-velocity", topo.terminals, new_terminal_state)
    user_writer = write_behind("user-windows", topo.users, new_user_state)

    @app.agent(topo.transactions, name="streamproc.route-transactions")
    async def route_transactions(stream: faust.StreamT) -> None:
        await run_batches(stream, route_writer, route_batch)

    @app.agent(topo.tx_by_terminal, name="streamproc.terminal-velocity")
    async def terminal_velocity(stream: faust.StreamT) -> None:
        await run_batches(stream, terminal_writer, terminal_batch)

    @app.agent(topo.user_inputs, name="streamproc.user-windows")
    async def user_windows(stream: faust.StreamT) -> None:
        await run_batches(stream, user_writer, user_batch)

    @app.on_partitions_revoked.connect
    async def forget_states_on_rebalance(sender: faust.App, revoked: set, **kwargs: object) -> None:
        """Faust waits for held inputs (so for a flush) before this; another worker may own the keys next."""
        for writer in writers:
            async with writer.lock:
                writer.forget_states()

    @app.timer(interval=10.0)
    async def report_table_sizes() -> None:
        for table in (topo.users, topo.terminals):
            metrics.table_keys.labels(table.name).set(len(table))

    return writers
