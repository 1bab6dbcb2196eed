"""The drag (friction) tensor gamma(r) = H(r) Lambda H(r) and its random force.

theory.md section 2. H is the Hessian of the crystal potential (eV/A^2, converted to N/m),
Lambda the framework's elastic response (s^3/kg), so gamma is in kg/s. The random force of
the time-local Langevin equation has covariance <xi_a(t) xi_b(t')> = 2 k_B T gamma_ab
delta(t - t') (fluctuation-dissipation theorem), in N^2 s.

Where H vanishes (inflection points of U) gamma vanishes and the diffusion tensor
k_B T gamma^-1 diverges; transport formulas therefore use :func:`regularised_drag`, which
adds an isotropic floor (documented there).
"""

from __future__ import annotations

import numpy as np

from iondrag.screening.units import EV_PER_A2_TO_N_PER_M, KB_J_PER_K


def drag_tensor(hessian_eV_per_A2: np.ndarray, lambda_s3_per_kg: np.ndarray) -> np.ndarray:
    """Gamma = H Lambda H, kg/s.

    Parameters
    ----------
    hessian_eV_per_A2
        Hessian(s) of U, shape (3, 3) or (N, 3, 3), eV/A^2.
    lambda_s3_per_kg
        Lambda, shape (3, 3), s^3/kg.

    Returns
    -------
    np.ndarray
        gamma with the shape of ``hessian_eV_per_A2``, kg/s; symmetric positive
        semidefinite because Lambda is symmetric positive definite and H symmetric.
    """
    hessian = np.asarray(hessian_eV_per_A2, dtype=float) * EV_PER_A2_TO_N_PER_M
    gamma = hessian @ np.asarray(lambda_s3_per_kg, dtype=float) @ hessian
    return 0.5 * (gamma + np.swapaxes(gamma, -1, -2))


def noise_covariance(gamma_kg_per_s: np.ndarray, temperature_K: float) -> np.ndarray:
    """Random-force covariance 2 k_B T gamma (N^2 s, the coefficient of delta(t - t'))."""
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")
    return 2.0 * KB_J_PER_K * temperature_K * np.asarray(gamma_kg_per_s, dtype=float)


def drag_floor_kg_per_s(gamma_reference_kg_per_s: np.ndarray, fraction: float) -> float:
    """Isotropic friction floor: ``fraction`` x the mean eigenvalue of a reference drag.

    Parameters
    ----------
    gamma_reference_kg_per_s
        Drag tensor (3, 3) at the reference point, in the screen the saddle of the
        percolating path (the drag there dominates the mobility), kg/s.
    fraction
        Dimensionless size of the floor.
    """
    return float(fraction * np.trace(gamma_reference_kg_per_s) / 3.0)


def regularised_drag(gamma_kg_per_s: np.ndarray, floor_kg_per_s: float) -> np.ndarray:
    """Gamma + floor * 1 (kg/s).

    Regularisation: gamma = H Lambda H vanishes where U has an inflection and is singular
    along any direction in which H has a zero eigenvalue; the Markov drag from acoustic
    phonons is then not the only dissipation (anharmonic and optical channels remain), and
    the mobility integrals would be dominated by an artefact. An isotropic floor, a small
    fraction of the drag at the saddle of the percolating path, keeps gamma invertible; the
    screen records the floor, and tests check that results change little with it.
    """
    return np.asarray(gamma_kg_per_s, dtype=float) + floor_kg_per_s * np.eye(3)
