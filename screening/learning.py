"""Learning from measured conductivities: physics descriptors plus composition (issue 18).

Pure: features from pymatgen objects and per-structure records, the censored loss, the
family-grouped cross-validation, split-conformal intervals, the out-of-domain distance and
fit/predict given arrays. No file I/O (the model file lives in ``workflows/learn.py``);
scikit-learn is imported only inside the functions that fit or predict.

Feature sets
------------
* ``composition``: what a user would pick without iondrag (the OBELiX baseline): element
  property statistics of the composition (fraction-weighted mean, standard deviation, min,
  max), element fractions, the mobile-ion fraction, and structure features (sorted lattice
  lengths, angles, volume per atom, density, space-group number, partial occupancy of the
  mobile-ion sublattice and of all sites);
* ``physics``: iondrag's own descriptors, read from the per-structure records of
  ``iondrag validate`` (:data:`PHYSICS_DESCRIPTORS`, the one list to extend by name);
* ``both``: the union.

Upper bounds ("<1E-10") train at the bound value and are scored censored
(:func:`censored_absolute_errors`: no error at or below the bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from iondrag.screening.metrics import (
    THRESHOLD_S_PER_CM,
    auc_mann_whitney,
    censored_errors,
    censored_mae,
    spearman,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pymatgen.core import Composition, Structure

__all__ = [
    "COMPOSITION_ELEMENTS",
    "FEATURE_SETS",
    "PHYSICS_DESCRIPTORS",
    "AnchoredRegressor",
    "Descriptor",
    "LearnedModel",
    "NearestNeighbourDomain",
    "censored_absolute_errors",
    "composition_features",
    "conformal_halfwidth",
    "cross_validate",
    "design_matrix",
    "estimator_for",
    "evaluate_predictions",
    "feature_names",
    "fit_model",
    "grouped_folds",
    "interval_coverage_cv",
    "make_estimator",
    "paired_bootstrap_difference",
    "physics_features",
    "structure_features",
    "table_lattice_features",
]

#: Cap of a barrier (eV) for a scored structure without percolation in that dimension, and
#: floor of a log10 conductivity (S/cm) for a prediction of zero.
BARRIER_CAP_EV = 5.0
LOG10_SIGMA_FLOOR = -40.0


@dataclass(frozen=True)
class Descriptor:
    """One physics descriptor of the learned model.

    Attributes
    ----------
    name
        Feature name (units in the name).
    field
        Key of the per-structure record (``iondrag.workflows.validate._RESULT_FIELDS`` names, plus
        ``log10_sigma_pred`` for the headline).
    transform
        ``identity``, ``log10`` (of a positive value; else missing) or ``log10_sigma``
        (clipped below at :data:`LOG10_SIGMA_FLOOR`).
    if_missing
        Value for a scored structure whose record lacks it (e.g. no 3D percolation: the
        capped barrier); None: missing (NaN).
    """

    name: str
    field: str
    transform: str = "identity"
    if_missing: float | None = None


#: The physics descriptors, in one place: add a new one here by name (and its record field
#: in ``iondrag.workflows.validate._RESULT_FIELDS``), then retrain with ``iondrag learn``.
PHYSICS_DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor("log10_sigma_headline_S_per_cm", "log10_sigma_pred", "log10_sigma"),
    Descriptor("log10_sigma_path_S_per_cm", "log10_sigma_path", "log10_sigma"),
    Descriptor("log10_sigma_homogenised_S_per_cm", "log10_sigma_homogenised", "log10_sigma"),
    Descriptor("log10_sigma_overdamped_S_per_cm", "log10_sigma_overdamped", "log10_sigma"),
    Descriptor("barrier_1d_eV", "barrier_1d_eV", if_missing=BARRIER_CAP_EV),
    Descriptor("barrier_2d_eV", "barrier_2d_eV", if_missing=BARRIER_CAP_EV),
    Descriptor("barrier_3d_eV", "barrier_3d_eV", if_missing=BARRIER_CAP_EV),
    Descriptor("path_barrier_eV", "path_barrier_eV"),
    Descriptor("dimensionality", "dimensionality", if_missing=0.0),
    Descriptor("log10_mobile_ion_density_per_m3", "mobile_ion_density_per_m3", "log10"),
    Descriptor("log10_carrier_density_per_m3", "carrier_density_per_m3", "log10"),
    Descriptor("region_weight_fraction", "region_weight_fraction"),
    Descriptor("log10_anisotropy_ratio", "anisotropy_ratio", "log10"),
    Descriptor("kramers_factor", "kramers_factor"),
    Descriptor("log10_drag_saddle_kg_per_s", "drag_saddle_kg_per_s", "log10"),
    Descriptor("bulk_modulus_GPa", "bulk_modulus_GPa"),
    Descriptor("shear_modulus_GPa", "shear_modulus_GPa"),
    # the many-ion part (iondrag.screening.carriers): the sublattice's vacancies, the Frenkel energy
    # and the carrier fraction they give
    Descriptor("sublattice_vacancy_fraction", "sublattice_vacancy_fraction"),
    Descriptor("frenkel_energy_eV", "frenkel_energy_eV", if_missing=BARRIER_CAP_EV),
    Descriptor("log10_carrier_fraction", "carrier_fraction", "log10"),
)

#: Elements whose fraction is a feature (the common constituents of Li conductors).
COMPOSITION_ELEMENTS: tuple[str, ...] = (
    "Li", "Na", "O", "S", "Se", "P", "N", "F", "Cl", "Br", "I", "H", "B", "C", "Si", "Ge",
    "Sn", "Al", "Ga", "In", "Zr", "Ti", "Hf", "Ta", "Nb", "La", "Y", "Sc", "Zn", "Mg", "Ca",
    "Sr", "Ba", "Bi", "Sb", "Te", "W", "Mo", "V", "Cr", "Fe",
)  # fmt: skip

#: Element properties whose fraction-weighted statistics are features.
ELEMENT_PROPERTIES: tuple[str, ...] = (
    "Z",
    "X",
    "atomic_mass",
    "row",
    "group",
    "atomic_radius",
    "mendeleev_no",
    "average_ionic_radius",
)
_STATISTICS = ("mean", "std", "min", "max")

STRUCTURE_FEATURES: tuple[str, ...] = (
    "lattice_a_min_A",
    "lattice_a_mid_A",
    "lattice_a_max_A",
    "angle_deviation_deg",
    "volume_per_atom_A3",
    "density_g_per_cm3",
    "space_group_number",
    "ion_per_volume_per_A3",
    "ion_sites_partial_fraction",
    "ion_mean_occupancy",
    "sites_partial_fraction",
)


def _composition_names() -> tuple[str, ...]:
    stats = tuple(f"{p}_{s}" for p in ELEMENT_PROPERTIES for s in _STATISTICS)
    fractions = tuple(f"fraction_{e}" for e in COMPOSITION_ELEMENTS)
    return (*stats, *fractions, "ion_fraction", "n_elements", "fraction_other")


COMPOSITION_FEATURES: tuple[str, ...] = _composition_names()
PHYSICS_FEATURES: tuple[str, ...] = tuple(d.name for d in PHYSICS_DESCRIPTORS)

#: The physics headline: the anchor of the models that see physics (a linear calibration
#: of it, then a forest on the residual; :class:`AnchoredRegressor`).
ANCHOR_FEATURE = "log10_sigma_headline_S_per_cm"

#: Physics descriptors that the residual forest of ``both`` sees besides composition and
#: structure. Empty by choice: in the grouped CV on the training split, all of
#: PHYSICS_DESCRIPTORS in the residual forest ranked worse (Spearman 0.663 against 0.689,
#: docs/learning.md). A new descriptor is tried by adding its name here and rerunning learn.
RESIDUAL_PHYSICS: tuple[str, ...] = ()

#: The three feature sets compared side by side; a set that contains ANCHOR_FEATURE is
#: fitted with the anchored model.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "composition": COMPOSITION_FEATURES + STRUCTURE_FEATURES,
    "physics": PHYSICS_FEATURES,
    "both": (ANCHOR_FEATURE, *COMPOSITION_FEATURES, *STRUCTURE_FEATURES, *RESIDUAL_PHYSICS),
}


def feature_names(feature_set: str) -> tuple[str, ...]:
    """Return the feature names of ``composition``, ``physics`` or ``both``."""
    try:
        return FEATURE_SETS[feature_set]
    except KeyError as error:
        raise ValueError(
            f"unknown feature set {feature_set!r} (known: {list(FEATURE_SETS)})"
        ) from error


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------


@cache
def _element_property(symbol: str, name: str) -> float:
    from pymatgen.core import Element

    try:
        value = getattr(Element(symbol), name)
    except (ValueError, AttributeError, KeyError):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def composition_features(composition: Composition, ion: str = "Li") -> dict[str, float]:
    """Fraction-weighted element-property statistics and element fractions (no network).

    Parameters
    ----------
    composition
        Any pymatgen Composition (fractional amounts allowed; oxidation states ignored).
    ion
        The mobile species, whose atomic fraction is ``ion_fraction``.
    """
    amounts: dict[str, float] = {}
    for species, amount in composition.items():
        symbol = getattr(species, "symbol", None) or str(species)
        symbol = getattr(getattr(species, "element", None), "symbol", symbol)
        if amount > 0:
            amounts[symbol] = amounts.get(symbol, 0.0) + float(amount)
    total = sum(amounts.values())
    out: dict[str, float] = {}
    if total <= 0:
        return dict.fromkeys(COMPOSITION_FEATURES, math.nan)
    symbols = sorted(amounts)
    weights = np.array([amounts[s] / total for s in symbols])
    for prop in ELEMENT_PROPERTIES:
        values = np.array([_element_property(s, prop) for s in symbols])
        known = np.isfinite(values)
        if not known.any():
            for stat in _STATISTICS:
                out[f"{prop}_{stat}"] = math.nan
            continue
        v, w = values[known], weights[known] / weights[known].sum()
        mean = float(np.dot(w, v))
        out[f"{prop}_mean"] = mean
        out[f"{prop}_std"] = float(math.sqrt(max(np.dot(w, (v - mean) ** 2), 0.0)))
        out[f"{prop}_min"] = float(v.min())
        out[f"{prop}_max"] = float(v.max())
    listed = 0.0
    for element in COMPOSITION_ELEMENTS:
        fraction = amounts.get(element, 0.0) / total
        out[f"fraction_{element}"] = fraction
        listed += fraction
    out["ion_fraction"] = amounts.get(ion, 0.0) / total
    out["n_elements"] = float(len(symbols))
    out["fraction_other"] = max(0.0, 1.0 - listed) if 1.0 - listed > 1e-9 else 0.0
    return out


def _sorted_lengths_angles(abc: Sequence[float], angles: Sequence[float]) -> dict[str, float]:
    a = sorted(float(x) for x in abc)
    return {
        "lattice_a_min_A": a[0],
        "lattice_a_mid_A": a[1],
        "lattice_a_max_A": a[2],
        "angle_deviation_deg": float(sum(abs(float(g) - 90.0) for g in angles)),
    }


def structure_features(
    structure: Structure, ion: str = "Li", space_group_number: int | None = None
) -> dict[str, float]:
    """Lattice, density, space group and partial occupancy of a (disordered) structure.

    ``space_group_number``: as read from the CIF (a candidate's provenance); None: found
    with spglib on the structure (symprec 0.1 A), NaN where that fails (disorder).
    """
    features = _sorted_lengths_angles(structure.lattice.abc, structure.lattice.angles)
    composition = structure.composition
    n_atoms = float(composition.num_atoms)
    volume = float(structure.volume)
    features["volume_per_atom_A3"] = volume / n_atoms if n_atoms > 0 else math.nan
    # amu / A^3 -> g / cm^3 (Structure.density, without its unit objects)
    features["density_g_per_cm3"] = float(composition.weight) * 1.66053906660 / volume
    if space_group_number is None:
        try:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            space_group_number = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
        except Exception:  # disordered or degenerate: spglib gives up
            space_group_number = None
    features["space_group_number"] = (
        math.nan if space_group_number is None else float(space_group_number)
    )
    ion_occupancies: list[float] = []
    partial = 0
    for site in structure:
        occupancy = sum(float(v) for v in site.species.values())
        if occupancy < 0.99 or len(site.species) > 1:
            partial += 1
        for species, amount in site.species.items():
            if getattr(getattr(species, "element", species), "symbol", str(species)) == ion:
                ion_occupancies.append(float(amount))
    features["ion_per_volume_per_A3"] = sum(ion_occupancies) / volume if volume > 0 else math.nan
    features["ion_sites_partial_fraction"] = (
        float(np.mean([o < 0.99 for o in ion_occupancies])) if ion_occupancies else math.nan
    )
    features["ion_mean_occupancy"] = (
        float(np.mean(ion_occupancies)) if ion_occupancies else math.nan
    )
    features["sites_partial_fraction"] = partial / len(structure) if len(structure) else math.nan
    return features


def table_lattice_features(
    composition: Composition,
    abc: Sequence[float],
    angles: Sequence[float],
    space_group_number: int | None,
    ion: str = "Li",
) -> dict[str, float]:
    """Structure features from a table row without a CIF (lattice constants, space group).

    ``composition`` is the cell content (OBELiX's ``True Composition``). The occupancy
    features are unknown (NaN).
    """
    from pymatgen.core import Lattice

    features = _sorted_lengths_angles(abc, angles)
    volume = float(Lattice.from_parameters(*abc, *angles).volume)
    n_atoms = float(composition.num_atoms)
    features["volume_per_atom_A3"] = volume / n_atoms if n_atoms > 0 and volume > 0 else math.nan
    mass_amu = float(composition.weight)
    features["density_g_per_cm3"] = mass_amu * 1.66053906660 / volume if volume > 0 else math.nan
    features["space_group_number"] = (
        math.nan if space_group_number is None else float(space_group_number)
    )
    features["ion_per_volume_per_A3"] = float(composition[ion]) / volume if volume > 0 else math.nan
    for name in ("ion_sites_partial_fraction", "ion_mean_occupancy", "sites_partial_fraction"):
        features[name] = math.nan
    return features


def physics_features(record: Mapping[str, Any] | None) -> dict[str, float]:
    """Return the :data:`PHYSICS_DESCRIPTORS` of one per-structure record (NaN when not scored).

    A record is scored when its ``error`` is None; a scored record that lacks a descriptor
    takes the descriptor's ``if_missing`` value (NaN when it has none).
    """
    out = {d.name: math.nan for d in PHYSICS_DESCRIPTORS}
    if record is None or record.get("error") is not None:
        return out
    for d in PHYSICS_DESCRIPTORS:
        raw = record.get(d.field)
        value = math.nan
        if raw is not None and not isinstance(raw, str):
            value = float(raw)
        if d.transform == "log10":
            value = math.log10(value) if value > 0 and math.isfinite(value) else math.nan
        elif d.transform == "log10_sigma":
            if value == -math.inf:
                value = LOG10_SIGMA_FLOOR
            elif math.isfinite(value):
                value = max(value, LOG10_SIGMA_FLOOR)
        if math.isnan(value) and d.if_missing is not None:
            value = d.if_missing
        if d.name.startswith("barrier") and math.isfinite(value):
            value = min(value, BARRIER_CAP_EV)
        out[d.name] = value if math.isfinite(value) else math.nan
    return out


def design_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """Stack feature dicts into an (n, len(names)) float array (absent -> NaN)."""
    matrix = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is not None:
                matrix[i, j] = float(value)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


# ---------------------------------------------------------------------------------------
# Loss, folds, metrics
# ---------------------------------------------------------------------------------------


def censored_absolute_errors(
    predicted: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    upper_bound: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    """Return the censored loss (log10): ``|p - m|``, or ``max(0, p - m)`` for a bound m.

    The same loss as ``iondrag validate`` (:func:`iondrag.screening.metrics.censored_errors`).
    """
    return censored_errors(predicted, measured, upper_bound)


def grouped_folds(groups: Sequence[str], n_splits: int = 5) -> np.ndarray:
    """Assign each sample a fold such that every group sits in one fold only.

    Groups go, largest first (ties by name), to the fold with the fewest samples so far
    (the rule of scikit-learn's GroupKFold), so the result is deterministic.

    Returns
    -------
    numpy.ndarray
        Fold index (0 .. n_splits - 1) of each sample.

    Raises
    ------
    ValueError
        Fewer groups than folds, or fewer than 2 folds.
    """
    labels = [str(g) for g in groups]
    unique = sorted(set(labels))
    if n_splits < 2:
        raise ValueError(f"need at least 2 folds, got {n_splits}")
    if len(unique) < n_splits:
        raise ValueError(f"{len(unique)} groups cannot fill {n_splits} folds")
    sizes = {g: labels.count(g) for g in unique}
    load = np.zeros(n_splits)
    fold_of: dict[str, int] = {}
    for group in sorted(unique, key=lambda g: (-sizes[g], g)):
        fold = int(np.argmin(load))
        fold_of[group] = fold
        load[fold] += sizes[group]
    return np.array([fold_of[g] for g in labels], dtype=int)


def _classes(measured: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sigma = 10.0**measured
    positive = (sigma > THRESHOLD_S_PER_CM) & ~bound
    classifiable = ~bound | (sigma <= THRESHOLD_S_PER_CM)
    return positive, classifiable


def evaluate_predictions(
    predicted: np.ndarray, measured: np.ndarray, bound: np.ndarray
) -> dict[str, Any]:
    """Spearman, censored MAE (log10 decades) and ROC-AUC at 1e-4 S/cm, as validate counts."""
    p, m, b = (np.asarray(x) for x in (predicted, measured, bound))
    b = b.astype(bool)
    keep = np.isfinite(p) & np.isfinite(m)
    p, m, b = p[keep], m[keep], b[keep]
    positive, classifiable = _classes(m, b)
    return {
        "n": len(p),
        "n_upper_bounds": int(b.sum()),
        "spearman": spearman(p, m),
        "mae_log10": censored_mae(p, m, b),
        "roc_auc_1e-4": auc_mann_whitney(p[classifiable], positive[classifiable])
        if classifiable.any()
        else None,
    }


def paired_bootstrap_difference(
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    measured: np.ndarray,
    bound: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 20250214,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """Paired bootstrap over structures of metric(a) - metric(b).

    For each metric (Spearman, censored MAE, ROC-AUC) the same resampled structures enter
    both predictors. Returns metric -> {difference, ci_low, ci_high, fraction_positive}.
    A positive MAE difference means a has the larger error.
    """
    a, b_, m = (np.asarray(x, float) for x in (predicted_a, predicted_b, measured))
    ub = np.asarray(bound, bool)
    keep = np.isfinite(a) & np.isfinite(b_) & np.isfinite(m)
    a, b_, m, ub = a[keep], b_[keep], m[keep], ub[keep]
    rng = np.random.default_rng(seed)
    names = ("spearman", "mae_log10", "roc_auc_1e-4")
    full_a = evaluate_predictions(a, m, ub)
    full_b = evaluate_predictions(b_, m, ub)
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n_resamples):
        index = rng.integers(0, len(a), len(a))
        ea = evaluate_predictions(a[index], m[index], ub[index])
        eb = evaluate_predictions(b_[index], m[index], ub[index])
        for name in names:
            if ea[name] is not None and eb[name] is not None:
                draws[name].append(ea[name] - eb[name])
    tail = 100.0 * (1.0 - confidence) / 2.0
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = np.array(draws[name])
        diff = (
            None
            if full_a[name] is None or full_b[name] is None
            else float(full_a[name] - full_b[name])
        )
        low, high = (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            if len(values)
            else (None, None)
        )
        out[name] = {
            "difference": diff,
            "ci_low": low,
            "ci_high": high,
            "fraction_positive": float(np.mean(values > 0)) if len(values) else None,
        }
    return out


# ---------------------------------------------------------------------------------------
# Estimator, cross-validation, intervals, domain
# ---------------------------------------------------------------------------------------

#: Default hyperparameters (chosen on the training split's grouped CV only).
ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "forest": {"n_estimators": 200, "min_samples_leaf": 3, "max_features": 0.33},
    "boosting": {
        "max_iter": 300,
        "learning_rate": 0.04,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 8,
        "l2_regularization": 1.0,
    },
}


def make_estimator(kind: str = "forest", seed: int = 0, **overrides: Any) -> Any:
    """Return a scikit-learn regressor that accepts NaN features.

    ``forest``: RandomForestRegressor (missing values supported natively); ``boosting``:
    HistGradientBoostingRegressor. Single-threaded (the machines are shared).
    """
    if kind not in ESTIMATOR_DEFAULTS:
        raise ValueError(f"unknown estimator {kind!r} (known: {list(ESTIMATOR_DEFAULTS)})")
    options = {**ESTIMATOR_DEFAULTS[kind], **overrides}
    if kind == "forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=seed, n_jobs=1, **options)
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=seed, **options)


class AnchoredRegressor:
    """A linear calibration of one anchor feature plus a model of the residual.

    ``prediction = c0 + c1 clip(anchor) + residual_model(other features)``: the least-squares
    line of the target on the anchor (the physics headline, clipped to ``clip``) keeps the
    physics' ranking, which a forest on the anchor alone loses (piecewise constant, family
    shift); the residual model (a forest) learns what composition and structure add. A
    missing anchor (the physics failed) predicts the training median plus the residual.

    Parameters
    ----------
    anchor
        Column index of the anchor in X.
    residual
        An unfitted scikit-learn regressor for the other columns.
    clip
        Range of the anchor used in the line (log10 S/cm): above 1 S/cm no Li conductor is
        measured, below 1e-20 S/cm nothing is measurable, so the line does not follow the
        headline's tails (which reach 1e-60 S/cm where BVSE overestimates barriers).
    """

    def __init__(self, anchor: int, residual: Any, clip: tuple[float, float] = (-20.0, 0.0)):
        self.anchor = anchor
        self.residual = residual
        self.clip = clip
        self.coef_ = np.zeros(2)
        self.median_ = 0.0

    def _base(self, x: np.ndarray) -> np.ndarray:
        a = x[:, self.anchor]
        line = self.coef_[0] + self.coef_[1] * np.clip(np.nan_to_num(a), *self.clip)
        return np.where(np.isfinite(a), line, self.median_)

    def _others(self, x: np.ndarray) -> np.ndarray:
        return np.delete(x, self.anchor, axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> AnchoredRegressor:
        """Fit the line on the rows with an anchor, then the residual model on all rows."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        a = x[:, self.anchor]
        ok = np.isfinite(a)
        self.median_ = float(np.median(y))
        if ok.sum() >= 2 and np.ptp(np.clip(a[ok], *self.clip)) > 0:
            design = np.vstack([np.ones(ok.sum()), np.clip(a[ok], *self.clip)]).T
            self.coef_ = np.linalg.lstsq(design, y[ok], rcond=None)[0]
        else:
            self.coef_ = np.array([self.median_, 0.0])
        if x.shape[1] > 1:
            self.residual.fit(self._others(x), y - self._base(x))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict log10 sigma."""
        x = np.asarray(x, float)
        base = self._base(x)
        return base + self.residual.predict(self._others(x)) if x.shape[1] > 1 else base


def estimator_for(
    names: Sequence[str], kind: str = "forest", seed: int = 0, **overrides: Any
) -> Any:
    """Return the model of a feature list: anchored when it has :data:`ANCHOR_FEATURE`."""
    if ANCHOR_FEATURE in names:
        return AnchoredRegressor(
            list(names).index(ANCHOR_FEATURE), make_estimator(kind, seed, **overrides)
        )
    return make_estimator(kind, seed, **overrides)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    factory: Callable[[], Any],
) -> np.ndarray:
    """Out-of-fold predictions: each fold predicted by a model fitted on the others."""
    predicted = np.full(len(y), np.nan)
    for fold in np.unique(folds):
        test = folds == fold
        model = factory()
        model.fit(x[~test], y[~test])
        predicted[test] = model.predict(x[test])
    return predicted


def conformal_halfwidth(residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil((n + 1) coverage)-th smallest |residual|.

    With n exchangeable calibration residuals, a new point lies within +- this of its
    prediction with probability at least ``coverage``; inf when n is too small.
    """
    r = np.sort(np.abs(np.asarray(residuals, float)[np.isfinite(residuals)]))
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
    rank = math.ceil((len(r) + 1) * coverage)
    return math.inf if rank > len(r) else float(r[rank - 1])


def _inside(lo: np.ndarray, hi: np.ndarray, measured: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Return whether inside: an exact value in [lo, hi], an upper bound m when lo <= m."""
    return np.where(bound, lo <= measured, (lo <= measured) & (measured <= hi))


def interval_coverage_cv(
    predicted: np.ndarray,
    measured: np.ndarray,
    bound: np.ndarray,
    folds: np.ndarray,
    coverage: float,
) -> dict[str, Any]:
    """Held-out coverage of split-conformal intervals on out-of-fold predictions.

    For each fold, the half-width comes from the exact values of the other folds' residuals
    and is checked on that fold: no fold calibrates its own interval.
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    b = np.asarray(bound, bool)
    inside = np.zeros(len(p), bool)
    widths = []
    for fold in np.unique(folds):
        test = folds == fold
        calib = ~test & ~b & np.isfinite(p)
        q = conformal_halfwidth(p[calib] - m[calib], coverage)
        widths.append(q)
        inside[test] = _inside(p[test] - q, p[test] + q, m[test], b[test])
    exact = ~b
    return {
        "nominal": coverage,
        "held_out_fraction_inside": float(inside.mean()),
        "held_out_fraction_inside_exact_only": float(inside[exact].mean()) if exact.any() else None,
        "halfwidth_per_fold_log10": [float(w) for w in widths],
        "n": len(p),
    }


@dataclass
class NearestNeighbourDomain:
    """Out-of-domain check: distance to the nearest training point in scaled feature space.

    Features are centred on the training median and divided by the interquartile range
    (the standard deviation where that is 0, else 1); NaN counts as the median. The
    threshold is the ``percentile`` of the training points' leave-one-out nearest-neighbour
    distances.
    """

    center: np.ndarray
    scale: np.ndarray
    train: np.ndarray
    threshold: float
    percentile: float

    @classmethod
    def fit(cls, x: np.ndarray, percentile: float = 95.0) -> NearestNeighbourDomain:
        """Fit on the (n, d) training features."""
        center = np.nanmedian(x, axis=0)
        center = np.where(np.isfinite(center), center, 0.0)
        q75, q25 = np.nanpercentile(x, 75, axis=0), np.nanpercentile(x, 25, axis=0)
        iqr, std = q75 - q25, np.nanstd(x, axis=0)
        tiny = 1e-6 * np.maximum(1.0, np.abs(center))  # round-off, not spread
        scale = np.where(np.isfinite(iqr) & (iqr > tiny), iqr, np.where(std > tiny, std, 1.0))
        train = cls._scaled(x, center, scale)
        d = _pairwise(train, train)
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
        return cls(center, scale, train, float(np.percentile(nearest, percentile)), percentile)

    @staticmethod
    def _scaled(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, float) - center) / scale
        return np.where(np.isfinite(z), z, 0.0)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Nearest-neighbour distance of each row of ``x`` to the training set."""
        return _pairwise(self._scaled(x, self.center, self.scale), self.train).min(axis=1)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass
class LearnedModel:
    """A fitted model with its features, interval half-width and domain check.

    ``predict`` returns log10 sigma (S/cm), the interval at ``coverage``, the distance to
    the training data and the out-of-domain flag.
    """

    estimator: Any
    feature_names: tuple[str, ...]
    coverage: float
    halfwidth_log10: float
    domain: NearestNeighbourDomain
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def physics_fields(self) -> tuple[str, ...]:
        """Record fields of the physics descriptors this model reads."""
        used = set(self.feature_names)
        return tuple(d.field for d in PHYSICS_DESCRIPTORS if d.name in used)

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Predict from an (n, d) matrix in :attr:`feature_names` order."""
        x = np.asarray(x, float).reshape(-1, len(self.feature_names))
        predicted = np.asarray(self.estimator.predict(x), float)
        distance = self.domain.distance(x)
        return {
            "log10_sigma": predicted,
            "lo": predicted - self.halfwidth_log10,
            "hi": predicted + self.halfwidth_log10,
            "distance": distance,
            "out_of_domain": distance > self.domain.threshold,
        }

    def predict_rows(self, rows: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
        """Predict from feature dicts (names missing from a dict count as NaN)."""
        return self.predict_matrix(design_matrix(rows, self.feature_names))


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    bound: np.ndarray,
    groups: Sequence[str],
    names: Sequence[str],
    *,
    kind: str = "forest",
    n_splits: int = 5,
    coverage: float = 0.9,
    seed: int = 0,
    ood_percentile: float = 95.0,
) -> tuple[LearnedModel, dict[str, Any]]:
    """Run the grouped CV (figures, conformal calibration), then fit on all rows.

    Returns
    -------
    (model, cv)
        ``cv``: ``metrics`` (out-of-fold), ``interval`` (held-out coverage),
        ``predicted`` (out-of-fold predictions) and ``folds``.
    """
    folds = grouped_folds(groups, n_splits)
    predicted = cross_validate(x, y, folds, lambda: estimator_for(names, kind, seed))
    bound = np.asarray(bound, bool)
    metrics = evaluate_predictions(predicted, y, bound)
    interval = interval_coverage_cv(predicted, y, bound, folds, coverage)
    exact = ~bound
    halfwidth = conformal_halfwidth(predicted[exact] - y[exact], coverage)
    estimator = estimator_for(names, kind, seed)
    estimator.fit(x, y)
    model = LearnedModel(
        estimator,
        tuple(names),
        coverage,
        halfwidth,
        NearestNeighbourDomain.fit(x, ood_percentile),
    )
    cv = {
        "metrics": metrics,
        "interval": interval,
        "predicted": predicted,
        "folds": folds,
    }
    return model, cv
