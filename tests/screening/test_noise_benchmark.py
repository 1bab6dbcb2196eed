"""The coordinate noise of benchmarks/coordinate_noise.py (issue 14)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "coordinate_noise.py"


@pytest.fixture(scope="module")
def module():
    spec = importlib.util.spec_from_file_location("coordinate_noise", SCRIPT)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture(scope="module")
def add_coordinate_noise(module):
    return module.add_coordinate_noise


@pytest.fixture(scope="module")
def structure() -> Structure:
    """600 sites in a triclinic cell, half of them disordered (Li 0.6 / La 0.3)."""
    rng = np.random.default_rng(1)
    n = 600
    species = [{"Li": 0.6, "La": 0.3} if i % 2 else {"O": 1.0} for i in range(n)]
    lattice = Lattice.from_parameters(9.0, 10.0, 11.0, 80.0, 95.0, 105.0)
    return Structure(lattice, species, rng.random((n, 3)))


def _wrapped_shift(new: Structure, old: Structure) -> np.ndarray:
    return (new.frac_coords - old.frac_coords + 0.5) % 1.0 - 0.5


def test_noise_has_the_requested_spread(add_coordinate_noise, structure: Structure) -> None:
    sigma = 0.01
    before = structure.frac_coords.copy()
    noisy = add_coordinate_noise(structure, sigma, np.random.default_rng(7))
    shift = _wrapped_shift(noisy, structure)
    assert abs(shift.std() / sigma - 1.0) < 0.10
    assert abs(shift.mean()) < 3 * sigma / np.sqrt(shift.size)
    assert np.all((noisy.frac_coords >= 0.0) & (noisy.frac_coords < 1.0))
    np.testing.assert_array_equal(structure.frac_coords, before)  # input untouched


def test_noise_keeps_lattice_species_and_occupancies(
    add_coordinate_noise, structure: Structure
) -> None:
    noisy = add_coordinate_noise(structure, 0.01, np.random.default_rng(7))
    np.testing.assert_allclose(noisy.lattice.matrix, structure.lattice.matrix)
    assert len(noisy) == len(structure)
    assert [s.species for s in noisy] == [s.species for s in structure]
    assert noisy.composition == structure.composition


def test_noise_is_determined_by_the_seed(add_coordinate_noise, structure: Structure) -> None:
    a = add_coordinate_noise(structure, 0.01, np.random.default_rng(3))
    b = add_coordinate_noise(structure, 0.01, np.random.default_rng(3))
    c = add_coordinate_noise(structure, 0.01, np.random.default_rng(4))
    np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
    assert not np.allclose(a.frac_coords, c.frac_coords)
    zero = add_coordinate_noise(structure, 0.0, np.random.default_rng(3))
    np.testing.assert_allclose(_wrapped_shift(zero, structure), 0.0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_symmetric_noise_keeps_the_space_group(module) -> None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    # P2_1/c with a general position (Li, half occupied) and an inversion centre (O at 0)
    structure = Structure.from_spacegroup(
        "P2_1/c",
        Lattice.monoclinic(5.0, 6.0, 7.0, 100.0),
        [{"Li": 0.5}, "O"],
        [[0.13, 0.27, 0.41], [0.0, 0.0, 0.0]],
    )
    noisy = module.add_symmetric_coordinate_noise(structure, 0.01, np.random.default_rng(5))
    assert SpacegroupAnalyzer(noisy, symprec=1e-3).get_space_group_number() == 14
    shift = _wrapped_shift(noisy, structure)
    centre = [i for i, site in enumerate(structure) if site.species_string == "O"]
    np.testing.assert_allclose(shift[centre], 0.0, atol=1e-12)  # special position kept
    assert np.abs(shift).max() > 1e-3  # the general position moved
    assert [s.species for s in noisy] == [s.species for s in structure]
