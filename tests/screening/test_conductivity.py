import numpy as np
import pytest

from iondrag.screening.conductivity import (
    anisotropy_ratio,
    arrhenius_fit,
    bruggeman_polycrystal,
    isotropic_average,
    nernst_einstein_S_per_m,
)
from iondrag.screening.units import KB_EV_PER_K


def test_nernst_einstein_reference():
    # theory.md section 5: D = 2.0610e-11 m^2/s, n = 1e28, z = 1, 300 K -> 1.277 S/m
    assert nernst_einstein_S_per_m(2.0610e-11, 1.0e28, 1.0, 300.0) == pytest.approx(1.277, rel=5e-4)


def test_tensor_helpers():
    tensor = np.diag([3.0, 1.0, 2.0])
    assert isotropic_average(tensor) == pytest.approx(2.0)
    assert anisotropy_ratio(tensor) == pytest.approx(3.0)
    assert anisotropy_ratio(np.diag([1.0, 0.0, 0.0])) == pytest.approx(1e12)


def test_arrhenius_fit_recovers_parameters():
    temperatures = np.array([300.0, 400.0, 500.0, 600.0])
    ea, prefactor = 0.35, 2.0e4
    sigma = prefactor / temperatures * np.exp(-ea / (KB_EV_PER_K * temperatures))
    fit = arrhenius_fit(temperatures, np.log10(sigma))
    assert fit.activation_energy_eV == pytest.approx(ea, rel=1e-9)
    assert fit.prefactor_S_K_per_cm == pytest.approx(prefactor, rel=1e-9)
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.sigma_S_per_cm(350.0) == pytest.approx(
        prefactor / 350 * np.exp(-ea / (KB_EV_PER_K * 350)), rel=1e-9
    )
    with pytest.raises(ValueError):
        arrhenius_fit(np.array([300.0, 300.0]), np.array([-3.0, -3.0]))


def test_bruggeman_limits():
    assert bruggeman_polycrystal(np.array([2.0, 2.0, 2.0])) == pytest.approx(2.0)
    assert bruggeman_polycrystal(np.array([1.0, 0.0, 0.0])) == 0.0  # 1D channels are cut
    assert bruggeman_polycrystal(np.array([1.0, 1.0, 0.0])) == pytest.approx(0.5)
    values = np.array([5.0, 1.0, 0.2])
    s = bruggeman_polycrystal(values)
    assert np.sum((values - s) / (values + 2 * s)) == pytest.approx(0.0, abs=1e-9)
    harmonic, arithmetic = 3 / np.sum(1 / values), values.mean()
    assert harmonic < s < arithmetic
    # many decades apart: still finite and solves the equation
    tiny = np.array([1e-3, 1e-3, 1e-40])
    assert bruggeman_polycrystal(tiny) == pytest.approx(5e-4, rel=1e-6)


def test_harmonic_polycrystal():
    from iondrag.screening.conductivity import harmonic_polycrystal

    assert harmonic_polycrystal(np.array([2.0, 2.0, 2.0])) == pytest.approx(2.0)
    assert harmonic_polycrystal(np.array([1.0, 1.0, 0.0])) == 0.0
    assert harmonic_polycrystal(np.array([1.0, 1.0, 1e-6])) == pytest.approx(3e-6, rel=1e-5)
    values = np.array([5.0, 1.0, 0.2])
    assert harmonic_polycrystal(values) <= bruggeman_polycrystal(values) <= values.mean()


def test_geometric_polycrystal_between_the_harmonic_and_arithmetic_means():
    from iondrag.screening.conductivity import geometric_polycrystal, harmonic_polycrystal

    assert geometric_polycrystal(np.array([2.0, 2.0, 2.0])) == pytest.approx(2.0)
    assert geometric_polycrystal(np.array([8.0, 1.0, 1.0])) == pytest.approx(2.0)
    assert geometric_polycrystal(np.array([1.0, 1.0, 0.0])) == 0.0
    # a plane conductor whose third direction is 60 decades lower loses 20 decades, not 60
    planar = np.array([1e-3, 1e-3, 1e-63])
    assert np.log10(geometric_polycrystal(planar)) == pytest.approx(-23.0)
    assert np.log10(harmonic_polycrystal(planar)) == pytest.approx(-63.0 + np.log10(3.0))
    rng = np.random.default_rng(3)
    for values in 10.0 ** rng.uniform(-12, 0, size=(50, 3)):
        g = geometric_polycrystal(values)
        assert harmonic_polycrystal(values) <= g * (1 + 1e-12)
        assert g <= values.mean() * (1 + 1e-12)
