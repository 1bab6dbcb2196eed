"""The pure learning module: censored loss, grouped folds, conformal intervals, features."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from iondrag.screening import learning


def test_censored_loss_matches_hand_computed_cases() -> None:
    predicted = [1.0, -5.0, -12.0, -9.0, -3.0]
    measured = [0.0, -5.0, -10.0, -10.0, -2.5]
    bound = [False, False, True, True, False]
    # exact: |p - m|; bound: 0 at or below the bound, else p - m
    expected = [1.0, 0.0, 0.0, 1.0, 0.5]
    assert learning.censored_absolute_errors(predicted, measured, bound) == pytest.approx(expected)
    metrics = learning.evaluate_predictions(
        np.array(predicted), np.array(measured), np.array(bound)
    )
    assert metrics["mae_log10"] == pytest.approx(sum(expected) / 5)
    assert metrics["n_upper_bounds"] == 2


def test_grouped_folds_never_put_a_family_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    families = [f"family-{k}" for k in rng.integers(0, 23, size=400)]
    folds = learning.grouped_folds(families, 5)
    assert set(folds) == set(range(5))
    for family in set(families):
        assert len({f for f, g in zip(folds, families, strict=True) if g == family}) == 1
    # deterministic and balanced (largest family first into the lightest fold)
    assert np.array_equal(folds, learning.grouped_folds(families, 5))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= max(families.count(f) for f in set(families))
    with pytest.raises(ValueError, match="cannot fill"):
        learning.grouped_folds(["a", "b"], 3)


def test_conformal_intervals_cover_as_stated_on_synthetic_data() -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(7)
    n = 2000
    x = rng.normal(size=(n, 3))
    y = 1.5 * x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=1.0, size=n)  # known noise sigma 1
    groups = [f"g{k}" for k in rng.integers(0, 40, size=n)]
    bound = np.zeros(n, bool)
    folds = learning.grouped_folds(groups, 5)
    predicted = learning.cross_validate(x, y, folds, LinearRegression)
    result = learning.interval_coverage_cv(predicted, y, bound, folds, 0.9)
    assert 0.85 <= result["held_out_fraction_inside"] <= 0.95
    # the half-width estimates the 95th percentile of |N(0, 1)|, 1.645
    assert learning.conformal_halfwidth(predicted - y, 0.9) == pytest.approx(1.645, abs=0.12)
    assert math.isinf(learning.conformal_halfwidth(np.ones(5), 0.9))


def test_interval_counts_an_upper_bound_inside_when_the_interval_reaches_below_it() -> None:
    predicted = np.array([0.0, 0.0, -20.0, 0.0])
    measured = np.array([0.5, -10.0, -10.0, 3.0])
    bound = np.array([False, True, True, False])
    folds = np.array([0, 0, 1, 1])
    # fold 1 is calibrated on fold 0's exact residual (0.5); fold 0 on fold 1's (3.0)
    result = learning.interval_coverage_cv(predicted, measured, bound, folds, 0.5)
    assert result["halfwidth_per_fold_log10"] == [3.0, 0.5]
    # 0.5 in [-3, 3]; bound -10 not reached by -3; bound -10 reached by -20.5; 3 > 0.5
    assert result["held_out_fraction_inside"] == pytest.approx(0.5)


def test_anchored_regressor_keeps_the_anchor_line_and_handles_a_missing_anchor() -> None:
    from sklearn.dummy import DummyRegressor

    anchor = np.linspace(-15.0, -1.0, 30)
    x = np.column_stack([anchor, np.zeros(30)])
    y = 0.3 * anchor - 1.0
    model = learning.AnchoredRegressor(0, DummyRegressor()).fit(x, y)
    assert model.coef_ == pytest.approx([-1.0, 0.3])
    assert model.predict(np.array([[-5.0, 0.0]])) == pytest.approx([-2.5])
    # clipped at (-20, 0): far tails do not extrapolate the line
    assert model.predict(np.array([[-60.0, 0.0]])) == pytest.approx([0.3 * -20 - 1.0])
    assert model.predict(np.array([[np.nan, 0.0]])) == pytest.approx([np.median(y)])


def test_physics_features_of_scored_failed_and_extreme_records() -> None:
    record = {
        "error": None,
        "log10_sigma_pred": -math.inf,
        "barrier_1d_eV": 0.4,
        "barrier_3d_eV": None,  # no 3D percolation: capped
        "dimensionality": 1,
        "mobile_ion_density_per_m3": 1e28,
        "anisotropy_ratio": 100.0,
    }
    features = learning.physics_features(record)
    assert features["log10_sigma_headline_S_per_cm"] == learning.LOG10_SIGMA_FLOOR
    assert features["barrier_3d_eV"] == learning.BARRIER_CAP_EV
    assert features["barrier_1d_eV"] == 0.4
    assert features["log10_mobile_ion_density_per_m3"] == pytest.approx(28.0)
    assert features["log10_anisotropy_ratio"] == pytest.approx(2.0)
    assert math.isnan(features["kramers_factor"])
    failed = learning.physics_features({"error": "x: no Li", "barrier_1d_eV": 0.4})
    assert all(math.isnan(v) for v in failed.values())
    assert set(features) == set(learning.PHYSICS_FEATURES)


def test_composition_and_structure_features() -> None:
    comp = learning.composition_features(Composition("Li2O"))
    assert comp["ion_fraction"] == pytest.approx(2 / 3)
    assert comp["fraction_O"] == pytest.approx(1 / 3)
    assert comp["fraction_other"] == 0.0
    assert comp["n_elements"] == 2
    assert comp["Z_mean"] == pytest.approx((2 * 3 + 8) / 3)
    assert comp["Z_min"] == 3 and comp["Z_max"] == 8
    assert set(comp) == set(learning.COMPOSITION_FEATURES)
    structure = Structure(
        Lattice.cubic(4.0),
        [{"Li": 0.5}, {"Cl": 1.0}, {"Li": 1.0}],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]],
    )
    s = learning.structure_features(structure, "Li", space_group_number=221)
    assert s["ion_sites_partial_fraction"] == pytest.approx(0.5)
    assert s["ion_mean_occupancy"] == pytest.approx(0.75)
    assert s["sites_partial_fraction"] == pytest.approx(1 / 3)
    assert s["volume_per_atom_A3"] == pytest.approx(64.0 / 2.5)
    assert s["space_group_number"] == 221
    assert s["ion_per_volume_per_A3"] == pytest.approx(1.5 / 64.0)
    table = learning.table_lattice_features(
        Composition("Li1.5Cl1"), (4.0, 4.0, 4.0), (90.0, 90.0, 90.0), 221
    )
    for name in ("volume_per_atom_A3", "density_g_per_cm3", "ion_per_volume_per_A3"):
        assert table[name] == pytest.approx(s[name], rel=1e-6)
    assert math.isnan(table["ion_sites_partial_fraction"])


def test_domain_flags_a_point_far_from_the_training_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    domain = learning.NearestNeighbourDomain.fit(x, 95.0)
    assert np.mean(domain.distance(x) > domain.threshold) == 0.0  # a training point is at 0
    far = np.array([[30.0, 0.0, 0.0, 0.0], [np.nan, 0.1, 0.0, 0.0]])
    flags = domain.distance(far) > domain.threshold
    assert flags.tolist() == [True, False]


def test_fit_model_reports_cv_and_predicts_with_interval_and_flag() -> None:
    rng = np.random.default_rng(5)
    names = learning.FEATURE_SETS["both"]
    n = 120
    x = rng.normal(size=(n, len(names)))
    x[:, 0] = rng.uniform(-15, -2, size=n)  # the anchor (physics headline)
    y = 0.5 * x[:, 0] + 0.3 * x[:, 1] + rng.normal(scale=0.5, size=n)
    groups = [f"f{k % 12}" for k in range(n)]
    model, cv = learning.fit_model(x, y, np.zeros(n, bool), groups, names, n_splits=4)
    assert cv["metrics"]["spearman"] > 0.8
    assert model.physics_fields == ("log10_sigma_pred",)
    out = model.predict_matrix(x[:3])
    assert np.allclose(out["hi"] - out["lo"], 2 * model.halfwidth_log10)
    assert out["out_of_domain"].tolist() == [False, False, False]
