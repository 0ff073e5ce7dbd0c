"""What the evaluation prints: result rows and markdown tables."""

from __future__ import annotations

from collections.abc import Mapping


def result_row(model: str, split: str, metrics: Mapping[str, object]) -> dict[str, object]:
    """One row of a results table: the model, the split, then its metrics."""
    return {"model": model, "split": split, **metrics}


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows of equal keys -> a markdown table (floats with 4 decimals)."""
    cols = list(rows[0])
    fmt = [[f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in fmt])
