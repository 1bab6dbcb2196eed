import dataclasses

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from iondrag.screening.errors import GridTooLargeError, MissingParametersError
from iondrag.screening.forcefield import build_pair_field, morse_parameters
from iondrag.screening.memory import candidate_memory
from iondrag.screening.potential import (
    PeriodicGrid,
    evaluate_grid,
    evaluate_points,
    grid_shape_for_spacing,
    make_grid,
    radial_terms,
    relaxed_pair_energy,
)
from iondrag.screening.structures import prepare_framework
from tests.screening.conftest import antifluorite, rocksalt


def _li3ps4_like() -> Structure:
    """A small, low-symmetry Li-P-S cell with a Coulomb and a Morse type."""
    lattice = Lattice.from_parameters(6.1, 7.3, 5.9, 88.0, 95.0, 101.0)
    return Structure(
        lattice,
        ["Li", "Li", "Li", {"P": 0.9, "Li": 0.1}, "S", "S", "S", "S"],
        [
            [0.1, 0.2, 0.3],
            [0.6, 0.15, 0.75],
            [0.35, 0.7, 0.1],
            [0.8, 0.55, 0.45],
            [0.95, 0.4, 0.3],
            [0.62, 0.48, 0.55],
            [0.85, 0.78, 0.5],
            [0.82, 0.52, 0.12],
        ],
    )


@pytest.fixture(scope="module")
def field():
    framework = prepare_framework(_li3ps4_like())
    built = build_pair_field(framework, site_exclusion_radius_A=2.2)
    assert built.excluded is not None and built.excluded.sum() == 1  # the mixed P/Li site
    return built


def test_site_exclusion_switches_off_near_partial_cation(field):
    p_site = field.frac_coords[np.flatnonzero(field.excluded)[0]] @ field.lattice_matrix_A
    plain = dataclasses.replace(field, excluded=None)
    near = p_site + np.array([[0.3, 0.0, 0.0]])
    far = p_site + np.array([[0.0, 2.7, 0.0]])
    # on the site the partial P is absent in the excluded field, present in the plain one
    assert evaluate_points(field, near).energy_eV[0] < evaluate_points(plain, near).energy_eV[0] - 1
    np.testing.assert_allclose(
        evaluate_points(field, far).energy_eV, evaluate_points(plain, far).energy_eV, atol=1e-12
    )


def test_parameters_from_softbv_table():
    d0, r_min, alpha = morse_parameters("Li", 1, "O", -2)
    assert (d0, r_min, alpha) == pytest.approx((0.98816, 1.940013, 1.937984))
    with pytest.raises(MissingParametersError, match="Li\\+1-P-3"):
        morse_parameters("Li", 1, "P", -3)


def test_missing_pair_names_candidate():
    # Li3P: P3- has no softBV parameters with Li+
    li3p = Structure.from_spacegroup(
        "P6_3/mmc",
        Lattice.hexagonal(4.27, 7.59),
        ["Li", "Li", "P"],
        [[0, 0, 0.25], [1 / 3, 2 / 3, 0.583], [1 / 3, 2 / 3, 0.25]],
    )
    framework = prepare_framework(li3p)
    with pytest.raises(MissingParametersError, match=r"li3p-test.*Li\+1-P-3"):
        build_pair_field(framework, candidate_id="li3p-test")


def test_gradient_and_hessian_match_finite_differences(field):
    rng = np.random.default_rng(1)
    points = rng.random((12, 3)) @ field.lattice_matrix_A
    # and points in the exclusion shell of the partial P site
    p_site = field.frac_coords[np.flatnonzero(field.excluded)[0]] @ field.lattice_matrix_A
    shell = np.array([[1.9, 0.3, 0.1], [-1.5, 0.9, 0.7], [0.0, 0.0, 2.3]])
    points = np.vstack([points, p_site + shell])
    values = evaluate_points(field, points, derivatives=2)
    h = 1e-5
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = h
        plus = evaluate_points(field, points + step, derivatives=1)
        minus = evaluate_points(field, points - step, derivatives=1)
        fd_gradient = (plus.energy_eV - minus.energy_eV) / (2 * h)
        fd_hessian = (plus.gradient_eV_per_A - minus.gradient_eV_per_A) / (2 * h)
        scale_g = np.abs(values.gradient_eV_per_A).max()
        scale_h = np.abs(values.hessian_eV_per_A2).max()
        np.testing.assert_allclose(
            values.gradient_eV_per_A[:, axis], fd_gradient, atol=1e-6 * scale_g
        )
        np.testing.assert_allclose(
            values.hessian_eV_per_A2[:, :, axis], fd_hessian, atol=1e-5 * scale_h
        )
    np.testing.assert_allclose(
        values.hessian_eV_per_A2, np.swapaxes(values.hessian_eV_per_A2, 1, 2)
    )


def test_switching_keeps_terms_smooth_at_the_cutoff(field):
    r = np.array([field.switch_on_A - 1e-9, field.cutoff_A - 1e-9, field.cutoff_A + 1e-3])
    for index in range(field.n_scatterers):
        phi, dphi, d2phi = radial_terms(r, field, index, derivatives=2)
        assert abs(phi[1]) < 1e-12 and abs(dphi[1]) < 1e-9 and abs(d2phi[1]) < 1e-6
        assert phi[2] == 0.0 and dphi[2] == 0.0 and d2phi[2] == 0.0


def test_grid_and_point_evaluations_agree(field):
    grid = PeriodicGrid(field.lattice_matrix_A, (13, 15, 12))
    full = evaluate_grid(field, grid, derivatives=2)
    subset = np.array([0, 7, 100, 1234, grid.n_points - 1])
    points = evaluate_points(field, grid.cart_coords_A(subset), derivatives=2)
    sub = evaluate_grid(field, grid, subset, derivatives=2)
    np.testing.assert_allclose(full.energy_eV[subset], points.energy_eV, atol=1e-10)
    np.testing.assert_allclose(sub.energy_eV, points.energy_eV, atol=1e-10)
    np.testing.assert_allclose(sub.hessian_eV_per_A2, points.hessian_eV_per_A2, atol=1e-9)
    np.testing.assert_allclose(full.gradient_eV_per_A[subset], points.gradient_eV_per_A, atol=1e-9)
    only = evaluate_grid(field, grid, subset, derivatives=2, hessian_only=True)
    np.testing.assert_allclose(only.hessian_eV_per_A2, points.hessian_eV_per_A2, atol=1e-9)


def test_energy_is_linear_in_occupancy():
    base = rocksalt("Li", "Cl", 5.13)
    framework = prepare_framework(base)
    field = build_pair_field(framework)
    points = np.array([[1.0, 1.2, 0.3], [2.5, 2.5, 2.5]])
    full = evaluate_points(field, points).energy_eV
    half = dataclasses.replace(field, weights=field.weights * 0.5)
    np.testing.assert_allclose(evaluate_points(half, points).energy_eV, 0.5 * full, rtol=1e-12)


def test_potential_has_the_crystal_symmetry():
    # antifluorite Li2O: U is invariant under the cubic point operations about the origin
    framework = prepare_framework(antifluorite())
    field = build_pair_field(framework)
    rng = np.random.default_rng(3)
    points = rng.random((8, 3)) * 4.61
    base = evaluate_points(field, points).energy_eV
    for permutation in ([1, 2, 0], [2, 0, 1]):
        np.testing.assert_allclose(
            evaluate_points(field, points[:, permutation]).energy_eV, base, atol=1e-9
        )
    np.testing.assert_allclose(evaluate_points(field, -points).energy_eV, base, atol=1e-9)
    # and periodic
    np.testing.assert_allclose(
        evaluate_points(field, points + np.array([4.61, 0, -9.22])).energy_eV, base, atol=1e-9
    )


def test_grid_memory_budget():
    lattice = np.eye(3) * 20.0
    grid, notes = make_grid(lattice, 0.2, memory_budget_MB=500.0)
    assert notes and "coarsened" in notes[0]
    assert candidate_memory(lattice, grid.shape, cutoff_A=6.0, n_sites=0).total_MB <= 500.0
    with pytest.raises(GridTooLargeError, match="big-cell"):
        make_grid(
            lattice, 0.2, memory_budget_MB=500.0, on_too_large="refuse", candidate_id="big-cell"
        )
    assert grid_shape_for_spacing(np.diag([4.0, 6.0, 10.1]), 0.2) == (20, 30, 51)


def test_thermal_smearing_limits_and_derivatives(field):
    rms = np.full(field.n_scatterers, 0.08)
    smeared = dataclasses.replace(field, thermal_rms_A=rms)
    tiny = dataclasses.replace(field, thermal_rms_A=np.full(field.n_scatterers, 0.01))
    r = np.linspace(1.6, 4.5, 30)
    for index in range(field.n_scatterers):
        # a small displacement gives back the static term (to second order in it)
        static = radial_terms(r, field, index)[0]
        np.testing.assert_allclose(radial_terms(r, tiny, index)[0], static, rtol=2e-3, atol=1e-3)
        phi, _dphi, d2phi = radial_terms(r, smeared, index, 2)
        # the Gaussian average of a convex term lies above it (Jensen); Morse walls are convex
        convex = d2phi > 0
        assert np.all(phi[convex & (r < 3.0)] >= static[convex & (r < 3.0)] - 1e-9)
    # analytic (spline) derivatives agree with finite differences of the smeared U
    rng = np.random.default_rng(4)
    _assert_spline_derivatives_match_fd(smeared, rng.random((6, 3)) @ field.lattice_matrix_A)


def _assert_spline_derivatives_match_fd(field, points):
    """Gradient and Hessian of U against central differences (h = 1e-4 A)."""
    values = evaluate_points(field, points, derivatives=2)
    h = 1e-4
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = h
        plus = evaluate_points(field, points + step, derivatives=1)
        minus = evaluate_points(field, points - step, derivatives=1)
        np.testing.assert_allclose(
            values.gradient_eV_per_A[:, axis],
            (plus.energy_eV - minus.energy_eV) / (2 * h),
            atol=1e-5 * np.abs(values.gradient_eV_per_A).max(),
        )
        np.testing.assert_allclose(
            values.hessian_eV_per_A2[:, :, axis],
            (plus.gradient_eV_per_A - minus.gradient_eV_per_A) / (2 * h),
            atol=1e-4 * np.abs(values.hessian_eV_per_A2).max(),
        )


def test_relaxed_pair_energy_closed_forms():
    r = np.linspace(1.0, 4.0, 31)
    k = 4.0
    # a constant force F: the partner moves by F/k and gains F^2 / 2k
    force = 1.7
    np.testing.assert_allclose(
        relaxed_pair_energy(lambda x: -force * x, r, k),
        -force * r - force**2 / (2 * k),
        atol=1e-9,
    )
    # a harmonic bond c in series with the site spring k: stiffness ck/(c+k)
    c, r0 = 6.0, 2.5
    expected = 0.5 * c * k / (c + k) * (r - r0) ** 2
    np.testing.assert_allclose(
        relaxed_pair_energy(lambda x: 0.5 * c * (x - r0) ** 2, r, k), expected, atol=1e-7
    )
    # a stiff site gives back the frozen term; relaxation never raises the energy
    morse = lambda x: 0.5 * (np.exp(2 * (2.0 - x)) - 2 * np.exp(2.0 - x))  # noqa: E731
    np.testing.assert_allclose(relaxed_pair_energy(morse, r, 1e5), morse(r), atol=2e-4)
    assert np.all(relaxed_pair_energy(morse, r, 3.0) <= morse(r) + 1e-12)
    with pytest.raises(ValueError, match="positive"):
        relaxed_pair_energy(morse, r, 0.0)


def test_framework_relaxation_lowers_walls_and_keeps_derivatives(field):
    stiffness = np.full(field.n_scatterers, 5.0)
    relaxed = dataclasses.replace(field, relaxation_stiffness_eV_per_A2=stiffness)
    rng = np.random.default_rng(5)
    points = rng.random((8, 3)) @ field.lattice_matrix_A
    frozen = evaluate_points(field, points)
    values = evaluate_points(relaxed, points)
    assert np.all(values.energy_eV <= frozen.energy_eV + 1e-9)
    # the steepest (highest) points relax most
    drop = frozen.energy_eV - values.energy_eV
    assert drop[np.argmax(frozen.energy_eV)] > np.median(drop)
    # analytic (spline) derivatives agree with finite differences of the relaxed U
    _assert_spline_derivatives_match_fd(relaxed, points)


def test_evaluate_grid_gives_the_same_numbers_in_any_pair_block(field):
    grid = PeriodicGrid(field.lattice_matrix_A, (14, 15, 13))
    rng = np.random.default_rng(0)
    subsets = (None, rng.permutation(grid.n_points)[:300], rng.permutation(grid.n_points)[:2000])
    for points in subsets:
        whole = evaluate_grid(field, grid, points, derivatives=2, pair_block=1 << 30)
        for block in (5_000, 777):
            part = evaluate_grid(field, grid, points, derivatives=2, pair_block=block)
            assert np.array_equal(part.energy_eV, whole.energy_eV)
            assert np.array_equal(part.gradient_eV_per_A, whole.gradient_eV_per_A)
            assert np.array_equal(part.hessian_eV_per_A2, whole.hessian_eV_per_A2)
