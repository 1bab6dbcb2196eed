import numpy as np
import pytest
from scipy.special import iv

from iondrag.screening.conductivity import nernst_einstein_S_per_m
from iondrag.screening.mobility import (
    damping_regime,
    homogenised_diffusion,
    kramers_factor,
    occupied_site_level_eV,
    path_mobility,
)
from iondrag.screening.units import EV_PER_A2_TO_N_PER_M, KB_J_PER_K, thermal_energy_eV

# theory.md section 5
E_B, A, T, LAMBDA = 0.30, 3.0, 300.0, 6.8008e-16
Q = 2 * np.pi / A


def cosine_case(n, gamma0=0.0):
    x = np.arange(n) / n * A
    u = E_B / 2 * (1 - np.cos(Q * x))
    upp = E_B / 2 * Q**2 * np.cos(Q * x) * EV_PER_A2_TO_N_PER_M  # N/m
    return x, u, LAMBDA * upp**2 + gamma0


def analytic_mobility(gamma0=0.0):
    kappa = E_B / (2 * thermal_energy_eV(T))
    i0, i2 = iv(0, kappa), iv(2, kappa)
    upp_max = E_B * Q**2 / 2 * EV_PER_A2_TO_N_PER_M
    return 1.0 / (i0 * (LAMBDA * upp_max**2 * (i0 + i2) / 2 + gamma0 * i0))


def test_path_formula_reproduces_reference_numbers():
    _, u, gamma = cosine_case(400)
    result = path_mobility(np.full(400, A / 400), u, gamma, A, T)
    assert result.mobility_s_per_kg == pytest.approx(4.9758e9, rel=5e-5)
    assert result.diffusion_m2_per_s == pytest.approx(2.0610e-11, rel=5e-5)
    sigma = nernst_einstein_S_per_m(result.diffusion_m2_per_s, 1.0e28, 1.0, T)
    assert sigma == pytest.approx(1.277, rel=5e-4)
    assert result.barrier_eV == pytest.approx(E_B)
    assert analytic_mobility() == pytest.approx(4.9758e9, rel=5e-5)


def test_path_formula_constant_gamma_is_lifson_jackson():
    _, u, _ = cosine_case(400)
    gamma = np.full(400, 3e-13)
    kappa = E_B / (2 * thermal_energy_eV(T))
    expected = 1.0 / (3e-13 * iv(0, kappa) ** 2)
    assert path_mobility(np.full(400, A / 400), u, gamma, A, T).mobility_s_per_kg == pytest.approx(
        expected, rel=1e-9
    )


def test_path_formula_uses_translation_not_arc_length():
    _, u, gamma = cosine_case(200)
    straight = path_mobility(np.full(200, A / 200), u, gamma, A, T)
    tortuous = path_mobility(np.full(200, 1.5 * A / 200), u, gamma, A, T)
    # same profile stretched 1.5x along the arc but the same net translation per period
    assert tortuous.mobility_s_per_kg == pytest.approx(straight.mobility_s_per_kg / 1.5**2)


def test_path_formula_survives_huge_barriers():
    x = np.linspace(0, A, 100, endpoint=False)
    u = 20.0 * (1 - np.cos(Q * x)) / 2
    result = path_mobility(np.full(100, A / 100), u, np.full(100, 1e-13), A, T)
    assert np.isfinite(result.log10_mobility_s_per_kg) and result.log10_mobility_s_per_kg < -300


def _slab(n, gamma0, transverse=4):
    _, u1, g1 = cosine_case(n, gamma0)
    u = np.broadcast_to(u1[:, None, None], (n, transverse, transverse)).copy()
    gamma = np.zeros((n, transverse, transverse, 3, 3))
    gamma[..., 0, 0] = (g1 - gamma0)[:, None, None]
    gamma += gamma0 * np.eye(3)
    steps = np.diag([A / n, 1.0, 1.0])
    return u, steps, gamma.reshape(-1, 3, 3)


@pytest.mark.parametrize("gamma0_fraction", [0.0, 0.3])
def test_homogenisation_converges_to_the_1d_analytic_result(gamma0_fraction):
    gamma_saddle = LAMBDA * (E_B * Q**2 / 2 * EV_PER_A2_TO_N_PER_M) ** 2
    gamma0 = gamma0_fraction * gamma_saddle + 1e-3 * gamma_saddle  # transverse needs a floor
    expected = KB_J_PER_K * T * analytic_mobility(gamma0)
    errors, transverse = [], []
    for n in (30, 60, 120):
        u, steps, gamma = _slab(n, gamma0)
        result = homogenised_diffusion(u, steps, np.arange(u.size), gamma, T)
        errors.append(abs(result.diffusion_m2_per_s[0, 0] / expected - 1))
        # transverse: no potential variation along y -> exactly k_B T / gamma0
        transverse.append(abs(result.diffusion_m2_per_s[1, 1] * gamma0 / (KB_J_PER_K * T) - 1))
    assert max(transverse) < 1e-9
    assert errors[-1] < 0.01
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3  # second order in h


def _loewner_leq(a, b, scale):
    return np.linalg.eigvalsh(b - a).min() >= -1e-9 * scale


def test_homogenised_tensor_lies_between_series_and_parallel_bounds():
    rng = np.random.default_rng(5)
    n = 16
    axis = np.arange(n) / n
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    u = 0.08 * (np.cos(2 * np.pi * x) + np.cos(2 * np.pi * (y + z)) + 0.5 * np.sin(2 * np.pi * z))
    a = rng.normal(size=(n**3, 3, 3))
    gamma = (a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(3)) * 1e-13
    steps = np.array([[0.25, 0.0, 0.0], [0.05, 0.3, 0.0], [0.02, -0.04, 0.28]])
    result = homogenised_diffusion(u, steps, np.arange(u.size), gamma, T)
    d = result.diffusion_m2_per_s
    scale = np.abs(result.parallel_bound_m2_per_s).max()
    np.testing.assert_allclose(d, d.T, atol=1e-12 * scale)
    assert _loewner_leq(result.series_bound_m2_per_s, d, scale)
    assert _loewner_leq(d, result.parallel_bound_m2_per_s, scale)
    assert np.linalg.eigvalsh(result.series_bound_m2_per_s).min() > 0


def test_separable_potential_gives_the_1d_value_along_each_axis():
    n = 24
    gamma0 = 5e-14
    axis = np.arange(n) / n * A
    u1 = E_B / 2 * (1 - np.cos(Q * axis))
    u = u1[:, None, None] + u1[None, :, None] + u1[None, None, :]
    gamma = np.broadcast_to(gamma0 * np.eye(3), (n**3, 3, 3))
    result = homogenised_diffusion(u, np.eye(3) * A / n, np.arange(u.size), gamma, T)
    kappa = E_B / (2 * thermal_energy_eV(T))
    lifson_jackson = KB_J_PER_K * T / (gamma0 * iv(0, kappa) ** 2)
    np.testing.assert_allclose(np.diag(result.diffusion_m2_per_s), lifson_jackson, rtol=0.1)
    np.testing.assert_allclose(
        np.diag(result.diffusion_m2_per_s), result.diffusion_m2_per_s[0, 0], rtol=1e-9
    )


def test_regularisation_sensitivity_is_small_and_matches_closed_form():
    """The drag floor acts as gamma_0 of theory.md section 5: the closed form gives its
    effect exactly, and the default (1 % of the saddle drag) changes D by about 1 %."""
    gamma_saddle = LAMBDA * (E_B * Q**2 / 2 * EV_PER_A2_TO_N_PER_M) ** 2
    values = {}
    for fraction in (0.0, 1e-3, 1e-2, 1e-1):
        _, u, gamma = cosine_case(400, fraction * gamma_saddle)
        values[fraction] = path_mobility(np.full(400, A / 400), u, gamma, A, T).mobility_s_per_kg
        assert values[fraction] == pytest.approx(
            analytic_mobility(fraction * gamma_saddle), rel=1e-6
        )
    assert abs(values[1e-2] / values[0.0] - 1) < 0.015
    assert abs(values[1e-3] / values[0.0] - 1) < 0.0015
    assert 0.05 < abs(values[1e-1] / values[0.0] - 1) < 0.15


def test_kramers_factor_limits():
    mass, curvature = 6.94, -0.66  # amu, eV/A^2 (the section 5 saddle)
    high, g_high, omega = kramers_factor(1e-9, curvature, mass)
    assert g_high > 1e3 and high == pytest.approx(1.0, rel=1e-3)
    low, g_low, _ = kramers_factor(1e-17, curvature, mass)
    assert g_low < 1e-3 and low == pytest.approx(g_low, rel=1e-3)
    assert omega == pytest.approx(3.0e13, rel=0.02)  # theory.md: omega_b = 3.0e13 rad/s
    # theory.md: gamma_max / M = 6.6e12 1/s -> g = 0.22
    gamma = 6.6e12 * mass * 1.66053906660e-27
    factor, g, _ = kramers_factor(gamma, curvature, mass)
    assert g == pytest.approx(0.22, abs=0.01)
    assert factor == pytest.approx(g * (np.sqrt(1 + g * g / 4) - g / 2))
    assert damping_regime(g) == "intermediate"
    assert damping_regime(5.0) == "overdamped" and damping_regime(0.01) == "underdamped"


def test_selling_decomposition_reconstructs_the_tensor():
    from iondrag.screening.mobility import selling_decomposition

    rng = np.random.default_rng(11)
    a = rng.normal(size=(200, 3, 3))
    metric = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(3)
    stretch = np.diag([1.0, 30.0, 0.2])
    metric[:20] = stretch @ metric[:20] @ stretch  # strongly anisotropic, still SPD
    weights, offsets = selling_decomposition(metric)
    assert np.all(weights >= 0)
    rebuilt = np.einsum("nk,nki,nkj->nij", weights, offsets, offsets)
    np.testing.assert_allclose(rebuilt, metric, rtol=1e-9, atol=1e-9 * np.abs(metric).max())


def test_iterative_solver_matches_direct(monkeypatch):
    import iondrag.screening.mobility as mobility

    u, steps, gamma = _slab(40, 2e-13)
    iterative = homogenised_diffusion(u, steps, np.arange(u.size), gamma, T).diffusion_m2_per_s
    monkeypatch.setattr(mobility, "CG_MAX_ITERATIONS", 1)  # forces the LU fallback
    direct = homogenised_diffusion(u, steps, np.arange(u.size), gamma, T).diffusion_m2_per_s
    np.testing.assert_allclose(iterative, direct, rtol=1e-6, atol=1e-9 * np.abs(direct).max())


def test_homogenisation_constant_tensor_on_an_oblique_grid():
    """Flat potential, constant anisotropic D on a skewed grid: D_eff = D exactly."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 3))
    gamma = a @ a.T * 1e-13 + 2e-13 * np.eye(3)
    steps = np.array([[0.21, 0.0, 0.0], [-0.105, 0.18, 0.0], [0.03, 0.05, 0.25]])
    u = np.zeros((8, 9, 7))
    result = homogenised_diffusion(
        u, steps, np.arange(u.size), np.broadcast_to(gamma, (u.size, 3, 3)), T
    )
    expected = KB_J_PER_K * T * np.linalg.inv(gamma)
    np.testing.assert_allclose(result.diffusion_m2_per_s, expected, rtol=1e-9)


def test_occupied_site_level_is_the_weighted_soft_maximum():
    kt = thermal_energy_eV(300.0)
    # one kind of site: its energy
    assert occupied_site_level_eV(np.array([0.2, 0.2]), np.array([1.0, 0.5]), 300.0, 1.0) == (
        pytest.approx(0.2)
    )
    # equal occupancies at 0 and 0.5 eV (>> kT): the upper site carries the flux, and half
    # the ions are there: 0.5 - kT ln 2
    level = occupied_site_level_eV(np.array([0.0, 0.5]), np.array([1.0, 1.0]), 300.0, 1.0)
    assert level == pytest.approx(0.5 - kt * np.log(2.0), abs=1e-9)
    # the rate identity it encodes: N exp(-(E_s - E_occ)/kT) = sum_i n_i exp(-(E_s - U_i)/kT)
    u, n, saddle = np.array([0.0, 0.1, 0.25]), np.array([0.8, 0.15, 0.05]), 0.6
    level = occupied_site_level_eV(u, n, 300.0, saddle)
    np.testing.assert_allclose(
        n.sum() * np.exp(-(saddle - level) / kt), np.sum(n * np.exp(-(saddle - u) / kt))
    )
    # sites above the saddle (or shared with a framework ion: absurd U) do not count
    assert occupied_site_level_eV(np.array([0.1, 1e12]), np.array([1.0, 1.0]), 300.0, 0.6) == (
        pytest.approx(0.1)
    )
    assert occupied_site_level_eV(np.array([2.0]), np.array([1.0]), 300.0, 0.6) is None


def test_site_phonon_energy_of_lithium_in_a_3_eV_per_A2_site():
    from iondrag.screening.mobility import site_phonon_energy_eV

    # by hand: omega = sqrt(3 * 16.0218 N/m / (6.941 * 1.66054e-27 kg)) = 6.44e13 rad/s,
    # hbar omega = 6.582e-16 eV s * omega = 0.0424 eV
    hessian = np.diag([2.0, 3.0, 4.0])  # mean 3 eV/A^2
    value = site_phonon_energy_eV(hessian, 6.941)
    assert value == pytest.approx(6.582e-16 * np.sqrt(3 * 16.0218 / (6.941 * 1.66054e-27)), 1e-3)
    # rotating the site does not change it; a saddle direction is left out
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert site_phonon_energy_eV(rotation @ hessian @ rotation.T, 6.941) == pytest.approx(value)
    assert site_phonon_energy_eV(np.diag([-1.0, 2.0, 4.0]), 6.941) == pytest.approx(value)
    assert site_phonon_energy_eV(-np.eye(3), 6.941) == 0.0


def test_meyer_neldel_compensates_the_prefactor_and_keeps_the_activation_energy():
    from iondrag.screening.mobility import ISOKINETIC_TEMPERATURE_K, meyer_neldel_temperature_K
    from iondrag.screening.units import thermal_energy_eV

    e_mn, barrier = 0.045, 0.7
    for t in (250.0, 300.0, 400.0):
        t_star = meyer_neldel_temperature_K(t, e_mn)
        # exp(-E/kT*) = exp(-E/kT) exp(E/E_MN)
        assert np.exp(-barrier / thermal_energy_eV(t_star)) == pytest.approx(
            np.exp(-barrier / thermal_energy_eV(t) + barrier / e_mn), rel=1e-9
        )
    # the Arrhenius slope of exp(-E/kT*) against 1/kT is still E
    t1, t2 = 300.0, 350.0
    slope = (
        -barrier / thermal_energy_eV(meyer_neldel_temperature_K(t1, e_mn))
        + barrier / thermal_energy_eV(meyer_neldel_temperature_K(t2, e_mn))
    ) / (1 / thermal_energy_eV(t2) - 1 / thermal_energy_eV(t1))
    assert slope == pytest.approx(barrier, rel=1e-9)
    # at and above the isokinetic temperature E_MN / k_B every barrier is compensated
    t_mn = e_mn / thermal_energy_eV(1.0)
    assert meyer_neldel_temperature_K(1.01 * t_mn, e_mn) == ISOKINETIC_TEMPERATURE_K
    assert meyer_neldel_temperature_K(300.0, 0.0) == 300.0  # no phonon scale: no compensation
