"""Bond-valence site energy (BVSE) force field for a mobile ion in a frozen framework.

The pair energy between the mobile ion A (charge q_A) and a framework ion j at distance r:

* counter-ions (sign opposite to q_A): a Morse-type bond term with the softBV parameters
  (D0, R_min, alpha) of Chen, Wong and Adams, Acta Cryst. B 75 (2019) 18-33,
  doi:10.1107/S2052520618015718, as tabulated by the MIT-licensed package ``ions``
  (data/forcefield/softbv_params.json, licence in data/forcefield/LICENSE-ions.txt)::

      phi(r) = (D0 / 2) [ (exp(alpha (R_min - r)) - 1)^2 - 1 ]

  The factor 1/2 is the convention of that table's implementations (``ions`` and ``bvlain``),
  which we follow so that our barriers are comparable with theirs;
* like-charged ions: screened Coulomb repulsion with softBV's charges q / sqrt(n)
  (n the principal quantum number, i.e. the period) and screening length
  rho = f (r_cov,A + r_cov,j), f = 0.74, covalent radii of Cordero et al. 2008::

      phi(r) = k_e q_A q_j / sqrt(n_A n_j) erfc(r / rho) / r,   k_e = 14.3996 eV A.

Each framework ion enters with its occupancy as weight (mean field). Energies in eV,
lengths in A.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
from pymatgen.core import Element
from scipy.spatial import cKDTree

from screening.data_files import data_dir
from screening.errors import MissingParametersError
from screening.structures import Framework
from screening.units import COULOMB_EV_A

#: softBV screening factor f in rho = f (r_A + r_j) (Chen et al. 2019).
SCREENING_FACTOR: float = 0.74

#: Half width of the smooth step of site exclusion around its radius, A.
EXCLUSION_HALF_WIDTH_A: float = 0.4


@cache
def softbv_table() -> dict[str, Any]:
    """Return the softBV Morse parameters: table[cation][charge][anion][charge] -> params."""
    with open(data_dir() / "forcefield" / "softbv_params.json") as handle:
        return json.load(handle)


@cache
def covalent_radii_A() -> dict[str, float]:
    """Return covalent radii (A) by element symbol (Cordero et al. 2008)."""
    with open(data_dir() / "forcefield" / "covalent_radii.json") as handle:
        return dict(json.load(handle)["radius_A"])


def morse_parameters(
    cation: str, cation_charge: int, anion: str, anion_charge: int
) -> tuple[float, float, float]:
    """Return softBV (D0 eV, R_min A, alpha 1/A) for a cation-anion pair.

    Raises
    ------
    MissingParametersError
        When the table has no entry for the pair at these oxidation states.
    """
    try:
        entry = softbv_table()[cation][str(cation_charge)][anion][str(anion_charge)]
    except KeyError:
        raise MissingParametersError(
            f"no softBV parameters for {cation}{cation_charge:+d}-{anion}{anion_charge:+d}"
        ) from None
    return float(entry["d0"]), float(entry["r_min"]), float(entry["alpha"])


@dataclass(frozen=True)
class PairField:
    """Per-scatterer pair-potential parameters of the framework seen by one mobile ion.

    Every array has one entry per framework scatterer (mixed sites: one per species).

    Attributes
    ----------
    lattice_matrix_A
        Lattice vectors as rows, A.
    frac_coords
        Scatterer fractional coordinates, shape (S, 3).
    weights
        Occupancies (mean-field weights).
    is_morse
        True for Morse (counter-ion) terms, False for screened Coulomb terms.
    morse_d0_eV, morse_rmin_A, morse_alpha_per_A
        Morse parameters (NaN for Coulomb scatterers).
    coulomb_prefactor_eV_A, coulomb_screening_A
        k_e q_A q_j / sqrt(n_A n_j) and rho (NaN for Morse scatterers).
    cutoff_A, switch_on_A
        Pair terms are multiplied by a C2 switching function from 1 at ``switch_on_A`` to 0
        at ``cutoff_A`` so that U and its derivatives stay smooth.
    thermal_rms_A
        Root-mean-square thermal displacement of each framework ion per Cartesian component,
        A (None: a static framework); pair terms are averaged over it (Debye-Waller).
    relaxation_stiffness_eV_per_A2
        Einstein spring constant k binding each framework ion to its site, eV/A^2 (None: a
        frozen framework). Each pair term is then the relaxed pair energy
        min_u [phi(r + u) + k u^2 / 2]: the partner ion gives way along the bond (see
        :func:`screening.potential.relaxed_pair_energy`).
    excluded, exclusion_radius_A
        True for like-charged scatterers on sites shared with the mobile ion: site exclusion
        (see :func:`build_pair_field`) switches their term off within
        ``exclusion_radius_A`` (+- :data:`EXCLUSION_HALF_WIDTH_A`) of the site.
    labels
        Species label of each scatterer, e.g. ``"O2-"``.
    """

    lattice_matrix_A: np.ndarray
    frac_coords: np.ndarray
    weights: np.ndarray
    is_morse: np.ndarray
    morse_d0_eV: np.ndarray
    morse_rmin_A: np.ndarray
    morse_alpha_per_A: np.ndarray
    coulomb_prefactor_eV_A: np.ndarray
    coulomb_screening_A: np.ndarray
    cutoff_A: float
    switch_on_A: float
    labels: tuple[str, ...]
    excluded: np.ndarray | None = None
    exclusion_radius_A: float = 0.0
    thermal_rms_A: np.ndarray | None = None
    relaxation_stiffness_eV_per_A2: np.ndarray | None = None

    @property
    def n_scatterers(self) -> int:
        """Number of framework scatterers."""
        return len(self.weights)

    @cached_property
    def image_tree(self) -> tuple[cKDTree, np.ndarray, np.ndarray]:
        """KD-tree of the scatterer images within the cutoff of the cell.

        Returns the tree, the images' Cartesian positions (A) and the scatterer index of
        each image. Built once per field.
        """
        lattice = self.lattice_matrix_A
        reach = self.cutoff_A * np.linalg.norm(np.linalg.inv(lattice).T, axis=1)
        extent = np.ceil(reach).astype(int) + 1
        images = np.stack(
            np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        frac = self.frac_coords[None, :, :] + images[:, None, :]  # (images, scatterers, 3)
        near = np.all((frac > -reach) & (frac < 1.0 + reach), axis=-1)
        owner = np.broadcast_to(np.arange(self.n_scatterers), near.shape)[near]
        cart = frac[near] @ lattice
        return cKDTree(cart), cart, owner

    @cached_property
    def types(self) -> np.ndarray:
        """Cached :meth:`type_keys`."""
        return self.type_keys()

    def type_keys(self) -> np.ndarray:
        """Integer id per scatterer of its parameter set (scatterers of a type share params)."""
        params = np.stack(
            [
                self.is_morse.astype(float),
                np.nan_to_num(self.morse_d0_eV),
                np.nan_to_num(self.morse_rmin_A),
                np.nan_to_num(self.morse_alpha_per_A),
                np.nan_to_num(self.coulomb_prefactor_eV_A),
                np.nan_to_num(self.coulomb_screening_A),
                np.zeros(self.n_scatterers) if self.excluded is None else self.excluded,
                np.zeros(self.n_scatterers)
                if self.thermal_rms_A is None
                else np.round(self.thermal_rms_A, 5),
                np.zeros(self.n_scatterers)
                if self.relaxation_stiffness_eV_per_A2 is None
                else np.round(self.relaxation_stiffness_eV_per_A2, 6),
            ],
            axis=1,
        )
        _, inverse = np.unique(np.round(params, 10), axis=0, return_inverse=True)
        return inverse.ravel()


def build_pair_field(
    framework: Framework,
    *,
    cutoff_A: float = 6.0,
    switch_width_A: float = 1.0,
    screening_factor: float = SCREENING_FACTOR,
    site_exclusion_radius_A: float = 0.0,
    thermal_rms_A: np.ndarray | None = None,
    relaxation_stiffness_eV_per_A2: np.ndarray | None = None,
    candidate_id: str | None = None,
) -> PairField:
    """Resolve the BVSE parameters of every framework scatterer for the mobile ion.

    Parameters
    ----------
    framework
        From :func:`screening.structures.prepare_framework`.
    cutoff_A
        Pair cutoff radius, A. The softBV terms decay to below 1e-3 eV per pair within 6 A.
    switch_width_A
        Width of the smooth switching region that ends at ``cutoff_A``, A.
    screening_factor
        f in rho = f (r_cov,A + r_cov,j).
    site_exclusion_radius_A
        Disorder beyond the plain mean field (0 turns it off). A like-charged framework ion
        on a site that the structure shares with the mobile species (a mixed site) is
        absent whenever the mobile ion is on that site or hopping through it (conditional
        occupancy): its repulsion is switched off within this radius of the site (a C2 step
        of +-0.4 A). Framework sites that are merely partly occupied (dopants, refinement
        noise) stay mean field. The default reaches past the
        midpoint between neighbouring shared sites (~2 A in perovskites and spinels), so a
        hop between two vacant shared sites sees neither. Plain mean field puts a fraction
        of the ion on every such site and makes shared sites unreachable (e.g. the A sites
        of Li-La-Ti perovskites).
    thermal_rms_A
        Thermal rms displacement of each framework scatterer (A, one per entry of
        ``framework.elements``), or None for a static framework.
    relaxation_stiffness_eV_per_A2
        Static stiffness of each framework scatterer in its site (eV/A^2, one per entry of
        ``framework.elements``), or None for a frozen framework.
    candidate_id
        Named in errors.

    Raises
    ------
    MissingParametersError
        An element pair or oxidation state has no softBV parameters, or an element has no
        covalent radius.
    """
    if not 0 < switch_width_A < cutoff_A:
        raise ValueError("need 0 < switch_width_A < cutoff_A")
    mobile = framework.mobile_element
    q_mobile = round(framework.mobile_charge_e)
    radii = covalent_radii_A()
    n_mobile = Element(mobile).row
    r_mobile = radii[mobile]
    count = len(framework.elements)
    is_morse = np.zeros(count, dtype=bool)
    d0, rmin, alpha = (np.full(count, np.nan) for _ in range(3))
    prefactor, screening = np.full(count, np.nan), np.full(count, np.nan)
    labels = []
    keep = np.ones(count, dtype=bool)
    for i, (element, charge) in enumerate(
        zip(framework.elements, framework.charges_e, strict=True)
    ):
        q = round(float(charge))
        labels.append(f"{element}{abs(q) if abs(q) != 1 else ''}{'+' if q > 0 else '-'}")
        if q == 0:
            keep[i] = False  # a neutral species takes part in neither term
            continue
        if q * q_mobile < 0:
            try:
                d0[i], rmin[i], alpha[i] = morse_parameters(mobile, q_mobile, element, q)
            except MissingParametersError as error:
                raise (error.with_candidate(candidate_id) if candidate_id else error) from None
            is_morse[i] = True
        else:
            if element not in radii:
                raise MissingParametersError(f"no covalent radius for {element}", candidate_id)
            n_j = Element(element).row
            prefactor[i] = COULOMB_EV_A * q_mobile * float(charge) / np.sqrt(n_mobile * n_j)
            screening[i] = screening_factor * (r_mobile + radii[element])
    if not np.any(is_morse & keep):
        raise MissingParametersError(
            f"no counter-ions for {mobile}{q_mobile:+d} in the framework", candidate_id
        )
    return PairField(
        lattice_matrix_A=framework.lattice_matrix_A,
        frac_coords=framework.frac_coords[keep],
        weights=framework.occupancies[keep],
        is_morse=is_morse[keep],
        morse_d0_eV=d0[keep],
        morse_rmin_A=rmin[keep],
        morse_alpha_per_A=alpha[keep],
        coulomb_prefactor_eV_A=prefactor[keep],
        coulomb_screening_A=screening[keep],
        cutoff_A=float(cutoff_A),
        switch_on_A=float(cutoff_A - switch_width_A),
        labels=tuple(label for label, k in zip(labels, keep, strict=True) if k),
        excluded=(
            (~is_morse & framework.shares_site_with_mobile)[keep]
            if site_exclusion_radius_A > 0
            else None
        ),
        exclusion_radius_A=float(site_exclusion_radius_A),
        thermal_rms_A=None if thermal_rms_A is None else np.asarray(thermal_rms_A, float)[keep],
        relaxation_stiffness_eV_per_A2=None
        if relaxation_stiffness_eV_per_A2 is None
        else np.asarray(relaxation_stiffness_eV_per_A2, float)[keep],
    )
