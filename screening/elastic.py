"""The framework's elastic response: Lambda from the elastic tensor (Christoffel equation).

theory.md section 2: in the time-local (Markov) limit the drag is gamma = H Lambda H with

    Lambda = 1/(16 pi^2 rho) sum_lambda oint dOmega  e_lambda e_lambda^T / c_lambda^3,

c_lambda(k), e_lambda(k) the acoustic phase velocities and polarisations from the
Christoffel equation rho c^2 e = Gamma(k) e, Gamma_ik = C_ijkl k_j k_l. Because the three
modes of a direction are the eigenpairs of Gamma, the sum over modes is a matrix function:

    sum_lambda e e^T / c^3 = rho^(3/2) Gamma(k)^(-3/2),

so the integrand is one symmetric 3x3 inverse power per direction, integrated with a
Lebedev rule (exact for polynomials up to its degree on the sphere).

Isotropic medium: Lambda = lambda 1, lambda = (1/c_L^3 + 2/c_T^3) / (12 pi rho).

Units: C, K, G in GPa at the interface, SI inside; rho in kg/m^3; Lambda in s^3/kg.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from iondrag.screening.errors import ElasticDataError
from iondrag.screening.units import EV_PER_A3_TO_GPA, GPA_PA

#: Lebedev rule order used by default (590 points, exact to degree 41).
DEFAULT_LEBEDEV_ORDER: int = 41

_VOIGT_INDEX = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])


@cache
def _sphere_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    points, weights = lebedev_points(order)
    return np.ascontiguousarray(points.T), weights


def lebedev_points(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``scipy.integrate.lebedev_rule(order)``: points (3, N) and weights (N,).

    The default order is read from ``data/quadrature/lebedev_<order>.npz`` (the same
    numbers, stored): importing ``scipy.integrate`` costs a quarter of a second.
    """
    from iondrag.screening.data_files import data_dir

    stored = data_dir() / "quadrature" / f"lebedev_{order}.npz"
    if stored.is_file():
        with np.load(stored) as data:
            return data["points"], data["weights"]
    from scipy.integrate import lebedev_rule

    points, weights = lebedev_rule(order)
    return points, weights


def voigt_to_tensor(voigt: np.ndarray) -> np.ndarray:
    """Full stiffness tensor C_ijkl (3, 3, 3, 3) from its Voigt matrix (6, 6), same units."""
    voigt = np.asarray(voigt, dtype=float)
    return voigt[_VOIGT_INDEX[:, :, None, None], _VOIGT_INDEX[None, None, :, :]]


def isotropic_voigt_GPa(bulk_GPa: float, shear_GPa: float) -> np.ndarray:
    """Voigt stiffness matrix (6, 6) of an isotropic medium with moduli K, G (GPa)."""
    lame = bulk_GPa - 2.0 * shear_GPa / 3.0
    voigt = np.zeros((6, 6))
    voigt[:3, :3] = lame
    voigt[np.arange(3), np.arange(3)] = lame + 2.0 * shear_GPa
    voigt[np.arange(3, 6), np.arange(3, 6)] = shear_GPa
    return voigt


def check_stiffness(voigt_GPa: np.ndarray, candidate_id: str | None = None) -> np.ndarray:
    """Return the Voigt matrix as an array after checking that it is a stable stiffness.

    Raises
    ------
    ElasticDataError
        Wrong shape, non-finite entries, asymmetry, or not positive definite (Born).
    """
    voigt = np.asarray(voigt_GPa, dtype=float)
    if voigt.shape != (6, 6) or not np.all(np.isfinite(voigt)):
        raise ElasticDataError("elastic tensor must be a finite 6x6 Voigt matrix", candidate_id)
    scale = float(np.max(np.abs(voigt)))
    if scale == 0 or not np.allclose(voigt, voigt.T, atol=1e-3 * scale):
        raise ElasticDataError("elastic tensor is zero or not symmetric", candidate_id)
    smallest = float(np.linalg.eigvalsh(0.5 * (voigt + voigt.T)).min())
    if smallest <= 0:
        raise ElasticDataError(
            f"elastic tensor is not positive definite (smallest eigenvalue {smallest:.3g} GPa)",
            candidate_id,
        )
    return 0.5 * (voigt + voigt.T)


def christoffel_velocities(
    voigt_GPa: np.ndarray, density_kg_per_m3: float, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Acoustic phase velocities and polarisations for propagation directions.

    Parameters
    ----------
    voigt_GPa
        Stiffness, Voigt (6, 6), GPa.
    density_kg_per_m3
        Mass density, kg/m^3.
    directions
        Unit vectors, shape (N, 3).

    Returns
    -------
    velocities_m_per_s
        Shape (N, 3), ascending per direction.
    polarisations
        Shape (N, 3, 3); column ``m`` of entry ``n`` belongs to velocity ``[n, m]``.
    """
    tensor = voigt_to_tensor(voigt_GPa) * GPA_PA
    gamma = np.einsum("ijkl,nj,nl->nik", tensor, directions, directions)
    eigenvalues, vectors = np.linalg.eigh(gamma)
    return np.sqrt(eigenvalues / density_kg_per_m3), vectors


def lambda_tensor(
    voigt_GPa: np.ndarray, density_kg_per_m3: float, order: int = DEFAULT_LEBEDEV_ORDER
) -> np.ndarray:
    """Lambda (3, 3) in s^3/kg from the elastic tensor, by Lebedev quadrature.

    Parameters
    ----------
    voigt_GPa
        Stiffness, Voigt (6, 6), GPa (IEEE convention, as pymatgen and the Materials Project).
    density_kg_per_m3
        Mass density rho, kg/m^3.
    order
        Lebedev rule order (scipy.integrate.lebedev_rule).

    Returns
    -------
    np.ndarray
        Symmetric positive definite (3, 3), s^3/kg.
    """
    if not density_kg_per_m3 > 0:
        raise ElasticDataError(f"density must be positive, got {density_kg_per_m3}")
    directions, weights = _sphere_rule(order)
    tensor = voigt_to_tensor(check_stiffness(voigt_GPa)) * GPA_PA
    gamma = np.einsum("ijkl,nj,nl->nik", tensor, directions, directions)  # rho c^2, Pa
    eigenvalues, vectors = np.linalg.eigh(gamma)
    # sum_lambda e e^T / c^3 = rho^(3/2) Gamma^(-3/2)
    inverse_power = np.einsum("nim,nm,njm->nij", vectors, eigenvalues**-1.5, vectors)
    integral = np.einsum("n,nij->ij", weights, inverse_power) * density_kg_per_m3**1.5
    result = integral / (16.0 * np.pi**2 * density_kg_per_m3)
    return 0.5 * (result + result.T)


def sound_velocities_m_per_s(
    bulk_GPa: float, shear_GPa: float, density_kg_per_m3: float
) -> tuple[float, float]:
    """Longitudinal and transverse sound velocities (m/s) of an isotropic medium."""
    c_l = np.sqrt((bulk_GPa + 4.0 * shear_GPa / 3.0) * GPA_PA / density_kg_per_m3)
    c_t = np.sqrt(shear_GPa * GPA_PA / density_kg_per_m3)
    return float(c_l), float(c_t)


def lambda_isotropic(bulk_GPa: float, shear_GPa: float, density_kg_per_m3: float) -> float:
    """Closed-form lambda (s^3/kg) of an isotropic medium: (1/c_L^3 + 2/c_T^3)/(12 pi rho)."""
    if not (bulk_GPa > 0 and shear_GPa > 0 and density_kg_per_m3 > 0):
        raise ElasticDataError(
            f"moduli and density must be positive (K={bulk_GPa}, G={shear_GPa}, "
            f"rho={density_kg_per_m3})"
        )
    c_l, c_t = sound_velocities_m_per_s(bulk_GPa, shear_GPa, density_kg_per_m3)
    return (1.0 / c_l**3 + 2.0 / c_t**3) / (12.0 * np.pi * density_kg_per_m3)


def hill_moduli_GPa(voigt_GPa: np.ndarray) -> tuple[float, float]:
    """Voigt-Reuss-Hill bulk and shear moduli (GPa) of a stiffness matrix (GPa, Voigt 6x6).

    The same numbers as pymatgen's ``ElasticTensor.k_vrh`` / ``g_vrh`` (to the last bit or
    two; tests/screening/test_elastic.py compares them on random tensors), written out here
    because importing ``pymatgen.analysis.elasticity`` pulls in scipy.integrate and costs
    about 0.5 s in every screen process, a quarter of a one-candidate screen.
    """
    c = check_stiffness(voigt_GPa)
    s = np.linalg.inv(c)
    k_voigt = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9
    g_voigt = (
        c[0, 0]
        + c[1, 1]
        + c[2, 2]
        - (c[0, 1] + c[1, 2] + c[0, 2])
        + 3 * (c[3, 3] + c[4, 4] + c[5, 5])
    ) / 15
    k_reuss = 1 / (s[0, 0] + s[1, 1] + s[2, 2] + 2 * (s[0, 1] + s[1, 2] + s[0, 2]))
    g_reuss = 15 / (
        4 * (s[0, 0] + s[1, 1] + s[2, 2])
        - 4 * (s[0, 1] + s[1, 2] + s[0, 2])
        + 3 * (s[3, 3] + s[4, 4] + s[5, 5])
    )
    return float((k_voigt + k_reuss) / 2), float((g_voigt + g_reuss) / 2)


@dataclass(frozen=True)
class ElasticModel:
    """The elastic input of one candidate and the Lambda tensor it gives.

    Attributes
    ----------
    lambda_s3_per_kg
        Lambda (3, 3), s^3/kg.
    bulk_modulus_GPa, shear_modulus_GPa
        Isotropic (Hill) moduli used or implied.
    elastic_source
        Where the elastic data came from (database id, DOI, ``estimate:...``, ``chgnet``).
    is_tensor
        True when a full anisotropic tensor entered the Christoffel quadrature.
    density_kg_per_m3
        rho used.
    """

    lambda_s3_per_kg: np.ndarray
    bulk_modulus_GPa: float
    shear_modulus_GPa: float
    elastic_source: str
    is_tensor: bool
    density_kg_per_m3: float

    @property
    def sound_velocities_m_per_s(self) -> tuple[float, float]:
        """Isotropic (Hill) longitudinal and transverse velocities, m/s."""
        return sound_velocities_m_per_s(
            self.bulk_modulus_GPa, self.shear_modulus_GPa, self.density_kg_per_m3
        )


def elastic_model(
    density_kg_per_m3: float,
    *,
    voigt_GPa: np.ndarray | list[list[float]] | None = None,
    bulk_GPa: float | None = None,
    shear_GPa: float | None = None,
    source: str,
    candidate_id: str | None = None,
) -> ElasticModel:
    """Lambda from a full tensor (preferred) or from isotropic K, G.

    Raises
    ------
    ElasticDataError
        Neither a tensor nor both moduli, or unphysical values.
    """
    if voigt_GPa is not None:
        voigt = check_stiffness(np.asarray(voigt_GPa, dtype=float), candidate_id)
        k_hill, g_hill = hill_moduli_GPa(voigt)
        lam = lambda_tensor(voigt, density_kg_per_m3)
        return ElasticModel(lam, k_hill, g_hill, source, True, density_kg_per_m3)
    if bulk_GPa is None or shear_GPa is None:
        raise ElasticDataError("need an elastic tensor or both K and G", candidate_id)
    if not (np.isfinite(bulk_GPa) and np.isfinite(shear_GPa) and bulk_GPa > 0 and shear_GPa > 0):
        raise ElasticDataError(
            f"moduli must be finite and positive (K={bulk_GPa}, G={shear_GPa} GPa)", candidate_id
        )
    lam = lambda_isotropic(bulk_GPa, shear_GPa, density_kg_per_m3) * np.eye(3)
    return ElasticModel(lam, float(bulk_GPa), float(shear_GPa), source, False, density_kg_per_m3)


def debye_thermal_rms_A(
    mass_amu: np.ndarray | float,
    temperature_K: float,
    model: ElasticModel,
    atoms_per_A3: float,
) -> np.ndarray:
    """Root-mean-square thermal displacement per Cartesian component (A), Debye model.

    Classical (high-temperature) Debye limit: <u_x^2> = 3 k_B T / (m omega_D^2), with
    omega_D = v_m (6 pi^2 n)^(1/3), n the atomic number density and v_m the Debye mean of
    the isotropic (Hill) sound velocities, 3/v_m^3 = 1/c_L^3 + 2/c_T^3. Heavier ions vibrate
    less; a stiffer, denser crystal less again.

    Parameters
    ----------
    mass_amu
        Ion mass(es), amu.
    temperature_K
        Temperature, K.
    model
        The elastic model (moduli and density).
    atoms_per_A3
        Atomic number density, 1/A^3.
    """
    from iondrag.screening.units import AMU_KG, KB_J_PER_K

    c_l, c_t = model.sound_velocities_m_per_s
    v_mean = (3.0 / (1.0 / c_l**3 + 2.0 / c_t**3)) ** (1.0 / 3.0)
    omega_d = v_mean * (6.0 * np.pi**2 * atoms_per_A3 * 1e30) ** (1.0 / 3.0)
    mass = np.asarray(mass_amu, dtype=float) * AMU_KG
    return np.sqrt(3.0 * KB_J_PER_K * temperature_K / (mass * omega_d**2)) * 1e10


def point_force_stiffness_eV_per_A2(
    bulk_GPa: float, shear_GPa: float, radius_A: float | np.ndarray
) -> float | np.ndarray:
    """Return the static stiffness of an ion embedded in an elastic continuum, eV/A^2.

    A rigid sphere of radius a in an infinite isotropic solid, pushed by a force F, moves by
    u = F (5 - 6 nu) / (24 pi G (1 - nu) a) (Kelvin's point-force solution integrated over
    the sphere; Lur'e, Three-dimensional problems of the theory of elasticity, 1964), so

        k = F / u = 24 pi G a (1 - nu) / (5 - 6 nu),   nu = (3K - 2G) / (2 (3K + G)).

    In the incompressible limit (nu = 1/2) this is 6 pi G a, the elastic twin of Stokes'
    drag. It is the zero-frequency response of the same harmonic framework whose dynamic
    response gives the drag (theory section 1): the static polaron shift of U.

    Parameters
    ----------
    bulk_GPa, shear_GPa
        Isotropic (Hill) moduli, GPa.
    radius_A
        Radius of the ion, A.

    Returns
    -------
    float or numpy.ndarray
        k, eV/A^2.
    """
    if bulk_GPa <= 0 or shear_GPa <= 0:
        raise ValueError("bulk and shear moduli must be positive (GPa)")
    poisson = (3.0 * bulk_GPa - 2.0 * shear_GPa) / (2.0 * (3.0 * bulk_GPa + shear_GPa))
    shear_eV_per_A3 = shear_GPa / EV_PER_A3_TO_GPA
    return (
        24.0
        * np.pi
        * shear_eV_per_A3
        * np.asarray(radius_A)
        * (1.0 - poisson)
        / (5.0 - 6.0 * poisson)
    )
