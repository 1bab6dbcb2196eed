"""Ranking tables as pandas DataFrames: JSON records and the printed table of a screen."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from iondrag.adapters.database import CONTRACT_COLUMNS

__all__ = ["RANKING_LEGEND", "contract_records", "format_ranking", "records"]

#: Columns of the table printed at the end of a screen.
DISPLAY_COLUMNS: tuple[str, ...] = (
    "rank",
    "candidate_id",
    "formula",
    "ion",
    "barrier_eV",
    "path_barrier_eV",
    "dimensionality",
    "sigma_S_per_cm",
    "sigma_tensor_max_S_per_cm",
    "anisotropy_ratio",
    "drag_saddle_kg_per_s",
    "status",
)

#: Printed headers of the table (the database columns keep their names; see the legend).
DISPLAY_HEADERS: dict[str, str] = {
    "rank": "#",
    "barrier_eV": "E_1D_eV",
    "path_barrier_eV": "E_path_eV",
    "dimensionality": "dim",
    "sigma_S_per_cm": "sigma_S_per_cm",
    "sigma_tensor_max_S_per_cm": "tensor_max_S_per_cm",
    "anisotropy_ratio": "anisotropy",
    "drag_saddle_kg_per_s": "drag_saddle_kg_per_s",
}

#: What the printed columns are (printed under the table).
RANKING_LEGEND = (
    "ranked by sigma_S_per_cm, the headline estimate: path formula along the E_1D channel, "
    "averaged over the directions that open at E_1D, E_2D, E_3D (polycrystal average).\n"
    "tensor_max_S_per_cm: the second estimate, the largest diagonal component of the "
    "single-crystal tensor (sigma_xx/yy/zz_S_per_cm; 3D homogenised shape scaled to the "
    "channel's path value); it can exceed the headline, which averages over directions.\n"
    "E_1D_eV: 1D percolation barrier (DB column barrier_eV); E_path_eV: max - min of U along "
    "the minimum-energy path (path_barrier_eV); the Arrhenius fit is activation_energy_eV.\n"
    "drag_saddle_kg_per_s: friction on the ion along its path at the saddle (t.gamma.t); "
    "*: the row carries warnings; !: likely an electronic or mixed conductor (transition "
    "metal in mixed valence or with an open d shell, or a small band gap: "
    "likely_electronic_conductor), not an electrolyte (`iondrag show ID`)."
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
    scored = frame[frame["status"] == "ok"].head(top).copy()
    if scored.empty:
        return "(no candidate was scored)"
    axes = [f"sigma_{a}_S_per_cm" for a in ("xx", "yy", "zz") if f"sigma_{a}_S_per_cm" in scored]
    if axes:
        scored["sigma_tensor_max_S_per_cm"] = scored[axes].astype(float).max(axis=1)
    shown = scored[[c for c in DISPLAY_COLUMNS if c in scored]].copy()
    if "dimensionality" in shown:
        shown["dimensionality"] = [
            "-" if _clean(value) is None else f"{int(value)}D" for value in shown["dimensionality"]
        ]
    for column in shown.columns:
        if column not in ("dimensionality",):
            shown[column] = [_format_number(_clean(v)) for v in shown[column]]
    if "candidate_id" in shown:
        marks = [""] * len(scored)
        if "n_warnings" in scored:
            marks = [
                m + ("*" if (_clean(n) or 0) > 0 else "")
                for m, n in zip(marks, scored["n_warnings"], strict=True)
            ]
        if "likely_electronic_conductor" in scored:
            marks = [
                m + ("!" if _clean(flag) else "")
                for m, flag in zip(marks, scored["likely_electronic_conductor"], strict=True)
            ]
        shown["candidate_id"] = [
            f"{name}{mark}" for name, mark in zip(shown["candidate_id"], marks, strict=True)
        ]
    shown = shown.rename(columns=DISPLAY_HEADERS)
    return shown.to_string(index=False)
