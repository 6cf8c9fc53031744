"""Metric tables as people read them: values x100, one row per method, I2T / T2I / Ave columns."""

from __future__ import annotations

import numpy as np

DEFAULT_COLUMNS = ("i2t/NDCG@500", "t2i/NDCG@500", "ave/NDCG@500", "i2t/mAP@all", "t2i/mAP@all", "ave/mAP@all")


def format_cell(values_x100: np.ndarray) -> str:
    """'-' for no value, 'm' for one seed, 'mean ± std' (ddof 1) for several."""
    if len(values_x100) == 0:
        return "-"
    if len(values_x100) == 1:
        return f"{values_x100[0]:.1f}"
    return f"{values_x100.mean():.1f} ± {values_x100.std(ddof=1):.1f}"


def format_markdown_table(rows: dict[str, list[dict[str, float]]], columns: tuple = DEFAULT_COLUMNS) -> str:
    """rows: method -> one metric table per seed. Cells show mean (± std over seeds when > 1), x100."""
    header = "| method | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for method, tables in rows.items():
        cells = [format_cell(np.array([100.0 * t[column] for t in tables if column in t])) for column in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
