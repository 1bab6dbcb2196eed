"""Checks of every entry of the embedded default candidate set (data/embedded/candidates.yaml)."""

from __future__ import annotations

import csv
import functools
import os
import re
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import spglib
from pymatgen.analysis.structure_matcher import (
    ElementComparator,
    FrameworkComparator,
    StructureMatcher,
)
from pymatgen.core import Composition, Structure

from iondrag.adapters.sources.embedded import (
    REQUIRED_FIELDS,
    build_structure,
    load_embedded_candidates,
    load_embedded_entries,
    symmetry_operations,
)
from iondrag.screening.candidates import Candidate

ENTRIES = load_embedded_entries()
IDS = [entry["id"] for entry in ENTRIES]
DOI = re.compile(r"^10\.\d{4,9}/\S+$")
REPO_ROOT = Path(__file__).resolve().parents[3]
OBELIX_DIR = Path(
    os.environ.get("IONDRAG_OBELIX_DIR", REPO_ROOT.parent / "shared" / "data" / "obelix-train")
)
# Default per-formula-unit tolerances; an entry may widen them (charge_tolerance,
# composition_tolerance) when its published occupancies are refined independently.
CHARGE_TOL = 1e-3
COMPOSITION_TOL = 1e-3
# Any two sites closer than this are an error, unless both are partially occupied with
# occupancies summing to <= 1 (alternative positions of one atom).
MIN_DISTANCE = 1.0
# Cation-anion pairs closer than this are an error (shortest real bond here: C-O 1.26 A).
MIN_CATION_ANION = 1.2


@pytest.fixture(scope="module")
def structures() -> dict[str, Structure]:
    return {entry["id"]: build_structure(entry) for entry in ENTRIES}


def test_at_least_sixty_li_and_na_entries() -> None:
    assert len(ENTRIES) >= 60
    ions = {entry["mobile_ion"] for entry in ENTRIES}
    assert ions == {"Li", "Na"}


def test_ids_unique_and_well_formed() -> None:
    assert len(IDS) == len(set(IDS))
    for candidate_id in IDS:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", candidate_id), candidate_id


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_required_fields_and_dois(entry: dict) -> None:
    missing = [field for field in REQUIRED_FIELDS if field not in entry]
    assert not missing, missing
    assert entry["mobile_ion"] in ("Li", "Na")
    assert entry["reference"] and "TODO" not in entry["reference"]
    for key in ("reference_doi", "sigma_doi"):
        if entry[key] is not None:
            assert DOI.match(entry[key]), (key, entry[key])
    if entry["sigma_S_per_cm"] is not None:
        assert 0 < entry["sigma_S_per_cm"] < 1
        assert entry["sigma_doi"] is not None
    if entry["elastic"] is not None:
        assert entry["elastic"]["source"]


def op_set(rots: np.ndarray, trans: np.ndarray) -> set:
    return {
        (tuple(np.rint(r).astype(int).ravel()), tuple(np.rint((t % 1) * 24).astype(int) % 24))
        for r, t in zip(rots, trans, strict=True)
    }


@functools.cache
def _spglib_settings() -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """All Hall settings of spglib's database, by ITA number."""
    table: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for hall in range(1, 531):
            ops = spglib.get_symmetry_from_database(hall)
            number = spglib.get_spacegroup_type(hall).number
            table.setdefault(number, []).append((ops["rotations"], ops["translations"]))
    return table


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_space_group_setting_is_a_valid_group(entry: dict) -> None:
    """The operations used are one of spglib's Hall settings of the recorded ITA number."""
    rotations, translations = symmetry_operations(entry["structure"]["spacegroup"])

    ours = op_set(rotations, translations)
    number = entry["structure"]["number"]
    settings = [op_set(r, t) for r, t in _spglib_settings().get(number, [])]
    if ours in settings:
        return
    pytest.fail(f"{entry['structure']['spacegroup']} is no setting of space group {number}")


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_composition_z_and_charge(entry: dict, structures: dict[str, Structure]) -> None:
    structure = structures[entry["id"]]
    per_fu = structure.composition / entry["z"]
    published = Composition(entry["formula"])
    tol = entry.get("composition_tolerance", COMPOSITION_TOL)
    elements = set(per_fu.elements) | set(published.elements)
    for element in elements:
        assert abs(per_fu[element] - published[element]) <= tol, (element, per_fu, published)
    oxidation = entry["oxidation_states"]
    assert {el.symbol for el in elements} == set(oxidation)
    charge = sum(per_fu[el] * oxidation[el.symbol] for el in per_fu.elements)
    assert abs(charge) <= entry.get("charge_tolerance", CHARGE_TOL), charge


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_no_unphysical_distances(entry: dict, structures: dict[str, Structure]) -> None:
    structure = structures[entry["id"]]
    oxidation = entry["oxidation_states"]
    occupancy = np.array([site.species.num_atoms for site in structure])
    anion = np.array([all(oxidation[el.symbol] < 0 for el in site.species) for site in structure])
    distances = structure.distance_matrix
    for i, j in combinations(range(len(structure)), 2):
        alternative = occupancy[i] < 1 and occupancy[j] < 1 and occupancy[i] + occupancy[j] <= 1
        if alternative:
            continue
        assert distances[i, j] >= MIN_DISTANCE, (structure[i], structure[j], distances[i, j])
        if anion[i] != anion[j]:
            assert distances[i, j] >= MIN_CATION_ANION, (structure[i], structure[j])


def test_loader_returns_candidates_and_filters() -> None:
    # CPU time of this process, not wall time: other jobs on a shared machine must not make
    # the budget flaky (a wall-clock 2 s limit failed under a load average of 4).
    start = time.process_time()
    candidates = load_embedded_candidates()
    assert time.process_time() - start < 2.0
    assert [c.candidate_id for c in candidates] == IDS
    for candidate, entry in zip(candidates, ENTRIES, strict=True):
        assert isinstance(candidate, Candidate)
        assert candidate.ok and candidate.source == "embedded"
        assert candidate.mobile_ion == entry["mobile_ion"]
        assert candidate.experimental_sigma_S_per_cm == entry["sigma_S_per_cm"]
        assert (candidate.elastic is None) == (entry["elastic"] is None)
        for key in ("reference_doi", "sigma_doi", "family", "retrieved_utc", "data_file"):
            assert key in candidate.provenance
    na = load_embedded_candidates("Na")
    assert na and all(c.mobile_ion == "Na" for c in na)
    assert len(na) + len(load_embedded_candidates("Li")) == len(candidates)
    with pytest.raises(ValueError):
        load_embedded_candidates("K")


def test_returned_structures_are_copies() -> None:
    first = load_embedded_candidates()[0].structure
    assert first is not None
    first.remove_sites([0])
    again = load_embedded_candidates()[0].structure
    assert again is not None and len(again) == len(first) + 1


# ---------------------------------------------------------------- README in step with the data

README = REPO_ROOT / "data" / "embedded" / "README.md"


#: Allowed values of the README 'coordinates' column (meaning given in the README).
COORDINATE_STATUS = ("verified", "obelix-checked", "recalled", "cited", "prototype")


def _readme_entry_rows() -> list[dict[str, str]]:
    """Rows of the table under '## Entries' in data/embedded/README.md, as header -> cell."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Entries")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def test_readme_entry_table_matches_the_data() -> None:
    """Every entry is listed once in the README with the DOIs and sigma the YAML holds."""
    table = _readme_entry_rows()
    rows = {row["id"]: row for row in table}
    assert len(table) == len(rows) and sorted(rows) == sorted(IDS)
    for entry in ENTRIES:
        row = rows[entry["id"]]
        assert row["DOI"] == (entry["reference_doi"] or "-"), entry["id"]
        assert row["sigma DOI"] == (entry["sigma_doi"] or "-"), entry["id"]
        sigma = entry["sigma_S_per_cm"]
        assert row["sigma (S/cm)"] == ("-" if sigma is None else f"{sigma:g}"), entry["id"]
        assert row["coordinates"] in COORDINATE_STATUS, (entry["id"], row["coordinates"])


# ---------------------------------------------------------------- OBELiX cross-check


def _ordered_framework(structure: Structure, mobile: str) -> Structure:
    """Non-mobile sites, each carrying its majority element."""
    species, coords = [], []
    for site in structure:
        amounts = {el.symbol: amt for el, amt in site.species.items() if el.symbol != mobile}
        if amounts:
            species.append(max(amounts, key=amounts.get))
            coords.append(site.frac_coords)
    return Structure(structure.lattice, species, coords)


def _obelix_rows() -> list[dict]:
    with (OBELIX_DIR / "train.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _same_composition(text: str, formula: str) -> bool:
    try:
        first = Composition(text.replace(" ", "")).fractional_composition
    except (ValueError, KeyError):
        return False
    second = Composition(formula).fractional_composition
    elements = set(first.elements) | set(second.elements)
    return all(abs(first[el] - second[el]) < 5e-3 for el in elements)


def obelix_pairs() -> list[tuple[dict, dict]]:
    if not OBELIX_DIR.is_dir():
        return []
    pairs = []
    for entry in ENTRIES:
        for row in _obelix_rows():
            same_group = str(row["Space group #"]).strip() == str(entry["structure"]["number"])
            cif = OBELIX_DIR / "cifs" / f"{row['ID']}.cif"
            if (
                same_group
                and cif.exists()
                and _same_composition(row["Reduced Composition"], entry["formula"])
            ):
                pairs.append((entry, row))
    return pairs


def match_obelix(entry: dict, row: dict, ours: Structure) -> str | None:
    """Return 'element' or 'framework' for the comparison that matched, None if none did."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser(OBELIX_DIR / "cifs" / f"{row['ID']}.cif", occupancy_tolerance=1.1)
        theirs = parser.parse_structures(primitive=False)[0]
    mobile = entry["mobile_ion"]
    first, second = _ordered_framework(ours, mobile), _ordered_framework(theirs, mobile)
    kwargs = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5, "primitive_cell": False}
    kwargs |= {"scale": True, "attempt_supercell": True}
    if StructureMatcher(comparator=ElementComparator(), **kwargs).fit(first, second):
        return "element"
    if StructureMatcher(comparator=FrameworkComparator(), **kwargs).fit(first, second):
        return "framework"
    return None


def test_obelix_matches(structures: dict[str, Structure]) -> None:
    if not OBELIX_DIR.is_dir():
        pytest.skip(
            f"OBELiX training data not found at {OBELIX_DIR}; set IONDRAG_OBELIX_DIR to the "
            "obelix-train folder to run the cross-check"
        )
    pairs = obelix_pairs()
    assert pairs, "no embedded entry pairs with an OBELiX CIF"
    failures = []
    for entry, row in pairs:
        if match_obelix(entry, row, structures[entry["id"]]) is None:
            failures.append((entry["id"], row["ID"]))
    assert not failures, failures
