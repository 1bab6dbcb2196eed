"""Property-based tests (hypothesis): generated structures and corrupted CIF files.

(a) random small periodic structures (2-12 sites; Li/Na, O/S/F/Cl and framework cations;
sometimes partial occupancies or mixed sites, sometimes near-overlapping atoms), scored on a
coarse grid: the only outcomes are ``ok`` with every number finite, or ``failed`` with a
documented cause; never ``error`` (an unexpected exception), never NaN in the database.

(b) corrupted CIF bytes (truncation, byte flips, deleted or repeated lines, NaN/inf or
placeholder numbers, inserted bytes) loaded with ``load_cif_candidates``: never raises; each
file gives a candidate with a structure or with ``load_error`` and a documented cause.

Runs are derandomized (the same examples on every run, CI reproducible).
"""

from __future__ import annotations

import math
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pymatgen.core import DummySpecies, Lattice, Structure
from rel_helpers import (
    DOCUMENTED_CAUSES,
    FAST_PHYSICS,
    antifluorite,
    assert_strict_json,
    nonfinite_cells,
    nonfinite_floats,
    rocksalt,
    write_cif,
)

from iondrag.adapters import database
from iondrag.adapters.sources.cif import load_cif_candidate, load_cif_candidates
from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.pipeline import score_candidate
from iondrag.screening.text import printable

PARAMETERS = ScreeningParameters(**FAST_PHYSICS)

MOBILE = ("Li", "Na")
ANIONS = ("O", "S", "F", "Cl")
CATIONS = ("Mg", "Al", "Si", "P", "Ti", "Zr", "Zn", "Ga", "Ge", "La", "B", "Ca", "Nb")

COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


# --- strategies -------------------------------------------------------------------------------


@st.composite
def lattices(draw, n_sites: int) -> Lattice:
    lengths = [draw(st.floats(3.2, 10.0)) for _ in range(3)]
    angles = [draw(st.floats(65.0, 115.0)) for _ in range(3)]
    cosines = [math.cos(math.radians(a)) for a in angles]
    factor = 1 - sum(c * c for c in cosines) + 2 * cosines[0] * cosines[1] * cosines[2]
    assume(factor > 0.3)  # not nearly flat
    lattice = Lattice.from_parameters(*lengths, *angles)
    assume(lattice.volume >= 9.0 * n_sites)  # not too crowded for a crystal
    return lattice


@st.composite
def species_entries(draw, pool: tuple[str, ...]) -> str | dict[str, float]:
    """An element, a partly occupied site, or a mixed site."""
    kind = draw(st.sampled_from(["full", "full", "full", "partial", "mixed"]))
    element = draw(st.sampled_from(pool))
    if kind == "full":
        return element
    if kind == "partial":
        return {element: draw(st.sampled_from([0.25, 0.5, 0.75, 0.9]))}
    other = draw(st.sampled_from(pool))
    share = draw(st.sampled_from([0.3, 0.5, 0.7]))
    if other == element:
        return {element: share}
    return {element: share, other: round(1.0 - share, 3)}


@st.composite
def structures(draw) -> Structure:
    n = draw(st.integers(2, 12))
    lattice = draw(lattices(n))
    pools = [MOBILE, ANIONS] + [
        draw(st.sampled_from([MOBILE, ANIONS, ANIONS, CATIONS, CATIONS])) for _ in range(n - 2)
    ]
    species = [draw(species_entries(pool)) for pool in pools]
    # fractional coordinates on a 1/24 grid plus a little jitter (hypothesis would otherwise
    # put most atoms at 0 or 1)
    coords = [
        [draw(st.integers(0, 23)) / 24 + draw(st.floats(0.0, 0.02)) for _ in range(3)]
        for _ in range(n)
    ]
    if draw(st.integers(0, 3)) == 0 and n < 12:  # a near-overlapping copy of a site
        index = draw(st.integers(0, n - 1))
        shift = draw(st.floats(0.0, 0.04))
        species.append(draw(st.sampled_from([*ANIONS, *CATIONS])))
        coords.append([coords[index][0] + shift, coords[index][1], coords[index][2]])
    return Structure(lattice, species, coords)


@pytest.fixture(scope="module")
def property_db():
    with tempfile.TemporaryDirectory(prefix="iondrag-props-") as folder:
        path = Path(folder) / "props.sqlite"
        with closing(database.connect(path)) as conn:
            database.start_run(conn, "props", PARAMETERS, {"source": "hypothesis"})
        yield path


def _check_outcome(result, candidate_id: str, *file_names: str) -> None:
    assert result.status in ("ok", "failed"), (result.status, result.error)
    if result.status == "failed":
        assert result.error_cause in DOCUMENTED_CAUSES, result.error
        assert result.error and "\n" not in result.error
        heads = (candidate_id, f"{candidate_id}.cif", *file_names)
        assert any(result.error.startswith(f"{head}:") for head in heads), result.error
    else:
        assert result.error is None
        assert result.sigma_S_per_cm is None or result.sigma_S_per_cm >= 0
        assert result.dimensionality in (1, 2, 3)
    dumped = result.model_dump()
    assert nonfinite_floats(dumped) == [], nonfinite_floats(dumped)
    assert nonfinite_floats(result.ranking_row()) == []
    assert_strict_json(result.model_dump_json())


@pytest.mark.slow
@settings(max_examples=24, **COMMON)
@given(structure=structures())
def test_generated_structures_score_or_fail_with_a_documented_cause(
    structure: Structure, property_db: Path
) -> None:
    candidate = Candidate(candidate_id="generated", source="structure", structure=structure)
    result, _ = score_candidate(candidate, PARAMETERS)
    _check_outcome(result, "generated")
    with closing(database.connect(property_db)) as conn:
        database.insert_results(
            conn, "props", [result.model_copy(update={"candidate_id": "generated"})]
        )
    assert nonfinite_cells(property_db) == []


# --- corrupted CIF files ----------------------------------------------------------------------

SYMMETRY_CIF = """data_LiF
_symmetry_space_group_name_H-M   'F m -3 m'
_symmetry_Int_Tables_number   225
_cell_length_a   4.03
_cell_length_b   4.03(2)
_cell_length_c   4.03
_cell_angle_alpha   90
_cell_angle_beta   90
_cell_angle_gamma   90
loop_
 _symmetry_equiv_pos_as_xyz
 'x, y, z'
 'x, y+1/2, z+1/2'
 'x+1/2, y, z+1/2'
 'x+1/2, y+1/2, z'
 '-x, -y, -z'
loop_
 _atom_site_label
 _atom_site_type_symbol
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
 Li1 Li 0 0 0 1
 F1 F 0.5 0.5 0.5 1
"""

DISORDERED_CIF = """data_LiNaCl_disordered
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   4.5
_cell_length_b   4.6
_cell_length_c   4.7
_cell_angle_alpha   90
_cell_angle_beta   95
_cell_angle_gamma   90
loop_
 _symmetry_equiv_pos_as_xyz
 'x, y, z'
loop_
 _atom_site_label
 _atom_site_type_symbol
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
 Li1 Li 0 0 0 0.6
 Na1 Na 0 0 0 0.4
 Cl1 Cl 0.5 0.5 0.5 1.0
 Li2 Li 0.5 0 0 0.25
"""


def _base_cifs() -> list[bytes]:
    with tempfile.TemporaryDirectory() as folder:
        written = [
            write_cif(Path(folder) / f"{i}.cif", s).read_bytes()
            for i, s in enumerate([rocksalt("Na", "Cl", 5.64), antifluorite("Li", "O", 4.61)])
        ]
    return [SYMMETRY_CIF.encode(), DISORDERED_CIF.encode(), *written]


BASE_CIFS = _base_cifs()
BAD_NUMBERS = ("nan", "NaN", "inf", "-inf", "1e400", "-1e400", "?", ".", "0", "-0", "1e-300", "7(")


@st.composite
def mutations(draw, data: bytes) -> bytes:
    kind = draw(
        st.sampled_from(["truncate", "flip", "delete_lines", "bad_number", "repeat_line", "insert"])
    )
    if kind == "truncate" or not data:
        return data[: draw(st.integers(0, len(data)))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    lines = data.split(b"\n")
    if kind == "delete_lines":
        for _ in range(draw(st.integers(1, 4))):
            if lines:
                del lines[draw(st.integers(0, len(lines) - 1))]
        return b"\n".join(lines)
    if kind == "repeat_line":
        index = draw(st.integers(0, len(lines) - 1))
        lines.insert(index, lines[index])
        return b"\n".join(lines)
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
    # bad_number: replace a numeric token (cell parameter, coordinate or occupancy)
    tokens = [
        (i, j)
        for i, line in enumerate(lines)
        for j, token in enumerate(line.split())
        if token[:1].isdigit() or token[:1] in (b"-", b".")
    ]
    if not tokens:
        return data
    i, j = draw(st.sampled_from(tokens))
    parts = lines[i].split()
    parts[j] = draw(st.sampled_from(BAD_NUMBERS)).encode()
    lines[i] = b" " + b" ".join(parts)
    return b"\n".join(lines)


@st.composite
def corrupted_cifs(draw) -> bytes:
    data = draw(st.sampled_from(BASE_CIFS))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutations(data))
    return data


def _check_loaded(candidate: Candidate, name: str) -> None:
    assert candidate.candidate_id == name
    if candidate.ok:
        structure = candidate.structure
        assert structure is not None and len(structure) > 0
        assert np.all(np.isfinite(structure.lattice.matrix))
        assert np.all(np.isfinite(structure.frac_coords))
        assert structure.volume > 0
    else:
        assert candidate.structure is None
        assert candidate.load_error and "\n" not in candidate.load_error
        assert candidate.load_error.startswith(f"{name}.cif: "), candidate.load_error
        assert candidate.load_error_cause in DOCUMENTED_CAUSES, candidate.load_error


@settings(max_examples=60, **COMMON)
@given(data=corrupted_cifs())
def test_corrupted_cif_bytes_never_raise(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.cif"
        path.write_bytes(data)
        (candidate,) = load_cif_candidates(path)
    _check_loaded(candidate, "mutant")
    assert_strict_json(candidate.model_dump_json())


#: Found by hypothesis: a corrupted type symbol ("Li" -> "Ld") became a pymatgen DummySpecies,
#: loaded, and scoring then raised AttributeError (status "error"). Fixed in the CIF source
#: (unknown element symbols are invalid_structure); the Structure path is the xfail below.
UNKNOWN_SYMBOL_CIF = DISORDERED_CIF.replace(" Li1 Li 0 0 0 0.6", " Li1 Ld 0 0 0 0.6").encode()


@pytest.mark.slow
@settings(max_examples=16, **COMMON)
@example(data=UNKNOWN_SYMBOL_CIF)
@given(data=corrupted_cifs())
def test_corrupted_cifs_that_load_score_or_fail_cleanly(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.cif"
        path.write_bytes(data)
        candidate = load_cif_candidate(path)
    _check_loaded(candidate, "mutant")
    assume(candidate.structure is None or len(candidate.structure) <= 24)
    result, _ = score_candidate(candidate, PARAMETERS)
    _check_outcome(result, "mutant")


def test_unknown_element_symbol_in_a_cif_is_invalid_structure() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "typo.cif"
        path.write_bytes(UNKNOWN_SYMBOL_CIF)
        candidate = load_cif_candidate(path)
    assert candidate.load_error_cause == "invalid_structure"
    assert candidate.load_error == "typo.cif: unknown element symbol(s) Ld"


def test_structure_with_an_unknown_element_fails_with_a_documented_cause() -> None:
    structure = Structure(
        Lattice.cubic(4.5),
        [{"Li": 0.6, DummySpecies("X"): 0.4}, "Cl"],
        [[0, 0, 0], [0.5, 0.5, 0.5]],
    )
    candidate = Candidate(candidate_id="dummy", source="structure", structure=structure)
    result, _ = score_candidate(candidate, PARAMETERS)
    _check_outcome(result, "dummy")


# --- semantic CIF mutations in a folder with hostile names (issue 15) ---------------------------

_OCCUPANCY_VALUES = ("nan", "-0.5", "0", ".", "?", "1e-9", "0.5", "1.0", "1.005", "1.5", "x1")


@st.composite
def mutated_cif(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """A file name (any bytes but / and NUL), a CIF with mutated occupancies, coordinates,
    cell lengths or angles, and whether an occupancy is not a number in (0, 1.01]."""
    stem = draw(
        st.binary(min_size=1, max_size=10).filter(
            lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
        )
    )
    name = stem + draw(st.sampled_from([b".cif", b".CIF"]))
    text = draw(st.sampled_from([SYMMETRY_CIF, DISORDERED_CIF]))
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if len(line.split()) == 6 and line.startswith(" ")]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["occupancy", "coordinate", "length", "angle"]))
        if kind in ("occupancy", "coordinate"):
            row = draw(st.sampled_from(rows))
            parts = lines[row].split()
            if kind == "occupancy":
                parts[5] = draw(st.sampled_from(_OCCUPANCY_VALUES))
            else:
                column = draw(st.integers(2, 4))
                value = draw(st.floats(-1.5, 1.5, allow_nan=False))
                parts[column] = f"{value:.4f}"
            lines[row] = " " + " ".join(parts)
        else:
            keys = (
                ("_cell_length_a", "_cell_length_c")
                if kind == "length"
                else ("_cell_angle_alpha", "_cell_angle_gamma")
            )
            key = draw(st.sampled_from(keys))
            row = next(i for i, line in enumerate(lines) if line.startswith(key))
            low, high = (0.3, 12.0) if kind == "length" else (20.0, 175.0)
            lines[row] = f"{key}   {draw(st.floats(low, high)):.4f}"

    def unusable(value: str) -> bool:
        try:
            number = float(value)
        except ValueError:
            return True
        return not 0 < number <= 1.01

    bad = any(unusable(lines[row].split()[5]) for row in rows)
    return name, ("\n".join(lines) + "\n").encode(), bad


@settings(max_examples=12, **COMMON)
@given(files=st.lists(mutated_cif(), min_size=1, max_size=3))
def test_mutated_cifs_with_hostile_names_end_ok_or_failed_in_the_database(
    files: list[tuple[bytes, bytes, bool]], property_db: Path
) -> None:
    """Every candidate of a folder of mutated CIFs ends ``ok`` or ``failed`` with a cause,
    its row goes into the real SQLite database, and nothing takes long."""
    import os
    import time

    with tempfile.TemporaryDirectory() as folder:
        bad_occupancy = {}
        for name, content, bad in files:
            with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
                handle.write(content)
            bad_occupancy[name] = bad
        started = time.monotonic()
        try:
            candidates = load_cif_candidates(folder)
        except Exception as error:  # only an empty folder (every name a dot file) may raise
            assert "no .cif files" in str(error)
            return
        results = []
        for candidate in candidates:
            result, _ = score_candidate(candidate, PARAMETERS)
            file_name = Path(candidate.provenance["file"]).name
            _check_outcome(result, candidate.candidate_id, file_name)
            results.append(result)
        by_name = {
            Path(c.provenance["file"]).name: r for c, r in zip(candidates, results, strict=True)
        }
        for name, bad in bad_occupancy.items():
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            result = next((r for n, r in by_name.items() if n == printable(shown)), None)
            if bad and result is not None:  # a site NaN, negative, 0 or not a number: refused
                assert result.status == "failed", (name, result.status)
        assert time.monotonic() - started < 60 * len(candidates)
    ids = [result.candidate_id for result in results]
    assert len(set(ids)) == len(ids)
    for candidate_id in ids:
        candidate_id.encode("utf-8")  # storable
        assert not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in candidate_id)
    run_id = f"mutations-{abs(hash(tuple(files)))}"
    with closing(database.connect(property_db)) as conn:
        database.start_run(conn, run_id, PARAMETERS, {"source": run_id})
        database.insert_results(conn, run_id, results)
        stored = conn.execute(
            "SELECT candidate_id, status, error_cause FROM results WHERE run_id = ?", (run_id,)
        ).fetchall()
    assert sorted(row[0] for row in stored) == sorted(ids)
    for _, status, cause in stored:
        assert status == "ok" or (status == "failed" and cause in DOCUMENTED_CAUSES)
    assert nonfinite_cells(property_db) == []
