"""Locate the project's data folder (embedded candidates, force-field tables).

In a source checkout (and an editable install) the data sit in ``data/`` beside the wings;
a wheel carries them as ``iondrag/data`` (``iondrag/data`` links to ``data/``), which is
again beside the folder of this module.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def data_dir() -> Path:
    """Return the folder that holds iondrag's shipped data."""
    folder = Path(__file__).resolve().parent.parent / "data"
    if folder.is_dir():
        return folder
    raise FileNotFoundError(f"iondrag's data folder {folder} is missing; reinstall the package")
