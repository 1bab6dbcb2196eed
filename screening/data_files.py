"""Locate the project's data folder (embedded candidates, force-field tables).

In a source checkout (and an editable install) the data sit in ``data/`` beside the
packages; a wheel carries them as ``screening/_data``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def data_dir() -> Path:
    """Return the folder that holds iondrag's shipped data."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data", package.parent / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"iondrag's data folder is missing (looked in {package / '_data'} and "
        f"{package.parent / 'data'}); reinstall the package"
    )
