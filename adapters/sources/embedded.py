"""The embedded default candidate set shipped in ``data/embedded/candidates.yaml``.

Every entry of the file is a published crystal structure (space group, lattice constants
and Wyckoff positions with occupancies) with its references, the measured room-temperature
ionic conductivity where one is known and elastic data where known. The schema is described
in ``data/embedded/README.md``. Nothing here needs a key or the network: ``iondrag screen``
runs on this set by default.

Structures are built with :meth:`pymatgen.core.Structure.from_spacegroup`; partially
occupied and mixed sites stay pymatgen disordered sites.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup

from iondrag.screening.candidates import Candidate, ElasticInput, utc_now_iso
from iondrag.screening.data_files import data_dir

#: Location of the data file inside the data folder.
EMBEDDED_FILE = Path("embedded") / "candidates.yaml"

#: Fields every entry must have (values may be null where the README says so).
REQUIRED_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "formula",
    "z",
    "mobile_ion",
    "family",
    "oxidation_states",
    "structure",
    "reference",
    "reference_doi",
    "sigma_S_per_cm",
    "sigma_doi",
    "elastic",
)

#: Mobile species the set carries.
MOBILE_IONS: tuple[str, ...] = ("Li", "Na")

# Two sites closer than this (fractional units) after applying the symmetry operations
# are one site (special positions generate duplicates).
_MERGE_TOL = 1e-3


def embedded_data_file() -> Path:
    """Return the path of the embedded candidate file.

    Returns
    -------
    pathlib.Path
        ``<data dir>/embedded/candidates.yaml``.
    """
    return data_dir() / EMBEDDED_FILE


@cache
def load_embedded_entries() -> tuple[dict[str, Any], ...]:
    """Read and return the raw entries of the embedded file (cached).

    Returns
    -------
    tuple of dict
        One mapping per entry, as written in the YAML file. Callers must not modify them;
        :func:`embedded_entry` returns a copy.

    Raises
    ------
    ValueError
        If the file does not hold a list of entries under ``candidates``.
    """
    path = embedded_data_file()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=loader)
    entries = document.get("candidates") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a mapping with a 'candidates' list")
    return tuple(entries)


def embedded_entry(candidate_id: str) -> dict[str, Any]:
    """Return a copy of the raw entry with id ``candidate_id``.

    Parameters
    ----------
    candidate_id
        Stable id of the entry.

    Returns
    -------
    dict
        Deep copy of the YAML entry.

    Raises
    ------
    KeyError
        If no entry has that id.
    """
    for entry in load_embedded_entries():
        if entry["id"] == candidate_id:
            return copy.deepcopy(entry)
    raise KeyError(f"no embedded candidate with id {candidate_id!r}")


def _lattice(spec: dict[str, Any]) -> Lattice:
    """Build the conventional lattice of an entry from its lattice constants.

    Missing constants follow from the crystal system: ``b`` and ``c`` default to ``a``,
    angles default to 90 degrees (give ``gamma: 120`` for hexagonal and trigonal cells).
    """
    a = float(spec["a"])
    b = float(spec.get("b", a))
    c = float(spec.get("c", a))
    alpha = float(spec.get("alpha", 90.0))
    beta = float(spec.get("beta", 90.0))
    gamma = float(spec.get("gamma", 90.0))
    return Lattice.from_parameters(a, b, c, alpha, beta, gamma)


def build_structure(entry: dict[str, Any]) -> Structure:
    """Build the structure of one raw entry.

    Parameters
    ----------
    entry
        A raw entry with a ``structure`` mapping: either ``spacegroup`` (a setting symbol
        of pymatgen's table, e.g. ``"Fd-3m:2"`` for origin choice 2 or ``"R-3m:H"`` for
        hexagonal axes), ``lattice`` (a, b, c, alpha, beta, gamma) and ``sites`` (each
        with ``species`` mapping element to occupancy and fractional ``xyz``), or
        ``document``, a pymatgen Structure dict.

    Returns
    -------
    pymatgen.core.Structure
        The conventional cell, with disordered sites where occupancies are partial. Each
        site carries its Wyckoff ``label`` as a site property.

    Notes
    -----
    The result is that of :meth:`pymatgen.core.Structure.from_spacegroup` with the same
    symmetry operations; the orbits are generated here with numpy because building
    pymatgen's ``SpaceGroup`` for a cubic group takes over a second.
    """
    spec = entry["structure"]
    if "document" in spec:
        return Structure.from_dict(spec["document"])
    rotations, translations = symmetry_operations(str(spec["spacegroup"]))
    species: list[dict[str, float]] = []
    coords: list[np.ndarray] = []
    labels: list[str] = []
    for site in spec["sites"]:
        occupancy = {str(el): float(occ) for el, occ in site["species"].items()}
        xyz = np.array([_to_float(value) for value in site["xyz"]], dtype=float)
        orbit = _orbit(rotations, translations, xyz)
        species.extend([occupancy] * len(orbit))
        coords.extend(orbit)
        labels.extend([str(site.get("label", ""))] * len(orbit))
    return Structure(
        _lattice(spec["lattice"]),
        species,
        np.array(coords),
        labels=labels,
    )


def _normalise_symbol(symbol: str) -> str:
    """Strip spaces and underscores from a space-group symbol (``P4_2/n m c`` -> P42/nmc)."""
    return symbol.replace(" ", "").replace("_", "")


@cache
def symmetry_operations(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the symmetry operations of a space-group setting.

    Parameters
    ----------
    symbol
        Universal Hermann-Mauguin symbol of the setting as in pymatgen's table
        (``symm_ops.json``), spaces and underscores ignored, e.g. ``"P42/nmc:2"``,
        ``"R-3c:H"``, ``"P121/c1"``, ``"Fm-3m"``.

    Returns
    -------
    rotations : numpy.ndarray
        Shape (n, 3, 3), acting on fractional coordinates.
    translations : numpy.ndarray
        Shape (n, 3).

    Raises
    ------
    ValueError
        If the symbol names no setting, or names more than one (give the setting, e.g.
        ``:1``/``:2`` for the origin choice or ``:H``/``:R`` for rhombohedral groups).
    """
    wanted = _normalise_symbol(symbol)
    matches = [
        entry
        for entry in SpaceGroup.SYMM_OPS
        if _normalise_symbol(entry["universal_h_m"]) == wanted
    ]
    if not matches:
        matches = [
            entry
            for entry in SpaceGroup.SYMM_OPS
            if _normalise_symbol(entry["hermann_mauguin"]) == wanted
        ]
    settings = {entry["universal_h_m"] for entry in matches}
    if len(settings) != 1:
        found = ", ".join(sorted(settings)) or "none"
        raise ValueError(f"space group {symbol!r} names {len(settings)} settings ({found})")
    operations = [_parse_xyz(op) for op in matches[0]["symops"]]
    rotations = np.array([rotation for rotation, _ in operations])
    translations = np.array([translation for _, translation in operations])
    return rotations, translations


_TERM = re.compile(r"([+-]?)(\d*\.?\d*(?:/\d+)?)\*?([xyz]?)")


def _parse_xyz(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one operation such as ``-y+1/2,x,z+3/4`` into a rotation and a translation."""
    rotation = np.zeros((3, 3))
    translation = np.zeros(3)
    for row, component in enumerate(text.replace(" ", "").lower().split(",")):
        for sign, number, axis in _TERM.findall(component):
            if not number and not axis:
                continue
            value = _to_float(number) if number else 1.0
            value = -value if sign == "-" else value
            if axis:
                rotation[row, "xyz".index(axis)] += value
            else:
                translation[row] += value
    return rotation, translation


def _orbit(rotations: np.ndarray, translations: np.ndarray, xyz: np.ndarray) -> list[np.ndarray]:
    """Return the distinct images of ``xyz`` under the operations, wrapped into [0, 1)."""
    images = np.einsum("nij,j->ni", rotations, xyz) + translations
    images = images - np.floor(images)
    images[images > 1.0 - _MERGE_TOL] = 0.0
    kept: list[np.ndarray] = []
    for image in images:
        if all(
            np.abs(delta - np.round(delta)).max() > _MERGE_TOL
            for delta in (image - k for k in kept)
        ):
            kept.append(image)
    return kept


def _to_float(value: Any) -> float:
    """Turn a coordinate given as number or fraction string (``"1/3"``) into a float."""
    if isinstance(value, str) and "/" in value:
        numerator, denominator = value.split("/")
        return float(numerator) / float(denominator)
    return float(value)


@cache
def _built_structure(candidate_id: str) -> Structure:
    """Build (once) the structure of entry ``candidate_id``."""
    return build_structure(embedded_entry(candidate_id))


def embedded_structure(candidate_id: str) -> Structure:
    """Return a fresh copy of the structure of entry ``candidate_id``.

    Parameters
    ----------
    candidate_id
        Stable id of the entry.

    Returns
    -------
    pymatgen.core.Structure
        A copy: callers may modify it.
    """
    return _built_structure(candidate_id).copy()


def _elastic(entry: dict[str, Any]) -> ElasticInput | None:
    """Return the elastic input of an entry, or None when the entry has none."""
    data = entry.get("elastic")
    if not data:
        return None
    return ElasticInput(
        voigt_GPa=data.get("voigt_GPa"),
        bulk_modulus_GPa=data.get("bulk_modulus_GPa"),
        shear_modulus_GPa=data.get("shear_modulus_GPa"),
        source=str(data["source"]),
    )


def _candidate(entry: dict[str, Any], retrieved: str, data_file: str) -> Candidate:
    """Turn one raw entry into a :class:`Candidate`."""
    candidate_id = str(entry["id"])
    structure = embedded_structure(candidate_id)
    provenance: dict[str, Any] = {
        "reference": entry["reference"],
        "reference_doi": entry["reference_doi"],
        "sigma_doi": entry.get("sigma_doi"),
        "family": entry["family"],
        "name": entry["name"],
        "published_formula": entry["formula"],
        "z": entry["z"],
        "space_group": str(entry["structure"].get("spacegroup", "")),
        "retrieved_utc": retrieved,
        "data_file": data_file,
    }
    return Candidate(
        candidate_id=candidate_id,
        source="embedded",
        structure=structure,
        formula=Composition(entry["formula"]).reduced_formula,
        mobile_ion=str(entry["mobile_ion"]),
        elastic=_elastic(entry),
        experimental_sigma_S_per_cm=entry.get("sigma_S_per_cm"),
        provenance=provenance,
    )


def load_embedded_candidates(
    ion: str | None = None, ids: Sequence[str] | None = None
) -> list[Candidate]:
    """Return the embedded default candidate set.

    Parameters
    ----------
    ion
        Keep only candidates whose mobile ion is this element (``"Li"`` or ``"Na"``);
        None keeps all.
    ids
        Keep only these candidate ids (file order); None keeps all.

    Returns
    -------
    list of Candidate
        One candidate per entry of ``data/embedded/candidates.yaml``, in file order, with
        ``source="embedded"``.

    Raises
    ------
    ValueError
        If ``ion`` is not one of the mobile ions of the set, or an id is not in the set.
    """
    if ion is not None and ion not in MOBILE_IONS:
        raise ValueError(f"ion must be one of {MOBILE_IONS} or None, got {ion!r}")
    entries = load_embedded_entries()
    if ids is not None:
        known = {entry["id"] for entry in entries}
        unknown = sorted(set(ids) - known)
        if unknown:
            raise ValueError(f"unknown embedded candidate ids: {', '.join(unknown[:10])}")
        entries = tuple(entry for entry in entries if entry["id"] in set(ids))
    retrieved = utc_now_iso()
    data_file = str(embedded_data_file())
    return [
        _candidate(entry, retrieved, data_file)
        for entry in entries
        if ion is None or entry["mobile_ion"] == ion
    ]
