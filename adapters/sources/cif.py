"""CIF source: one candidate per CIF file, disorder (partial occupancies) kept.

:func:`load_cif_candidates` reads a folder of ``*.cif`` files (sorted, not recursive) or one
file with pymatgen's :class:`~pymatgen.io.cif.CifParser`. A file that cannot be read becomes
a failed candidate (``structure=None``, ``load_error`` naming the file and the reason), never
an exception: one bad file does not stop the others.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import DummySpecies, Element, Structure

from iondrag.screening.candidates import Candidate, utc_now_iso
from iondrag.screening.errors import (
    InvalidStructureError,
    IondragError,
    SourceError,
    StructureParseError,
)
from iondrag.screening.text import printable

__all__ = [
    "OCCUPANCY_TOLERANCE",
    "SITE_TOLERANCE",
    "SYMPREC",
    "find_cif_files",
    "load_cif_candidate",
    "load_cif_candidates",
]

OCCUPANCY_TOLERANCE = 1.01
"""Site occupancies (one value, or the sum on one site) up to this are rescaled to 1: the
rounding of refined occupancies given to two decimals on a site two species share (0.67 +
0.34). Above it the file fails with ``parse_error`` naming the site. No OBELiX training CIF
comes within 1e-3 of 1 on any site."""

SITE_TOLERANCE = 1e-3
"""Fractional distance under which atoms listed separately share one (disordered) site."""

SYMPREC = 0.1
"""Symmetry tolerance (Å) of the space-group analysis when the CIF names no space group."""

MAX_WARNINGS = 10
"""Parser warnings kept per file in the provenance."""

_SYMBOL_KEYS = (
    "_space_group_name_h-m_alt",
    "_symmetry_space_group_name_h-m",
    "_space_group_name_h-m_ref",
)
_NUMBER_KEYS = ("_space_group_it_number", "_symmetry_int_tables_number")


def _one_line(text: Any, limit: int = 200) -> str:
    """Return ``text`` on one line, shortened to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def find_cif_files(path: str | Path) -> list[Path]:
    """Return the CIF files of ``path``: the file itself, or the folder's ``*.cif`` sorted.

    Raises
    ------
    SourceError
        The path does not exist, or the folder holds no ``.cif`` file.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise SourceError(f"CIF path does not exist: {printable_path(path)}")
    if not path.is_dir():
        if not path.is_file():  # a FIFO, socket or device would block or fail the read
            raise SourceError(
                f"CIF path is not a regular file or folder: {printable_path(path)} "
                "(give a .cif file or a folder of them)"
            )
        return [path]
    files = sorted(
        (entry for entry in path.iterdir() if entry.is_file() and entry.suffix.lower() == ".cif"),
        key=lambda entry: os.fsencode(entry.name),
    )
    if not files:
        raise SourceError(f"no .cif files in folder {printable_path(path)}")
    # the names the user sees: a symlink keeps its own name (its target is in the provenance)
    return files


def printable_path(path: str | Path) -> str:
    """Return ``path`` as printable text (:func:`iondrag.screening.text.printable` escapes)."""
    return printable(os.fsencode(str(path)).decode("utf-8", errors="backslashreplace"))


def candidate_id_for(path: str | Path) -> str:
    """Candidate id of a CIF file: its name without ``.cif``, as printable text.

    A name that is not valid UTF-8 (Linux allows any bytes but ``/``) keeps its other
    characters and shows each undecodable byte as a backslash-x escape; control characters
    (ESC, ...) are escaped likewise (:func:`iondrag.screening.text.printable`).
    """
    name = Path(path).name
    stem = name[:-4] if name.lower().endswith(".cif") else name
    return printable_path(stem) or "_"


def _block_value(block: dict[str, Any], keys: Iterable[str]) -> str | None:
    """Return the first present, non-placeholder value among ``keys`` (case-insensitive)."""
    lowered = {str(key).lower(): value for key, value in block.items()}
    for key in keys:
        value = lowered.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            continue
        text = str(value).strip().strip("'\"").strip()
        if text and text not in ("?", "."):
            return text
    return None


def _space_group(block: dict[str, Any], structure: Structure) -> dict[str, Any]:
    """Space group from the CIF block's own data, else from spglib; never raises."""
    try:
        symbol = _block_value(block, _SYMBOL_KEYS)
        number_text = _block_value(block, _NUMBER_KEYS)
        number = int(float(number_text)) if number_text else None
        if symbol or number:
            return {"symbol": symbol, "number": number, "from": "cif"}
    except Exception:  # a malformed entry: fall through to the analysis
        pass
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # spglib's error-handling notice
            analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        return {
            "symbol": analyzer.get_space_group_symbol(),
            "number": analyzer.get_space_group_number(),
            "from": f"spglib (symprec {SYMPREC} Å)",
        }
    except Exception as exc:
        return {"symbol": None, "number": None, "from": f"unknown: {_one_line(exc, 120)}"}


def _shorten_warnings(messages: Iterable[str]) -> list[str]:
    """Deduplicate and shorten parser warnings, keeping at most :data:`MAX_WARNINGS`."""
    unique = list(dict.fromkeys(_one_line(message) for message in messages if str(message)))
    if len(unique) > MAX_WARNINGS:
        extra = len(unique) - MAX_WARNINGS
        unique = [*unique[:MAX_WARNINGS], f"... and {extra} more"]
    return unique


def _check_structure(structure: Structure) -> None:
    """Raise InvalidStructureError for NaN or degenerate cells, unknown elements, no atoms."""
    if len(structure) == 0:
        raise InvalidStructureError("no atoms in the structure")
    # pymatgen turns a type symbol it does not know (a typo, a corrupted byte) into a
    # DummySpecies, which the science cannot score
    unknown = sorted(
        {sp.symbol for site in structure for sp in site.species if isinstance(sp, DummySpecies)}
    )
    if unknown:
        raise InvalidStructureError(f"unknown element symbol(s) {', '.join(unknown)}")
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(matrix)):
        raise InvalidStructureError("cell parameters are NaN or infinite")
    if not np.all(np.isfinite(structure.frac_coords)):
        raise InvalidStructureError("atomic coordinates are NaN or infinite")
    volume = abs(float(np.linalg.det(matrix)))
    if not math.isfinite(volume) or volume < 1e-3:
        raise InvalidStructureError(f"degenerate cell (volume {volume:.3g} Å^3)")


_CELL_LENGTHS = ("_cell_length_a", "_cell_length_b", "_cell_length_c")
_CELL_ANGLES = ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_FRACTIONAL = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
_CARTESIAN = ("_atom_site_cartn_x", "_atom_site_cartn_y", "_atom_site_cartn_z")


def _cif_number(value: Any) -> float | None:
    """Return a CIF number (``"4.03(2)"`` -> 4.03; ``"nan"`` -> nan), None for ``?``/``.``."""
    text = str(value).strip().strip("'\"")
    if text in ("?", "."):
        return None
    try:
        return float(re.sub(r"\(.*\)?$", "", text))
    except ValueError:
        return None  # not a number at all: left to the parser to report


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _check_occupancies(items: dict[str, Any]) -> None:
    """Every ``_atom_site_occupancy`` must be a number in (0, OCCUPANCY_TOLERANCE].

    pymatgen drops a site whose occupancy is NaN, negative, zero or a placeholder (``.``,
    ``?``) without a word, which turns LiF into a different crystal; refuse instead.

    Raises
    ------
    StructureParseError
        Naming the site (its ``_atom_site_label``) and the value.
    """
    if "_atom_site_occupancy" not in items:
        return  # no column: every site fully occupied
    values = _as_list(items["_atom_site_occupancy"])
    labels = _as_list(items.get("_atom_site_label", items.get("_atom_site_type_symbol", [])))
    for index, value in enumerate(values):
        number = _cif_number(value)
        if number is not None and math.isfinite(number) and 0 < number <= OCCUPANCY_TOLERANCE:
            continue
        label = labels[index] if index < len(labels) else f"#{index + 1}"
        raise StructureParseError(
            f"site {_one_line(label, 40)} has occupancy {_one_line(value, 40)!r}: an occupancy "
            f"must be a number in (0, 1] (up to {OCCUPANCY_TOLERANCE} for rounding)"
        )


def _check_block(block: dict[str, Any]) -> None:
    """Reject, before symmetry expansion, a CIF block without atoms or with NaN/degenerate data.

    Raises
    ------
    StructureParseError
        No atom-site coordinates in the block.
    InvalidStructureError
        A cell parameter or coordinate is NaN or infinite, or the cell is degenerate.
    """
    items = {str(key).lower(): value for key, value in block.items()}
    params = {}
    for key in (*_CELL_LENGTHS, *_CELL_ANGLES):
        value = _cif_number(items[key]) if key in items else None
        if value is not None and not math.isfinite(value):
            raise InvalidStructureError(f"cell parameter {key} is {value}")
        params[key] = value
    lengths = [params[key] for key in _CELL_LENGTHS]
    angles = [params[key] for key in _CELL_ANGLES]
    if any(length is not None and length <= 0 for length in lengths):
        raise InvalidStructureError(f"degenerate cell: lengths {lengths} Å")
    if None not in lengths and None not in angles:
        cosines = [math.cos(math.radians(angle)) for angle in angles]  # type: ignore[arg-type]
        ca, cb, cg = cosines
        factor = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
        if factor <= 1e-8:
            raise InvalidStructureError(f"degenerate cell: angles {angles} degrees")
    _check_occupancies(items)
    coordinate_keys = _FRACTIONAL if _FRACTIONAL[0] in items else _CARTESIAN
    if coordinate_keys[0] not in items:
        raise StructureParseError("no atom sites in the CIF (no _atom_site_fract_x loop)")
    for key in coordinate_keys:
        values = items.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            number = _cif_number(value)
            if number is not None and not math.isfinite(number):
                raise InvalidStructureError(f"atomic coordinate {key} is {value!r} (not finite)")


def _parse_reason(message: str) -> str:
    """Turn pymatgen's parse failure text into a short reason."""
    text = _one_line(message.replace("No structure parsed for section 1 in CIF.", ""))
    missing = re.fullmatch(r"'(_[^']+)'", text)
    if missing:
        return f"missing CIF item {missing.group(1)} (truncated or incomplete file?)"
    return text


def _structure_block(blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the first data block with atom sites (journal CIFs may start with others)."""
    for block in blocks.values():
        keys = {str(key).lower() for key in block}
        if _FRACTIONAL[0] in keys or _CARTESIAN[0] in keys:
            return block
    raise StructureParseError("no atom sites in the CIF (no _atom_site_fract_x loop)")


def _parse(text: str) -> tuple[Structure, dict[str, Any], list[str]]:
    """Parse CIF text; return the first structure, its data block and the parser warnings."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(
                text, occupancy_tolerance=OCCUPANCY_TOLERANCE, site_tolerance=SITE_TOLERANCE
            )
        except ZeroDivisionError as exc:  # pymatgen's CifBlock on a loop_ it cannot split
            raise StructureParseError(
                "not a readable CIF: malformed loop_ (names without matching values; truncated?)"
            ) from exc
        except Exception as exc:
            raise StructureParseError(f"not a readable CIF: {_one_line(exc)}") from exc
        blocks = parser.as_dict()
        if not blocks:
            raise StructureParseError("no CIF data block (no 'data_' line)")
        block = _structure_block(blocks)
        _check_block(block)
        try:
            structures = parser.parse_structures(primitive=False, check_occu=True, on_error="warn")
        except Exception as exc:
            details = [w for w in getattr(parser, "warnings", []) if w] or [str(exc)]
            reason = _parse_reason(details[-1])
            raise StructureParseError(f"no structure in the CIF: {reason}") from exc
    messages = [*getattr(parser, "warnings", []), *(str(w.message) for w in caught)]
    if len(structures) > 1:
        messages.append(f"{len(structures)} structures in the file; the first one is used")
    # parse_structures repeats all parser warnings in one summary warning: drop it
    messages = [m for m in messages if not m.startswith("Issues encountered while parsing CIF")]
    return structures[0], block, _shorten_warnings(messages)


def load_cif_candidate(path: str | Path, *, ion: str | None = None) -> Candidate:
    """Load one CIF file as a candidate; a failure gives a failed candidate, not an exception.

    Parameters
    ----------
    path
        The CIF file; the candidate id is its name without ``.cif``.
    ion
        Mobile-ion element symbol to set on the candidate.

    Returns
    -------
    Candidate
        ``source="cif"``, structure with partial occupancies as in the file, provenance
        ``file`` (absolute path), ``sha256``, ``retrieved_utc``, ``space_group`` and
        ``cif_warnings``. On failure ``structure=None``, ``load_error`` (one line naming the
        file) and ``load_error_cause`` (``"parse_error"`` or ``"invalid_structure"``).
    """
    path = Path(path).expanduser().absolute()
    candidate_id = candidate_id_for(path)
    provenance: dict[str, Any] = {"file": printable_path(path), "retrieved_utc": utc_now_iso()}
    if path.is_symlink():
        provenance["target"] = printable_path(path.resolve())
    structure: Structure | None = None
    error: IondragError | None = None
    try:
        data = path.read_bytes()
    except OSError as exc:
        data = b""
        error = StructureParseError(f"cannot read the file: {_one_line(exc)}")
    provenance["sha256"] = hashlib.sha256(data).hexdigest()
    if error is None:
        try:
            if not data.strip():
                raise StructureParseError("empty file")
            if b"\x00" in data:
                raise StructureParseError("binary file (NUL bytes), not a CIF")
            text = data.decode("utf-8", errors="replace")
            structure, block, cif_warnings = _parse(text)
            provenance["cif_warnings"] = cif_warnings
            _check_structure(structure)
            provenance["space_group"] = _space_group(block, structure)
        except IondragError as exc:
            error, structure = exc, None
        except Exception as exc:  # anything else pymatgen raises on a bad file
            error, structure = StructureParseError(f"not a readable CIF: {_one_line(exc)}"), None
    return Candidate(
        candidate_id=candidate_id,
        source="cif",
        structure=structure,
        mobile_ion=ion,
        provenance=provenance,
        load_error=None
        if error is None
        else f"{printable_path(path.name)}: {_one_line(error.detail, 300)}",
        load_error_cause=None if error is None else error.cause,
    )


#: ``parallel_map(function, items, workers)``: ``[function(item) for item in items]``,
#: computed by whoever owns the processes (the application's one pool).
ParallelMap = Callable[[Callable[[Any], Any], Sequence[Any], int], list[Any]]


def load_cif_candidates(
    path: str | Path,
    *,
    ion: str | None = None,
    workers: int = 1,
    parallel_map: ParallelMap | None = None,
) -> list[Candidate]:
    """Load a folder of CIF files (every ``*.cif``, sorted, not recursive) or one CIF file.

    Parameters
    ----------
    path
        Folder or file.
    ion
        Mobile-ion element symbol (e.g. ``"Na"``) set on every candidate; default None (the
        pipeline then uses each candidate's own alkali ion).
    workers
        Processes to parse with (pymatgen needs ~50 ms per typical file); default 1.
    parallel_map
        How to run the parsing over ``workers`` processes (the application passes its pool,
        :func:`iondrag.workflows.parallel.map_in_pool`); None: in this process.

    Returns
    -------
    list of Candidate
        One per file, in file-name order; files that cannot be read are failed candidates.

    Raises
    ------
    SourceError
        The path does not exist, the folder holds no CIF, or ``ion`` is not an element.
    """
    if ion is not None and not Element.is_valid_symbol(ion):
        raise SourceError(f"mobile ion {ion!r} is not an element symbol")
    if workers < 1:
        workers = os.cpu_count() or 1
    files = find_cif_files(path)
    load = partial(load_cif_candidate, ion=ion)
    if parallel_map is None:
        loaded = [load(file) for file in files]
    else:
        loaded = parallel_map(load, files, workers)
    return _fail_duplicates(files, loaded)


def _same_file_key(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def _fail_duplicates(files: list[Path], candidates: list[Candidate]) -> list[Candidate]:
    """Give every candidate a unique id; a file seen twice fails once, not the whole folder.

    Two names for one file (a symlink beside its target, two links to one file): the first
    regular file (else the first name) is screened, each other name becomes a failed
    candidate naming it. Two files with one id (``a.cif`` beside ``a.CIF``): the first keeps
    the id, the next one fails under its full file name.
    """
    first_of_file: dict[tuple[int, int], Path] = {}
    order = sorted(range(len(files)), key=lambda i: (files[i].is_symlink(), i))
    for i in order:
        key = _same_file_key(files[i])
        if key is not None:
            first_of_file.setdefault(key, files[i])
    taken: set[str] = set()
    out = []
    for file, candidate in zip(files, candidates, strict=True):
        key = _same_file_key(file)
        reason = None
        original = None if key is None else first_of_file[key]
        if original is not None and original != file:
            reason = (
                f"the same file as {printable_path(original.name)} (a symlink or hard link); "
                f"screened once, as {candidate_id_for(original)}"
            )
        candidate_id = candidate.candidate_id
        if candidate_id in taken:
            clash = candidate_id
            candidate_id = printable_path(file.name)
            suffix = 2
            while candidate_id in taken:
                candidate_id, suffix = f"{printable_path(file.name)}~{suffix}", suffix + 1
            reason = reason or (
                f"another file already has the candidate id {clash!r} (names that differ "
                "only in the case of .cif?); rename one of them"
            )
        taken.add(candidate_id)
        if reason is not None:
            candidate = candidate.model_copy(
                update={
                    "candidate_id": candidate_id,
                    "structure": None,
                    "formula": None,
                    "load_error": f"{printable_path(file.name)}: {reason}",
                    "load_error_cause": SourceError.cause,
                }
            )
        out.append(candidate)
    return out
