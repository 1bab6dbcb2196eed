"""Carriers: who can move, from the occupancy of the mobile-ion sublattice.

The single-ion transport of :mod:`iondrag.screening.mobility` gives the mobility of one ion that
finds the way open. In a crystal the mobile ions exclude each other from their sites, and a
current needs an occupied site next to an empty one (docs/theory.md section 7):

* **Lattice gas with site exclusion.** Ions hopping between equivalent sites of occupancy c,
  with no interaction but exclusion, carry a current proportional to c (1 - c) per site,
  i.e. (1 - c) per ion (exact for the exclusion process on a ring or a cubic lattice,
  whose stationary state is a product measure). The fraction of ions that are carriers is
  the vacancy fraction of their sublattice (:func:`sublattice_occupancy`). Split positions
  of one ion (alternative sites closer than :data:`SITE_MERGE_RADIUS_A`) are one site, and
  a site the ion shares with a framework ion is empty only when neither holds it.
* **Stoichiometric sublattice** (every site full): only thermally created defects carry.
  Intrinsic Frenkel pairs: one ion moved from its site to the lowest empty minimum of the
  landscape, the other mobile ions present through their screened Coulomb repulsion
  (:func:`frenkel_pair`), formation energy E_F; the vacancy fraction is exp(-E_F / 2 k_B T)
  (Lidiard 1957), so E_F / 2 enters the activation energy.
* **Extrinsic defects**: a fixed vacancy fraction x from aliovalent impurities, one global
  parameter (``ScreeningParameters.extrinsic_defect_fraction``).

The carrier fraction is the sum of the three, capped at one (:func:`carrier_fraction`).
Energies in eV, lengths in A, temperatures in K; everything here is dimensionless or says
its unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import erfc

from iondrag.screening.structures import Framework
from iondrag.screening.units import thermal_energy_eV

#: Two positions of the mobile ion closer than this (A) are alternatives for one ion (split
#: sites of a refinement), never both occupied: two Li+ ions are not found closer than about
#: 1.9 A in any ordered Li compound (the shortest Li-Li distances, e.g. in Li3N, are 2.1 A).
SITE_MERGE_RADIUS_A: float = 1.5

#: Cut-off of the screened like-ion Coulomb sum, A (erfc(r/rho) < 1e-5 beyond it for Li+).
LIKE_ION_CUTOFF_A: float = 8.0


def _images(lattice_matrix_A: np.ndarray, cutoff_A: float) -> np.ndarray:
    """Integer cell translations that can bring a point within ``cutoff_A`` of the cell."""
    reach = cutoff_A * np.linalg.norm(np.linalg.inv(lattice_matrix_A).T, axis=1)
    extent = np.ceil(reach).astype(int) + 1
    grids = np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij")
    return np.stack(grids, axis=-1).reshape(-1, 3)


#: Most (point, position, image) triples :func:`periodic_distances_A` and
#: :func:`like_ion_energy_eV` hold at once: about 100 bytes each, so ~50 MB of workspace
#: whatever the number of sites (the results are the same as in one block).
DISTANCE_BLOCK_TRIPLES: int = 1 << 19

#: The 27 neighbouring cell translations, (27, 3).
_NEIGHBOUR_SHIFTS: np.ndarray = np.stack(
    np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1
).reshape(-1, 3)


def _blocks(n_rows: int, n_columns: int, per_pair: int) -> list[tuple[slice, slice]]:
    """Row and column slices whose blocks hold at most :data:`DISTANCE_BLOCK_TRIPLES`.

    ``per_pair`` triples per (row, column) pair; a block has at least one row and column.
    """
    per_row = max(1, n_columns * per_pair)
    rows = max(1, DISTANCE_BLOCK_TRIPLES // per_row)
    columns = (
        n_columns
        if per_row <= DISTANCE_BLOCK_TRIPLES
        else max(1, DISTANCE_BLOCK_TRIPLES // per_pair)
    )
    return [
        (slice(r, r + rows), slice(c, c + columns))
        for r in range(0, n_rows, rows)
        for c in range(0, max(n_columns, 1), columns)
    ]


def _periodic_distances_block(
    a: np.ndarray, b: np.ndarray, lattice_matrix_A: np.ndarray
) -> np.ndarray:
    """Shortest periodic distances of one block of pairs, A, shape (len(a), len(b))."""
    delta = a[:, None, :] - b[None, :, :]
    delta -= np.round(delta)
    # the nearest image in fractional coordinates is not always the nearest in Cartesian
    # ones for oblique cells: check the 27 neighbouring translations
    cart = (delta[:, :, None, :] + _NEIGHBOUR_SHIFTS[None, None, :, :]) @ lattice_matrix_A
    return np.asarray(np.min(np.linalg.norm(cart, axis=-1), axis=-1))


def periodic_distances_A(
    a_frac: np.ndarray, b_frac: np.ndarray, lattice_matrix_A: np.ndarray
) -> np.ndarray:
    """Shortest periodic distances between two sets of fractional positions, A, shape (A, B).

    Computed in blocks of at most :data:`DISTANCE_BLOCK_TRIPLES` (pair, image) triples: the
    workspace is bounded; the result (8 bytes per pair) is the caller's.
    """
    a = np.atleast_2d(np.asarray(a_frac, float))
    b = np.atleast_2d(np.asarray(b_frac, float))
    out = np.empty((len(a), len(b)))
    for rows, columns in _blocks(len(a), len(b), len(_NEIGHBOUR_SHIFTS)):
        out[rows, columns] = _periodic_distances_block(a[rows], b[columns], lattice_matrix_A)
    return out


def far_from_all(
    a_frac: np.ndarray, b_frac: np.ndarray, lattice_matrix_A: np.ndarray, radius_A: float
) -> np.ndarray:
    """Which positions of ``a_frac`` are at least ``radius_A`` (A) from every one of ``b_frac``.

    ``np.all(periodic_distances_A(a, b) >= radius_A, axis=1)`` without the (A, B) matrix:
    memory bounded whatever the number of positions.
    """
    a = np.atleast_2d(np.asarray(a_frac, float))
    b = np.atleast_2d(np.asarray(b_frac, float))
    far = np.ones(len(a), dtype=bool)
    for rows, columns in _blocks(len(a), len(b), len(_NEIGHBOUR_SHIFTS)):
        block = _periodic_distances_block(a[rows], b[columns], lattice_matrix_A)
        far[rows] &= np.all(block >= radius_A, axis=1)
    return far


def site_clusters(
    frac_coords: np.ndarray, lattice_matrix_A: np.ndarray, merge_radius_A: float
) -> np.ndarray:
    """Label the positions that are alternatives for one ion (closer than the radius).

    Connected components of the graph "closer than ``merge_radius_A``" (periodic).

    Returns
    -------
    np.ndarray
        Cluster label of each position, 0..K-1.
    """
    n = len(frac_coords)
    if n == 0:
        return np.zeros(0, dtype=int)
    frac = np.atleast_2d(np.asarray(frac_coords, float))
    # the pairs closer than the radius, block by block (row-major, as np.nonzero of the
    # whole matrix): no (n, n) matrix is held
    pairs = []
    for block_rows, block_columns in _blocks(n, n, len(_NEIGHBOUR_SHIFTS)):
        close = (
            _periodic_distances_block(frac[block_rows], frac[block_columns], lattice_matrix_A)
            < merge_radius_A
        )
        r, c = np.nonzero(close)
        pairs.append((r + block_rows.start, c + block_columns.start))
    rows = np.concatenate([r for r, _ in pairs])
    cols = np.concatenate([c for _, c in pairs])
    if len(pairs) > 1:  # column blocks: restore the row-major order of one matrix
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=int)


@dataclass(frozen=True)
class SublatticeOccupancy:
    """The mobile-ion sublattice as a lattice gas.

    Attributes
    ----------
    cluster_labels
        Cluster (one site of the lattice gas) of each mobile-ion position.
    site_occupancy
        Total occupancy of each lattice-gas site: its mobile ions plus the framework ions
        that share it, capped at one.
    mobile_occupancy
        Mobile-ion occupancy of each lattice-gas site (capped at one).
    """

    cluster_labels: np.ndarray
    site_occupancy: np.ndarray
    mobile_occupancy: np.ndarray

    @property
    def n_sites(self) -> int:
        """Number of lattice-gas sites per cell."""
        return len(self.site_occupancy)

    @property
    def vacancy_fraction(self) -> float:
        """Mean fraction of empty lattice-gas sites (dimensionless, 0..1)."""
        if self.n_sites == 0:
            return 0.0
        return float(np.mean(1.0 - self.site_occupancy))


def sublattice_occupancy(
    mobile_frac_coords: np.ndarray,
    mobile_occupancies: np.ndarray,
    framework_occupancies_on_site: np.ndarray,
    lattice_matrix_A: np.ndarray,
    merge_radius_A: float = SITE_MERGE_RADIUS_A,
) -> SublatticeOccupancy:
    """Group the mobile-ion positions into lattice-gas sites and add up their occupancies.

    Parameters
    ----------
    mobile_frac_coords
        Fractional coordinates of every mobile-ion position in the cell, shape (n, 3).
    mobile_occupancies
        Their occupancies.
    framework_occupancies_on_site
        Framework occupancy of the crystallographic site of each position (0 unless the
        structure shares the site with a framework ion, e.g. Li/La in perovskites).
    lattice_matrix_A
        Lattice vectors as rows, A.
    merge_radius_A
        Positions closer than this are alternatives for one ion, A.

    Returns
    -------
    SublatticeOccupancy
    """
    labels = site_clusters(mobile_frac_coords, lattice_matrix_A, merge_radius_A)
    k = int(labels.max()) + 1 if len(labels) else 0
    mobile = np.bincount(labels, weights=mobile_occupancies, minlength=k)
    framework = np.bincount(labels, weights=framework_occupancies_on_site, minlength=k)
    return SublatticeOccupancy(
        cluster_labels=labels,
        site_occupancy=np.minimum(mobile + framework, 1.0),
        mobile_occupancy=np.minimum(mobile, 1.0),
    )


def framework_sublattice(
    framework: Framework, merge_radius_A: float = SITE_MERGE_RADIUS_A
) -> SublatticeOccupancy:
    """:func:`sublattice_occupancy` of a framework's mobile-ion positions."""
    return sublattice_occupancy(
        framework.mobile_frac_coords,
        framework.mobile_occupancies,
        framework.mobile_site_framework_occupancies,
        framework.lattice_matrix_A,
        merge_radius_A,
    )


def intrinsic_defect_fraction(formation_energy_eV: float, temperature_K: float) -> float:
    """Fraction of sites with a vacancy from Frenkel pairs, exp(-E_F / 2 k_B T).

    The law of mass action for vacancy + interstitial formed in pairs on a full sublattice
    (Lidiard 1957): x_v x_i = exp(-E_F / k_B T) with x_v = x_i. E_F below zero (an empty
    minimum lower than an occupied site: the model prefers another arrangement) counts as
    zero, i.e. a fraction of one.
    """
    if not np.isfinite(formation_energy_eV):
        return 0.0
    energy = max(float(formation_energy_eV), 0.0)
    return float(np.exp(-energy / (2.0 * thermal_energy_eV(temperature_K))))


def carrier_fraction(
    vacancy_fraction: float, intrinsic_fraction: float, extrinsic_fraction: float
) -> float:
    """Fraction of the mobile ions that find an empty neighbouring site, capped at one.

    The structural vacancies of the sublattice, the thermal (Frenkel) vacancies and the
    extrinsic ones add; with site exclusion an ion moves only into an empty site, so the
    current per ion carries this fraction (the lattice-gas c (1 - c) per site).
    """
    return float(min(1.0, vacancy_fraction + intrinsic_fraction + extrinsic_fraction))


def carrier_mechanism(
    vacancy_fraction: float, intrinsic_fraction: float, extrinsic_fraction: float
) -> str:
    """Name the largest of the three contributions to :func:`carrier_fraction`."""
    parts = {
        "sublattice_vacancies": vacancy_fraction,
        "intrinsic_frenkel": intrinsic_fraction,
        "extrinsic_defects": extrinsic_fraction,
    }
    return max(parts, key=lambda name: parts[name])


def screened_coulomb_eV(
    distance_A: np.ndarray, prefactor_eV_A: float, screening_A: float
) -> np.ndarray:
    """SoftBV like-ion repulsion k_e q_A q_B / sqrt(n_A n_B) erfc(r / rho) / r, eV."""
    r = np.asarray(distance_A, float)
    return np.asarray(prefactor_eV_A * erfc(r / screening_A) / r)


def like_ion_energy_eV(
    points_frac: np.ndarray,
    ion_frac: np.ndarray,
    ion_weights: np.ndarray,
    lattice_matrix_A: np.ndarray,
    prefactor_eV_A: float,
    screening_A: float,
    *,
    exclude_within_A: float,
    cutoff_A: float = LIKE_ION_CUTOFF_A,
) -> np.ndarray:
    """Repulsion of the mobile ions (occupancy-weighted) felt at each point, eV.

    Ions within ``exclude_within_A`` of a point are left out: a point on an ion's own
    site (or split position) does not repel itself.

    Parameters
    ----------
    points_frac
        Points, fractional, shape (P, 3).
    ion_frac, ion_weights
        Mobile-ion positions (fractional, shape (n, 3)) and their weights (occupancies, 0
        for an ion that was moved away).
    lattice_matrix_A
        Lattice vectors as rows, A.
    prefactor_eV_A, screening_A
        Parameters of :func:`screened_coulomb_eV`.
    exclude_within_A
        Exclusion radius, A.
    cutoff_A
        Sum cut-off, A.

    Returns
    -------
    np.ndarray
        Energies, eV, shape (P,).
    """
    points = np.atleast_2d(np.asarray(points_frac, float))
    ions = np.atleast_2d(np.asarray(ion_frac, float))
    weights = np.asarray(ion_weights, float)
    images = _images(lattice_matrix_A, cutoff_A)
    out = np.empty(len(points))
    # a block of points at a time (each point's sum over all ions and images in one
    # piece, as without blocks): the workspace is bounded per point, not per point x ion
    for rows, _ in _blocks(len(points), len(ions), len(images)):
        delta = points[rows, None, :] - ions[None, :, :]
        delta -= np.round(delta)
        cart = (delta[:, :, None, :] + images[None, None, :, :]) @ lattice_matrix_A
        r = np.linalg.norm(cart, axis=-1)  # (P, n, images)
        keep = (r >= exclude_within_A) & (r < cutoff_A)
        safe = np.where(keep, r, 1.0)
        energy = np.where(keep, screened_coulomb_eV(safe, prefactor_eV_A, screening_A), 0.0)
        out[rows] = np.einsum("pni,n->p", energy, weights)
    return out


def grid_local_minima(energy_grid_eV: np.ndarray) -> np.ndarray:
    """Flat indices of the finite local minima of a periodic grid (26 neighbours, <=)."""
    finite = np.isfinite(energy_grid_eV)
    minimum = finite.copy()
    for shift in np.ndindex(3, 3, 3):
        if shift == (1, 1, 1):
            continue
        rolled = np.roll(energy_grid_eV, tuple(s - 1 for s in shift), axis=(0, 1, 2))
        minimum &= energy_grid_eV <= rolled
    return np.flatnonzero(minimum)


@dataclass(frozen=True)
class FrenkelPair:
    """The cheapest Frenkel pair of the landscape.

    Attributes
    ----------
    formation_energy_eV
        E_F = E(ion at the interstitial, its site empty) - E(ion on its site), eV; +inf when
        the landscape has no empty minimum or no occupied site with a finite energy.
    vacancy_index
        Index of the vacated mobile-ion position (-1 if none).
    interstitial_frac
        Fractional coordinates of the interstitial minimum (NaN if none).
    """

    formation_energy_eV: float
    vacancy_index: int
    interstitial_frac: np.ndarray


def frenkel_pair(
    site_frac: np.ndarray,
    site_occupancies: np.ndarray,
    site_energy_eV: np.ndarray,
    minima_frac: np.ndarray,
    minima_energy_eV: np.ndarray,
    lattice_matrix_A: np.ndarray,
    prefactor_eV_A: float,
    screening_A: float,
    *,
    merge_radius_A: float = SITE_MERGE_RADIUS_A,
    max_interstitials: int = 8,
    max_starts: int = 16,
) -> FrenkelPair:
    """Lowest formation energy of a vacancy-interstitial pair in one force field.

    One ion is moved from a mobile-ion position i to an empty minimum m of the landscape U
    (a minimum farther than ``merge_radius_A`` from every mobile-ion position). The energy
    of an ion at x is U(x) plus the screened Coulomb repulsion of the other mobile ions
    (occupancy-weighted); the moved ion (its cluster of split positions) is taken away
    from the sum at the interstitial, its periodic images stay (a dilute pair: the result
    does not depend on the cell the crystal is described in).
    E_F = [U(m) + V_others(m)] - [U(i) + V_others(i)], minimised over i and over
    the ``max_interstitials`` lowest minima. The framework relaxation is the one already in
    U (the pair field's).

    Parameters
    ----------
    site_frac, site_occupancies, site_energy_eV
        Mobile-ion positions (fractional, (n, 3)), occupancies and U there (eV; +inf for a
        position that cannot start a pair, e.g. one shared with a framework ion).
    minima_frac, minima_energy_eV
        Local minima of U (fractional, (m, 3)) and U there, eV.
    lattice_matrix_A
        Lattice vectors as rows, A.
    prefactor_eV_A, screening_A
        Like-ion screened Coulomb parameters (:func:`screened_coulomb_eV`).
    merge_radius_A
        Positions closer than this are one ion's alternatives, A.
    max_interstitials
        How many of the lowest empty minima are tried.
    max_starts
        How many of the highest occupied positions (in U) are tried as the vacancy.

    Returns
    -------
    FrenkelPair
    """
    none = FrenkelPair(float("inf"), -1, np.full(3, np.nan))
    site_frac = np.atleast_2d(np.asarray(site_frac, float))
    occupancies = np.asarray(site_occupancies, float)
    if len(site_frac) == 0 or len(minima_frac) == 0:
        return none
    minima_frac = np.atleast_2d(np.asarray(minima_frac, float))
    minima_energy = np.asarray(minima_energy_eV, float)
    to_sites = periodic_distances_A(minima_frac, site_frac, lattice_matrix_A)
    empty = np.all(to_sites >= merge_radius_A, axis=1) & np.isfinite(minima_energy)
    if not np.any(empty):
        return none
    chosen = np.flatnonzero(empty)[np.argsort(minima_energy[empty])[:max_interstitials]]
    starts = np.flatnonzero(np.isfinite(site_energy_eV) & (occupancies > 0))
    if len(starts) == 0:
        return none
    # the least bound ions form the defect: try the max_starts highest sites
    starts = starts[np.argsort(-np.asarray(site_energy_eV)[starts])[:max_starts]]
    labels = site_clusters(site_frac, lattice_matrix_A, merge_radius_A)

    # every ion repels, its own site and split positions excluded (within the merge
    # radius); the moved ion is then taken away from the interstitial's sum: only that one
    # ion, not its periodic images, which are other ions of the crystal (a dilute pair)
    def repulsion(points: np.ndarray) -> np.ndarray:
        return like_ion_energy_eV(
            points,
            site_frac,
            occupancies,
            lattice_matrix_A,
            prefactor_eV_A,
            screening_A,
            exclude_within_A=merge_radius_A,
        )

    on_site_all = site_energy_eV[starts] + repulsion(site_frac[starts])
    at_minima_all = minima_energy[chosen] + repulsion(minima_frac[chosen])
    to_sites_chosen = to_sites[chosen]  # (m, n) nearest-image distances, A
    best = none
    for start, on_site in zip(starts, on_site_all, strict=True):
        own = labels == labels[start]
        moved_away = (
            screened_coulomb_eV(to_sites_chosen[:, own], prefactor_eV_A, screening_A)
            @ occupancies[own]
        )
        moved = at_minima_all - moved_away
        j = int(np.argmin(moved))
        energy = float(moved[j] - on_site)
        if energy < best.formation_energy_eV:
            best = FrenkelPair(energy, int(start), minima_frac[chosen[j]].copy())
    return best
