"""Fixtures of the science tests: small structures and the OBELiX folder (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

REPO_ROOT = Path(__file__).resolve().parents[2]


def obelix_dir() -> Path:
    """OBELiX training split: $IONDRAG_OBELIX_DIR, default <repo>/../shared/data/obelix-train."""
    return Path(
        os.environ.get("IONDRAG_OBELIX_DIR", REPO_ROOT.parent / "shared" / "data" / "obelix-train")
    )


@pytest.fixture
def obelix() -> Path:
    """The OBELiX folder, or a skip naming the path and the variable."""
    path = obelix_dir()
    if not (path / "cifs").is_dir():
        pytest.skip(f"OBELiX training data not found at {path} (set IONDRAG_OBELIX_DIR)")
    return path


def rocksalt(cation: str = "Li", anion: str = "F", a: float = 4.03) -> Structure:
    """Rock-salt structure (Fm-3m) with lattice constant a (A)."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def antifluorite(cation: str = "Li", anion: str = "O", a: float = 4.61) -> Structure:
    """Antifluorite structure (Fm-3m): anions on 4a, cations on 8c."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), [anion, cation], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )


@pytest.fixture
def lif() -> Structure:
    return rocksalt()


@pytest.fixture
def li2o() -> Structure:
    return antifluorite()
