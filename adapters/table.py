"""Reader of tables of measured conductivities (the OBELiX layout), for ``iondrag validate``.

``<ID>.cif`` files beside a CSV with columns ``ID``, ``Ionic conductivity (S cm-1)`` and
``Family``; measured values like ``"<1E-10"`` are upper bounds.

Data attribution: the OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass


#: Attribution that travels with every report derived from the OBELiX data.
DATA_ATTRIBUTION = "OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0"

#: Table columns.
ID_COLUMN = "ID"
SIGMA_COLUMN = "Ionic conductivity (S cm-1)"
FAMILY_COLUMN = "Family"

# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_conductivity(value: Any) -> tuple[float, bool]:
    """Parse a measured conductivity and whether it is an upper bound.

    ``"1.2e-5"`` -> (1.2e-5, False); ``"<1E-10"`` -> (1e-10, True): value, upper-bound flag.

    Raises
    ------
    ValueError
        Empty, not a number, not positive, or a lower bound (``">..."``, not supported).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("no value")
    text = str(value).strip().replace(" ", "")
    if not text:
        raise ValueError("no value")
    bound = False
    if text.startswith(("<=", "≤")):
        text, bound = text.lstrip("<=≤"), True
    elif text.startswith("<"):
        text, bound = text[1:], True
    elif text.startswith((">", "≥")):
        raise ValueError(f"lower bound {value!r} not supported")
    if not re.fullmatch(_NUMBER, text):
        raise ValueError(f"not a number: {value!r}")
    sigma = float(text)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"not a positive conductivity: {value!r}")
    return sigma, bound


def read_conductivity_table(table_csv: str | Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read the table of measured conductivities.

    Returns
    -------
    (table, skipped)
        ``table`` indexed by ``id`` (str, first occurrence kept) with columns
        ``sigma_exp_S_per_cm``, ``log10_sigma_exp``, ``upper_bound``, ``family`` and
        ``sigma_exp_text``; ``skipped`` lists rows left out ({id, value, reason}).

    Raises
    ------
    ValueError
        The file lacks the ``ID`` or the conductivity column.
    """
    raw = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    for column in (ID_COLUMN, SIGMA_COLUMN):
        if column not in raw.columns:
            raise ValueError(f"{table_csv}: no column {column!r} (columns: {list(raw.columns)})")
    rows: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []
    for _, row in raw.iterrows():
        ident = str(row[ID_COLUMN]).strip()
        text = str(row[SIGMA_COLUMN]).strip()
        if not ident:
            skipped.append({"id": ident, "value": text, "reason": "empty ID"})
            continue
        if ident in rows:
            skipped.append({"id": ident, "value": text, "reason": "duplicate ID (first kept)"})
            continue
        try:
            sigma, bound = parse_conductivity(text)
        except ValueError as error:
            skipped.append({"id": ident, "value": text, "reason": str(error)})
            continue
        family = str(row[FAMILY_COLUMN]).strip() if FAMILY_COLUMN in raw.columns else ""
        rows[ident] = {
            "sigma_exp_S_per_cm": sigma,
            "log10_sigma_exp": math.log10(sigma),
            "upper_bound": bound,
            "family": family or "unknown",
            "sigma_exp_text": text,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        table = pd.DataFrame(
            columns=[
                "sigma_exp_S_per_cm",
                "log10_sigma_exp",
                "upper_bound",
                "family",
                "sigma_exp_text",
            ]
        )
    table.index.name = "id"
    return table, skipped
