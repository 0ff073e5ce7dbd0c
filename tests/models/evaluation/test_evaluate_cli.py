"""models.evaluate from the command line: the data-set vocabulary and a whole run on a sequence file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import evaluate


def test_names_are_those_of_models_train_and_the_old_ones_still_work() -> None:
    args = evaluate.parse_args(["--dataset", "beauty", "--data-dir", "x", "--out", "r.md"])
    assert args.dataset == "amazon-beauty" and args.model == ["pop", "markov", "sasrec", "gru"]
    assert evaluate.parse_args(["--dataset", "fraud", "--data-dir", "x", "--out", "r.md"]).model == [
        "lightgbm"
    ]
    with pytest.raises(SystemExit):  # known to models.train, but neither protocol evaluates it
        evaluate.parse_args(["--dataset", "taobao", "--data-dir", "x", "--out", "r.md"])


def test_a_sequence_file_with_timestamps_is_ranked_and_its_time_to_next_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"user_id": f"u{u}", "item_id": int(rng.integers(0, 30)), "timestamp": 1_000_000 + u * 10 + k * 3600}
        for u in range(40)
        for k in range(8)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "clicks.csv", index=False)
    out = tmp_path / "report.md"
    argv = [
        "--dataset",
        "sequences",
        "--data-dir",
        str(tmp_path / "clicks.csv"),
        "--model",
        "pop",
        "markov",
        "--negatives",
        "5",
    ]
    evaluate.main([*argv, "--out", str(out)])
    report = out.read_text()
    assert "40 users, 30 items" in report
    assert "| markov | test |" in report
    # every gap is one hour: the medians and last gaps are exact
    assert "| user's median gap | 0.0000 | 0.0000 |" in report


def test_fraud_reports_each_week_beside_the_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 12_000
    start = pd.Timestamp("2018-06-01")
    seconds = np.sort(rng.integers(0, 85 * 86_400, n))  # to 2018-08-24: the second test week
    amount = rng.gamma(2.0, 30.0, n)
    fraud = (rng.random(n) < 0.02 + 0.3 * (amount > 150)).astype(int)  # learnable: large amounts
    pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": start + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": rng.integers(0, 300, n),
            "TERMINAL_ID": rng.integers(0, 500, n),
            "TX_AMOUNT": amount,
            "TX_FRAUD": fraud,
        }
    ).to_parquet(tmp_path / "tx.parquet")
    out = tmp_path / "fraud.md"
    evaluate.main(
        ["--dataset", "fraud", "--data-dir", str(tmp_path / "tx.parquet"), "--test-folds", "2"]
        + ["--lightgbm-params", "n_estimators=20", "num_leaves=7", "learning_rate=0.1", "--out", str(out)]
    )
    report = out.read_text()
    for week in ("2018-07-04", "2018-07-11", "2018-07-18", "2018-07-25"):
        assert f"| valid week {week} |" in report
    assert "| test (2 weeks) |" in report
    assert "| test week 2018-08-08 |" in report and "| test week 2018-08-15 |" in report
