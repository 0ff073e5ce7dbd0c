"""Deterministic synthetic shop clicks and card transactions with injected fraud (Fraud Handbook style)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.features.aggregates import DAY_MS

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
CATEGORY_NOUNS = {
    "Sports": ["running shoes", "yoga mat", "tennis racket", "water bottle", "cycling helmet", "gym bag"],
    "Electronics": ["headphones", "smartwatch", "bluetooth speaker", "phone charger", "e-reader", "webcam"],
    "Books": ["mystery novel", "cookbook", "travel guide", "history book", "poetry collection", "comic"],
    "Home": ["coffee maker", "desk lamp", "throw pillow", "cutlery set", "bath towel", "wall clock"],
    "Beauty": ["face cream", "shampoo", "lipstick", "perfume", "nail polish", "sunscreen"],
    "Toys": ["puzzle", "building blocks", "board game", "plush bear", "toy car", "kite"],
    "Garden": ["garden hose", "flower seeds", "pruning shears", "plant pot", "bird feeder", "lawn chair"],
    "Fashion": ["denim jacket", "wool scarf", "leather belt", "sneakers", "sun hat", "backpack"],
}
ADJECTIVES = [
    "Trail",
    "Classic",
    "Lightweight",
    "Pro",
    "Compact",
    "Premium",
    "Eco",
    "Vintage",
    "Smart",
    "Kids",
]
MERCHANT_CATEGORIES = ["grocery", "restaurant", "fuel", "electronics", "fashion", "travel", "pharmacy"]
RELATED_WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])
FRAUD_AMOUNT = 220.0


CATALOGUE_SEED = 20180401


@dataclass
class Catalogue:
    """Shop items with titles, categories, popularity and item-to-item transitions."""

    ids: list[str]
    titles: list[str]
    categories: list[str]
    popularity: np.ndarray  # (n,) within-category sampling weights
    related: np.ndarray  # (n, 4) indices of the items usually visited next


def make_catalogue(n_items: int, rng: np.random.Generator) -> Catalogue:
    """Items spread over the categories; titles "<adjective> <noun>", numbered when names run out."""
    names = list(CATEGORY_NOUNS)
    titles, categories = [], []
    for k in range(n_items):
        category = names[k % len(names)]
        j = k // len(names)
        nouns = CATEGORY_NOUNS[category]
        title = f"{ADJECTIVES[j % len(ADJECTIVES)]} {nouns[(j // len(ADJECTIVES)) % len(nouns)]}"
        series = j // (len(ADJECTIVES) * len(nouns))
        titles.append(f"{title} {series + 1}" if series else title)
        categories.append(category)
    cats = np.array(categories)
    related = np.empty((n_items, len(RELATED_WEIGHTS)), dtype=np.int64)
    for k in range(n_items):
        same = np.flatnonzero((cats == cats[k]) & (np.arange(n_items) != k))
        pool = same if len(same) >= 3 else np.flatnonzero(np.arange(n_items) != k)
        related[k, :3] = rng.choice(pool, 3, replace=len(pool) < 3)
        related[k, 3] = rng.integers(n_items)
    popularity = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.8
    return Catalogue([f"i{k:04d}" for k in range(n_items)], titles, categories, popularity, related)


def _click_events(
    user: str, catalogue: Catalogue, days: int, start_ms: int, rng: np.random.Generator
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Sessions of one user: category preferences, item-to-item transitions, a view->purchase funnel."""
    names = sorted(set(catalogue.categories))
    cats = np.array(catalogue.categories)
    preference = rng.dirichlet(np.full(len(names), 0.3))
    hour = rng.uniform(8, 22)
    ts = start_ms
    for day in range(days):
        for _ in range(rng.poisson(0.5)):
            start = start_ms + day * DAY_MS + int(np.clip(rng.normal(hour, 2), 0, 23.5) * 3_600_000)
            ts = max(ts, start)
            item = -1
            for _ in range(1 + rng.geometric(1 / 6)):
                if item >= 0 and rng.random() < 0.7:
                    item = int(catalogue.related[item, rng.choice(4, p=RELATED_WEIGHTS)])
                else:
                    pool = np.flatnonzero(cats == names[rng.choice(len(names), p=preference)])
                    weights = catalogue.popularity[pool]
                    item = int(rng.choice(pool, p=weights / weights.sum()))
                funnel = ["view"]
                if rng.random() < 0.5:
                    funnel.append("click")
                    if rng.random() < 0.3:
                        funnel.append("cart")
                        if rng.random() < 0.5:
                            funnel.append("purchase")
                            if rng.random() < 0.3:
                                funnel.append("rate")
                for action in funnel:
                    ts += int(rng.exponential(20_000)) + 2_000
                    msg: dict[str, Any] = {"user_id": user, "item_id": catalogue.ids[item], "action": action}
                    msg |= {"ts": ts, "title": catalogue.titles[item], "category": catalogue.categories[item]}
                    if action == "rate":
                        msg["value"] = float(rng.integers(1, 6))
                    yield ts, msg
            ts += int(rng.exponential(60_000))


def _transactions(
    n_users: int, n_terminals: int, days: int, start_ms: int, rng: np.random.Generator
) -> list[tuple[int, dict[str, Any]]]:
    """Handbook simulation: customer profiles, nearby terminals, three fraud scenarios."""
    cust_xy = rng.uniform(0, 100, (n_users, 2))
    term_xy = rng.uniform(0, 100, (n_terminals, 2))
    mean_amount = rng.uniform(5, 100, n_users)
    tx_per_day = rng.uniform(0, 4, n_users)
    dist = np.linalg.norm(cust_xy[:, None] - term_xy[None], axis=-1)
    nearby = np.argsort(dist, axis=1)[:, : min(8, n_terminals)]
    term_category = rng.choice(MERCHANT_CATEGORIES, n_terminals)
    rows = []  # (user, terminal, day, ts, amount)
    for u in range(n_users):
        for day in range(days):
            for _ in range(rng.poisson(tx_per_day[u])):
                second = int(np.clip(rng.normal(43_200, 20_000), 0, 86_399))
                amount = rng.normal(mean_amount[u], mean_amount[u] / 2)
                amount = rng.uniform(0, 2 * mean_amount[u]) if amount < 0 else amount
                rows.append(
                    (u, int(rng.choice(nearby[u])), day, start_ms + day * DAY_MS + second * 1000, amount)
                )
    user, terminal, event_day = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))
    amount = np.array([r[4] for r in rows])
    label = amount > FRAUD_AMOUNT
    for d in range(days):
        for t in rng.choice(n_terminals, rng.poisson(0.0005 * n_terminals)):
            label |= (terminal == t) & (event_day >= d) & (event_day < d + 28)
        for c in rng.choice(n_users, rng.poisson(0.002 * n_users)):
            hit = np.flatnonzero((user == c) & (event_day >= d) & (event_day < d + 14))
            chosen = hit[rng.random(len(hit)) < 1 / 3]
            amount[chosen] *= 5
            label[chosen] = True
    return [
        (
            int(rows[i][3]),
            {
                "user_id": f"u{user[i]:05d}",
                "amount": round(float(amount[i]), 2),
                "currency": "EUR",
                "terminal_id": f"t{terminal[i]:05d}",
                "category": str(term_category[terminal[i]]),
                "ts": int(rows[i][3]),
                "label": int(label[i]),
            },
        )
        for i in range(len(rows))
    ]


def generate(
    n_users: int = 300,
    n_items: int = 400,
    n_terminals: int = 200,
    days: int = 60,
    seed: int = 0,
    start_ms: int = START_MS,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, wire message) in event-time order; the same seed gives the same stream."""
    rng = np.random.default_rng(seed)
    # The shop is the same whatever the seed, so a model trained on one seed scores another seed's users.
    catalogue = make_catalogue(n_items, np.random.default_rng(CATALOGUE_SEED))
    tx = _transactions(n_users, n_terminals, days, start_ms, rng)
    clicks = [
        (ts, msg)
        for u in range(n_users)
        for ts, msg in _click_events(f"u{u:05d}", catalogue, days, start_ms, rng)
    ]
    streams = [
        (
            (ts, 1, n, "transactions", {"event_id": f"tx{n:08d}", **msg})
            for n, (ts, msg) in enumerate(sorted(tx, key=_ts))
        )
    ]
    streams.append(
        (ts, 0, n, "clicks", {"event_id": f"c{n:08d}", **msg})
        for n, (ts, msg) in enumerate(sorted(clicks, key=_ts))
    )
    for _, _, _, topic, msg in heapq.merge(*streams):
        yield topic, msg


def _ts(pair: tuple[int, dict[str, Any]]) -> int:
    return pair[0]


def to_record(topic: str, msg: dict[str, Any]) -> dict[str, Any]:
    """Wire message -> contract event record (docs/contracts.md); the label is never part of it."""
    if topic == "transactions":
        return {
            "event_id": msg["event_id"],
            "kind": "transaction",
            "user_id": msg["user_id"],
            "ts_ms": int(msg["ts"]),
            "item_id": msg["terminal_id"],
            "action": "transaction",
            "amount": float(msg["amount"]),
            "value": None,
            "title": msg.get("merchant"),
            "category": msg.get("category"),
        }
    return {
        "event_id": msg["event_id"],
        "kind": "click",
        "user_id": msg["user_id"],
        "ts_ms": int(msg["ts"]),
        "item_id": msg["item_id"],
        "action": msg["action"],
        "amount": None,
        "value": msg.get("value"),
        "title": msg.get("title"),
        "category": msg.get("category"),
    }
