import numpy as np
import pytest
from scipy import ndimage

from iondrag.screening.paths import grid_percolating_path, resample, smooth
from iondrag.screening.percolation import (
    percolation_energies,
    periodic_components,
    site_connection_levels_eV,
)
from iondrag.screening.potential import PeriodicGrid


def _grid(n=24):
    axis = np.arange(n) / n
    return np.meshgrid(axis, axis, axis, indexing="ij")


def reference_dimensionality(mask: np.ndarray) -> int:
    """Independent check: label a 3x3x3 tiling (no periodic joins) and find, for each
    component of the central cell, which translations of a point stay in its cluster."""
    n = np.array(mask.shape)
    tiled = np.tile(mask, (3, 3, 3))
    labels, _ = ndimage.label(tiled, structure=np.ones((3, 3, 3)))
    best = 0
    cell_labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    for component in range(1, count + 1):
        point = np.argwhere(cell_labels == component)[0] + n  # in the central copy
        label = labels[tuple(point)]
        shifts = [
            np.array(t)
            for t in np.ndindex(3, 3, 3)
            if labels[tuple(point + (np.array(t) - 1) * n)] == label and any(np.array(t) != 1)
        ]
        if shifts:
            best = max(best, int(np.linalg.matrix_rank(np.array(shifts) - 1)))
    return best


def test_channel_along_a():
    x, y, z = _grid()
    u = np.cos(2 * np.pi * y) + np.cos(2 * np.pi * z) + 0.3 * np.cos(2 * np.pi * x)
    result = percolation_energies(u, tolerance_eV=1e-3)
    assert result.barriers_eV[1] == pytest.approx(0.6, abs=2e-3)
    assert result.barriers_eV[2] == pytest.approx(2.0, abs=2e-3)
    assert result.barriers_eV[3] == pytest.approx(2.0, abs=2e-3)
    assert result.dimensionality == 3


def test_energies_bracket_the_grid_threshold_and_the_channel_level_percolates():
    x, y, z = _grid()
    u = np.cos(2 * np.pi * y) + np.cos(2 * np.pi * z) + 0.3 * np.cos(2 * np.pi * x)
    result = percolation_energies(u, tolerance_eV=2e-3)
    e1 = result.energies_eV[1]
    # E_1 is the upper end of the bracket: {U < E_1} percolates, {U < E_1 - tol} does not
    assert periodic_components(u < e1).max_dimensionality >= 1
    assert periodic_components(u < e1 - result.tolerance_eV).max_dimensionality == 0
    assert result.channel_level_eV == pytest.approx(e1 + 2e-3)
    assert periodic_components(u < result.channel_level_eV).max_dimensionality == 1


def test_layers_percolate_in_two_dimensions():
    x, _y, z = _grid()
    u = np.cos(2 * np.pi * z) + 0.0 * x
    result = percolation_energies(u, ceiling_eV=1.5)
    assert result.barriers_eV[1] == pytest.approx(0.0, abs=2e-3)
    assert result.barriers_eV[2] == pytest.approx(0.0, abs=2e-3)
    assert not np.isfinite(result.energies_eV[3])  # 3D needs 2 eV > ceiling
    assert result.dimensionality == 2


def test_diagonal_channel_and_its_path():
    x, y, z = _grid()
    u = np.cos(2 * np.pi * (x - y)) + 2.0 * np.cos(2 * np.pi * z)
    result = percolation_energies(u, tolerance_eV=1e-3)
    assert result.barriers_eV[1] == pytest.approx(0.0, abs=2e-3)
    grid = PeriodicGrid(np.eye(3) * 6.0, u.shape)
    path = grid_percolating_path(u, grid, result.energies_eV[1] + 0.05, 300.0)
    assert tuple(np.abs(path.translation_cells)) == (1, 1, 0)
    assert path.translation_cells[0] == path.translation_cells[1]
    # the loop is closed: first point + translation continues it
    step = np.linalg.norm(path.closed_points_A[-1] - path.closed_points_A[-2])
    assert step < 0.5
    assert path.energy_eV.max() <= result.energies_eV[1] + 0.05


def test_isolated_pockets_do_not_percolate():
    x, y, z = _grid()
    r2 = (x - 0.5) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2
    u = -3.0 * np.exp(-r2 / 0.01)  # deep pockets, flat zero background 3 eV up
    result = percolation_energies(u, ceiling_eV=2.5)
    assert result.dimensionality == 0
    assert all(not np.isfinite(e) for e in result.energies_eV.values())
    assert periodic_components(u < -1.0).max_dimensionality == 0


@pytest.mark.parametrize("seed", range(6))
def test_dimensionality_matches_independent_reference(seed):
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(14, 14, 14)), 2.0, mode="wrap")
    for quantile in (0.3, 0.45, 0.55, 0.7):
        mask = noise < np.quantile(noise, quantile)
        assert periodic_components(mask).max_dimensionality == reference_dimensionality(mask)


def test_path_along_channel_profile():
    x, y, z = _grid(30)
    u = np.cos(2 * np.pi * y) + np.cos(2 * np.pi * z) + 0.3 * np.cos(2 * np.pi * x)
    grid = PeriodicGrid(np.diag([3.0, 5.0, 5.0]), u.shape)
    path = grid_percolating_path(u, grid, u.min() + 0.7, 300.0)
    assert tuple(np.abs(path.translation_cells)) == (1, 0, 0)
    assert path.energy_eV.max() - path.energy_eV.min() == pytest.approx(0.6, abs=0.01)
    assert path.length_A == pytest.approx(3.0, abs=1e-9)  # straight along a
    smoothed = smooth(resample(path, 0.05), 0.2)
    np.testing.assert_allclose(smoothed.translation_A, path.translation_A)
    assert smoothed.length_A == pytest.approx(3.0, rel=1e-3)


def test_site_connection_levels_find_the_bottleneck_of_each_pocket():
    n = 20
    u = np.full((n, n, n), 2.0)  # walls
    u[:, 0:2, 0:2] = 0.0  # a channel along a
    u[5:8, 10:13, 0:2] = 0.1  # pocket 1 ...
    u[6, 2:10, 0] = 0.5  # ... joined to the channel by a corridor at 0.5 eV
    u[15:17, 15:17, 15:17] = 0.1  # pocket 2: only over the 2 eV walls
    sites = np.array(
        [[0.5, 0.02, 0.02], [6 / n, 11 / n, 0.02], [15.5 / n, 15.5 / n, 15.5 / n]]
    )  # in the channel, in pocket 1, in pocket 2
    tol = 0.01
    levels = site_connection_levels_eV(u, sites, 0.001, 1.5, tolerance_eV=tol)
    assert levels[0] == pytest.approx(0.001)
    assert 0.5 <= levels[1] <= 0.5 + 2 * tol
    assert levels[2] == np.inf  # not below the 1.5 eV ceiling
    higher = site_connection_levels_eV(u, sites, 0.001, 3.0, tolerance_eV=tol)
    assert 2.0 <= higher[2] <= 2.0 + 2 * tol
    np.testing.assert_allclose(higher[:2], levels[:2], atol=2 * tol)


def test_path_runs_through_the_channel_not_a_deeper_pocket_beside_it():
    n = 24
    grid = PeriodicGrid(np.diag([4.8, 4.8, 4.8]), (n, n, n))
    x = np.arange(n) / n
    u = np.full((n, n, n), 3.0)  # walls
    u[:, 0:2, 0:2] = (0.45 - 0.15 * np.cos(2 * np.pi * x))[:, None, None]  # channel 0.3-0.6
    u[10:13, 8:11, 0:2] = 0.0  # a deeper pocket ...
    u[11, 2:8, 0] = 0.8  # ... whose only door to the channel is at 0.8 eV
    e1 = percolation_energies(u, 2.0, 0.001).energies_eV[1]
    assert e1 == pytest.approx(0.6, abs=0.002)  # the channel's own saddle
    level = e1 + 0.4  # a transport window that takes in the pocket and its door
    through_minimum = grid_percolating_path(u, grid, level, 300.0)
    assert through_minimum.energy_eV.min() == 0.0  # the loop was forced through the pocket
    assert through_minimum.energy_eV.max() == pytest.approx(0.8)
    channel = grid_percolating_path(u, grid, level, 300.0, channel_level_eV=e1 + 0.004)
    assert tuple(np.abs(channel.translation_cells)) == (1, 0, 0)
    assert channel.energy_eV.min() == pytest.approx(0.3, abs=0.01)
    assert channel.energy_eV.max() == pytest.approx(0.6, abs=0.01)
    assert channel.length_A == pytest.approx(4.8, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_round_off_does_not_choose_the_grid_loop(seed):
    """Symmetry-equivalent loops tie on the grid; noise at the level of round-off (what a
    rotated frame or another BLAS kernel gives) must not pick another one."""
    x, y, z = _grid(16)
    # four equivalent channels along z (x, y in {0.25, 0.75}); the minima tie exactly
    u = np.cos(4 * np.pi * x) + np.cos(4 * np.pi * y) + 0.3 * np.cos(2 * np.pi * z)
    grid = PeriodicGrid(np.diag([6.0, 6.0, 4.0]), u.shape)
    reference = grid_percolating_path(u, grid, u.min() + 0.7, 300.0)
    rng = np.random.default_rng(seed)
    noisy = u * (1.0 + 4e-16 * rng.standard_normal(u.shape))
    path = grid_percolating_path(noisy, grid, u.min() + 0.7, 300.0)
    np.testing.assert_array_equal(path.translation_cells, reference.translation_cells)
    np.testing.assert_allclose(path.points_A, reference.points_A, atol=1e-12)
