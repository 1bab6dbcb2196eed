"""Validation against measured conductivities: ``iondrag validate``.

:func:`run_validation` scores every CIF of a folder whose id is in a table of measured
room-temperature conductivities (the OBELiX layout: ``<ID>.cif`` and a CSV with columns
``ID``, ``Ionic conductivity (S cm-1)`` and ``Family``), compares the predicted with the
measured log10 sigma, and returns a :class:`ValidationReport` (summary table, JSON document,
parity plot). The headline predictor and every ablation of :class:`~screening.schemas.
CandidateResult` are evaluated on the same structures with the same metrics, with a paired
bootstrap interval of the Spearman difference between the headline and each ablation.

The metric functions are small and pure (:func:`spearman`, :func:`kendall`,
:func:`auc_mann_whitney`, :func:`precision_at_k`, :func:`censored_mae`,
:func:`censored_best_shift`, :func:`paired_bootstrap_spearman_difference`) and
:func:`evaluate_records` computes every metric from the per-structure records alone.

Upper bounds
------------
Measured values like ``"<1E-10"`` are upper bounds (the true value is at most the bound).
They enter the metrics as follows (:data:`UPPER_BOUND_POLICY`):

* rank metrics (Spearman, Kendall) use the bound value itself. All bounds of OBELiX are
  1e-8 S/cm or lower, so this places them among the poorest conductors; bounds tie with each
  other. ``spearman_exact_only`` is reported as a sensitivity check;
* ROC-AUC and precision at k classify sigma > 1e-4 S/cm; a bound below the threshold is a
  certain negative, so they are used as negatives (a bound above it would be ambiguous and
  is left out of these two metrics);
* the mean absolute error in log10 sigma is censored: an error of 0 when the prediction is
  at or below the bound, else prediction - bound. ``mae_log10`` is over all structures,
  ``mae_log10_exact_only`` over the exact values only;
* fitted constant shifts (the attempt-frequency prefactor of the barrier-only predictor,
  the shift a predictor would need) minimise the same censored MAE; the least-squares shift
  in log10 uses the exact values only.

Data attribution: the OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from screening import __version__
from screening.parameters import ScreeningParameters
from screening.units import thermal_energy_eV
from screening.validation_journal import ValidationJournal, record_key

if TYPE_CHECKING:  # pragma: no cover - typing only
    from screening.sources.base import Candidate

__all__ = [
    "ABLATIONS",
    "DATA_ATTRIBUTION",
    "OPTIONAL_PREDICTORS",
    "PREDICTORS",
    "THRESHOLD_S_PER_CM",
    "UPPER_BOUND_POLICY",
    "Predictor",
    "ValidationReport",
    "auc_mann_whitney",
    "censored_best_shift",
    "censored_errors",
    "censored_mae",
    "censored_monotone_mae",
    "censored_signed_errors",
    "evaluate_records",
    "json_safe",
    "kendall",
    "paired_bootstrap_spearman_difference",
    "parity_limits",
    "parse_conductivity",
    "plot_parity",
    "precision_at_k",
    "read_conductivity_table",
    "run_validation",
    "scored_records",
    "spearman",
]

#: Attribution that travels with every report derived from the OBELiX data.
DATA_ATTRIBUTION = "OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0"

#: Classification threshold of ROC-AUC and precision at k: sigma > this, S/cm.
THRESHOLD_S_PER_CM = 1e-4

#: Table columns.
ID_COLUMN = "ID"
SIGMA_COLUMN = "Ionic conductivity (S cm-1)"
FAMILY_COLUMN = "Family"

#: Per-family Spearman only for families with at least this many scored members.
MIN_FAMILY_SIZE = 5

#: Seed of the family-disjoint halves of a validation table (:func:`family_halves`).
HALVES_SEED = 20261205

#: Paired bootstrap of the Spearman differences.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20250214

UPPER_BOUND_POLICY: dict[str, str] = {
    "rank_metrics": "Spearman and Kendall use the bound value (ties among bounds); "
    "spearman_exact_only leaves the bounds out",
    "classification": "ROC-AUC and precision at 10 (sigma > 1e-4 S/cm): a bound below the "
    "threshold is a negative; a bound above it is left out of these two metrics",
    "mae": "censored: 0 if the prediction is at or below the bound, else prediction - bound; "
    "mae_log10 over all, mae_log10_exact_only over exact values only",
    "fitted_shift": "the constant shift (or log10 prefactor) minimising the censored MAE; "
    "lsq_shift_log10 is the least-squares shift over exact values only",
}


# ---------------------------------------------------------------------------------------
# Metric functions (pure)
# ---------------------------------------------------------------------------------------


def _stats() -> Any:
    """Return scipy.stats, imported when first needed.

    It imports scipy.integrate (0.3 s) that a screen with the learned model, which imports
    this module, would otherwise pay for nothing.
    """
    from scipy import stats

    return stats


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pair(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1D arrays of equal length, got {a.shape} and {b.shape}")
    return a, b


def _ranks(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Average ranks of both arrays, or None (fewer than 3 pairs, a NaN, or a constant)."""
    a, b = _pair(predicted, measured)
    if len(a) < 3 or np.isnan(a).any() or np.isnan(b).any():
        return None
    ra, rb = _stats().rankdata(a), _stats().rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None
    return ra, rb


def spearman(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> float | None:
    """Spearman rank correlation (average ranks for ties), via :func:`scipy.stats.spearmanr`.

    Parameters
    ----------
    predicted, measured
        Equal-length 1D arrays; ``-inf`` is allowed (ranks lowest), NaN is not.

    Returns
    -------
    float or None
        None with fewer than 3 pairs or when either array is constant.
    """
    ranks = _ranks(predicted, measured)
    return None if ranks is None else _finite_or_none(_stats().spearmanr(*ranks).statistic)


def kendall(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> float | None:
    """Kendall's tau-b (ties in either array accounted for), via :func:`scipy.stats.kendalltau`.

    Returns None with fewer than 3 pairs or when either array is constant.
    """
    ranks = _ranks(predicted, measured)
    if ranks is None:
        return None
    return _finite_or_none(_stats().kendalltau(*ranks, variant="b").statistic)


def auc_mann_whitney(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray
) -> float | None:
    """ROC-AUC from the Mann-Whitney U statistic (a tie between classes counts one half).

    AUC = P(score of a random positive > score of a random negative) + P(tie) / 2
    = (sum of the positives' average ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg).

    Parameters
    ----------
    scores
        Higher means more likely positive; ``-inf`` allowed.
    labels
        True for positives.

    Returns
    -------
    float or None
        None when one class is empty.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1 or np.isnan(s).any():
        raise ValueError("scores and labels must be equal-length 1D arrays without NaN")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _stats().rankdata(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def precision_at_k(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, k: int = 10
) -> float | None:
    """Fraction of positives among the ``k`` highest scores (expected value over ties).

    When the k-th place falls inside a group of tied scores, the places left are filled
    from that group at random: the result is the expectation, so it does not depend on the
    order of the input. With fewer than ``k`` items, ``k`` is the number of items.

    Returns
    -------
    float or None
        None for empty input or ``k < 1``.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1 or np.isnan(s).any():
        raise ValueError("scores and labels must be equal-length 1D arrays without NaN")
    k = min(int(k), len(s))
    if k < 1:
        return None
    threshold = np.sort(s)[::-1][k - 1]
    above = s > threshold
    tied = s == threshold
    slots = k - int(above.sum())
    expected = float(y[above].sum()) + slots * float(y[tied].sum()) / float(tied.sum())
    return expected / k


def censored_signed_errors(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    """Signed errors p - m in log10 sigma with upper bounds censored.

    Exact value: ``p - m``; upper bound ``m``: ``max(0, p - m)`` (a prediction at or below
    the bound is consistent with the measurement). Negative: predicted too low.
    """
    p, m = _pair(predicted, measured)
    bound = np.asarray(upper_bound, dtype=bool)
    if bound.shape != p.shape:
        raise ValueError("upper_bound must have the shape of the predictions")
    return np.where(bound, np.maximum(p - m, 0.0), p - m)


def censored_errors(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    """Absolute errors in log10 sigma with upper bounds censored.

    Exact value: ``|p - m|``; upper bound ``m``: ``max(0, p - m)``
    (:func:`censored_signed_errors`).
    """
    return np.abs(censored_signed_errors(predicted, measured, upper_bound))


def censored_mae(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray | None = None,
) -> float | None:
    """Mean of :func:`censored_errors` (plain MAE without bounds); None for no finite error."""
    p, m = _pair(predicted, measured)
    bound = np.zeros(p.shape, bool) if upper_bound is None else np.asarray(upper_bound, bool)
    errors = censored_errors(p, m, bound)
    if len(errors) == 0 or not np.all(np.isfinite(errors)):
        return None
    return float(errors.mean())


def censored_best_shift(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Return the constant c minimising the censored MAE of ``predicted + c``, and that MAE.

    The objective is convex and piecewise linear with kinks at ``measured - predicted``, so
    the minimum is at a kink; when several kinks share the minimum, the middle of that
    interval is returned. Needs at least one exact value (with bounds only, any shift low
    enough is perfect).

    Returns
    -------
    (shift, mae) or None
    """
    p, m = _pair(predicted, measured)
    bound = np.zeros(p.shape, bool) if upper_bound is None else np.asarray(upper_bound, bool)
    keep = np.isfinite(p) & np.isfinite(m)
    p, m, bound = p[keep], m[keep], bound[keep]
    if not (~bound).any():
        return None
    kinks = np.unique(m - p)
    shifted = p[None, :] + kinks[:, None]
    errors = np.where(bound[None, :], np.maximum(shifted - m, 0.0), np.abs(shifted - m))
    objective = errors.mean(axis=1)
    best = objective.min()
    at_min = kinks[objective <= best + 1e-12 * max(1.0, abs(best))]
    shift = 0.5 * (at_min.min() + at_min.max())
    return float(shift), float(censored_errors(p + shift, m, bound).mean())


def censored_monotone_mae(
    scores: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray | None = None,
) -> float | None:
    """Smallest censored MAE of any non-decreasing map of the scores, log10 S/cm.

    ``min_f mean(censored_errors(f(scores), measured))`` over every non-decreasing function
    f (equal scores get equal values). Fitted in-sample to the measurements, this is an
    optimistic bound: no recalibration that keeps the predictor's order, however many
    constants it fits, gets a smaller absolute error on these structures. When it exceeds a
    target, only a better ranking can meet it.

    Each loss (``|v - m|``, or ``max(v - m, 0)`` for an upper bound) is convex and piecewise
    linear with its kink at m, so an optimal f takes values among the measured values
    (isotonic L1 regression); dynamic programming over the groups of equal scores in
    ascending order with the running minimum over lower levels gives the exact optimum in
    O(n x levels).

    Parameters
    ----------
    scores
        The predictor's ranking scores (any monotone scale; -inf allowed), shape (n,).
    measured
        Measured log10 sigma (S/cm), shape (n,).
    upper_bound
        True where ``measured`` is an upper bound.

    Returns
    -------
    float or None
        The bound (log10 S/cm), None without any finite pair.
    """
    s = np.asarray(scores, dtype=float)
    m = np.asarray(measured, dtype=float)
    bound = np.zeros(s.shape, bool) if upper_bound is None else np.asarray(upper_bound, bool)
    if not (s.shape == m.shape == bound.shape):
        raise ValueError("scores, measured and upper_bound must have one shape")
    keep = ~np.isnan(s) & np.isfinite(m)
    s, m, bound = s[keep], m[keep], bound[keep]
    if len(s) == 0:
        return None
    levels = np.unique(m)
    order = np.argsort(s, kind="stable")
    s, m, bound = s[order], m[order], bound[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    best_so_far = np.zeros(len(levels))
    for start, stop in zip(starts, np.r_[starts[1:], len(s)], strict=True):
        diff = levels[:, None] - m[None, start:stop]
        loss = np.where(bound[None, start:stop], np.maximum(diff, 0.0), np.abs(diff))
        best_so_far = np.minimum.accumulate(best_so_far) + loss.sum(axis=1)
    return float(best_so_far.min() / len(s))


def _rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of each row pair of two 2D arrays (NaN for a constant row)."""
    ra = _stats().rankdata(a, axis=1)
    rb = _stats().rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def paired_bootstrap_spearman_difference(
    predicted_a: Sequence[float] | np.ndarray,
    predicted_b: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of Spearman(a, measured) - Spearman(b, measured).

    The same resampled structures (with replacement) enter both correlations; resamples in
    which a correlation is undefined (a constant resample) are dropped.

    Returns
    -------
    dict
        ``difference`` (on the full sample), ``ci_low``, ``ci_high`` (percentile interval),
        ``fraction_positive`` (share of resamples with a > b), ``n``, ``n_resamples`` (used),
        ``seed``, ``confidence``. Values None when undefined.
    """
    a, m = _pair(predicted_a, measured)
    b, _ = _pair(predicted_b, measured)
    sa, sb = spearman(a, m), spearman(b, m)
    result: dict[str, Any] = {
        "difference": None if sa is None or sb is None else sa - sb,
        "ci_low": None,
        "ci_high": None,
        "fraction_positive": None,
        "n": len(a),
        "n_resamples": 0,
        "seed": seed,
        "confidence": confidence,
    }
    if len(a) < 3 or result["difference"] is None:
        return result
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(n_resamples, len(a)))
    diffs = _rowwise_spearman(a[index], m[index]) - _rowwise_spearman(b[index], m[index])
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return result
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    result.update(
        ci_low=float(low),
        ci_high=float(high),
        fraction_positive=float(np.mean(diffs > 0)),
        n_resamples=len(diffs),
    )
    return result


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


# ---------------------------------------------------------------------------------------
# Predictors and the evaluation of per-structure records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predictor:
    """One predictor of the measured conductivity: the headline or an ablation.

    ``kind``: ``log10_sigma`` (an absolute prediction, log10 S/cm), ``barrier`` (an energy
    barrier in eV: ranks by -E_b; absolute value log10 A - E_b / (k_B T ln 10) with a fitted
    prefactor A) or ``log_density`` (log10 of a number density: ranks; absolute only after
    a fitted shift, i.e. sigma proportional to n with one diffusivity for all).
    """

    name: str
    field: str
    kind: str
    description: str
    missing_is_infinite: bool = True
    """For ``barrier``: a missing value is no percolation (an infinite barrier, ranked
    last); False: the predictor was not computed for that structure (left out)."""


PREDICTORS: tuple[Predictor, ...] = (
    Predictor(
        "headline",
        "log10_sigma_pred",
        "log10_sigma",
        "the screen's headline: path formula with the drag H Lambda H and the channel "
        "entropy, polycrystal average over the 1D/2D/3D openings, Kramers correction",
    ),
    Predictor(
        "barrier_3d",
        "barrier_3d_eV",
        "barrier",
        "(a) 3D percolation barrier alone, sigma = A exp(-E_3D / k_B T) with a fitted A",
    ),
    Predictor(
        "barrier_1d",
        "barrier_1d_eV",
        "barrier",
        "(a) 1D percolation barrier alone, sigma = A exp(-E_1D / k_B T) with a fitted A",
    ),
    Predictor(
        "mobile_ion_density",
        "mobile_ion_density_per_m3",
        "log_density",
        "(b) mobile-ion number density alone",
    ),
    Predictor(
        "path_constant_drag",
        "log10_sigma_path_constant_drag",
        "log10_sigma",
        "(c) the headline with one constant friction (1e-13 kg/s), overdamped",
    ),
    Predictor(
        "global_lambda",
        "log10_sigma_global_lambda",
        "log10_sigma",
        "(d) headline with one global Lambda instead of the material's own",
    ),
    Predictor(
        "homogenised",
        "log10_sigma_homogenised",
        "log10_sigma",
        "(e) the 3D homogenised tensor on the grid instead of the path formula",
    ),
    Predictor(
        "path_formula",
        "log10_sigma_path",
        "log10_sigma",
        "(e') the path formula without the channel's transverse entropy",
    ),
    Predictor(
        "overdamped",
        "log10_sigma_overdamped",
        "log10_sigma",
        "(f) the headline without the inertial correction",
    ),
)
#: The ablations (every predictor but the headline).
ABLATIONS: tuple[Predictor, ...] = PREDICTORS[1:]

#: Predictors evaluated only when some scored record has them (``--potential chgnet``, or
#: records of a science revision that computes them).
OPTIONAL_PREDICTORS: tuple[Predictor, ...] = (
    Predictor(
        "average_harmonic",
        "log10_sigma_average_harmonic",
        "log10_sigma",
        "(j) the headline with the harmonic polycrystal average of the principal values",
        missing_is_infinite=False,
    ),
    Predictor(
        "average_geometric",
        "log10_sigma_average_geometric",
        "log10_sigma",
        "(j) the headline with the geometric polycrystal average of the principal values",
        missing_is_infinite=False,
    ),
    Predictor(
        "average_bruggeman",
        "log10_sigma_average_bruggeman",
        "log10_sigma",
        "(j) the headline with the bruggeman polycrystal average of the principal values",
        missing_is_infinite=False,
    ),
    Predictor(
        "average_arithmetic",
        "log10_sigma_average_arithmetic",
        "log10_sigma",
        "(j) the headline with the arithmetic polycrystal average of the principal values",
        missing_is_infinite=False,
    ),
    Predictor(
        "meyer_neldel",
        "log10_sigma_meyer_neldel",
        "log10_sigma",
        "(i) the path headline with Meyer-Neldel compensation (E_MN from the site phonon)",
        missing_is_infinite=False,
    ),
    Predictor(
        "uncompensated",
        "log10_sigma_uncompensated",
        "log10_sigma",
        "(i') the path headline without Meyer-Neldel compensation",
        missing_is_infinite=False,
    ),
    Predictor(
        "all_ions",
        "log10_sigma_all_ions",
        "log10_sigma",
        "(h) the headline with every mobile ion a carrier (no lattice-gas statistics, no "
        "defect chemistry)",
        missing_is_infinite=False,
    ),
    Predictor(
        "universal_sigma",
        "log10_sigma_universal_S_per_cm",
        "log10_sigma",
        "(g) CHGNet along the BVSE path: path formula with the CHGNet profile and saddle "
        "friction (docs/universal.md)",
        missing_is_infinite=False,
    ),
    Predictor(
        "universal_barrier",
        "barrier_universal_eV",
        "barrier",
        "(g') CHGNet barrier along the BVSE path, sigma = A exp(-E / k_B T) with a fitted A "
        "(structures where CHGNet failed are left out)",
        missing_is_infinite=False,
    ),
    Predictor(
        "learned",
        "log10_sigma_learned",
        "log10_sigma",
        "(h) the learned model (iondrag learn, docs/learning.md): physics descriptors and "
        "composition; in-sample for structures it was trained on",
        missing_is_infinite=False,
    ),
)


def _predictor_values(
    records: Sequence[dict[str, Any]], predictor: Predictor, temperature_K: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores and absolute log10-sigma-like values of a predictor.

    Missing values are NaN, except a missing barrier of a scored structure (no percolation
    of that dimensionality below the ceiling), which is an infinite barrier: score -inf,
    absolute value -inf (left out of absolute metrics).
    """
    raw = np.array(
        [np.nan if r.get(predictor.field) is None else float(r[predictor.field]) for r in records],
        dtype=float,
    )
    if predictor.kind == "barrier":
        if predictor.missing_is_infinite:
            raw = np.where(np.isnan(raw), np.inf, raw)
        absolute = -raw / (thermal_energy_eV(temperature_K) * math.log(10.0))
        return -raw, absolute
    if predictor.kind == "log_density":
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(raw > 0, np.log10(np.where(raw > 0, raw, 1.0)), np.nan)
        return logs, logs
    return raw, raw


def _metrics(
    scores: np.ndarray,
    absolute: np.ndarray,
    measured: np.ndarray,
    bound: np.ndarray,
    positive: np.ndarray,
    classifiable: np.ndarray,
    kind: str,
) -> dict[str, Any]:
    """Every metric of one predictor on structures where its score is defined."""
    keep = ~np.isnan(scores)
    s, a, m, b = scores[keep], absolute[keep], measured[keep], bound[keep]
    pos, cls = positive[keep], classifiable[keep]
    exact = ~b
    out: dict[str, Any] = {
        "n": int(keep.sum()),
        "n_upper_bounds": int(b.sum()),
        "n_positive_1e-4": int(pos.sum()),
        "spearman": spearman(s, m),
        "spearman_exact_only": spearman(s[exact], m[exact]),
        "kendall": kendall(s, m),
        "roc_auc_1e-4": auc_mann_whitney(s[cls], pos[cls]) if cls.any() else None,
        "precision_at_10": precision_at_k(s[cls], pos[cls], 10) if cls.any() else None,
        "precision_at_10_k": int(min(10, cls.sum())),
    }
    finite = np.isfinite(a)
    out["n_absolute"] = int(finite.sum())
    if kind == "log10_sigma":
        out["mae_log10"] = censored_mae(a[finite], m[finite], b[finite])
        out["mae_log10_exact_only"] = censored_mae(a[finite & exact], m[finite & exact])
    else:
        out["mae_log10"] = None
        out["mae_log10_exact_only"] = None
    best = censored_best_shift(a[finite], m[finite], b[finite])
    out["fitted_shift_log10"] = None if best is None else best[0]
    out["mae_log10_after_shift"] = None if best is None else best[1]
    out["mae_log10_best_monotone"] = censored_monotone_mae(s, m, b)
    fe = finite & exact
    if fe.any():
        lsq = float(np.mean(m[fe] - a[fe]))
        out["lsq_shift_log10"] = lsq
        out["mae_log10_after_lsq_shift"] = censored_mae(a[finite] + lsq, m[finite], b[finite])
    else:
        out["lsq_shift_log10"] = out["mae_log10_after_lsq_shift"] = None
    if kind == "barrier":
        shift, lsq_shift = out["fitted_shift_log10"], out["lsq_shift_log10"]
        out["prefactor_S_per_cm"] = None if shift is None else _finite_or_none(10.0**shift)
        out["prefactor_lsq_S_per_cm"] = (
            None if lsq_shift is None else _finite_or_none(10.0**lsq_shift)
        )
        out["mae_log10_with_fitted_prefactor"] = out["mae_log10_after_shift"]
        out["n_no_percolation"] = int((~finite).sum())
    return out


def scored_records(
    records: Iterable[dict[str, Any]], *, finite_prediction: bool = False
) -> list[dict[str, Any]]:
    """Return the per-structure records that enter the metrics.

    A record is scored when ``error`` is None and both ``log10_sigma_pred`` and
    ``log10_sigma_exp`` are numbers; ``finite_prediction`` also drops a prediction of
    -inf (sigma = 0), which a paired comparison of two runs cannot rank.
    """
    return [
        r
        for r in records
        if r.get("error") is None
        and r.get("log10_sigma_pred") is not None
        and r.get("log10_sigma_exp") is not None
        and (not finite_prediction or np.isfinite(float(r["log10_sigma_pred"])))
    ]


def family_halves(family_sizes: Mapping[str, int], seed: int = HALVES_SEED) -> dict[str, str]:
    """Split families into two halves, "A" and "B", of about equal size; no family in both.

    The families, sorted by name, are shuffled with ``seed``; each in turn joins the half
    with fewer members so far (ties: A). Global choices are tuned on one half and must
    hold on the other (docs/validation.md).

    Parameters
    ----------
    family_sizes
        Family -> number of structures.
    seed
        Seed of the shuffle (:data:`HALVES_SEED` for the documented halves).

    Returns
    -------
    dict
        Family -> "A" or "B".
    """
    names = sorted(family_sizes)
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = {"A": 0, "B": 0}
    halves: dict[str, str] = {}
    for index in order:
        name = names[int(index)]
        half = "A" if sizes["A"] <= sizes["B"] else "B"
        halves[name] = half
        sizes[half] += int(family_sizes[name])
    return halves


def evaluate_records(
    records: Sequence[dict[str, Any]],
    *,
    temperature_K: float,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    by_half: bool = True,
) -> dict[str, Any]:
    """Every metric from per-structure records (the ``per_structure`` list of the report).

    Every predictor is evaluated on the same records, :func:`scored_records`.

    Returns
    -------
    dict
        ``headline`` (metrics), ``ablations`` (name -> metrics and the paired bootstrap
        ``spearman_difference_vs_headline``), ``per_family`` (family -> n, spearman,
        kendall, for families with at least :data:`MIN_FAMILY_SIZE` scored members) and,
        with ``by_half`` and records that carry a ``half``, ``halves`` (half -> the same
        evaluation on that half's records).
    """
    scored = scored_records(records)
    measured = np.array([float(r["log10_sigma_exp"]) for r in scored], dtype=float)
    bound = np.array([bool(r.get("upper_bound")) for r in scored], dtype=bool)
    sigma = 10.0**measured
    positive = (sigma > THRESHOLD_S_PER_CM) & ~bound
    classifiable = ~bound | (sigma <= THRESHOLD_S_PER_CM)
    predictors = PREDICTORS + tuple(
        p for p in OPTIONAL_PREDICTORS if any(r.get(p.field) is not None for r in scored)
    )
    values = {p.name: _predictor_values(scored, p, temperature_K) for p in predictors}
    headline_scores = values["headline"][0]
    results: dict[str, Any] = {"headline": {}, "ablations": {}, "per_family": {}}
    constant = censored_best_shift(np.zeros(len(scored)), measured, bound)
    results["baseline_constant"] = {
        "description": "one log10 sigma for every structure, the value minimising the "
        "censored MAE (what an uninformative predictor achieves)",
        "n": len(scored),
        "log10_sigma": None if constant is None else constant[0],
        "mae_log10": None if constant is None else constant[1],
    }
    for p in predictors:
        scores, absolute = values[p.name]
        metrics: dict[str, Any] = {
            "description": p.description,
            "field": p.field,
            "kind": p.kind,
        }
        metrics.update(_metrics(scores, absolute, measured, bound, positive, classifiable, p.kind))
        if p.name == "headline":
            results["headline"] = metrics
            continue
        both = ~np.isnan(scores) & ~np.isnan(headline_scores)
        metrics["spearman_difference_vs_headline"] = paired_bootstrap_spearman_difference(
            headline_scores[both],
            scores[both],
            measured[both],
            n_resamples=n_resamples,
            seed=seed,
        )
        results["ablations"][p.name] = metrics
    families: dict[str, list[int]] = {}
    for i, r in enumerate(scored):
        families.setdefault(str(r.get("family") or "unknown"), []).append(i)
    for family in sorted(families):
        index = np.array(families[family])
        if len(index) < MIN_FAMILY_SIZE:
            continue
        results["per_family"][family] = {
            "n": len(index),
            "n_upper_bounds": int(bound[index].sum()),
            "spearman": spearman(headline_scores[index], measured[index]),
            "kendall": kendall(headline_scores[index], measured[index]),
        }
    if by_half:
        halves = sorted({str(r["half"]) for r in scored if r.get("half")})
        results["halves"] = {
            half: evaluate_records(
                [r for r in records if r.get("half") == half],
                temperature_K=temperature_K,
                n_resamples=n_resamples,
                seed=seed,
                by_half=False,
            )
            for half in halves
        }
    return results


# ---------------------------------------------------------------------------------------
# Scoring (serial or in worker processes)
# ---------------------------------------------------------------------------------------

#: CandidateResult fields copied into the per-structure records (record name -> field).
_RESULT_FIELDS: dict[str, str] = {
    "log10_sigma_path": "log10_sigma_path_S_per_cm",
    "log10_sigma_homogenised": "log10_sigma_homogenised_S_per_cm",
    "log10_sigma_overdamped": "log10_sigma_overdamped_S_per_cm",
    "log10_sigma_path_constant_drag": "log10_sigma_path_constant_drag_S_per_cm",
    "log10_sigma_global_lambda": "log10_sigma_global_lambda_S_per_cm",
    "log10_sigma_all_ions": "log10_sigma_all_ions_S_per_cm",
    "log10_sigma_meyer_neldel": "log10_sigma_meyer_neldel_S_per_cm",
    "log10_sigma_uncompensated": "log10_sigma_uncompensated_S_per_cm",
    "meyer_neldel_energy_eV": "meyer_neldel_energy_eV",
    "shared_site_treatment": "shared_site_treatment",
    "log10_arrangement_factor": "log10_arrangement_factor",
    "carrier_mechanism": "carrier_mechanism",
    "carrier_fraction": "carrier_fraction",
    "sublattice_vacancy_fraction": "sublattice_vacancy_fraction",
    "frenkel_energy_eV": "frenkel_energy_eV",
    "barrier_1d_eV": "barrier_1d_eV",
    "barrier_2d_eV": "barrier_2d_eV",
    "barrier_3d_eV": "barrier_3d_eV",
    "mobile_ion_density_per_m3": "mobile_ion_density_per_m3",
    "dimensionality": "dimensionality",
    "anisotropy_ratio": "anisotropy_ratio",
    "kramers_factor": "kramers_factor",
    "damping_regime": "damping_regime",
    "elastic_source": "elastic_source",
    "log10_sigma_universal_S_per_cm": "log10_sigma_universal_S_per_cm",
    "barrier_universal_eV": "barrier_universal_eV",
    "universal_error_cause": "universal_error_cause",
    # further descriptors of the learned model (screening/learning.py)
    "path_barrier_eV": "path_barrier_eV",
    "carrier_density_per_m3": "carrier_density_per_m3",
    "region_weight_fraction": "region_weight_fraction",
    "drag_saddle_kg_per_s": "drag_saddle_kg_per_s",
    "bulk_modulus_GPa": "bulk_modulus_GPa",
    "shear_modulus_GPa": "shear_modulus_GPa",
    "reduced_friction": "reduced_friction",
    "activation_energy_eV": "activation_energy_eV",
}


def _score_file(
    cif_path: str,
    parameters: ScreeningParameters,
    prepare: Callable[[Candidate], Candidate] | None = None,
) -> dict[str, Any]:
    """Load (``prepare``) and score one CIF; return the compact per-structure fields.

    Never raises for a structure.
    """
    from screening.pipeline import score_candidate
    from screening.sources.cif import load_cif_candidate

    started = time.perf_counter()
    ident = Path(cif_path).name[:-4]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate = load_cif_candidate(cif_path)
            if prepare is not None:
                candidate = prepare(candidate)
            result, _ = score_candidate(candidate, parameters)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # score_candidate never raises for a bad candidate
        return {
            "status": "error",
            "error": f"{ident}: {type(error).__name__}: {error}",
            "error_cause": "internal_error",
            "formula": None,
            "wall_seconds": time.perf_counter() - started,
        }
    record: dict[str, Any] = {
        "status": result.status,
        "error": result.error,
        "error_cause": result.error_cause,
        "formula": result.formula,
        "log10_sigma_pred": result.log10_sigma_S_per_cm,
        "seconds_total": result.seconds.get("total"),
        "wall_seconds": time.perf_counter() - started,
        "n_warnings": len(result.warnings),
    }
    record.update({name: getattr(result, attr) for name, attr in _RESULT_FIELDS.items()})
    for name, value in (result.log10_sigma_by_average_S_per_cm or {}).items():
        record[f"log10_sigma_average_{name}"] = value
    if result.status == "ok" and result.log10_sigma_S_per_cm is None:
        record.update(
            error=f"{ident}: scored, but the predicted conductivity is not a finite positive "
            f"number (sigma = {result.sigma_S_per_cm})",
            error_cause="no_finite_prediction",
        )
    elif result.status != "ok" and not result.error_cause:
        record["error_cause"] = "internal_error" if result.status == "error" else "failed"
    if record["error"] is not None:
        record["error"] = " ".join(str(record["error"]).split())
    return record


def _score_all(
    paths: list[Path],
    parameters: ScreeningParameters,
    workers: int,
    report: Callable[[int, str, dict[str, Any]], None],
    prepare: Callable[[Candidate], Candidate] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score every path (in ``workers`` processes when more than one); id -> record."""
    out: dict[str, dict[str, Any]] = {}
    ids = [p.name[:-4] for p in paths]
    if workers > 1 and len(paths) > 1:
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(paths))) as pool:
                futures = {
                    pool.submit(_score_file, str(path), parameters, prepare): ident
                    for path, ident in zip(paths, ids, strict=True)
                }
                for future in as_completed(futures):
                    ident = futures[future]
                    try:
                        out[ident] = future.result()
                    except Exception as error:  # a worker died (e.g. killed for memory)
                        out[ident] = {
                            "status": "error",
                            "formula": None,
                            "error_cause": "worker_crashed",
                            "error": f"{ident}: worker process failed: "
                            f"{type(error).__name__}: {' '.join(str(error).split())}",
                        }
                    report(len(out), ident, out[ident])
            return out
        except (OSError, AssertionError, RuntimeError) as error:
            if out:
                raise
            warnings.warn(  # e.g. inside a daemonic process, which may not start children
                f"parallel scoring unavailable ({error}); scoring serially",
                RuntimeWarning,
                stacklevel=3,
            )
    for path, ident in zip(paths, ids, strict=True):
        out[ident] = _score_file(str(path), parameters, prepare)
        report(len(out), ident, out[ident])
    return out


def _cif_files(cifs_dir: Path) -> dict[str, Path]:
    """Map id -> file for every ``*.cif`` (any case of the suffix) of the folder."""
    if not cifs_dir.is_dir():
        raise FileNotFoundError(f"CIF folder not found: {cifs_dir}")
    files: dict[str, Path] = {}
    for entry in sorted(cifs_dir.iterdir()):
        if entry.is_file() and entry.suffix.lower() == ".cif":
            files.setdefault(entry.name[:-4], entry)
    return files


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars into Python numbers and NaN/inf into None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _finite_or_none(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _quantile(values: Iterable[float | None], q: float) -> float | None:
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(np.percentile(data, q)) if len(data) else None


@dataclass
class ValidationReport:
    """Predicted vs measured conductivity: per-structure records and every metric.

    Attributes
    ----------
    per_structure
        One record per given structure (table ID with a CIF), in id order: ``id``,
        ``formula``, ``family``, ``log10_sigma_exp``, ``sigma_exp_text``, ``upper_bound``,
        ``status``, ``error`` (None when scored, else one line), ``error_cause``,
        ``log10_sigma_pred`` and the ablation predictors, ``seconds_total``.
    metrics
        :func:`evaluate_records` output.
    parameters
        The screening parameters.
    inputs
        Paths, limit, workers, counts of the table and the folder.
    wall_seconds
        Duration of the scoring.
    """

    per_structure: list[dict[str, Any]]
    metrics: dict[str, Any]
    parameters: ScreeningParameters
    inputs: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None

    @property
    def n_given(self) -> int:
        """Structures given: table IDs (with a parsed value) that have a CIF."""
        return len(self.per_structure)

    @property
    def n_scored(self) -> int:
        """Structures with a finite prediction."""
        return sum(1 for r in self.per_structure if r["error"] is None)

    @property
    def n_failed(self) -> int:
        """Given minus scored."""
        return self.n_given - self.n_scored

    def failures_by_cause(self) -> dict[str, dict[str, Any]]:
        """Group the structures that were not scored: cause -> {count, ids, example}."""
        groups: dict[str, dict[str, Any]] = {}
        for r in self.per_structure:
            if r["error"] is None:
                continue
            cause = r.get("error_cause") or "unknown"
            group = groups.setdefault(cause, {"count": 0, "ids": [], "example": r["error"]})
            group["count"] += 1
            group["ids"].append(r["id"])
        return dict(sorted(groups.items(), key=lambda item: (-item[1]["count"], item[0])))

    @property
    def data_attribution(self) -> str:
        """Where the measurements come from: the OBELiX attribution only for an OBELiX table.

        A table whose path names OBELiX gets :data:`DATA_ATTRIBUTION`; any other table is
        named by its file name.
        """
        table = str(self.inputs.get("table_csv") or "")
        if "obelix" in table.lower():
            return DATA_ATTRIBUTION
        return f"table {Path(table).name}" if table else "table given by the user"

    def to_json_dict(self) -> dict[str, Any]:
        """Return the JSON document (``iondrag validate --json``); NaN and inf become null."""
        head = self.metrics.get("headline", {})
        seconds = [r.get("seconds_total") for r in self.per_structure if r["error"] is None]
        document: dict[str, Any] = {
            "iondrag_version": __version__,
            "data_attribution": self.data_attribution,
            "n_given": self.n_given,
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "coverage": self.n_scored / self.n_given if self.n_given else None,
            "failures_by_cause": self.failures_by_cause(),
            "upper_bounds_count": sum(1 for r in self.per_structure if r["upper_bound"]),
            "upper_bounds_count_scored": head.get("n_upper_bounds", 0),
            "n_positive_1e-4": head.get("n_positive_1e-4", 0),
            "spearman": head.get("spearman"),
            "spearman_exact_only": head.get("spearman_exact_only"),
            "kendall": head.get("kendall"),
            "roc_auc_1e-4": head.get("roc_auc_1e-4"),
            "precision_at_10": head.get("precision_at_10"),
            "precision_at_10_k": head.get("precision_at_10_k"),
            "mae_log10": head.get("mae_log10"),
            "mae_log10_exact_only": head.get("mae_log10_exact_only"),
            "mae_log10_best_constant": self.metrics.get("baseline_constant", {}).get("mae_log10"),
            "mae_log10_best_monotone": head.get("mae_log10_best_monotone"),
            "seconds_per_structure_median": _quantile(seconds, 50.0),
            "seconds_per_structure_p90": _quantile(seconds, 90.0),
            "wall_seconds": self.wall_seconds,
            "headline": head,
            "baseline_constant": self.metrics.get("baseline_constant", {}),
            "per_family": self.metrics.get("per_family", {}),
            "halves": self.metrics.get("halves", {}),
            "ablations": self.metrics.get("ablations", {}),
            "upper_bound_policy": UPPER_BOUND_POLICY,
            "threshold_S_per_cm": THRESHOLD_S_PER_CM,
            "temperature_K": self.parameters.temperature_K,
            "parameters": self.parameters.model_dump(mode="json"),
            "inputs": self.inputs,
            "per_structure": self.per_structure,
        }
        return json_safe(document)

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json_dict` (strict JSON: no NaN) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def summary_text(self) -> str:
        """Return a readable summary: counts, failures, timing and the table of metrics."""
        doc = self.to_json_dict()

        def fmt(value: Any, spec: str = ".3f") -> str:
            return "-" if value is None else format(value, spec)

        lines = [
            "iondrag validate: predicted vs measured conductivity",
            f"  given {doc['n_given']}, scored {doc['n_scored']}, failed {doc['n_failed']} "
            f"(coverage {fmt(doc['coverage'], '.1%')}); T = {self.parameters.temperature_K:g} K",
        ]
        for cause, group in doc["failures_by_cause"].items():
            ids = ", ".join(group["ids"][:8]) + (" ..." if group["count"] > 8 else "")
            lines.append(f"  failed [{cause}] x{group['count']}: {ids}")
        lines.append(
            f"  measured: {doc['upper_bounds_count']} upper bounds (e.g. '<1E-10'), "
            f"{doc['n_positive_1e-4']} scored above 1e-4 S/cm"
        )
        lines.append(
            f"  seconds per structure: median {fmt(doc['seconds_per_structure_median'], '.2f')}"
            f", p90 {fmt(doc['seconds_per_structure_p90'], '.2f')}; wall "
            f"{fmt(doc['wall_seconds'], '.1f')} s"
        )
        if self.inputs.get("journal"):
            lines.append(
                f"  journal: {self.inputs.get('n_reused_from_journal', 0)} of {self.n_given} "
                f"records reused from {self.inputs['journal']}"
            )
        header = (
            f"  {'predictor':<20} {'n':>4} {'Spear.':>7} {'exact':>7} {'Kendall':>7} "
            f"{'AUC':>6} {'P@10':>5} {'MAE':>6} {'shift':>7} {'MAE|sh':>6} {'MAE|mo':>6}  "
            "dSpearman head-this [95% CI]"
        )
        lines += ["", header, "  " + "-" * (len(header) - 2)]
        rows = [("headline", doc["headline"]), *doc["ablations"].items()]
        for name, m in rows:
            diff = m.get("spearman_difference_vs_headline")
            ci = (
                f"{fmt(diff['difference'], '+.3f')} [{fmt(diff['ci_low'], '+.3f')}, "
                f"{fmt(diff['ci_high'], '+.3f')}]"
                if diff
                else ""
            )
            lines.append(
                f"  {name:<20} {m.get('n', 0):>4} {fmt(m.get('spearman')):>7} "
                f"{fmt(m.get('spearman_exact_only')):>7} {fmt(m.get('kendall')):>7} "
                f"{fmt(m.get('roc_auc_1e-4')):>6} {fmt(m.get('precision_at_10'), '.2f'):>5} "
                f"{fmt(m.get('mae_log10'), '.2f'):>6} "
                f"{fmt(m.get('fitted_shift_log10'), '+.2f'):>7} "
                f"{fmt(m.get('mae_log10_after_shift'), '.2f'):>6} "
                f"{fmt(m.get('mae_log10_best_monotone'), '.2f'):>6}  {ci}"
            )
        lines.append(
            "  (MAE: censored, log10 S/cm, as predicted; shift: the constant in log10 that "
            "minimises the censored MAE, MAE|sh: the MAE after it; MAE|mo: the smallest MAE "
            "of any order-preserving map of the predictor, fitted in-sample, a bound that "
            "only a better ranking lowers)"
        )
        base = doc["baseline_constant"]
        if base.get("mae_log10") is not None:
            lines.append(
                f"  baseline: one constant log10 sigma = {base['log10_sigma']:.2f} for all gives "
                f"MAE {base['mae_log10']:.2f}"
            )
        for name in ("barrier_3d", "barrier_1d"):
            m = doc["ablations"].get(name)
            if m and m.get("prefactor_S_per_cm") is not None:
                lines.append(
                    f"  {name}: sigma = A exp(-E/kT) needs A = {m['prefactor_S_per_cm']:.3g} "
                    "S/cm (censored-MAE fit; least squares "
                    f"{fmt(m['prefactor_lsq_S_per_cm'], '.3g')}"
                    f" S/cm), MAE {fmt(m['mae_log10_with_fitted_prefactor'], '.2f')}"
                    f"; {m['n_no_percolation']} without such percolation rank last"
                )
        m = doc["ablations"].get("path_constant_drag")
        if m:
            lines.append(
                f"  path_constant_drag: MAE as is {fmt(m['mae_log10'], '.2f')}, needs a shift of "
                f"{fmt(m['fitted_shift_log10'], '+.2f')} decades (then MAE "
                f"{fmt(m['mae_log10_after_shift'], '.2f')})"
            )
        if doc["halves"]:
            lines += [
                "",
                "  family-disjoint halves (docs/validation.md): n, Spearman, MAE, AUC; "
                "then Spearman of each ablation",
            ]
            for half, h in doc["halves"].items():
                head = h.get("headline", {})
                ablations = "  ".join(
                    f"{name} {fmt(m.get('spearman'), '.2f')}"
                    for name, m in h.get("ablations", {}).items()
                )
                lines.append(
                    f"  half {half}: {head.get('n', 0):>4} {fmt(head.get('spearman')):>7} "
                    f"{fmt(head.get('mae_log10'), '.2f'):>6} {fmt(head.get('roc_auc_1e-4')):>6}"
                )
                lines.append(f"    {ablations}")
        if doc["per_family"]:
            lines += ["", f"  per family (>= {MIN_FAMILY_SIZE} scored): n, Spearman, Kendall"]
            for family, f in doc["per_family"].items():
                lines.append(
                    f"  {family:<24} {f['n']:>4} {fmt(f['spearman']):>7} {fmt(f['kendall']):>7}"
                )
        lines += ["", f"  data: {self.data_attribution}"]
        return "\n".join(lines)


def parity_limits(records: list[dict[str, Any]]) -> tuple[float, float]:
    """Axis range of the parity plot, log10 S/cm: the measured values, 1.5 below, 1 above.

    Predictions do not widen it (they are drawn at the edge when outside it).
    """
    measured = [float(r["log10_sigma_exp"]) for r in records]
    if not measured:
        return -12.0, 0.0
    return min(measured) - 1.5, max(measured) + 1.0


def plot_parity(report: ValidationReport, png_out: str | Path) -> Path:
    """Parity plot of predicted vs measured log10 sigma (PNG, matplotlib's Agg canvas).

    Coloured by family (the 9 largest; others grey), upper bounds as open markers with an
    arrow towards lower measured values, the 1e-4 S/cm threshold lines and y = x. Both axes
    span the measured range (:func:`parity_limits`); a prediction outside it is drawn as a
    triangle on the top or bottom edge pointing the way it is off scale, so that one wild
    prediction does not squash the data into a corner.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [r for r in report.per_structure if r["error"] is None]
    low, high = parity_limits(scored)
    pad = 0.02 * (high - low)
    off_scale = {"low": 0, "high": 0}

    def shown(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y (clipped into the axes) and -1/0/+1: below, inside, above the range."""
        x = np.array([r["log10_sigma_exp"] for r in records], dtype=float)
        y = np.array([r["log10_sigma_pred"] for r in records], dtype=float)
        side = np.where(y < low, -1, np.where(y > high, 1, 0))
        off_scale["low"] += int(np.sum(side < 0))
        off_scale["high"] += int(np.sum(side > 0))
        return x, np.clip(y, low + pad, high - pad), side

    figure = Figure(figsize=(9.0, 6.0), dpi=130)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    counts: dict[str, int] = {}
    for r in scored:
        counts[r["family"]] = counts.get(r["family"], 0) + 1
    top = [f for f, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:9]]
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"]  # C7 is grey: "other"
    colours = dict(zip(top, palette, strict=False))
    for family in [*top, "other"]:
        members = [
            r for r in scored if (r["family"] if r["family"] in colours else "other") == family
        ]
        if not members:
            continue
        colour = colours.get(family, "0.55")
        exact = [r for r in members if not r["upper_bound"]]
        bounds = [r for r in members if r["upper_bound"]]
        if exact:
            x, y, side = shown(exact)
            inside = side == 0
            ax.scatter(
                x[inside],
                y[inside],
                s=22,
                color=colour,
                label=f"{family} ({len(members)})",
                alpha=0.85,
            )
            for direction, marker in ((-1, "v"), (1, "^")):
                edge = side == direction
                if edge.any():
                    ax.scatter(x[edge], y[edge], s=40, marker=marker, color=colour, clip_on=False)
        if bounds:
            x, y, side = shown(bounds)
            ax.scatter(
                x,
                y,
                s=30,
                marker="o",
                facecolors="none",
                edgecolors=colour,
                label=None if exact else f"{family} ({len(members)})",
            )
            ax.quiver(
                x,
                y,
                -np.ones_like(x),
                np.zeros_like(y),
                color=colour,
                angles="xy",
                scale_units="xy",
                scale=1.0,
                width=0.003,
                headwidth=4,
            )
    ax.plot([low, high], [low, high], color="k", lw=0.8, label="y = x")
    n_off = off_scale["low"] + off_scale["high"]
    if n_off:
        ax.scatter(
            [],
            [],
            marker="v",
            color="0.3",
            label=f"prediction off scale ({off_scale['low']} below, {off_scale['high']} above)",
        )
    threshold = math.log10(THRESHOLD_S_PER_CM)
    ax.axvline(threshold, color="0.4", ls="--", lw=0.8)
    ax.axhline(threshold, color="0.4", ls="--", lw=0.8, label="1e-4 S/cm")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured log10 sigma (S/cm)  (open, arrow: upper bound)")
    ax.set_ylabel("predicted log10 sigma (S/cm)")
    doc = report.to_json_dict()
    spear = doc["spearman"]
    ax.set_title(
        f"n = {doc['n_scored']}/{doc['n_given']}, Spearman "
        f"{'-' if spear is None else f'{spear:.2f}'}, T = {report.parameters.temperature_K:g} K",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    figure.text(
        0.99, 0.005, f"data: {report.data_attribution}", ha="right", va="bottom", fontsize=6
    )
    figure.tight_layout()
    path = Path(png_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def run_validation(
    cifs_dir: Path,
    table_csv: Path,
    *,
    parameters: ScreeningParameters,
    workers: int = 1,
    json_out: Path | None = None,
    png_out: Path | None = None,
    limit: int | None = None,
    progress: bool = False,
    prepare_candidate: Callable[[Candidate], Candidate] | None = None,
    journal: Path | None = None,
    reuse_journal: bool = True,
    fold: str | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> ValidationReport:
    """Score the CIFs of ``cifs_dir`` named in ``table_csv`` and compare with the measurements.

    Parameters
    ----------
    cifs_dir
        Folder of ``<ID>.cif`` files.
    table_csv
        CSV with ``ID``, ``Ionic conductivity (S cm-1)`` (``"<1E-10"``: an upper bound) and
        optionally ``Family``.
    parameters
        Screening parameters (the temperature is the temperature of the measurements).
    workers
        Processes to score in (results identical to serial scoring).
    json_out, png_out
        Where to write the JSON document and the parity plot (optional).
    limit
        Score only the first ``limit`` IDs in sorted order (quick runs).
    progress
        Print one line per structure to stderr.
    on_progress
        Called as ``on_progress(done, total, reused)`` once before scoring and after each
        structure (``done`` counts the records reused from the journal), e.g. to drive the
        same progress bar as ``iondrag screen``.
    prepare_candidate
        Applied to each loaded candidate before scoring (a module-level function when
        ``workers`` > 1), e.g. ``workflows.ml.candidate_with_chgnet_elastic`` for
        ``parameters.elastic == "chgnet"``; without it such candidates keep the estimate
        (with a warning).
    journal
        JSON Lines file (:class:`~screening.validation_journal.ValidationJournal`) that each
        scored structure is appended to as it finishes; a rerun reuses the records whose key
        (CIF bytes, parameters, code, preparation) matches, so an interrupted run resumes.
        None: no journal.
    reuse_journal
        False: score everything afresh (the new records are still appended).
    fold
        "A" or "B": score only that family-disjoint half (:func:`family_halves` of the
        table's structures that have a CIF); None: both, each record carrying its half.

    Returns
    -------
    ValidationReport

    Raises
    ------
    FileNotFoundError
        The folder or the table does not exist.
    ValueError
        The table lacks a required column, or ``limit``/``workers`` is not positive.
    """
    cifs_dir, table_csv = Path(cifs_dir), Path(table_csv)
    if not table_csv.is_file():
        raise FileNotFoundError(f"conductivity table not found: {table_csv}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    table, skipped = read_conductivity_table(table_csv)
    files = _cif_files(cifs_dir)
    ids = sorted(set(table.index) & set(files))
    if fold is not None and fold not in ("A", "B"):
        raise ValueError(f"fold must be A or B, got {fold!r}")
    halves = family_halves(table.loc[ids, "family"].value_counts().to_dict())
    if fold is not None:
        ids = [i for i in ids if halves[table.loc[i, "family"]] == fold]
    if limit is not None:
        ids = ids[:limit]
    inputs = {
        "cifs_dir": str(cifs_dir.resolve()),
        "table_csv": str(table_csv.resolve()),
        "limit": limit,
        "fold": fold,
        "halves_seed": HALVES_SEED,
        "workers": workers,
        "table_rows_parsed": len(table),
        "table_rows_skipped": skipped,
        "table_upper_bounds": int(table["upper_bound"].sum()) if len(table) else 0,
        "table_ids_without_cif": len(set(table.index) - set(files)),
        "cifs_not_in_table": len(set(files) - set(table.index)),
    }
    log = None if journal is None else ValidationJournal(journal)
    keys: dict[str, str] = {}
    scored: dict[str, dict[str, Any]] = {}
    if log is not None:
        keys = {i: record_key(files[i], parameters, prepare_candidate) for i in ids}
        earlier = log.read() if reuse_journal else {}
        scored = {i: earlier[key] for i, key in keys.items() if key in earlier}
    reused = len(scored)
    inputs["journal"] = None if log is None else str(log.path.resolve())
    inputs["n_reused_from_journal"] = reused
    if progress and reused:
        print(f"reusing {reused} of {len(ids)} records from {journal}", file=sys.stderr)

    if on_progress is not None:
        on_progress(reused, len(ids), reused)

    def report_line(done: int, ident: str, record: dict[str, Any]) -> None:
        if log is not None:
            log.append(keys[ident], ident, record)
        if on_progress is not None:
            on_progress(done + reused, len(ids), reused)
        if not progress:
            return
        status = "ok" if record.get("error") is None else record.get("error_cause")
        value = record.get("log10_sigma_pred")
        shown = "" if value is None or record.get("error") else f" log10 sigma {value:.2f}"
        print(
            f"[{done + reused:>{len(str(len(ids)))}}/{len(ids)}] {ident}: {status}{shown}",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    scored.update(
        _score_all(
            [files[i] for i in ids if i not in scored],
            parameters,
            workers,
            report_line,
            prepare_candidate,
        )
    )
    wall = time.perf_counter() - started
    if log is not None and log.error is not None:
        inputs["journal_error"] = log.error
    records = []
    for ident in ids:
        row = table.loc[ident]
        record: dict[str, Any] = {
            "id": ident,
            "formula": None,
            "family": row["family"],
            "half": halves[row["family"]],
            "log10_sigma_exp": float(row["log10_sigma_exp"]),
            "sigma_exp_text": row["sigma_exp_text"],
            "upper_bound": bool(row["upper_bound"]),
            "log10_sigma_pred": None,
            "error": None,
        }
        record.update(scored[ident])
        if record["error"] is not None:
            record["log10_sigma_pred"] = None
        records.append(record)
    metrics = evaluate_records(records, temperature_K=parameters.temperature_K)
    report = ValidationReport(records, metrics, parameters, inputs, wall_seconds=wall)
    if json_out is not None:
        report.write_json(json_out)
    if png_out is not None:
        plot_parity(report, png_out)
    return report
