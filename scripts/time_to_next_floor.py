"""How low can the MAE of the fraud data's time to next go? The handbook's simulator draws each customer's
transactions of a day as a Poisson number (mean `lambda`, the customer's rate) at times drawn from a normal
law around midday (mean 43,200 s, sd 20,000 s, kept within the day): an inhomogeneous Poisson process,
memoryless given the rate and the clock. So the median of the gap from a transaction at time t to the
customer's next one is exact: the x with cumulative intensity from t to t + x equal to ln 2. This script
prints the MAE of that median, with the rate estimated from the customer's transactions before the week
scored (what a predictor may know) and from the whole file (an oracle), beside the trivial baselines of
models.evaluation.time_to_next on its validation and test weeks (their medians from the same data as there:
the gaps from --train-days before the validation week on): the floor any predictor of these data meets.

PYTHONPATH=. python scripts/time_to_next_floor.py --data $DATA/fraud-handbook/transactions_2018-04-01_08-14.parquet
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pandas as pd
from scipy.stats import norm

from models.evaluation.time_to_next import baselines, best_baseline_ratio, time_to_next_rows

DAY_S = 86_400
ORIGIN = pd.Timestamp("2018-04-01")  # TX_TIME_SECONDS counts from the simulation's first midnight
MEAN_S, SD_S = 43_200.0, 20_000.0  # the simulator's time of day (Fraud Detection Handbook, chapter 3)
# the share of a day's drawn times kept (within 0..86,400 s): the daily intensity's integral per unit rate
KEPT = norm.cdf(DAY_S, MEAN_S, SD_S) - norm.cdf(0, MEAN_S, SD_S)


def cumulative(t_s: np.ndarray) -> np.ndarray:
    """Cumulative intensity per unit rate from the epoch's midnight to t (seconds)."""
    days, within = np.divmod(t_s, DAY_S)
    return days * KEPT + norm.cdf(within, MEAN_S, SD_S) - norm.cdf(0, MEAN_S, SD_S)


def inverse_cumulative(c: np.ndarray) -> np.ndarray:
    """The time (seconds) at which the cumulative intensity per unit rate reaches c."""
    days, rest = np.divmod(c, KEPT)
    within = norm.ppf(np.clip(rest + norm.cdf(0, MEAN_S, SD_S), 1e-12, 1 - 1e-12), MEAN_S, SD_S)
    return days * DAY_S + np.clip(within, 0, DAY_S)


def median_gap_h(t_s: np.ndarray, rate_per_day: np.ndarray) -> np.ndarray:
    """The median of the gap (hours) to the next event of a process of `rate_per_day` after time t."""
    rate = np.maximum(rate_per_day, 1e-3) / KEPT  # a rate counts kept transactions: per unit intensity
    return (inverse_cumulative(cumulative(t_s) + np.log(2) / rate) - t_s) / 3600


def week_rows(frame: pd.DataFrame, since_s: float, start: dt.date) -> tuple[list[dict[str, object]], int]:
    """The floor and the baselines on the week from `start` (its transactions with a next one); the
    baselines' medians from the gaps between `since_s` and the week, as in models.evaluation.time_to_next."""
    start_s = (pd.Timestamp(start) - ORIGIN).total_seconds()
    first_s, last_s = frame["t_s"].min(), frame["t_s"].max()
    target = (frame["t_s"] >= start_s) & (frame["t_s"] < start_s + 7 * DAY_S) & frame["gap_next_h"].notna()
    week = frame[target]
    ended = frame["t_s"] + frame["gap_next_h"].fillna(0) * 3600 < start_s
    known = frame[ended & (frame["t_s"] >= since_s)].dropna(subset=["gap_next_h"])
    first_before = frame["gap_before_h"].where(frame["t_s"] >= since_s)  # as the evaluation's data holds it
    predictions = baselines(
        known.rename(columns={"gap_next_h": "gap_h"})[["user", "gap_h"]],
        week["user"].tolist(),
        first_before[target].to_numpy(),
    )
    before = frame[frame["t_s"] < start_s].groupby("user").size()
    rate_known = week["user"].map(before).fillna(0).to_numpy() / ((start_s - first_s) / DAY_S)
    rate_oracle = week["user"].map(frame.groupby("user").size()).to_numpy() / ((last_s - first_s) / DAY_S)
    t_s = week["t_s"].to_numpy()
    predictions["simulator's median, rate from the file before the week"] = median_gap_h(t_s, rate_known)
    predictions["simulator's median, rate from the whole file (oracle)"] = median_gap_h(t_s, rate_oracle)
    return time_to_next_rows(week["gap_next_h"].to_numpy(), predictions), len(week)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--valid-start", type=dt.date.fromisoformat, default=dt.date(2018, 6, 20))
    parser.add_argument("--test-start", type=dt.date.fromisoformat, default=dt.date(2018, 7, 25))
    parser.add_argument("--train-days", type=int, default=28, help="as models.evaluate's")
    args = parser.parse_args()
    raw = pd.read_parquet(args.data, columns=["CUSTOMER_ID", "TX_TIME_SECONDS"])
    frame = pd.DataFrame(
        {"user": raw["CUSTOMER_ID"].astype(str), "t_s": raw["TX_TIME_SECONDS"].astype(float)}
    )
    frame = frame.sort_values(["user", "t_s"], kind="stable").reset_index(drop=True)
    same_next = frame["user"].eq(frame["user"].shift(-1))
    frame["gap_next_h"] = ((frame["t_s"].shift(-1) - frame["t_s"]) / 3600).where(same_next)
    frame["gap_before_h"] = frame.groupby("user")["t_s"].diff() / 3600
    since = pd.Timestamp(args.valid_start - dt.timedelta(days=args.train_days))
    since_s = (since - ORIGIN).total_seconds()
    for name, start in (("validation", args.valid_start), ("test", args.test_start)):
        rows, n = week_rows(frame, since_s, start)
        print(f"\n{name} week from {start}: {n} transactions with a next one")
        print("| model | MAE (h) | RMSE (h) | MAE log1p(h) |\n|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['model']} | {row['MAE (h)']:.3f} | {row['RMSE (h)']:.2f} | {row['MAE log1p(h)']:.4f} |"
            )
        for model in [str(r["model"]) for r in rows[3:]]:
            print(f"{model} / best trivial baseline, MAE: {best_baseline_ratio(rows, model):.4f}")


if __name__ == "__main__":
    main()
