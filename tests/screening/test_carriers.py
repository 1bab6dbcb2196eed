"""Carriers from the occupancy of the mobile-ion sublattice (iondrag.screening.carriers).

Closed forms: the driven exclusion process on a ring and on a cubic lattice (whose
stationary state is uniform over the configurations, so the current per ion is exactly the
chance that the neighbouring site is empty); a Frenkel pair computed by hand; the law of
mass action. Invariants: split positions, relabelling, supercells.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erfc

from iondrag.screening.carriers import (
    SITE_MERGE_RADIUS_A,
    carrier_fraction,
    carrier_mechanism,
    frenkel_pair,
    grid_local_minima,
    intrinsic_defect_fraction,
    like_ion_energy_eV,
    sublattice_occupancy,
)
from iondrag.screening.units import thermal_energy_eV


def _exclusion_process_current(
    neighbours: np.ndarray, n_particles: int, bias: float, sweeps: int, seed: int
) -> float:
    """Net hops along +x per particle per attempt of a driven exclusion process.

    ``neighbours[s]`` = (site at +x, site at -x, other neighbours...); a particle picks a
    direction (+x with probability (1 + bias)/z, -x with (1 - bias)/z, the others 1/z each)
    and hops if the target is empty.
    """
    rng = np.random.default_rng(seed)
    n_sites, z = neighbours.shape
    occupied = np.zeros(n_sites, dtype=bool)
    positions = rng.choice(n_sites, n_particles, replace=False)
    occupied[positions] = True
    weights = np.full(z, 1.0 / z)
    weights[0], weights[1] = (1.0 + bias) / z, (1.0 - bias) / z
    attempts = sweeps * n_particles
    movers = rng.integers(0, n_particles, attempts)
    directions = rng.choice(z, attempts, p=weights)
    net = 0
    for mover, direction in zip(movers, directions, strict=True):
        here = positions[mover]
        target = neighbours[here, direction]
        if not occupied[target]:
            occupied[here], occupied[target] = False, True
            positions[mover] = target
            net += 1 if direction == 0 else -1 if direction == 1 else 0
    return net / attempts


def _ring(n: int) -> np.ndarray:
    sites = np.arange(n)
    return np.stack([(sites + 1) % n, (sites - 1) % n], axis=1)


def _cubic(length: int) -> np.ndarray:
    index = np.arange(length**3).reshape(length, length, length)
    steps = [(1, 0), (-1, 0), (1, 1), (-1, 1), (1, 2), (-1, 2)]
    return np.stack([np.roll(index, -s, axis=a).ravel() for s, a in steps], axis=1)


def _chain_vacancy_fraction(n_sites: int, occupancy: float) -> float:
    """Vacancy fraction of an n-site chain (3 A apart) whose sites have this occupancy."""
    lattice = np.diag([3.0 * n_sites, 10.0, 10.0])
    frac = np.column_stack([np.arange(n_sites) / n_sites, np.zeros(n_sites), np.zeros(n_sites)])
    sub = sublattice_occupancy(frac, np.full(n_sites, occupancy), np.zeros(n_sites), lattice)
    return sub.vacancy_fraction


@pytest.mark.parametrize("occupancy", [0.25, 0.5, 0.8])
def test_ring_exclusion_current_is_the_vacancy_fraction(occupancy: float) -> None:
    n_sites = 100
    n_particles = round(occupancy * n_sites)
    bias = 0.5
    current = _exclusion_process_current(_ring(n_sites), n_particles, bias, 400, seed=1)
    # a free particle (no exclusion) drifts by (1 + bias)/2 - (1 - bias)/2 = bias per attempt
    free = bias
    # the stationary state is uniform: the site ahead is empty with (N - M) / (N - 1)
    exact = free * (n_sites - n_particles) / (n_sites - 1)
    assert current == pytest.approx(exact, rel=0.06)
    model = free * carrier_fraction(_chain_vacancy_fraction(n_sites, occupancy), 0.0, 0.0)
    assert current == pytest.approx(model, rel=0.06)


def test_cubic_exclusion_current_is_the_vacancy_fraction() -> None:
    length, occupancy, bias = 8, 0.6, 0.6
    n_sites = length**3
    n_particles = round(occupancy * n_sites)
    current = _exclusion_process_current(_cubic(length), n_particles, bias, 60, seed=2)
    free = 2 * bias / 6  # (1 + bias)/6 - (1 - bias)/6 per attempt without exclusion
    lattice = np.eye(3) * 3.0 * length
    frac = np.stack(np.meshgrid(*[np.arange(length) / length] * 3, indexing="ij"), -1)
    sub = sublattice_occupancy(
        frac.reshape(-1, 3), np.full(n_sites, occupancy), np.zeros(n_sites), lattice
    )
    assert sub.n_sites == n_sites
    assert current == pytest.approx(free * sub.vacancy_fraction, rel=0.08)
    # and not the single-ion picture (every ion free), which is 2.5x larger here
    assert current < 0.6 * free


def test_split_positions_are_one_site_and_shared_sites_count_the_framework_ion() -> None:
    lattice = np.eye(3) * 6.0
    # two alternatives of one ion 0.6 A apart (0.5 each) and a site shared with La (Li
    # 0.3, La 0.56): the first is full, the second empty 14 % of the time
    frac = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.5, 0.5, 0.5]])
    sub = sublattice_occupancy(frac, np.array([0.5, 0.5, 0.3]), np.array([0, 0, 0.56]), lattice)
    assert sub.n_sites == 2
    assert sub.cluster_labels[0] == sub.cluster_labels[1] != sub.cluster_labels[2]
    assert sub.vacancy_fraction == pytest.approx((0.0 + 0.14) / 2)
    # relabelling the positions changes nothing
    order = np.array([2, 0, 1])
    again = sublattice_occupancy(
        frac[order], np.array([0.5, 0.5, 0.3])[order], np.array([0, 0, 0.56])[order], lattice
    )
    assert again.vacancy_fraction == pytest.approx(sub.vacancy_fraction)


def test_supercell_keeps_the_vacancy_fraction() -> None:
    lattice = np.diag([4.0, 5.0, 6.0])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.25, 0.5, 0.5]])
    occ = np.array([1.0, 0.4, 0.7])
    base = sublattice_occupancy(frac, occ, np.zeros(3), lattice).vacancy_fraction
    shifts = np.array([[0, 0, 0], [1, 0, 0]])
    big = np.concatenate([(frac + s) / [2, 1, 1] for s in shifts])
    sup = sublattice_occupancy(
        big, np.tile(occ, 2), np.zeros(6), lattice * [[2], [1], [1]]
    ).vacancy_fraction
    assert sup == pytest.approx(base)
    assert base == pytest.approx((0.0 + 0.6 + 0.3) / 3)


def test_intrinsic_fraction_follows_the_law_of_mass_action() -> None:
    kt = thermal_energy_eV(300.0)
    assert intrinsic_defect_fraction(1.0, 300.0) == pytest.approx(np.exp(-1.0 / (2 * kt)))
    assert intrinsic_defect_fraction(0.0, 300.0) == 1.0
    assert intrinsic_defect_fraction(-0.3, 300.0) == 1.0  # E_F < 0: another arrangement
    assert intrinsic_defect_fraction(float("inf"), 300.0) == 0.0
    # E_F / 2 in the activation energy: the Arrhenius slope of ln x is -E_F / 2k
    t1, t2 = 300.0, 600.0
    slope = np.log(intrinsic_defect_fraction(1.2, t2) / intrinsic_defect_fraction(1.2, t1)) / (
        1 / thermal_energy_eV(t1) - 1 / thermal_energy_eV(t2)
    )
    assert slope == pytest.approx(0.6)


def test_carrier_fraction_adds_the_three_sources_and_names_the_largest() -> None:
    assert carrier_fraction(0.2, 1e-6, 1e-4) == pytest.approx(0.200101)
    assert carrier_fraction(0.9, 0.5, 0.0) == 1.0
    assert carrier_mechanism(0.0, 1e-9, 1e-4) == "extrinsic_defects"
    assert carrier_mechanism(0.0, 1e-3, 1e-4) == "intrinsic_frenkel"
    assert carrier_mechanism(0.3, 1e-3, 1e-4) == "sublattice_vacancies"


def _phi(r: float, prefactor: float, rho: float) -> float:
    return prefactor * float(erfc(r / rho)) / r


def test_frenkel_pair_matches_the_hand_computed_two_site_case() -> None:
    # a 20 A cube: no image within the 8 A like-ion cut-off
    lattice = np.eye(3) * 20.0
    sites = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])  # A and B, 3 A apart
    minimum = np.array([[0.0, 0.125, 0.0]])  # 2.5 A from A, sqrt(9 + 6.25) from B
    prefactor, rho = 7.2, 1.9
    pair = frenkel_pair(
        sites,
        np.ones(2),
        np.array([0.0, 0.1]),
        minimum,
        np.array([0.5]),
        lattice,
        prefactor,
        rho,
    )
    from_a = 0.5 + _phi(np.sqrt(9 + 6.25), prefactor, rho) - _phi(3.0, prefactor, rho)
    from_b = 0.5 - 0.1 + _phi(2.5, prefactor, rho) - _phi(3.0, prefactor, rho)
    assert pair.formation_energy_eV == pytest.approx(min(from_a, from_b), abs=1e-12)
    assert pair.vacancy_index == int(np.argmin([from_a, from_b]))
    np.testing.assert_allclose(pair.interstitial_frac, minimum[0])


def test_frenkel_pair_ignores_minima_on_the_ions_own_sites() -> None:
    lattice = np.eye(3) * 20.0
    sites = np.array([[0.0, 0.0, 0.0]])
    minima = np.array([[0.02, 0.0, 0.0]])  # 0.4 A away: the ion's own basin
    pair = frenkel_pair(sites, np.ones(1), np.zeros(1), minima, np.array([-1.0]), lattice, 7.2, 1.9)
    assert not np.isfinite(pair.formation_energy_eV)
    assert pair.vacancy_index == -1
    assert SITE_MERGE_RADIUS_A > 0.4


def test_like_ion_energy_is_periodic_and_counts_images() -> None:
    # a 5 A cube with one ion: a point at the body centre sees 8 images at 4.33 A
    lattice = np.eye(3) * 5.0

    def one_ion_at_origin(point: list[float]) -> float:
        return float(
            like_ion_energy_eV(
                np.array([point]),
                np.zeros((1, 3)),
                np.ones(1),
                lattice,
                7.2,
                1.9,
                exclude_within_A=1.0,
            )[0]
        )

    value = one_ion_at_origin([0.5, 0.5, 0.5])
    # reference: every image within the 8 A cut-off, summed by hand
    images = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = np.linalg.norm((np.array([0.5, 0.5, 0.5]) - images) * 5.0, axis=1)
    expected = sum(_phi(x, 7.2, 1.9) for x in r if 1.0 <= x < 8.0)
    assert value == pytest.approx(expected, rel=1e-12)
    # and the first shell (8 images at 4.33 A) is almost all of it
    assert value == pytest.approx(8 * _phi(np.sqrt(3) * 2.5, 7.2, 1.9), rel=1e-3)
    shifted = one_ion_at_origin([1.5, -0.5, 2.5])
    assert shifted == pytest.approx(value)


def test_grid_local_minima_of_a_cosine_lattice() -> None:
    n = 12
    x = np.arange(n) / n
    grid = (
        np.cos(2 * np.pi * x)[:, None, None]
        + np.cos(2 * np.pi * x)[None, :, None]
        + np.cos(2 * np.pi * x)[None, None, :]
    )
    minima = grid_local_minima(grid)
    assert len(minima) == 1
    assert np.unravel_index(minima[0], grid.shape) == (n // 2, n // 2, n // 2)
    grid[0, 0, 0] = np.inf  # unevaluated points are never minima
    assert 0 not in grid_local_minima(grid)


def test_frenkel_pair_is_the_same_in_a_supercell() -> None:
    # a small cell (5 A): the moved ion's periodic images are other ions and stay
    lattice = np.eye(3) * 5.0
    sites = np.array([[0.0, 0.0, 0.0]])
    minimum = np.array([[0.5, 0.5, 0.5]])
    base = frenkel_pair(sites, np.ones(1), np.zeros(1), minimum, np.array([0.3]), lattice, 7.2, 1.9)
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    big_sites = (sites[None] + shifts[:, None]).reshape(-1, 3) / 2
    big_minima = (minimum[None] + shifts[:, None]).reshape(-1, 3) / 2
    big = frenkel_pair(
        big_sites, np.ones(8), np.zeros(8), big_minima, np.full(8, 0.3), 2 * lattice, 7.2, 1.9
    )
    assert big.formation_energy_eV == pytest.approx(base.formation_energy_eV, abs=1e-12)
    # the eight images at 4.33 A of the body centre repel it; the one that moved does not
    phi = _phi(np.sqrt(3) * 2.5, 7.2, 1.9)
    assert base.formation_energy_eV == pytest.approx(0.3 + 7 * phi - 6 * _phi(5.0, 7.2, 1.9), 1e-3)
