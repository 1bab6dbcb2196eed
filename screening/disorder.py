"""Disorder beyond the mean field on sites the mobile ion shares with framework ions.

Where the structure gives one crystallographic site to the mobile ion and to a framework
cation at random (Li/La on the A site of Li-La-Ti-O perovskites, Li/Na, Li/Sr), a passing
ion meets one particular arrangement: a site holds a framework ion or it does not, and the
ions on the neighbouring shared sites raise or lower the energy of each free site. The
plain mean field instead puts a fraction of the framework ion on every such site, which
makes the shared sites unreachable (docs/validation.md: perovskites tens of decades too low).

Here (docs/theory.md section 7):

1. the landscape U is computed with site exclusion on the shared sites (the framework ion
   is absent while the mobile ion is on or next to its site: ``site_exclusion_radius_A``);
2. the mobile-ion sites (lattice-gas sites, :func:`iondrag.screening.carriers.sublattice_occupancy`)
   form a site-and-hop network with hops to the nearest-neighbour shell of each site;
3. in a periodic supercell of at least :data:`MIN_NETWORK_SITES` sites, each shared site is
   taken by a framework ion with its framework occupancy p_k (independently), and each free
   site i shifts in energy by the framework ions actually present around it relative to the
   mean field, de_i = sum_k (s_k - p_k) phi_k(r_ik) (s_k = 1 if taken; phi_k the screened
   Coulomb repulsion of site k's framework ions, the per-species pair terms of the force
   field); a hop between free sites conducts with exp(-max(de_i, de_j) / k_B T);
4. the conductance of each drawn network (iondrag.screening.network) relative to the fully open,
   uniform network is the arrangement factor that multiplies the mean-field-free result;
   its spread over draws is reported.

Energies in eV, lengths in A, temperatures in K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iondrag.screening.carriers import (
    SITE_MERGE_RADIUS_A,
    framework_sublattice,
    screened_coulomb_eV,
)
from iondrag.screening.forcefield import coulomb_pair_parameters
from iondrag.screening.network import effective_conductivity, replicate_network
from iondrag.screening.structures import Framework
from iondrag.screening.units import thermal_energy_eV

#: Draws of the arrangement are made in supercells of at least this many sites: percolation
#: of the free shared sites is then not decided by chance (64-site supercells were).
MIN_NETWORK_SITES: int = 10_000

#: Hops join each site to the sites within this factor of its nearest-neighbour distance.
HOP_SHELL_FACTOR: float = 1.3

#: Radius of the site exclusion on shared sites in the random-network treatment, A: it
#: reaches past the midpoint between neighbouring shared sites (~2 A in perovskites).
SHARED_SITE_EXCLUSION_RADIUS_A: float = 2.0

#: Cut-off of the arrangement's energy shifts, A.
ARRANGEMENT_CUTOFF_A: float = 6.0


def _pairs_within(
    frac: np.ndarray, lattice_matrix_A: np.ndarray, radius_A: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, image) with 0 < |r_j + image - r_i| <= radius, and r, A."""
    reach = radius_A * np.linalg.norm(np.linalg.inv(lattice_matrix_A).T, axis=1)
    extent = np.ceil(reach).astype(int) + 1
    images = np.stack(
        np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    delta = frac[None, :, None, :] + images[None, None, :, :] - frac[:, None, None, :]
    distance = np.linalg.norm(delta @ lattice_matrix_A, axis=-1)  # (i, j, image)
    i, j, k = np.nonzero((distance <= radius_A) & (distance > 1e-8))
    return i, j, images[k], distance[i, j, k]


@dataclass(frozen=True)
class SharedSiteNetwork:
    """The primitive-cell site-and-hop network of the mobile-ion sublattice.

    Attributes
    ----------
    site_frac_coords
        One position per lattice-gas site, fractional, shape (n, 3).
    blocking_probability
        Framework occupancy p_k of each site (0 for sites only the mobile ion holds).
    hop_i, hop_j, hop_image
        Hops (each once) from site i to site j in the cell translated by ``hop_image``.
    shift_i, shift_k, shift_image, shift_phi_eV
        Energy couplings: a framework ion on site k (in cell ``shift_image``) raises the
        energy of site i by ``shift_phi_eV`` (per unit framework occupancy).
    lattice_matrix_A
        Lattice vectors as rows, A.
    """

    site_frac_coords: np.ndarray
    blocking_probability: np.ndarray
    hop_i: np.ndarray
    hop_j: np.ndarray
    hop_image: np.ndarray
    shift_i: np.ndarray
    shift_k: np.ndarray
    shift_image: np.ndarray
    shift_phi_eV: np.ndarray
    lattice_matrix_A: np.ndarray

    @property
    def n_sites(self) -> int:
        """Lattice-gas sites per primitive cell."""
        return len(self.site_frac_coords)


def has_shared_cation_sites(framework: Framework) -> bool:
    """Return True when a framework cation shares a site with the mobile ion (mixed site)."""
    shared = framework.shares_site_with_mobile & (framework.charges_e > 0)
    return bool(np.any(shared & (framework.occupancies > 0)))


def shared_site_network(
    framework: Framework, *, merge_radius_A: float = SITE_MERGE_RADIUS_A
) -> SharedSiteNetwork:
    """Build the lattice-gas site network of a framework and its arrangement couplings.

    Sites are the lattice-gas sites of the mobile ions (split positions merged); each
    site's blocking probability is the framework occupancy on it. Hops join every site to
    the sites within :data:`HOP_SHELL_FACTOR` of its nearest-neighbour distance. Couplings
    phi_k(r) = sum over the framework cations on site k of (their occupancy / p_k) times
    the screened Coulomb repulsion with the mobile ion
    (:func:`iondrag.screening.forcefield.coulomb_pair_parameters`), within
    :data:`ARRANGEMENT_CUTOFF_A`.
    """
    lattice = framework.lattice_matrix_A
    sublattice = framework_sublattice(framework, merge_radius_A)
    labels = sublattice.cluster_labels
    n = sublattice.n_sites
    first = np.array([np.flatnonzero(labels == k)[0] for k in range(n)], dtype=int)
    sites = framework.mobile_frac_coords[first]
    blocking = np.clip(sublattice.site_occupancy - sublattice.mobile_occupancy, 0.0, 1.0)

    # hops: the nearest-neighbour shell of each site (each hop once)
    cell_lengths = np.linalg.norm(lattice, axis=1)
    i, j, image, distance = _pairs_within(sites, lattice, float(cell_lengths.max()) + 1e-6)
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, i, distance)
    shell = distance <= HOP_SHELL_FACTOR * np.minimum(nearest[i], nearest[j])
    forward = (i < j) | ((i == j) & _positive(image))
    keep = shell & forward
    hop_i, hop_j, hop_image = i[keep], j[keep], image[keep]

    # couplings: framework cations on shared sites within the cut-off of each site
    charge = round(framework.mobile_charge_e)
    phi_per_site = []
    for k in range(n):
        members = np.flatnonzero(labels == k)
        scatterers = [
            s
            for s in np.flatnonzero(framework.shares_site_with_mobile & (framework.charges_e > 0))
            if np.min(
                np.linalg.norm(
                    (
                        (framework.frac_coords[s] - framework.mobile_frac_coords[members] + 0.5)
                        % 1.0
                        - 0.5
                    )
                    @ lattice,
                    axis=1,
                )
            )
            < merge_radius_A
        ]
        phi_per_site.append(scatterers)
    si, sk, simage, sdist = _pairs_within(sites, lattice, ARRANGEMENT_CUTOFF_A)
    coupling = np.zeros(len(si))
    for index, (k, r) in enumerate(zip(sk, sdist, strict=True)):
        if blocking[k] <= 0:
            continue
        total = 0.0
        for s in phi_per_site[k]:
            prefactor, screening = coulomb_pair_parameters(
                framework.mobile_element,
                charge,
                framework.elements[s],
                float(framework.charges_e[s]),
            )
            total += float(framework.occupancies[s]) * float(
                screened_coulomb_eV(np.asarray(r), prefactor, screening)
            )
        coupling[index] = total / blocking[k]
    used = coupling != 0
    return SharedSiteNetwork(
        site_frac_coords=sites,
        blocking_probability=blocking,
        hop_i=hop_i,
        hop_j=hop_j,
        hop_image=hop_image,
        shift_i=si[used],
        shift_k=sk[used],
        shift_image=simage[used],
        shift_phi_eV=coupling[used],
        lattice_matrix_A=lattice,
    )


def _positive(image: np.ndarray) -> np.ndarray:
    """Return True for translations whose first non-zero component is positive."""
    first = np.where(
        image[:, 0] != 0, image[:, 0], np.where(image[:, 1] != 0, image[:, 1], image[:, 2])
    )
    return np.asarray(first > 0)


@dataclass(frozen=True)
class ArrangementFactor:
    """How much of the open network's conductance a random arrangement leaves.

    Attributes
    ----------
    log10_factor
        Mean over the conducting draws of log10(sigma_draw / sigma_open) (tr/3 of the
        tensors); -inf when no draw conducts.
    log10_spread
        Standard deviation of log10 sigma over the conducting draws (nan with fewer than
        two).
    conducting_fraction
        Fraction of draws that conduct (a percolating network of free sites).
    n_network_sites
        Sites of the supercell.
    supercell
        Repetitions of the primitive cell.
    """

    log10_factor: float
    log10_spread: float
    conducting_fraction: float
    n_network_sites: int
    supercell: tuple[int, int, int]


def arrangement_factor(
    network: SharedSiteNetwork,
    temperature_K: float,
    *,
    n_draws: int = 6,
    seed: int = 0,
    min_sites: int = MIN_NETWORK_SITES,
) -> ArrangementFactor:
    """Conductance (tr/3) of random arrangements relative to the open, uniform network.

    Parameters
    ----------
    network
        From :func:`shared_site_network`.
    temperature_K
        Temperature of the hop conductances, K.
    n_draws
        Random arrangements.
    seed
        Seed of ``numpy.random.default_rng`` (the result is deterministic).
    min_sites
        Smallest supercell, in sites.

    Returns
    -------
    ArrangementFactor
    """
    reps = int(np.ceil((min_sites / max(network.n_sites, 1)) ** (1.0 / 3.0)))
    supercell = (reps, reps, reps)
    hops = replicate_network(
        network.site_frac_coords,
        network.hop_i,
        network.hop_j,
        network.hop_image,
        network.lattice_matrix_A,
        supercell,
    )
    shifts = replicate_network(
        network.site_frac_coords,
        network.shift_i,
        network.shift_k,
        network.shift_image,
        network.lattice_matrix_A,
        supercell,
    )
    n_sites = hops.n_sites
    kt = thermal_energy_eV(temperature_K)

    def log10_sigma(conductances: np.ndarray) -> float:
        sigma = effective_conductivity(
            n_sites, hops.bond_i, hops.bond_j, hops.bond_shift_A, conductances, hops.cell_matrix_A
        )
        # tr/3: the share of the conductance that survives; how the directions combine in a
        # polycrystal is the landscape's business (E_2D, E_3D), not the arrangement's
        value = float(np.trace(sigma)) / 3.0
        return float(np.log10(value)) if value > 0 else float("-inf")

    open_log = log10_sigma(np.ones(hops.n_bonds))
    empty = ArrangementFactor(float("-inf"), float("nan"), 0.0, n_sites, supercell)
    if not np.isfinite(open_log):
        return empty
    p_site = network.blocking_probability[hops.primitive_site]
    phi = network.shift_phi_eV[shifts.primitive_bond]
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(n_draws):
        taken = rng.random(n_sites) < p_site
        shift = np.bincount(
            shifts.bond_i,
            weights=(taken[shifts.bond_j] - p_site[shifts.bond_j]) * phi,
            minlength=n_sites,
        )
        free = ~taken
        both = free[hops.bond_i] & free[hops.bond_j]
        barrier = np.maximum(shift[hops.bond_i], shift[hops.bond_j])
        # energies relative to their minimum keep every exponent <= 0 (no overflow)
        reference = float(barrier[both].min()) if np.any(both) else 0.0
        g = np.where(both, np.exp(-(barrier - reference) / kt), 0.0)
        value = log10_sigma(g)
        logs.append(value - reference / (kt * np.log(10.0)) if np.isfinite(value) else value)
    draws = np.array(logs)
    conducting = draws[np.isfinite(draws)]
    if len(conducting) == 0:
        return ArrangementFactor(float("-inf"), float("nan"), 0.0, n_sites, supercell)
    return ArrangementFactor(
        log10_factor=float(conducting.mean() - open_log),
        log10_spread=float(conducting.std(ddof=1)) if len(conducting) > 1 else float("nan"),
        conducting_fraction=len(conducting) / n_draws,
        n_network_sites=n_sites,
        supercell=supercell,
    )


__all__ = [
    "ArrangementFactor",
    "SharedSiteNetwork",
    "arrangement_factor",
    "has_shared_cation_sites",
    "shared_site_network",
]
