"""Velocity aggregates in daily and minute buckets: the one arithmetic used online (tables) and offline (training).

Pure Python on plain dicts so that a Faust table can store the state as JSON and training can
replay it over a data set. Features follow the Fraud Handbook (chapter 3): customer spending over
1, 7, 30 days; terminal count and fraud risk over 1, 7, 30 days ending at the 7-day label delay.
Beyond the handbook, the terminal's known fraud history over those same 30 known days (how long ago
its first and last known fraud, and its fraud rate since the first): a compromised terminal keeps
being defrauded for weeks, a terminal with one stray fraud does not.

Recent velocity, up to the event and needing no labels: count and amount over the last hour
(minute buckets, sliding) for customers and terminals, and over the last 1 and 7 days (today
included) for terminals. The sequence updates carry it for the consumers of the scores, and the risk
trees read it (models.model.risk_trees); the temporal head does not (featurize.MODEL_AGGREGATES).
"""

from __future__ import annotations

import functools

DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
LABEL_DELAY_DAYS = 7
KEEP_DAYS = max(WINDOWS_DAYS) + LABEL_DELAY_DAYS + 1

MINUTE_MS = 60_000
HOUR_MINUTES = 60
# state: {"d": {day_index_as_str: [count, amount_sum, fraud_count]},
#         "m": {minute_index_as_str: [count, amount_sum]} for the newest hour}; JSON keys are strings.
VelocityState = dict

CUSTOMER_FEATURES = tuple(
    name for w in WINDOWS_DAYS for name in (f"customer_nb_tx_{w}d", f"customer_avg_amount_{w}d")
)
TERMINAL_FEATURES = tuple(
    name for w in WINDOWS_DAYS for name in (f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d")
)
AGGREGATE_FEATURES = CUSTOMER_FEATURES + TERMINAL_FEATURES
CUSTOMER_RECENT_FEATURES = ("customer_nb_tx_1h", "customer_amount_1h")
TERMINAL_RECENT_FEATURES = tuple(
    f"terminal_recent_{name}_{w}" for w in ("1h", "1d", "7d") for name in ("nb_tx", "amount")
)
RECENT_FEATURES = CUSTOMER_RECENT_FEATURES + TERMINAL_RECENT_FEATURES  # read by the risk trees, not the head
# read by the risk trees only (models.model.risk_trees), so the head's inputs stay the 12 above
TERMINAL_HISTORY_FEATURES = (
    "terminal_first_fraud_age_days",  # 0: no known fraud in the kept days
    "terminal_last_fraud_age_days",  # 0: no known fraud in the kept days
    "terminal_fraud_days",
    "terminal_frauds_since_first",
    "terminal_nb_tx_since_first",
    "terminal_risk_since_first",
)


def new_state() -> VelocityState:
    return {"d": {}}


def day_index(ts_ms: int) -> int:
    return int(ts_ms) // DAY_MS


def update(state: VelocityState, ts_ms: int, amount: float, label: int | None = None) -> VelocityState:
    """Add one transaction to its day bucket and drop buckets too old to matter. Mutates and returns."""
    days = state.setdefault("d", {})
    day = day_index(ts_ms)
    bucket = days.setdefault(str(day), [0, 0.0, 0])
    bucket[0] += 1
    bucket[1] += float(amount)
    if label:
        bucket[2] += 1
    newest = max(int(d) for d in days)
    for stale in [d for d in days if int(d) <= newest - KEEP_DAYS]:
        del days[stale]
    minutes = state.setdefault("m", {})  # states written before minute buckets existed have none
    minute = int(ts_ms) // MINUTE_MS
    newest_minute = max([minute, *(int(m) for m in minutes)])
    if (
        minute > newest_minute - HOUR_MINUTES
    ):  # a late event older than the newest hour counts in its day only
        recent = minutes.setdefault(str(minute), [0, 0.0])
        recent[0] += 1
        recent[1] += float(amount)
    for stale in [m for m in minutes if int(m) <= newest_minute - HOUR_MINUTES]:
        del minutes[stale]
    return state


def _last_hour(state: VelocityState, ts_ms: int) -> tuple[int, float]:
    """Count and amount over the hour up to `ts_ms`'s minute, included (exact to the minute for an event
    at or after the state's newest hour; an event from further back sees only what the state still holds)."""
    minute = int(ts_ms) // MINUTE_MS
    count, amount = 0, 0.0
    for m, (c, a) in state.get("m", {}).items():
        if minute - HOUR_MINUTES < int(m) <= minute:
            count += c
            amount += a
    return count, amount


def customer_recent_features(state: VelocityState, ts_ms: int) -> dict[str, float]:
    """The customer's transaction count and total amount over the last hour."""
    count, amount = _last_hour(state, ts_ms)
    return {"customer_nb_tx_1h": float(count), "customer_amount_1h": amount}


def terminal_recent_features(state: VelocityState, ts_ms: int) -> dict[str, float]:
    """The terminal's transaction count and total amount over the last hour, and the last 1 and 7 days
    (today included): its velocity now, which needs no labels."""
    count, amount = _last_hour(state, ts_ms)
    out = {"terminal_recent_nb_tx_1h": float(count), "terminal_recent_amount_1h": amount}
    today = day_index(ts_ms)
    for w in (1, 7):
        count, amount, _ = _sum_days(state, today - w + 1, today)
        out[f"terminal_recent_nb_tx_{w}d"] = float(count)
        out[f"terminal_recent_amount_{w}d"] = amount
    return out


def _sum_days(state: VelocityState, first_day: int, last_day: int) -> tuple[int, float, int]:
    count, amount, frauds = 0, 0.0, 0
    for day, (c, a, f) in state.get("d", {}).items():
        if first_day <= int(day) <= last_day:
            count += c
            amount += a
            frauds += f
    return count, amount, frauds


def customer_features(state: VelocityState, ts_ms: int) -> dict[str, float]:
    """Count and mean amount of the customer's transactions over the last 1, 7, 30 days (today included)."""
    today = day_index(ts_ms)
    out: dict[str, float] = {}
    for w in WINDOWS_DAYS:
        count, amount, _ = _sum_days(state, today - w + 1, today)
        out[f"customer_nb_tx_{w}d"] = float(count)
        out[f"customer_avg_amount_{w}d"] = amount / count if count else 0.0
    return out


def terminal_features(state: VelocityState, ts_ms: int) -> dict[str, float]:
    """Count and fraud rate at the terminal over 1, 7, 30 days ending LABEL_DELAY_DAYS before today.

    Only days whose labels are already known (older than the delay) are read, so no label from
    inside the delay period, and nothing after the scored transaction, ever reaches a feature.
    """
    last_known = day_index(ts_ms) - LABEL_DELAY_DAYS
    out: dict[str, float] = {}
    for w in WINDOWS_DAYS:
        count, _, frauds = _sum_days(state, last_known - w + 1, last_known)
        out[f"terminal_nb_tx_{w}d"] = float(count)
        out[f"terminal_risk_{w}d"] = frauds / count if count else 0.0
    return out | terminal_history(state, ts_ms)


def terminal_history(state: VelocityState, ts_ms: int) -> dict[str, float]:
    """The terminal's known frauds over the days its 30-day risk reads (ending at the label delay).

    Ages are in days before today (at least LABEL_DELAY_DAYS; 0 when no fraud is known); "since first"
    counts every known day from the first known fraud's day on.
    """
    today = day_index(ts_ms)
    last_known = today - LABEL_DELAY_DAYS
    first_day = last_known - max(WINDOWS_DAYS) + 1
    fraud_days = sorted(
        int(d) for d, (_, _, f) in state.get("d", {}).items() if f and first_day <= int(d) <= last_known
    )
    if not fraud_days:
        return dict.fromkeys(TERMINAL_HISTORY_FEATURES, 0.0)
    count, _, frauds = _sum_days(state, fraud_days[0], last_known)
    return {
        "terminal_first_fraud_age_days": float(today - fraud_days[0]),
        "terminal_last_fraud_age_days": float(today - fraud_days[-1]),
        "terminal_fraud_days": float(len(fraud_days)),
        "terminal_frauds_since_first": float(frauds),
        "terminal_nb_tx_since_first": float(count),
        "terminal_risk_since_first": frauds / count,
    }


def add_known_fraud(state: VelocityState, ts_ms: int, delta: int) -> bool:
    """Count one more (delta=1) or one fewer (delta=-1) known fraud on the day of a transaction at `ts_ms`.

    A label that arrives after its transaction (a chargeback, an analyst's finding) lands in the same
    day bucket an inline label would have, so features read afterwards equal those of training, where
    every label of a day older than the delay is known. Returns False, changing nothing, when that day
    holds no transaction left to label (not seen, or dropped as too old) or no fraud left to retract.
    """
    bucket = state.get("d", {}).get(str(day_index(ts_ms)))
    if bucket is None or not 0 <= bucket[2] + delta <= bucket[0]:
        return False
    bucket[2] += delta
    return True


def newest_ms(state: VelocityState) -> int | None:
    """The start of the newest minute with a transaction (of the newest day, in states written before
    minute buckets existed); None for an empty state. The state's clock, in event time."""
    minutes = state.get("m")
    if minutes:
        return max(int(m) for m in minutes) * MINUTE_MS
    days = state.get("d")
    return max(int(d) for d in days) * DAY_MS if days else None


@functools.cache  # the scoring worker asks for every update
def served_names(kind: str) -> frozenset[str]:
    """The aggregate names a sequence update carries for an event of `kind`: the customer's for every
    event, the terminal's for a transaction (a click has no terminal)."""
    customer = {*CUSTOMER_FEATURES, *CUSTOMER_RECENT_FEATURES}
    if kind != "transaction":
        return frozenset(customer)
    return frozenset({*customer, *TERMINAL_FEATURES, *TERMINAL_HISTORY_FEATURES, *TERMINAL_RECENT_FEATURES})
