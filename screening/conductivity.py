"""Ionic conductivity from diffusion (theory.md section 4) and its Arrhenius fit.

Nernst-Einstein, no ion-ion correlation (Haven ratio 1):

    sigma_ab = n q^2 D_ab / (k_B T)       (S/m; n carriers per m^3, q = z e)

Units: SI inside; the public helpers return S/cm where the name says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iondrag.screening.units import E_CHARGE_C, KB_EV_PER_K, KB_J_PER_K


def nernst_einstein_S_per_m(
    diffusion_m2_per_s: np.ndarray | float,
    carrier_density_per_m3: float,
    charge_e: float,
    temperature_K: float,
) -> np.ndarray:
    """Conductivity sigma = n (z e)^2 D / (k_B T) in S/m (tensor or scalar like D)."""
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")
    q = charge_e * E_CHARGE_C
    return (
        carrier_density_per_m3
        * q
        * q
        * np.asarray(diffusion_m2_per_s)
        / (KB_J_PER_K * temperature_K)
    )


def isotropic_average(tensor: np.ndarray) -> float:
    """tr(T)/3: the polycrystal (orientation) average of a symmetric tensor."""
    return float(np.trace(np.asarray(tensor)) / 3.0)


def anisotropy_ratio(tensor: np.ndarray, floor_fraction: float = 1e-12) -> float:
    """Largest over smallest eigenvalue of a symmetric PSD tensor (>= 1).

    A direction that does not conduct would make the ratio infinite; eigenvalues are floored
    at ``floor_fraction`` times the largest so that the result stays finite (then it reads
    1/floor_fraction). NaN for a tensor that is not known (non-finite entries).
    """
    if not np.all(np.isfinite(tensor)):
        return float("nan")
    values = np.linalg.eigvalsh(0.5 * (tensor + tensor.T))
    top = float(values.max())
    if top <= 0:
        return 1.0
    return top / max(float(values.min()), floor_fraction * top)


@dataclass(frozen=True)
class ArrheniusFit:
    """sigma T = A exp(-E_a / k_B T), fitted by least squares in ln(sigma T) vs 1/T.

    Attributes
    ----------
    activation_energy_eV
        E_a.
    prefactor_S_K_per_cm
        A (S K / cm).
    r_squared
        Coefficient of determination of the linear fit.
    """

    activation_energy_eV: float
    prefactor_S_K_per_cm: float
    r_squared: float

    def sigma_S_per_cm(self, temperature_K: float) -> float:
        """Return the fitted conductivity at a temperature, S/cm."""
        return (
            self.prefactor_S_K_per_cm
            * np.exp(-self.activation_energy_eV / (KB_EV_PER_K * temperature_K))
            / temperature_K
        )


def arrhenius_fit(temperatures_K: np.ndarray, log10_sigma_S_per_cm: np.ndarray) -> ArrheniusFit:
    """Fit sigma T = A exp(-E_a/k_B T) to conductivities given as log10 (S/cm).

    Parameters
    ----------
    temperatures_K
        At least two distinct temperatures, K.
    log10_sigma_S_per_cm
        log10 of the conductivity at each temperature (log form keeps tiny values exact).
    """
    t = np.asarray(temperatures_K, dtype=float)
    y = np.asarray(log10_sigma_S_per_cm, dtype=float) * np.log(10.0) + np.log(t)
    if len(np.unique(t)) < 2 or not np.all(np.isfinite(y)):
        raise ValueError("need finite conductivities at two or more distinct temperatures")
    x = 1.0 / (KB_EV_PER_K * t)
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - fitted) ** 2)) / total if total > 0 else 1.0
    return ArrheniusFit(float(-slope), float(np.exp(intercept)), r2)


def bruggeman_polycrystal(principal: np.ndarray) -> float:
    """Effective conductivity of a random polycrystal of grains with these principal values.

    The self-consistent effective-medium (Bruggeman) average for randomly oriented
    spherical grains: s solves sum_i (sigma_i - s) / (sigma_i + 2 s) = 0 over the three
    principal values. It lies between the harmonic (series) and arithmetic (tr/3) means; a
    material that conducts in one direction only gives 0 (its channels are cut at grain
    boundaries), one that conducts in a plane gives half the in-plane value.

    Parameters
    ----------
    principal
        The three principal values (any conductivity unit; >= 0).

    Returns
    -------
    float
        The effective value, same unit.
    """
    values = np.clip(np.asarray(principal, dtype=float), 0.0, None)
    top = float(values.max())
    if top <= 0:
        return 0.0
    positive = int(np.sum(values > 0))
    if positive <= (3 - positive) / 2:  # f(0+) <= 0: no conducting path through grains
        return 0.0

    def residual(s: float) -> float:
        return float(np.sum((values - s) / (values + 2.0 * s)))

    low, high = top * 1e-300, top  # residual(low) > 0 >= residual(high)
    for _ in range(200):  # bisection in log space: values may span hundreds of decades
        mid = np.sqrt(low * high) if low > 0 else high / 2
        if residual(mid) > 0:
            low = mid
        else:
            high = mid
        if high / low < 1 + 1e-12:
            break
    return float(np.sqrt(low * high))


def geometric_polycrystal(principal: np.ndarray) -> float:
    """Geometric (log) average (sigma_1 sigma_2 sigma_3)^(1/3) of three principal values.

    Matheron's exact result for a two-dimensional isotropic medium whose log-conductivity
    is symmetrically distributed, and the usual log-average estimate of a random
    polycrystal; it lies between the harmonic and arithmetic means (a zero principal value
    gives 0). In log10 it is the mean of the three logs: a direction that opens only at
    E_3D costs a third of what it costs in the harmonic mean.

    Parameters
    ----------
    principal
        The three principal values (any conductivity unit; >= 0).

    Returns
    -------
    float
        The average, same unit.
    """
    values = np.asarray(principal, dtype=float)
    if np.any(values <= 0):
        return 0.0
    return float(np.exp(np.mean(np.log(values))))


def harmonic_polycrystal(principal: np.ndarray) -> float:
    """Series (Reuss-like) average 3 / sum(1/sigma_i) of three principal conductivities.

    The lower bound of any polycrystal average: grains in series, so the slowest direction
    limits transport (a zero principal value gives 0).
    """
    values = np.asarray(principal, dtype=float)
    if np.any(values <= 0):
        return 0.0
    return float(3.0 / np.sum(1.0 / values))


def arithmetic_polycrystal(principal: np.ndarray) -> float:
    """Parallel (Voigt-like) average tr/3 of three principal conductivities (upper bound)."""
    return float(np.mean(np.asarray(principal, dtype=float)))


#: ScreeningParameters.polycrystal_average -> the average of three principal values.
POLYCRYSTAL_AVERAGES: dict[str, Callable[[np.ndarray], float]] = {
    "harmonic": harmonic_polycrystal,
    "geometric": geometric_polycrystal,
    "bruggeman": bruggeman_polycrystal,
    "arithmetic": arithmetic_polycrystal,
}
