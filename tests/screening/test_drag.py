import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from iondrag.screening.drag import (
    drag_floor_kg_per_s,
    drag_tensor,
    noise_covariance,
    regularised_drag,
)
from iondrag.screening.units import EV_PER_A2_TO_N_PER_M, KB_J_PER_K


@pytest.fixture
def sample():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(50, 3, 3))
    hessians = 0.5 * (a + np.swapaxes(a, 1, 2)) * 3.0  # symmetric, indefinite, eV/A^2
    b = rng.normal(size=(3, 3))
    lam = (b @ b.T + 0.5 * np.eye(3)) * 1e-16  # SPD, s^3/kg
    return hessians, lam


def test_symmetric_positive_semidefinite(sample):
    hessians, lam = sample
    gamma = drag_tensor(hessians, lam)
    np.testing.assert_allclose(gamma, np.swapaxes(gamma, 1, 2))
    assert np.all(np.linalg.eigvalsh(gamma) >= -1e-12 * np.abs(gamma).max())


def test_rotation_invariance(sample):
    hessians, lam = sample
    rotation = Rotation.from_rotvec([0.4, -1.2, 0.7]).as_matrix()
    gamma = drag_tensor(hessians, lam)
    rotated = drag_tensor(rotation @ hessians @ rotation.T, rotation @ lam @ rotation.T)
    np.testing.assert_allclose(rotated, rotation @ gamma @ rotation.T, rtol=1e-10, atol=1e-30)


def test_vanishes_where_hessian_vanishes(sample):
    _, lam = sample
    assert np.all(drag_tensor(np.zeros((3, 3)), lam) == 0)


def test_units_and_closed_form():
    # 1D: gamma = lambda (U'')^2 with U'' in N/m (theory.md section 5: 10.5419 N/m)
    curvature = 10.5419 / EV_PER_A2_TO_N_PER_M
    gamma = drag_tensor(np.diag([curvature, 0, 0]), 6.8008e-16 * np.eye(3))
    assert gamma[0, 0] == pytest.approx(6.8008e-16 * 10.5419**2, rel=1e-5)


def test_noise_covariance_is_fdt(sample):
    hessians, lam = sample
    gamma = drag_tensor(hessians, lam)
    np.testing.assert_allclose(noise_covariance(gamma, 300.0), 2 * KB_J_PER_K * 300.0 * gamma)
    with pytest.raises(ValueError):
        noise_covariance(gamma, -1.0)


def test_drag_does_not_depend_on_temperature_or_mass(sample):
    # gamma is a function of H and Lambda only: its signature has no T or M
    hessians, lam = sample
    np.testing.assert_array_equal(
        drag_tensor(hessians, lam), drag_tensor(hessians.copy(), lam.copy())
    )


def test_floor_regularises(sample):
    hessians, lam = sample
    gamma = drag_tensor(hessians, lam)
    floor = drag_floor_kg_per_s(gamma[0], 0.01)
    assert floor == pytest.approx(0.01 * np.trace(gamma[0]) / 3)
    regular = regularised_drag(np.zeros((3, 3)), floor)
    assert np.all(np.linalg.eigvalsh(regular) > 0)
