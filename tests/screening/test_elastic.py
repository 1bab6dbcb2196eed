import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from iondrag.screening.elastic import (
    check_stiffness,
    christoffel_velocities,
    elastic_model,
    hill_moduli_GPa,
    isotropic_voigt_GPa,
    lambda_isotropic,
    lambda_tensor,
    voigt_to_tensor,
)
from iondrag.screening.elastic_estimate import estimate_moduli_GPa
from iondrag.screening.errors import ElasticDataError
from iondrag.screening.structures import prepare_framework
from tests.screening.conftest import rocksalt

RHO = 2000.0
C_L, C_T = 6000.0, 3500.0
SHEAR = C_T**2 * RHO / 1e9
BULK = C_L**2 * RHO / 1e9 - 4.0 * SHEAR / 3.0


def test_isotropic_reference_value():
    # theory.md section 5: lambda = 6.8008e-16 s^3/kg
    assert lambda_isotropic(BULK, SHEAR, RHO) == pytest.approx(6.8008e-16, rel=1e-4)


def test_christoffel_quadrature_reproduces_isotropic_closed_form():
    tensor = lambda_tensor(isotropic_voigt_GPa(BULK, SHEAR), RHO)
    closed = lambda_isotropic(BULK, SHEAR, RHO)
    np.testing.assert_allclose(tensor, closed * np.eye(3), rtol=1e-6, atol=1e-6 * closed)


def _cubic(c11=200.0, c12=60.0, c44=30.0):
    voigt = np.zeros((6, 6))
    voigt[:3, :3] = c12
    voigt[np.arange(3), np.arange(3)] = c11
    voigt[np.arange(3, 6), np.arange(3, 6)] = c44
    return voigt


def test_cubic_crystal_gives_multiple_of_identity():
    tensor = lambda_tensor(_cubic(), 3000.0)
    np.testing.assert_allclose(tensor, tensor[0, 0] * np.eye(3), rtol=1e-9, atol=1e-30)
    # anisotropic cubic crystal (A = 2 c44 / (c11 - c12) != 1) is not the isotropic value
    k, g = hill_moduli_GPa(_cubic())
    assert tensor[0, 0] != pytest.approx(lambda_isotropic(k, g, 3000.0), rel=1e-3, abs=0)


def _rotate_voigt(voigt, rotation):
    full = voigt_to_tensor(voigt)
    rotated = np.einsum("ia,jb,kc,ld,abcd->ijkl", rotation, rotation, rotation, rotation, full)
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    return np.array([[rotated[i, j, k, m] for (k, m) in pairs] for (i, j) in pairs])


def test_lambda_rotates_with_the_crystal():
    rng = np.random.default_rng(0)
    # an orthorhombic-like stiffness (positive definite)
    a = rng.normal(size=(6, 6))
    voigt = a @ a.T * 8.0 + np.diag([150, 120, 100, 40, 35, 30])
    rotation = Rotation.from_euler("zyx", [0.3, -0.7, 1.1]).as_matrix()
    base = lambda_tensor(voigt, 2500.0)
    rotated = lambda_tensor(_rotate_voigt(voigt, rotation), 2500.0)
    np.testing.assert_allclose(
        rotated, rotation @ base @ rotation.T, rtol=1e-6, atol=1e-6 * base.max()
    )
    assert np.all(np.linalg.eigvalsh(base) > 0)


def test_christoffel_velocities_isotropic():
    directions = np.array([[1.0, 0, 0], [0, 1.0, 0], [1, 1, 1] / np.sqrt(3)])
    velocities, _ = christoffel_velocities(isotropic_voigt_GPa(BULK, SHEAR), RHO, directions)
    np.testing.assert_allclose(velocities, [[C_T, C_T, C_L]] * 3, rtol=1e-9)


def test_invalid_stiffness_rejected():
    with pytest.raises(ElasticDataError, match="positive definite"):
        check_stiffness(-_cubic())
    with pytest.raises(ElasticDataError, match="6x6"):
        check_stiffness(np.ones((3, 3)))
    with pytest.raises(ElasticDataError, match="positive"):
        elastic_model(3000.0, bulk_GPa=-1.0, shear_GPa=10.0, source="x")


def test_elastic_model_records_source():
    model = elastic_model(3000.0, voigt_GPa=_cubic(), source="Materials Project mp-1")
    assert model.is_tensor and model.elastic_source == "Materials Project mp-1"
    moduli = elastic_model(3000.0, bulk_GPa=40.0, shear_GPa=20.0, source="doi:10.1/x")
    assert not moduli.is_tensor
    np.testing.assert_allclose(
        moduli.lambda_s3_per_kg, lambda_isotropic(40.0, 20.0, 3000.0) * np.eye(3)
    )


def test_estimate_is_positive_and_recorded(lif):
    bulk, shear, source = estimate_moduli_GPa(prepare_framework(lif))
    assert 1.0 < shear < bulk < 500.0
    assert source.startswith("estimate:bond-stiffness")


def test_estimate_orders_stiff_and_soft_halides():
    # LiF is much stiffer than LiI (measured K: 67 vs 17 GPa); the estimate must agree
    k_lif = estimate_moduli_GPa(prepare_framework(rocksalt("Li", "F", 4.03)))[0]
    k_lii = estimate_moduli_GPa(prepare_framework(rocksalt("Li", "I", 6.00)))[0]
    assert k_lif > 2.0 * k_lii


def test_point_force_stiffness_limits():
    from iondrag.screening.elastic import point_force_stiffness_eV_per_A2
    from iondrag.screening.units import EV_PER_A3_TO_GPA

    shear, radius = 40.0, 1.3
    g = shear / EV_PER_A3_TO_GPA  # eV/A^3
    # incompressible medium (K >> G, nu -> 1/2): 6 pi G a, the elastic analogue of Stokes
    assert point_force_stiffness_eV_per_A2(1e9, shear, radius) == pytest.approx(
        6 * np.pi * g * radius, rel=1e-6
    )
    # nu = 0 (K = 2G/3): 24 pi G a / 5
    assert point_force_stiffness_eV_per_A2(2 * shear / 3, shear, radius) == pytest.approx(
        24 * np.pi * g * radius / 5, rel=1e-12
    )
    # linear in the radius; one ion of an oxide (G ~ 50 GPa, a ~ 1.3 A) is a few eV/A^2
    k = point_force_stiffness_eV_per_A2(80.0, 50.0, np.array([1.0, 2.0]))
    assert k[1] == pytest.approx(2 * k[0])
    assert 3.0 < point_force_stiffness_eV_per_A2(80.0, 50.0, 1.3) < 12.0
    with pytest.raises(ValueError):
        point_force_stiffness_eV_per_A2(80.0, -1.0, 1.0)


def test_stored_lebedev_rule_is_scipys_bit_for_bit():
    from scipy.integrate import lebedev_rule

    from iondrag.screening.elastic import DEFAULT_LEBEDEV_ORDER, lebedev_points

    points, weights = lebedev_points(DEFAULT_LEBEDEV_ORDER)
    expected_points, expected_weights = lebedev_rule(DEFAULT_LEBEDEV_ORDER)
    assert points.dtype == expected_points.dtype == np.float64
    assert np.array_equal(points, expected_points) and np.array_equal(weights, expected_weights)
    other_points, _ = lebedev_points(7)  # not stored: from scipy
    assert np.array_equal(other_points, lebedev_rule(7)[0])


def test_hill_moduli_agree_with_pymatgens_elastic_tensor() -> None:
    """An independent reference: pymatgen's ElasticTensor.k_vrh and g_vrh."""
    from pymatgen.analysis.elasticity.elastic import ElasticTensor

    rng = np.random.default_rng(17)
    for _ in range(50):
        a = rng.normal(size=(6, 6))
        voigt = 20.0 * a @ a.T + 30.0 * np.eye(6)  # positive definite, anisotropic, GPa
        reference = ElasticTensor.from_voigt(voigt)
        bulk, shear = hill_moduli_GPa(voigt)
        assert bulk == pytest.approx(float(reference.k_vrh), rel=1e-12)
        assert shear == pytest.approx(float(reference.g_vrh), rel=1e-12)
