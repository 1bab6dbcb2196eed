"""Fixtures of the source tests: a local Materials Project API serving real structures."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymatgen.core import Lattice, Structure


def _load_mp_server_module() -> Any:
    """Import mp_server.py beside this file, whatever the package layout of tests/."""
    name = "iondrag_tests_mp_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("mp_server.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mp_server_module = _load_mp_server_module()
MPTestServer = mp_server_module.MPTestServer

MP_TEST_KEY = "abcdefghijklmnopqrstuvwxyz012345"  # 32 letters and digits, like a real key


FCC = [(0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)]


def _shifted(shift: tuple[float, float, float]) -> list[list[float]]:
    return [[(a + b) % 1.0 for a, b in zip(site, shift, strict=True)] for site in FCC]


# Explicit sites (Structure.from_spacegroup takes seconds per call in this pymatgen).
def _rocksalt(cation: str, anion: str, a: float) -> Structure:
    coords = _shifted((0, 0, 0)) + _shifted((0.5, 0.5, 0.5))
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, coords)


def _antifluorite(cation: str, anion: str, a: float) -> Structure:
    coords = _shifted((0.25, 0.25, 0.25)) + _shifted((0.75, 0.75, 0.75)) + _shifted((0, 0, 0))
    return Structure(Lattice.cubic(a), [cation] * 8 + [anion] * 4, coords)


def _li3n() -> Structure:
    return Structure(
        Lattice.hexagonal(3.648, 3.875),
        ["N", "Li", "Li", "Li"],
        [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0]],
    )


def _cubic_voigt(c11: float, c12: float, c44: float) -> list[list[float]]:
    matrix = [[0.0] * 6 for _ in range(6)]
    for i in range(3):
        for j in range(3):
            matrix[i][j] = c11 if i == j else c12
        matrix[i + 3][i + 3] = c44
    return matrix


# material id, structure, energy above hull (eV/atom), band gap (eV), space group, theoretical
_MATERIALS = [
    ("mp-1138", _rocksalt("Li", "F", 4.03), 0.0, 8.7, ("Fm-3m", 225, "Cubic"), False),
    ("mp-1960", _antifluorite("Li", "O", 4.61), 0.0, 5.0, ("Fm-3m", 225, "Cubic"), False),
    ("mp-1153", _antifluorite("Li", "S", 5.71), 0.0, 3.4, ("Fm-3m", 225, "Cubic"), False),
    ("mp-2251", _li3n(), 0.021, 1.0, ("P6/mmm", 191, "Hexagonal"), True),
    ("mp-22905", _rocksalt("Li", "Cl", 5.13), 0.0, 6.3, ("Fm-3m", 225, "Cubic"), False),
    ("mp-22862", _rocksalt("Na", "Cl", 5.64), 0.0, 5.0, ("Fm-3m", 225, "Cubic"), False),
    ("mp-2352", _antifluorite("Na", "O", 5.55), 0.0, 1.9, ("Fm-3m", 225, "Cubic"), False),
]


def make_summary_docs() -> list[dict[str, Any]]:
    """Summary documents shaped like the Materials Project's (with more fields than asked)."""
    docs = []
    for material_id, structure, ehull, gap, (symbol, number, system), theoretical in _MATERIALS:
        composition = structure.composition
        docs.append(
            {
                "material_id": material_id,
                "formula_pretty": composition.reduced_formula,
                "structure": structure.as_dict(),
                "energy_above_hull": ehull,
                "band_gap": gap,
                "nsites": len(structure),
                "nelements": len(composition.elements),
                "elements": sorted(str(el) for el in composition.elements),
                "chemsys": "-".join(sorted(str(el) for el in composition.elements)),
                "symmetry": {
                    "crystal_system": system,
                    "symbol": symbol,
                    "number": number,
                    "point_group": "m-3m" if number == 225 else "6/mmm",
                    "symprec": 0.1,
                    "version": "2.5.0",
                },
                "is_stable": ehull == 0.0,
                "theoretical": theoretical,
                "deprecated": False,
                "density": structure.density,
                "volume": structure.volume,
                "builder_meta": {"emmet_version": "0.87.3"},
            }
        )
    return docs


def make_elasticity_docs() -> list[dict[str, Any]]:
    """Elasticity documents: two full tensors, one moduli-only, one unstable (negative G)."""
    lif = _cubic_voigt(112.0, 46.0, 63.0)
    li2o = _cubic_voigt(202.0, 22.0, 59.0)
    return [
        {
            "material_id": "mp-1138",
            "elastic_tensor": {"raw": lif, "ieee_format": lif},
            "bulk_modulus": {"voigt": 68.0, "reuss": 68.0, "vrh": 68.0},
            "shear_modulus": {"voigt": 51.0, "reuss": 47.0, "vrh": 49.0},
            "young_modulus": 120.0,
        },
        {
            "material_id": "mp-1960",
            "elastic_tensor": {"raw": li2o, "ieee_format": li2o},
            "bulk_modulus": {"voigt": 82.0, "reuss": 82.0, "vrh": 82.0},
            "shear_modulus": {"voigt": 71.0, "reuss": 68.0, "vrh": 69.5},
        },
        {
            "material_id": "mp-22862",
            "elastic_tensor": None,
            "bulk_modulus": {"voigt": 25.0, "reuss": 25.0, "vrh": 25.0},
            "shear_modulus": {"voigt": 15.0, "reuss": 14.0, "vrh": 14.5},
        },
        {
            "material_id": "mp-2251",
            "elastic_tensor": None,
            "bulk_modulus": {"voigt": 50.0, "reuss": 48.0, "vrh": 49.0},
            "shear_modulus": {"voigt": -3.0, "reuss": -5.0, "vrh": -4.0},
        },
    ]


@pytest.fixture
def mp_key() -> str:
    return MP_TEST_KEY


@pytest.fixture
def mp_server() -> Iterator[Any]:
    """A fresh local Materials Project API (new port, empty request log) per test."""
    server = MPTestServer(make_summary_docs(), make_elasticity_docs(), api_key=MP_TEST_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()
