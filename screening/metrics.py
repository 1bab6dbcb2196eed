"""Metrics of predicted against measured conductivities (pure; ``iondrag validate``).

Rank statistics (:func:`spearman`, :func:`kendall`), classification (:func:`auc_mann_whitney`,
:func:`precision_at_k`), censored errors (:func:`censored_mae`, :func:`censored_best_shift`,
:func:`censored_monotone_mae`), the paired bootstrap of Spearman differences, the
family-disjoint halves (:func:`family_halves`), the predictors (headline and ablations) and
:func:`evaluate_records`, which computes every metric from per-structure records alone. No
I/O: the table reader is :mod:`iondrag.adapters.table`, the scoring run, report and plot
are the ``validate`` command (:mod:`iondrag.workflows.validate`).
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

"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from iondrag.screening.schemas import finite_or_none
from iondrag.screening.units import thermal_energy_eV

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass


#: Classification threshold of ROC-AUC and precision at k: sigma > this, S/cm.
THRESHOLD_S_PER_CM = 1e-4


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
    return None if ranks is None else finite_or_none(_stats().spearmanr(*ranks).statistic)


def kendall(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> float | None:
    """Kendall's tau-b (ties in either array accounted for), via :func:`scipy.stats.kendalltau`.

    Returns None with fewer than 3 pairs or when either array is constant.
    """
    ranks = _ranks(predicted, measured)
    if ranks is None:
        return None
    return finite_or_none(_stats().kendalltau(*ranks, variant="b").statistic)


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
        out["prefactor_S_per_cm"] = None if shift is None else finite_or_none(10.0**shift)
        out["prefactor_lsq_S_per_cm"] = (
            None if lsq_shift is None else finite_or_none(10.0**lsq_shift)
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
