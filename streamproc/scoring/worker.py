"""The scoring worker: consume sequence-updates -> micro-batch -> score -> publish -> commit.

A batch's outputs and its input offsets become final together through the commit path of the
processing guarantee (`scoring/commits.py`): Kafka transactions, one per commit interval (exactly-once), or
outputs acknowledged before their offsets are stored (at-least-once). Metrics count a batch's outputs
once it is final. A graceful stop (SIGINT/SIGTERM) or a partition revocation first finishes the batch
in hand. The model runs on CUDA when present, on CPU otherwise.

Kafka outages of any length are waited through (the commit path logs the wait); a commit that fails in
a rebalance is logged and counted, never fatal; a lost assignment drops the batch in hand, which the
partitions' next owner reads again.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from models.features import aggregates
from models.serving.scorer import Scorer, Scores, Window
from streamproc.config import Settings
from streamproc.core.events import InvalidEvent, dead_letter, encode
from streamproc.kafka.clients import new_consumer
from streamproc.observability.metrics import Metrics
from streamproc.observability.partition_gauges import (
    OnOwnerThread,
    read_confluent_assignment,
    register_partition_gauges,
)
from streamproc.scoring.batcher import MicroBatcher
from streamproc.scoring.commits import count_commit_failure, new_commit_path
from streamproc.scoring.messages import Pending, decode_update, finite_scores, score_messages, window_of

log = logging.getLogger(__name__)
IDLE_POLL_MS = 200
Counted = Callable[[], None]  # a metric update that waits until its batch is final


def _now_ms() -> int:
    return int(time.time() * 1000)


class ScoringWorker:
    def __init__(self, settings: Settings, scorer: Scorer, metrics: Metrics) -> None:
        self.settings = settings
        self.scorer = scorer
        self.metrics = metrics
        # alerts carry their explanation: the scorer explains the riskiest at or above the alert threshold
        self._explain_at = settings.alert_threshold if settings.alert_explanations_per_batch else None
        self.batcher: MicroBatcher[Pending] = MicroBatcher(
            settings.batch_max_size, settings.batch_max_wait_ms
        )
        self._stopping = False
        exactly_once = settings.processing_guarantee == "exactly_once"
        self.consumer = new_consumer(
            settings,
            settings.scorer_group,
            {
                # at-least-once: offsets stored once a batch is acknowledged, committed every second;
                # exactly-once: committed in the transactions with the scores
                "enable.auto.commit": not exactly_once,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": max(60_000, settings.rebalance_timeout_ms),
                "partition.assignment.strategy": "range",
                "fetch.wait.max.ms": settings.scorer_fetch_wait_ms,
                "fetch.min.bytes": settings.fetch_min_bytes,
            },
        )
        # a scrape's question about the assignment, answered by this loop (the consumer's thread) each step
        self.assignment_on_loop = OnOwnerThread(read_confluent_assignment(self.consumer))
        register_partition_gauges(metrics, [settings.sequence_updates_topic], self.assignment_on_loop)
        self.commits = new_commit_path(settings, metrics, lambda: self._stopping)
        self._uncounted: list[Counted] = []  # metric updates of the batches not final yet
        self.topics = {
            "risk": settings.risk_scores_topic,
            "next_action": settings.next_action_topic,
            "alert": settings.fraud_alerts_topic,
        }
        # every output series exists from the start, at 0 until its first message
        for topic in self.topics.values():
            metrics.scores_published.labels(topic)
        metrics.model_info.labels(scorer.model_version, str(scorer.device)).set(1)
        self._required = scorer.required_aggregates
        self._wanted: dict[
            str, frozenset[str]
        ] = {}  # by event kind: what the model reads and the update carries
        self._reported_missing: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to finish the batch in hand and exit."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def warm_up(self) -> None:
        """Load everything the first batch would load (the text encoder's weights, torch's lazy imports:
        about 10 s here) before joining the group, so that the first scores do not wait for it."""
        if self.scorer.encoder is not None:
            self.scorer.encoder.encode(["warm-up"])
        now = _now_ms()
        self.scorer.score(
            [
                Window(
                    events=[
                        {
                            "event_id": "warm-up",
                            "user_id": "warm-up",
                            "item_id": "warm-up",
                            "kind": "click",
                            "action": "view",
                            "ts_ms": now,
                            "title": "warm-up",
                        }
                    ],
                    aggregates={},
                )
            ]
        )

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Score until stopped (or until `until()` is true); drain, commit and close on the way out."""
        self.commits.start()
        self.consumer.subscribe(
            [self.settings.sequence_updates_topic], on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self._stopping and not (until and until()):
                self.step()
            self.flush_batch()
            self._settle(self.commits.commit_due(self.consumer, force=True))
        finally:
            self.assignment_on_loop.close()
            try:
                self.consumer.close()  # at-least-once: commits the stored offsets
            except KafkaException as exc:  # Kafka unreachable at the stop: the records are read again
                error = exc.args[0]
                if error.code() != KafkaError._NO_OFFSET:
                    log.warning(
                        "offset commit at close failed (%s); the records after it are read again", error
                    )
                    count_commit_failure(self.metrics, error)
            self.commits.producer.flush(10)

    def step(self) -> None:
        if len(self.batcher):
            # consume() returns once the batch is full or at the batch's deadline, whichever comes first
            wait_ms = self.batcher.wait_ms(_now_ms(), IDLE_POLL_MS)
            messages = self.consumer.consume(num_messages=self.batcher.room(), timeout=wait_ms / 1000)
        else:
            # poll() returns as soon as one update arrives (consume() would wait for a full batch or the
            # idle timeout: up to 200 ms of latency at low rates), then take what is already queued; an open
            # transaction is committed at once when nothing arrives
            due_ms = self.commits.due_in_ms()
            first = self.consumer.poll((IDLE_POLL_MS if due_ms is None else min(due_ms, 5.0)) / 1000)
            if first is None:
                self._settle(self.commits.commit_due(self.consumer, force=True))
            messages = [] if first is None else [first]
            if first is not None and self.batcher.room() > 1:
                messages += self.consumer.consume(num_messages=self.batcher.room() - 1, timeout=0)
        now = _now_ms()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            self.batcher.add(decode_update(message), now)
        if self.batcher.is_due(_now_ms()):
            self.flush_batch()
        self._settle(self.commits.commit_due(self.consumer))
        self.assignment_on_loop.answer()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions given up in a rebalance: score and commit the batch in hand first."""
        self.flush_batch()
        self._settle(self.commits.commit_due(consumer, force=True))
        self.commits.after_revoke(consumer)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a rebalance (the session expired in an outage): another member may
        own them already, so the batch in hand is dropped unscored and its offsets uncommitted; whoever
        reads the partitions next starts from their last committed offset."""
        dropped = self.batcher.drain()
        self.commits.drop_open()
        self._uncounted = []
        log.warning(
            "partition assignment lost (%s); dropped %d sequence updates to be read again",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions),
            len(dropped),
        )
        self.metrics.commit_failures.labels("assignment_lost").inc()

    # -- scoring -----------------------------------------------------------------------------------
    def flush_batch(self) -> None:
        batch = self.batcher.drain()
        if not batch:
            return
        valid = [p for p in batch if p.update is not None]
        counted: list[Counted] = []
        self.commits.begin()
        for p in batch:
            if p.error is not None:
                counted.append(self._dead_letter(p))
        if valid:
            self._check_inputs(valid)
            started = time.perf_counter()
            scores = self.scorer.score(
                [window_of(p) for p in valid],
                explain_at=self._explain_at,
                explain_max=self.settings.alert_explanations_per_batch,
            )
            self.metrics.model_batch.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(valid))
            counted += self._publish(valid, scores)
        self._uncounted += counted
        self._settle(self.commits.finish(self.consumer, [p.message for p in batch]))
        self._report_cache()

    def _settle(self, final: bool | None) -> None:
        """Count the outputs waiting to be counted once they are final (True), forget them if abandoned
        (False: they are scored again); None: not final yet."""
        if final is None:
            return
        uncounted, self._uncounted = self._uncounted, []
        if final:
            for count in uncounted:
                count()

    def _check_inputs(self, valid: list[Pending]) -> None:
        """Count the updates that lack an aggregate the checkpoint reads and the pipeline serves for their
        kind (rolled out before the Faust workers that compute it); log each missing set once."""
        for pending in valid:
            update = pending.update
            assert update is not None
            kind = str(update.get("kind"))
            if kind not in self._wanted:
                self._wanted[kind] = self._required & aggregates.served_names(kind)
            missing = self._wanted[kind] - (update.get("aggregates") or {}).keys()
            if missing:
                self.metrics.model_inputs_missing.inc()
                if not missing <= self._reported_missing:
                    self._reported_missing |= missing
                    log.warning(
                        "sequence updates lack aggregates the model reads (scored as 0): %s; upgrade "
                        "the Faust workers to this checkpoint's streamproc",
                        sorted(missing),
                    )

    def _publish(self, valid: list[Pending], scores: list[Scores]) -> list[Counted]:
        """Produce each update's scores (a non-finite one is dead-lettered instead); returns the metric
        updates to make once the batch is final."""
        scored_ts_ms = _now_ms()
        counted: list[Counted] = []
        for pending, score in zip(valid, scores, strict=True):
            update = pending.update
            assert update is not None
            if not finite_scores(score):
                counted.append(
                    self._dead_letter(
                        Pending(
                            pending.message,
                            None,
                            InvalidEvent(
                                "non_finite_score",
                                f"the model scored event {update.get('event_id')} with a number that is not "
                                f"finite (risk {score.risk}, time to next {score.time_to_next_s} s)",
                            ),
                        )
                    )
                )
                continue
            key = str(update["user_id"]).encode()
            ingest_ms = (update.get("lineage") or {}).get("ingest_ts_ms")
            for kind, value in score_messages(
                update, score, scored_ts_ms, self.settings.alert_threshold
            ).items():
                self.commits.produce(self.topics[kind], key, encode(value))
                counted.append(self._counter(kind, ingest_ms, update.get("kind"), value.get("risk")))
        return counted

    def _counter(
        self, kind: str, ingest_ms: int | None, event_kind: str | None, risk: float | None
    ) -> Counted:
        """Count a published output: per topic; a risk score also by value and event-to-score latency."""
        topic = self.topics[kind]

        def count() -> None:
            self.metrics.scores_published.labels(topic).inc()
            if kind == "alert":
                self.metrics.fraud_alerts.inc()
            elif kind == "risk":
                self.metrics.risk_score.labels(str(event_kind)).observe(float(risk or 0.0))
                if ingest_ms is not None:
                    self.metrics.event_to_score.observe(max(0.0, (_now_ms() - ingest_ms) / 1000))

        return count

    def _dead_letter(self, pending: Pending) -> Counted:
        msg, error = pending.message, pending.error
        assert error is not None
        self.commits.produce(
            self.settings.dead_letter_topic,
            msg.key(),
            dead_letter(
                msg.value(),
                msg.key(),
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                error,
                _now_ms(),
                whole=len(msg.value() or b"") <= self.settings.max_input_bytes,
            ),
        )
        return lambda: self.metrics.dead_letters.labels(msg.topic(), error.reason).inc()

    # -- metrics -----------------------------------------------------------------------------------
    def _report_cache(self) -> None:
        ratio = getattr(self.scorer, "cache_hit_rate", None)
        if callable(ratio):
            ratio = ratio()
        if isinstance(ratio, int | float):
            self.metrics.encoder_cache_hit_ratio.set(float(ratio))
