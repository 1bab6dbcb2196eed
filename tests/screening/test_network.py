import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import special_ortho_group

from iondrag.screening.network import (
    PeriodicNetwork,
    critical_path_barrier_eV,
    effective_conductivity,
    network_topology,
    polycrystal_conductivity,
    random_network_conductivity,
    replicate_network,
    simple_cubic_bonds,
)
from iondrag.screening.units import thermal_energy_eV

#: Simple-cubic percolation thresholds (bond, site).
BOND_THRESHOLD_SC = 0.2488
SITE_THRESHOLD_SC = 0.3116


def sigma_of(network: PeriodicNetwork, g: np.ndarray, **kwargs) -> np.ndarray:
    return effective_conductivity(
        network.n_sites,
        network.bond_i,
        network.bond_j,
        network.bond_shift_A,
        g,
        network.cell_matrix_A,
        **kwargs,
    )


def dimensionality_of(network: PeriodicNetwork, keep: np.ndarray) -> int:
    return network_topology(
        network.n_sites,
        network.bond_i[keep],
        network.bond_j[keep],
        network.bond_shift_A[keep],
        network.cell_matrix_A,
    ).max_dimensionality


def as_primitive(network: PeriodicNetwork) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates and integer bond images of a network's cell."""
    inverse = np.linalg.inv(network.cell_matrix_A)
    frac = network.site_cart_coords_A @ inverse
    image = frac[network.bond_i] + network.bond_shift_A @ inverse - frac[network.bond_j]
    return frac, np.rint(image).astype(np.int64)


def random_primitive(seed: int):
    """A triclinic primitive cell with 3 sites and 7 hops (some to periodic images)."""
    rng = np.random.default_rng(seed)
    lattice = np.array([[3.0, 0.0, 0.0], [0.7, 3.4, 0.0], [0.4, -0.5, 4.1]])
    frac = rng.random((3, 3))
    bond_i = np.array([0, 1, 2, 0, 0, 1, 2])
    bond_j = np.array([1, 2, 0, 0, 2, 1, 1])
    image = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, -1, 0]])
    g = rng.uniform(0.2, 3.0, len(bond_i))
    return frac, bond_i, bond_j, image, lattice, g


def test_ring_in_series_is_the_harmonic_mean():
    rng = np.random.default_rng(3)
    n = 9
    spacing = rng.uniform(0.5, 2.0, n)
    g = rng.uniform(0.1, 5.0, n)
    length = spacing.sum()
    shifts = np.zeros((n, 3))
    shifts[:, 0] = spacing
    sigma = effective_conductivity(
        n, np.arange(n), (np.arange(n) + 1) % n, shifts, g, np.diag([length, 1.0, 1.0])
    )
    assert sigma[0, 0] == pytest.approx(length / np.sum(1.0 / g), rel=1e-12)
    sigma[0, 0] = 0.0
    assert np.all(sigma == 0.0)  # no current across the ring, exactly


@pytest.mark.parametrize("L", [1, 2, 3, 7])
def test_uniform_simple_cubic_is_g_over_a(L):
    network = simple_cubic_bonds(L, a_A=2.5)
    sigma = sigma_of(network, np.full(network.n_bonds, 3.0))
    np.testing.assert_allclose(sigma, 3.0 / 2.5 * np.eye(3), rtol=1e-12, atol=1e-14)
    # different conductances along x, y, z: a diagonal tensor with g_k / a
    anisotropic = np.array([2.0, 1.0, 0.5])[network.primitive_bond]
    sigma = sigma_of(network, anisotropic)
    np.testing.assert_allclose(sigma, np.diag([2.0, 1.0, 0.5]) / 2.5, rtol=1e-12, atol=1e-14)


def test_layers_conduct_in_their_plane_only():
    network = simple_cubic_bonds(5, a_A=1.5)
    g = np.array([2.0, 1.0, 0.0])[network.primitive_bond]
    sigma = sigma_of(network, g)
    np.testing.assert_allclose(sigma, np.diag([2.0 / 1.5, 1.0 / 1.5, 0.0]), rtol=1e-12)
    assert sigma[2, 2] == 0.0
    assert dimensionality_of(network, g > 0) == 2
    assert polycrystal_conductivity(sigma, "harmonic") == 0.0
    assert polycrystal_conductivity(sigma, "arithmetic") == pytest.approx(3.0 / 1.5 / 3, rel=1e-12)


def test_finite_clusters_carry_no_current():
    # x chains plus isolated dimers along y: the dimers must not add to sigma_yy
    network = simple_cubic_bonds(6)
    g = np.zeros(network.n_bonds)
    g[network.primitive_bond == 0] = 1.0
    y_bonds = np.flatnonzero(network.primitive_bond == 1)
    g[y_bonds[::4]] = 100.0
    sigma = sigma_of(network, g)
    assert sigma[0, 0] == pytest.approx(1.0, rel=1e-12)  # the y dimers join x chains ...
    assert sigma[1, 1] == pytest.approx(0.0, abs=1e-12)  # ... but not into a y path


def test_bond_percolation_below_and_above_threshold():
    network = simple_cubic_bonds(20)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        below = rng.random(network.n_bonds) < 0.15
        above = rng.random(network.n_bonds) < 0.4
        assert dimensionality_of(network, below) == 0
        assert np.all(sigma_of(network, below.astype(float)) == 0.0)
        assert dimensionality_of(network, above) == 3
        assert np.all(np.linalg.eigvalsh(sigma_of(network, above.astype(float))) > 0.01)


def test_critical_path_barrier_is_the_bond_threshold():
    network = simple_cubic_bonds(24)
    values = []
    for seed in range(3):
        barriers = np.random.default_rng(seed).random(network.n_bonds)  # uniform in [0, 1] eV
        e_c = critical_path_barrier_eV(
            network.n_sites,
            network.bond_i,
            network.bond_j,
            network.bond_shift_A,
            barriers,
            network.cell_matrix_A,
        )
        # exactly at the threshold: the bonds up to E_c wrap around, those below do not
        assert dimensionality_of(network, barriers <= e_c) >= 1
        assert dimensionality_of(network, barriers < e_c) == 0
        values.append(e_c)
    # finite-size spread of the wrapping threshold on 24^3 is about 0.01
    assert np.all(np.abs(np.array(values) - BOND_THRESHOLD_SC) < 0.03)
    assert np.mean(values) == pytest.approx(BOND_THRESHOLD_SC, abs=0.015)


def test_critical_path_of_a_ring_is_its_highest_barrier():
    n = 6
    barriers = np.array([0.3, 0.1, 0.7, 0.2, 0.5, 0.4])
    shifts = np.tile([1.0, 0.0, 0.0], (n, 1))
    args = (n, np.arange(n), (np.arange(n) + 1) % n, shifts)
    assert critical_path_barrier_eV(*args, barriers, np.diag([6.0, 1, 1])) == 0.7
    barriers[2] = np.inf  # a cut ring never percolates
    assert critical_path_barrier_eV(*args, barriers, np.diag([6.0, 1, 1])) == np.inf


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_effective_medium_theory_for_bimodal_conductances(p):
    g1, g2, z = 1.0, 4.0, 6
    network = simple_cubic_bonds(20)

    def residual(gm):
        return p * (gm - g1) / (g1 + (z / 2 - 1) * gm) + (1 - p) * (gm - g2) / (
            g2 + (z / 2 - 1) * gm
        )

    emt = brentq(residual, g1, g2)
    values = []
    for seed in range(3):
        g = np.where(np.random.default_rng(seed).random(network.n_bonds) < p, g1, g2)
        values.append(np.trace(sigma_of(network, g)) / 3)
    assert np.mean(values) == pytest.approx(emt, rel=0.02)
    # and it is neither the series nor the parallel average
    assert abs(np.mean(values) - (p * g1 + (1 - p) * g2)) > 0.05 * emt


def test_site_blocking_threshold_on_simple_cubic():
    network = simple_cubic_bonds(20)
    barrier = np.array([0.3, 0.3, 0.3])
    closed = random_network_conductivity(network, barrier, np.array([0.8]), 300.0, 3, seed=1)
    assert closed.percolating_fraction == 0.0
    assert closed.conducting_fraction == 0.0
    assert np.all(closed.log10_sigma_draws == -np.inf)
    assert closed.log10_sigma_mean == -np.inf
    assert np.isnan(closed.log10_sigma_std)
    assert np.all(closed.mean_tensor == 0.0)
    assert closed.log10_ratio_to_unblocked == -np.inf
    open_ = random_network_conductivity(network, barrier, np.array([0.4]), 300.0, 3, seed=1)
    assert open_.percolating_fraction == 1.0
    assert open_.conducting_fraction == 1.0
    assert np.all(open_.dimensionality_draws == 3)
    assert np.all(np.isfinite(open_.log10_sigma_draws))
    assert open_.log10_sigma_std == pytest.approx(np.std(open_.log10_sigma_draws, ddof=1))
    # 60 % of sites open: between 0 and the unblocked network's conductivity
    assert -2.0 < open_.log10_ratio_to_unblocked < -0.2


def test_bond_percolation_through_blocked_bond_sites():
    # decorate each simple-cubic bond with a middle site: blocking the middle sites with
    # probability 1 - p is bond percolation, through replicate_network's periodic images
    frac = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    bond_i = np.array([0, 1, 0, 2, 0, 3])
    bond_j = np.array([1, 0, 2, 0, 3, 0])
    image = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]])
    network = replicate_network(frac, bond_i, bond_j, image, np.eye(3), (16, 16, 16))
    barrier = np.zeros(6)
    unblocked = random_network_conductivity(network, barrier, np.zeros(4), 300.0, 1)
    np.testing.assert_allclose(unblocked.unblocked_tensor, 0.5 * np.eye(3), rtol=1e-12)
    for p, fraction in ((0.15, 0.0), (0.45, 1.0)):
        blocking = np.array([0.0, 1 - p, 1 - p, 1 - p])
        result = random_network_conductivity(network, barrier, blocking, 300.0, 2, seed=5)
        assert result.percolating_fraction == fraction


def test_arrhenius_reference_and_no_blocking():
    network = simple_cubic_bonds(4, a_A=2.0)
    barrier = np.array([0.2, 0.2, 0.5])
    result = random_network_conductivity(
        network, barrier, np.zeros(1), 400.0, 2, polycrystal_average="arithmetic"
    )
    kt = thermal_energy_eV(400.0)
    expected = np.diag(np.exp(-barrier / kt)) / 2.0
    np.testing.assert_allclose(result.unblocked_tensor, expected, rtol=1e-12)
    assert result.log10_sigma_unblocked == pytest.approx(
        np.log10(np.trace(expected) / 3), rel=1e-12
    )
    assert result.log10_ratio_to_unblocked == pytest.approx(0.0, abs=1e-12)
    assert result.log10_sigma_std == pytest.approx(0.0, abs=1e-12)


def test_relabelling_sites_and_bonds_leaves_sigma_unchanged():
    network = simple_cubic_bonds(6, a_A=1.3)
    rng = np.random.default_rng(11)
    g = rng.uniform(0.1, 2.0, network.n_bonds) * (rng.random(network.n_bonds) < 0.7)
    reference = sigma_of(network, g)
    site = rng.permutation(network.n_sites)  # new label of each site
    bond = rng.permutation(network.n_bonds)
    flip = rng.random(network.n_bonds) < 0.5  # also reverse some bonds (j -> i, -d)
    i, j = site[network.bond_i][bond], site[network.bond_j][bond]
    d = network.bond_shift_A[bond]
    i, j = np.where(flip, j, i), np.where(flip, i, j)
    d = np.where(flip[:, None], -d, d)
    sigma = effective_conductivity(network.n_sites, i, j, d, g[bond], network.cell_matrix_A)
    np.testing.assert_allclose(sigma, reference, rtol=1e-10, atol=1e-14)
    assert np.linalg.eigvalsh(reference).min() > 0


def test_rotating_the_cell_rotates_the_tensor():
    frac, bond_i, bond_j, image, lattice, g = random_primitive(2)
    network = replicate_network(frac, bond_i, bond_j, image, lattice, (3, 3, 3))
    sigma = sigma_of(network, g[network.primitive_bond])
    assert abs(sigma[0, 1]) > 1e-3 * np.trace(sigma)  # a genuinely anisotropic tensor
    rotation = special_ortho_group.rvs(3, random_state=4)
    rotated = effective_conductivity(
        network.n_sites,
        network.bond_i,
        network.bond_j,
        network.bond_shift_A @ rotation.T,
        g[network.primitive_bond],
        network.cell_matrix_A @ rotation.T,
    )
    np.testing.assert_allclose(rotated, rotation @ sigma @ rotation.T, rtol=1e-10, atol=1e-13)


def test_replicated_supercell_has_the_same_conductivity():
    frac, bond_i, bond_j, image, lattice, g = random_primitive(7)
    sigma = {}
    for supercell in ((1, 1, 1), (2, 2, 2), (2, 1, 3)):
        network = replicate_network(frac, bond_i, bond_j, image, lattice, supercell)
        assert network.n_sites == 3 * np.prod(supercell)
        np.testing.assert_allclose(network.cell_matrix_A, np.diag(supercell) @ lattice)
        sigma[supercell] = sigma_of(network, g[network.primitive_bond])
    np.testing.assert_allclose(sigma[(2, 2, 2)], sigma[(1, 1, 1)], rtol=1e-10)
    np.testing.assert_allclose(sigma[(2, 1, 3)], sigma[(1, 1, 1)], rtol=1e-10)
    # a random 3^3 simple-cubic configuration, replicated 2x2x2 as a primitive cell
    small = simple_cubic_bonds(3, a_A=1.7)
    rng = np.random.default_rng(1)
    g_small = rng.uniform(0.2, 2.0, small.n_bonds) * (rng.random(small.n_bonds) < 0.8)
    frac, image = as_primitive(small)
    big = replicate_network(frac, small.bond_i, small.bond_j, image, small.cell_matrix_A, (2, 2, 2))
    np.testing.assert_allclose(
        sigma_of(big, g_small[big.primitive_bond]), sigma_of(small, g_small), rtol=1e-10
    )


def test_draws_are_deterministic_under_a_seed():
    network = simple_cubic_bonds(8)
    barrier = np.random.default_rng(0).uniform(0.2, 0.4, network.n_bonds)
    args = (network, barrier, np.full(network.n_sites, 0.3), 300.0, 3)
    first = random_network_conductivity(*args, seed=12)
    again = random_network_conductivity(*args, seed=12)
    other = random_network_conductivity(*args, seed=13)
    np.testing.assert_array_equal(first.log10_sigma_draws, again.log10_sigma_draws)
    np.testing.assert_array_equal(first.mean_tensor, again.mean_tensor)
    assert not np.array_equal(first.log10_sigma_draws, other.log10_sigma_draws)
    assert first.log10_sigma_unblocked == other.log10_sigma_unblocked


def test_direct_and_conjugate_gradient_solvers_agree():
    network = simple_cubic_bonds(8)
    rng = np.random.default_rng(4)
    g = np.exp(-rng.uniform(0.0, 0.3, network.n_bonds) / thermal_energy_eV(300.0))
    g *= rng.random(network.n_bonds) < 0.6
    direct = sigma_of(network, g, solver="direct")
    np.testing.assert_allclose(sigma_of(network, g, solver="cg"), direct, rtol=1e-9)
    assert np.trace(direct) > 0


def test_wide_barrier_spread_is_solved_accurately():
    # conductances over 17 decades (sparse LU): close to the critical-path estimate and
    # insensitive to the order of the bonds
    network = simple_cubic_bonds(10)
    barrier = np.random.default_rng(2).random(network.n_bonds)
    g = np.exp(-barrier / thermal_energy_eV(300.0))
    sigma = sigma_of(network, g)
    e_c = critical_path_barrier_eV(
        network.n_sites,
        network.bond_i,
        network.bond_j,
        network.bond_shift_A,
        barrier,
        network.cell_matrix_A,
        dimension=3,
    )
    # the AHL estimate: sigma is within a few decades of exp(-E_c / k_B T)
    ahl = -e_c / thermal_energy_eV(300.0) / np.log(10.0)
    assert abs(np.log10(np.trace(sigma) / 3) - ahl) < 3.0
    order = np.random.default_rng(3).permutation(network.n_bonds)
    shuffled = effective_conductivity(
        network.n_sites,
        network.bond_i[order],
        network.bond_j[order],
        network.bond_shift_A[order],
        g[order],
        network.cell_matrix_A,
    )
    np.testing.assert_allclose(shuffled, sigma, rtol=1e-8)


def test_invalid_input_is_rejected():
    network = simple_cubic_bonds(3)
    g = np.ones(network.n_bonds)
    with pytest.raises(ValueError, match="non-negative"):
        sigma_of(network, -g)
    bad = network.bond_shift_A.copy()
    bad[0, 0] += 0.3  # a loop that does not close on a lattice vector
    with pytest.raises(ValueError, match="not consistent"):
        effective_conductivity(
            network.n_sites, network.bond_i, network.bond_j, bad, g, network.cell_matrix_A
        )
    with pytest.raises(ValueError, match="blocking"):
        random_network_conductivity(network, np.zeros(3), np.array([1.5]), 300.0)


def test_extreme_spreads_are_exact_or_agree_between_solvers():
    kt = thermal_energy_eV(300.0)
    network = simple_cubic_bonds(6, a_A=2.0)
    # 37 decades between directions: still the exact diagonal g_k / a
    g = np.exp(-np.array([0.3, 0.3, 2.5])[network.primitive_bond] / kt)
    sigma = sigma_of(network, g)
    np.testing.assert_allclose(np.diag(sigma), np.exp(-np.array([0.3, 0.3, 2.5]) / kt) / 2.0)
    # barriers uniform in [0, 1.5] eV (25 decades): CG preconditioned by the strong bonds
    # agrees with sparse LU; in [0, 2] eV (33 decades, the weakest bonds pruned) the auto
    # choice does
    network = simple_cubic_bonds(10)
    for spread, solver in ((1.5, "cg"), (2.0, "auto")):
        g = np.exp(-np.random.default_rng(5).random(network.n_bonds) * spread / kt)
        reference = sigma_of(network, g, solver="direct")
        assert np.linalg.eigvalsh(reference).min() > 0
        np.testing.assert_allclose(
            sigma_of(network, g, solver=solver),
            reference,
            rtol=1e-8,
            atol=1e-8 * np.trace(reference),
        )
