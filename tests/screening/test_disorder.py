"""Disorder on shared sites: the random network of free sites (iondrag.screening.disorder).

Closed forms and invariants: the site-percolation threshold of the simple cubic lattice
(0.3116) decides whether any arrangement conducts; nothing blocked gives the open network
back; the result is deterministic under its seed and the same for a supercell of the cell.
"""

from __future__ import annotations

import numpy as np
import pytest

from iondrag.screening.disorder import (
    MIN_NETWORK_SITES,
    arrangement_factor,
    has_shared_cation_sites,
    shared_site_network,
)
from iondrag.screening.structures import Framework


def _a_site_framework(la_occupancy: float, li_occupancy: float, cells: int = 1) -> Framework:
    """A cubic perovskite-like cell (a = 3.9 A): Li and La share the A site at the corner.

    ``cells`` repeats the cell along x (a supercell of the same crystal).
    """
    a = 3.9
    lattice = np.diag([a * cells, a, a])
    corners = np.array([[i / cells, 0.0, 0.0] for i in range(cells)])
    centres = corners + np.array([0.5 / cells, 0.5, 0.5])
    frac = np.concatenate([corners, centres])
    return Framework(
        lattice_matrix_A=lattice,
        frac_coords=frac,
        elements=("La",) * cells + ("Ti",) * cells,
        charges_e=np.array([3.0] * cells + [4.0] * cells),
        occupancies=np.array([la_occupancy] * cells + [1.0] * cells),
        site_occupancies=np.array([la_occupancy] * cells + [1.0] * cells),
        shares_site_with_mobile=np.array([True] * cells + [False] * cells),
        mobile_element="Li",
        mobile_charge_e=1.0,
        mobile_frac_coords=corners,
        mobile_occupancies=np.full(cells, li_occupancy),
        mobile_site_framework_occupancies=np.full(cells, la_occupancy),
        oxidation_method="given",
        oxidation_states={"Li": 1.0, "La": 3.0, "Ti": 4.0},
        volume_A3=a**3 * cells,
        density_kg_per_m3=5000.0,
        mobile_mass_amu=6.94,
        formula="LiLaTiO",
    )


def test_the_a_site_network_is_simple_cubic_with_its_blocking_probability() -> None:
    framework = _a_site_framework(0.56, 0.33)
    assert has_shared_cation_sites(framework)
    network = shared_site_network(framework)
    assert network.n_sites == 1
    # one hop per axis, each once
    assert sorted(map(tuple, np.abs(network.hop_image))) == [(0, 0, 1), (0, 1, 0), (1, 0, 0)]
    assert network.blocking_probability == pytest.approx([0.56])
    # six neighbours at 3.9 A repel a free site with the La-Li screened Coulomb term
    assert np.all(network.shift_phi_eV > 0)


@pytest.mark.parametrize(("free", "conducts"), [(0.2, False), (0.6, True)])
def test_site_percolation_threshold_decides_conduction(free: float, conducts: bool) -> None:
    network = shared_site_network(_a_site_framework(1.0 - free, 0.0))
    factor = arrangement_factor(network, 300.0, n_draws=3, seed=1)
    assert factor.n_network_sites >= MIN_NETWORK_SITES
    assert np.isfinite(factor.log10_factor) == conducts
    if conducts:
        # fewer and slower paths than the open network, but not absurdly so
        assert -3.0 < factor.log10_factor < np.log10(free)


def test_nothing_blocked_is_the_open_network() -> None:
    framework = _a_site_framework(0.0, 1.0)
    assert not has_shared_cation_sites(framework)  # no La on the site: nothing shared
    factor = arrangement_factor(shared_site_network(framework), 300.0, n_draws=2)
    assert factor.log10_factor == pytest.approx(0.0, abs=1e-9)
    assert factor.conducting_fraction == 1.0


def test_deterministic_under_the_seed_and_the_same_for_a_supercell() -> None:
    base = shared_site_network(_a_site_framework(0.4, 0.3))
    first = arrangement_factor(base, 300.0, n_draws=3, seed=7)
    again = arrangement_factor(base, 300.0, n_draws=3, seed=7)
    other = arrangement_factor(base, 300.0, n_draws=3, seed=8)
    assert first == again
    assert other.log10_factor != first.log10_factor
    doubled = arrangement_factor(
        shared_site_network(_a_site_framework(0.4, 0.3, cells=2)), 300.0, n_draws=3, seed=7
    )
    # the same crystal in a doubled cell: the same statistics within the draws' spread
    spread = max(first.log10_spread, doubled.log10_spread, 0.02)
    assert doubled.log10_factor == pytest.approx(first.log10_factor, abs=3 * spread)
