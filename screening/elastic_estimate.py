"""An estimate of the bulk and shear moduli when no elastic data come with a candidate.

Method ``bond-stiffness``: a central-force (Born) estimate from the same softBV bond terms
that give the crystal potential. Every cation-anion pair within the attractive range of
its Morse term (r below the inflection R_min + ln 2 / alpha) is a spring of stiffness
k = phi''(r) = D0 alpha^2 E (2E - 1), E = exp(alpha (R_min - r)); for an affine
deformation of a network of central springs (Voigt average)

    K_affine = (1 / 9V) sum_bonds w k r^2,

with w the product of the two occupancies. Relaxation of the internal coordinates and the
Coulomb terms are missing from this, so the moduli are K = c_K K_affine and G = c_G K_affine
with two global constants fitted once to the measured moduli of the embedded reference set
(data/embedded), never per material; :data:`CALIBRATION` records the fit.

Units: moduli in GPa, lengths in A, energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.optimization.neighbors import find_points_in_spheres

from iondrag.screening.errors import ElasticDataError, MissingParametersError
from iondrag.screening.forcefield import morse_parameters
from iondrag.screening.structures import Framework
from iondrag.screening.units import EV_PER_A3_TO_GPA


@dataclass(frozen=True)
class Calibration:
    """Global constants of the bond-stiffness estimate and where they come from."""

    bulk_factor: float
    shear_factor: float
    fitted_on: str
    log10_rms_error_bulk: float
    log10_rms_error_shear: float


#: Fitted with ``python benchmarks/calibrate_elastic_estimate.py`` on the three embedded
#: candidates with measured moduli (LiF, NaCl, cubic LLZO): few, so the estimate is good to
#: a factor of ~1.4 (K) and ~1.6 (G); Lambda scales as rho^1/2 M^-3/2 ~ G^-3/2.
CALIBRATION = Calibration(
    bulk_factor=2.180,
    shear_factor=1.393,
    fitted_on="c_K=2.18, c_G=1.39 fitted on LiF, NaCl, cubic LLZO",
    log10_rms_error_bulk=0.144,
    log10_rms_error_shear=0.193,
)

#: Bond search radius, A: longer cation-anion distances are not bonds in softBV terms.
BOND_SEARCH_RADIUS_A: float = 3.5


def affine_bulk_modulus_GPa(framework: Framework, *, estimate_missing: bool = False) -> float:
    """K_affine = (1/9V) sum_bonds w k r^2 over cation-anion bonds (GPa), all ions included.

    Bonds of pairs without softBV parameters are left out, unless ``estimate_missing``
    (then :func:`iondrag.screening.forcefield.estimated_morse_parameters` supplies them).

    Raises
    ------
    ElasticDataError
        When no bond has parameters (nothing to estimate from).
    """
    lattice = framework.lattice_matrix_A
    frac = np.vstack([framework.frac_coords, framework.mobile_frac_coords])
    elements = list(framework.elements) + [framework.mobile_element] * len(
        framework.mobile_occupancies
    )
    charges = np.concatenate(
        [framework.charges_e, np.full(len(framework.mobile_occupancies), framework.mobile_charge_e)]
    )
    occupancy = np.concatenate([framework.occupancies, framework.mobile_occupancies])
    cart = np.ascontiguousarray(frac @ lattice, dtype=float)
    centers, neighbors, _, distances = find_points_in_spheres(
        cart,
        cart,
        BOND_SEARCH_RADIUS_A,
        np.array([1, 1, 1], dtype=np.int64),
        np.ascontiguousarray(lattice, dtype=float),
        tol=1e-8,
    )
    cation = charges[centers] > 0
    anion = charges[neighbors] < 0
    pick = cation & anion & (distances > 0.5)
    total = 0.0
    params: dict[tuple[str, int, str, int], tuple[float, float, float] | None] = {}
    for i, j, r in zip(centers[pick], neighbors[pick], distances[pick], strict=True):
        key = (elements[i], round(charges[i]), elements[j], round(charges[j]))
        if key not in params:
            try:
                params[key] = morse_parameters(*key, estimate_missing=estimate_missing)
            except MissingParametersError:
                params[key] = None
        entry = params[key]
        if entry is None:
            continue
        d0, r_min, alpha = entry
        e = np.exp(alpha * (r_min - r))
        stiffness = d0 * alpha**2 * e * (2.0 * e - 1.0)  # eV/A^2
        if stiffness > 0:
            total += occupancy[i] * occupancy[j] * stiffness * r * r
    if total <= 0:
        raise ElasticDataError("no cation-anion bond with softBV parameters to estimate moduli")
    return total / (9.0 * framework.volume_A3) * EV_PER_A3_TO_GPA


def estimate_moduli_GPa(
    framework: Framework, calibration: Calibration = CALIBRATION, *, estimate_missing: bool = False
) -> tuple[float, float, str]:
    """Estimated (K, G) in GPa and the ``elastic_source`` string that records the method.

    ``estimate_missing``: as in :func:`affine_bulk_modulus_GPa`.
    """
    k_affine = affine_bulk_modulus_GPa(framework, estimate_missing=estimate_missing)
    bulk = float(np.clip(calibration.bulk_factor * k_affine, 1.0, 500.0))
    shear = float(np.clip(calibration.shear_factor * k_affine, 0.5, 300.0))
    return bulk, shear, f"estimate:bond-stiffness ({calibration.fitted_on})"
