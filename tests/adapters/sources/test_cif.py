"""The CIF source: good, disordered and broken files, single files, the OBELiX folder."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from iondrag.adapters.sources import load_candidates
from iondrag.adapters.sources.cif import load_cif_candidate, load_cif_candidates
from iondrag.screening.errors import SourceError

REPO_ROOT = Path(__file__).resolve().parents[3]
OBELIX_ENV = "IONDRAG_OBELIX_DIR"

LIF_CIF = """data_LiF
_symmetry_space_group_name_H-M   'F m -3 m'
_symmetry_Int_Tables_number   225
_cell_length_a   4.03
_cell_length_b   4.03
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

# Li and Na share the origin (0.6/0.4); a second Li site is a quarter occupied.
DISORDERED_CIF = """data_LiNaCl_disordered
_symmetry_space_group_name_H-M   'P 1'
_symmetry_Int_Tables_number   1
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


def lif_structure() -> Structure:
    """Conventional rocksalt LiF (explicit sites: from_spacegroup is slow)."""
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    coords = np.vstack([fcc, (fcc + 0.5) % 1.0])
    return Structure(Lattice.cubic(4.03), ["Li"] * 4 + ["F"] * 4, coords)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# name -> (content, expected cause, words expected in the error)
BAD_FILES: dict[str, tuple[str | bytes, str, str]] = {
    "empty": ("", "parse_error", "empty file"),
    "binary": (bytes(range(256)) * 4, "parse_error", "binary"),
    "truncated": (LIF_CIF[: LIF_CIF.index("_cell_length_c")], "parse_error", "no atom sites"),
    "cut_in_loop": (LIF_CIF[: LIF_CIF.index("F1 F 0.5") + 8], "parse_error", "CIF"),
    "garbage": ("hello\nthis is not a CIF at all\n", "parse_error", "no CIF data block"),
    "no_atoms": (LIF_CIF[: LIF_CIF.rindex("loop_")], "parse_error", "no atom sites"),
    "nan_coordinates": (
        LIF_CIF.replace("Li1 Li 0 0 0 1", "Li1 Li nan 0 0 1"),
        "invalid_structure",
        "not finite",
    ),
    "flat_cell": (
        LIF_CIF.replace("_cell_length_c   4.03", "_cell_length_c   0"),
        "invalid_structure",
        "degenerate cell",
    ),
    "flat_angles": (
        LIF_CIF.replace("_cell_angle_gamma   90", "_cell_angle_gamma   180"),
        "invalid_structure",
        "degenerate cell",
    ),
    "over_occupied": (
        DISORDERED_CIF.replace("Na1 Na 0 0 0 0.4", "Na1 Na 0 0 0 0.9"),
        "parse_error",
        "Occupancy",
    ),
}


@pytest.fixture
def cif_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cifs"
    folder.mkdir()
    write(folder, "LiF.cif", LIF_CIF)
    write(folder, "disordered.cif", DISORDERED_CIF)
    for name, (content, _, _) in BAD_FILES.items():
        write(folder, f"{name}.cif", content)
    write(folder, "notes.txt", "not a CIF, ignored")
    (folder / "sub").mkdir()
    write(folder / "sub", "nested.cif", LIF_CIF)  # not loaded: not recursive
    return folder


def test_folder_with_good_and_bad_files(cif_folder: Path):
    candidates = load_cif_candidates(cif_folder)

    expected_ids = sorted(["LiF", "disordered", *BAD_FILES])
    assert [c.candidate_id for c in candidates] == sorted(expected_ids, key=lambda n: n + ".cif")
    by_id = {c.candidate_id: c for c in candidates}
    assert by_id["LiF"].ok and by_id["disordered"].ok
    for name, (_, cause, words) in BAD_FILES.items():
        candidate = by_id[name]
        assert candidate.structure is None and not candidate.ok, name
        assert candidate.load_error_cause == cause, (name, candidate.load_error)
        assert candidate.load_error.startswith(f"{name}.cif: "), candidate.load_error
        assert words in candidate.load_error, (name, candidate.load_error)
        assert "\n" not in candidate.load_error
        assert candidate.provenance["file"] == str((cif_folder / f"{name}.cif").resolve())
    assert all(c.source == "cif" and c.mobile_ion is None for c in candidates)


def test_structure_is_the_one_in_the_file(tmp_path: Path):
    structure = lif_structure()
    path = tmp_path / "LiF-conventional.cif"
    CifWriter(structure).write_file(path)

    candidate = load_cif_candidate(path)
    assert candidate.ok and candidate.candidate_id == "LiF-conventional"
    assert candidate.structure == structure
    assert len(candidate.structure) == 8
    assert candidate.formula == "LiF"


def test_partial_occupancies_are_kept(tmp_path: Path):
    candidate = load_cif_candidates(write(tmp_path, "mixed.cif", DISORDERED_CIF))[0]

    assert candidate.ok and not candidate.structure.is_ordered
    occupancies = sorted(
        tuple(sorted((str(sp), round(occ, 6)) for sp, occ in site.species.items()))
        for site in candidate.structure
    )
    assert occupancies == [
        (("Cl", 1.0),),
        (("Li", 0.25),),
        (("Li", 0.6), ("Na", 0.4)),
    ]
    composition = candidate.structure.composition
    assert composition["Li"] == pytest.approx(0.85)
    assert composition["Na"] == pytest.approx(0.4)
    assert candidate.structure.lattice.beta == pytest.approx(95.0)


def test_occupancy_slightly_above_one_is_rescaled(tmp_path: Path):
    text = DISORDERED_CIF.replace("Na1 Na 0 0 0 0.4", "Na1 Na 0 0 0 0.405")  # total 1.005
    candidate = load_cif_candidate(write(tmp_path, "rounded.cif", text))

    assert candidate.ok
    origin = next(site for site in candidate.structure if "Na" in site.species)
    assert sum(origin.species.values()) == pytest.approx(1.0)
    assert origin.species["Na"] / origin.species["Li"] == pytest.approx(0.405 / 0.6)


def test_single_file_and_provenance(tmp_path: Path):
    path = write(tmp_path, "LiF.cif", LIF_CIF)
    candidates = load_cif_candidates(path, ion="Li")

    assert len(candidates) == 1
    candidate = candidates[0]
    assert candidate.candidate_id == "LiF" and candidate.mobile_ion == "Li"
    prov = candidate.provenance
    assert prov["file"] == str(path.resolve()) and Path(prov["file"]).is_absolute()
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["retrieved_utc"].endswith("+00:00")
    assert prov["space_group"] == {"symbol": "F m -3 m", "number": 225, "from": "cif"}
    assert isinstance(prov["cif_warnings"], list)
    assert len(candidate.structure) == 8  # the four centring operations applied


def test_space_group_from_analysis_when_the_cif_has_none(tmp_path: Path):
    text = str(CifWriter(lif_structure()))
    dropped = ("_symmetry_space_group_name_H-M", "_symmetry_Int_Tables_number")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(dropped))
    assert "space_group" not in text and "Int_Tables" not in text
    candidate = load_cif_candidate(write(tmp_path, "nosym.cif", text))

    assert candidate.ok, candidate.load_error
    space_group = candidate.provenance["space_group"]
    assert space_group["number"] == 225 and space_group["symbol"] == "Fm-3m"
    assert space_group["from"].startswith("spglib")


def test_leading_block_without_atoms_is_skipped(tmp_path: Path):
    text = "data_global\n_journal_name_full 'Journal of Tests'\n_journal_year 2024\n\n" + LIF_CIF
    candidate = load_cif_candidate(write(tmp_path, "journal.cif", text))

    assert candidate.ok, candidate.load_error
    assert candidate.formula == "LiF" and len(candidate.structure) == 8
    assert candidate.provenance["space_group"]["number"] == 225


def test_parser_warnings_are_recorded_and_shortened(tmp_path: Path):
    # coordinates near 1/3 are rounded by pymatgen, which warns about it
    text = LIF_CIF.replace("F1 F 0.5 0.5 0.5 1", "F1 F 0.33333 0.66667 0.5 1")
    candidate = load_cif_candidate(write(tmp_path, "rounded.cif", text))

    assert candidate.ok
    warnings_kept = candidate.provenance["cif_warnings"]
    assert any("rounded" in message for message in warnings_kept), warnings_kept
    assert all(len(message) <= 200 and "\n" not in message for message in warnings_kept)


def test_ion_is_set_on_every_candidate(cif_folder: Path):
    candidates = load_cif_candidates(cif_folder, ion="Na")
    assert {c.mobile_ion for c in candidates} == {"Na"}
    with pytest.raises(SourceError, match="not an element"):
        load_cif_candidates(cif_folder, ion="Xy")


def test_missing_path_and_empty_folder(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError, match="does not exist") as info:
        load_cif_candidates(missing)
    assert str(missing) in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty, "readme.txt", "no CIFs here")
    with pytest.raises(SourceError, match=r"no \.cif files"):
        load_cif_candidates(empty)


def test_parallel_loading_gives_the_same_candidates(cif_folder: Path):
    serial = load_cif_candidates(cif_folder)
    parallel = load_cif_candidates(cif_folder, workers=2)
    assert [c.candidate_id for c in parallel] == [c.candidate_id for c in serial]
    for one, two in zip(serial, parallel, strict=True):
        assert one.load_error == two.load_error
        assert one.structure == two.structure


def test_dispatcher(cif_folder: Path):
    candidates = load_candidates("cif", cif_folder / "LiF.cif", ion="Li")
    assert [(c.candidate_id, c.mobile_ion, c.ok) for c in candidates] == [("LiF", "Li", True)]


# --- OBELiX (shared data, not part of the project) --------------------------------------------


def obelix_dir() -> Path:
    return Path(os.environ.get(OBELIX_ENV, REPO_ROOT.parent / "shared" / "data" / "obelix-train"))


@pytest.mark.slow
def test_obelix_cifs_all_load(record_property):
    folder = obelix_dir()
    if not (folder / "cifs").is_dir():
        pytest.skip(f"OBELiX data not found at {folder / 'cifs'} (set {OBELIX_ENV})")
    files = sorted((folder / "cifs").glob("*.cif"))

    start = time.perf_counter()
    candidates = load_cif_candidates(folder / "cifs")  # serial: the default path
    seconds = time.perf_counter() - start
    record_property("obelix_load_seconds", round(seconds, 2))
    record_property("obelix_loaded", sum(c.ok for c in candidates))

    failed = [(c.candidate_id, c.load_error) for c in candidates if not c.ok]
    assert not failed, failed
    assert [c.candidate_id for c in candidates] == [f.stem for f in files]
    assert len(candidates) == len(files) == 254
    assert any(not c.structure.is_ordered for c in candidates)  # disorder kept
    # the CIFs' space groups agree with the table's for (nearly) every entry
    table = folder / "train.csv"
    if table.is_file():
        import pandas as pd

        numbers = pd.read_csv(table).set_index("ID")["Space group #"]
        agree = sum(
            c.provenance["space_group"]["number"] == numbers.get(c.candidate_id) for c in candidates
        )
        assert agree >= 0.95 * len(candidates)
    assert seconds < 120, f"loading {len(files)} CIFs took {seconds:.1f} s"


@pytest.mark.parametrize(
    ("row", "value"),
    [
        ("Li1 Li 0 0 0 1", "nan"),
        ("Li1 Li 0 0 0 1", "-0.5"),
        ("Li1 Li 0 0 0 1", "0"),
        ("Li1 Li 0 0 0 1", "."),
        ("Li1 Li 0 0 0 1", "?"),
        ("Li1 Li 0 0 0 1", "1.5"),
        ("F1 F 0.5 0.5 0.5 1", "inf"),
    ],
)
def test_occupancy_that_is_not_in_zero_one_fails_naming_the_site(tmp_path: Path, row, value):
    """pymatgen silently drops such sites (LiF with a NaN Li scored 9 S/cm): refuse them."""
    text = LIF_CIF.replace(row, row[: row.rindex(" ")] + " " + value)
    assert text != LIF_CIF
    candidate = load_cif_candidate(write(tmp_path, "bad_occupancy.cif", text))
    assert not candidate.ok and candidate.load_error_cause == "parse_error"
    label = row.split()[0]
    assert f"site {label}" in candidate.load_error and repr(value) in candidate.load_error
    assert candidate.load_error.startswith("bad_occupancy.cif:")


def test_occupancies_summing_above_one_on_a_site_fail(tmp_path: Path):
    text = DISORDERED_CIF.replace("Na1 Na 0 0 0 0.4", "Na1 Na 0 0 0 0.43")  # total 1.03
    candidate = load_cif_candidate(write(tmp_path, "over.cif", text))
    assert not candidate.ok and candidate.load_error_cause == "parse_error"


def test_symlink_gets_the_name_the_user_sees(tmp_path: Path):
    target = write(tmp_path, "noext", LIF_CIF)
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "mylabel.cif").symlink_to(target)
    [candidate] = load_cif_candidates(folder)
    assert candidate.ok and candidate.candidate_id == "mylabel"
    assert candidate.provenance["file"] == str(folder / "mylabel.cif")
    assert candidate.provenance["target"] == str(target)


def test_duplicates_fail_one_candidate_each_not_the_folder(tmp_path: Path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    write(folder, "real.cif", LIF_CIF)
    (folder / "alias.cif").symlink_to(folder / "real.cif")
    write(folder, "a.cif", LIF_CIF)
    write(folder, "a.CIF", DISORDERED_CIF)
    candidates = {c.candidate_id: c for c in load_cif_candidates(folder)}
    # names sort by their bytes: a.CIF before a.cif keeps the id "a"
    assert sorted(candidates) == ["a", "a.cif", "alias", "real"]
    assert candidates["real"].ok and candidates["a"].ok
    alias, upper = candidates["alias"], candidates["a.cif"]
    assert not alias.ok and alias.load_error_cause == "source_error"
    assert alias.load_error.startswith("alias.cif:") and "real.cif" in alias.load_error
    assert not upper.ok and upper.load_error_cause == "source_error"
    assert upper.load_error.startswith("a.cif:") and "'a'" in upper.load_error


def test_name_that_is_not_utf8_gets_a_printable_unique_id(tmp_path: Path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"\xff\x1b[31m.cif"), "w") as handle:
        handle.write(LIF_CIF)
    write(folder, "LiF.cif", LIF_CIF)
    candidates = load_cif_candidates(folder)
    ids = sorted(c.candidate_id for c in candidates)
    assert ids == ["LiF", "\\xff\\x1b[31m"]
    for candidate in candidates:
        assert candidate.ok
        candidate.candidate_id.encode("utf-8")  # no surrogates: SQLite and JSON can store it
        candidate.provenance["file"].encode("utf-8")
