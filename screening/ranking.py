"""Ranking tables as pandas DataFrames: JSON records and the printed table of a screen."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from screening.database import CONTRACT_COLUMNS

__all__ = ["contract_records", "format_ranking", "records"]

#: Columns of the table printed at the end of a screen.
DISPLAY_COLUMNS: tuple[str, ...] = (
    "rank",
    "candidate_id",
    "formula",
    "ion",
    "barrier_eV",
    "dimensionality",
    "sigma_S_per_cm",
    "anisotropy_ratio",
    "drag_saddle_kg_per_s",
    "status",
)


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (all columns, or ``columns`` that exist)."""
    names = list(frame.columns) if columns is None else [c for c in columns if c in frame]
    return [
        {name: _clean(value) for name, value in zip(names, row, strict=True)}
        for row in frame[names].itertuples(index=False, name=None)
    ]


def contract_records(frame: pd.DataFrame, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows with the design contract's columns (and ``extra`` ones), JSON-safe."""
    return records(frame, [*extra, *CONTRACT_COLUMNS])


def _format_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_ranking(frame: pd.DataFrame, top: int = 20) -> str:
    """Format the first ``top`` scored rows as an aligned text table (no failed rows)."""
    scored = frame[frame["status"] == "ok"].head(top)
    if scored.empty:
        return "(no candidate was scored)"
    shown = scored[[c for c in DISPLAY_COLUMNS if c in scored]].copy()
    if "dimensionality" in shown:
        shown["dimensionality"] = [
            "-" if _clean(value) is None else f"{int(value)}D" for value in shown["dimensionality"]
        ]
    for column in shown.columns:
        if column not in ("dimensionality",):
            shown[column] = [_format_number(_clean(v)) for v in shown[column]]
    shown = shown.rename(
        columns={"dimensionality": "dim", "anisotropy_ratio": "anisotropy", "rank": "#"}
    )
    return shown.to_string(index=False)
