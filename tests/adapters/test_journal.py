"""The journal of scored structures (iondrag.adapters.journal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from iondrag.adapters.journal import ValidationJournal, code_fingerprint, record_key
from iondrag.screening.parameters import ScreeningParameters

FAST = ScreeningParameters(grid_spacing_A=0.3, arrhenius_temperatures_K=())


def _rocksalt_cif(path: Path) -> Path:
    structure = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.03), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    CifWriter(structure).write_file(str(path))
    return path


def _prepare(candidate: object) -> object:
    return candidate


def test_record_key_depends_on_the_file_parameters_and_preparation(tmp_path: Path) -> None:
    cif = _rocksalt_cif(tmp_path / "a.cif")
    base = record_key(cif, FAST)
    assert base == record_key(cif, FAST.model_copy())
    assert record_key(cif, FAST.model_copy(update={"grid_spacing_A": 0.25})) != base
    assert record_key(cif, FAST, prepare=_prepare) != base
    renamed = tmp_path / "b.cif"
    renamed.write_bytes(cif.read_bytes())
    assert record_key(renamed, FAST) == base  # the bytes count, not the name
    renamed.write_bytes(cif.read_bytes() + b"\n")
    assert record_key(renamed, FAST) != base
    assert len(code_fingerprint()) == 64


def test_journal_skips_cut_lines_repairs_them_and_keeps_the_latest(tmp_path: Path) -> None:
    journal = ValidationJournal(tmp_path / "sub" / "j.jsonl")
    assert journal.read() == {}
    journal.append("k1", "a", {"log10_sigma_pred": -3.5, "n": np.int64(2)})
    journal.append("k2", "b", {"log10_sigma_pred": float("-inf"), "error": None})
    # an interruption cut the next line short
    with journal.path.open("a") as handle:
        handle.write('{"key": "k3", "id": "c", "rec')
    journal.append("k1", "a", {"log10_sigma_pred": -4.0})  # a later scoring wins
    records = journal.read()
    assert set(records) == {"k1", "k2"}
    assert records["k1"] == {"log10_sigma_pred": -4.0}
    assert records["k2"]["log10_sigma_pred"] == float("-inf")
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["id"] == "a"
    # bytes that are not text (a corrupted disk block) cost their line only
    with journal.path.open("ab") as handle:
        handle.write(b"\xff\xfe\x00garbage\n")
    journal.append("k4", "d", {"log10_sigma_pred": -6.0})
    assert set(journal.read()) == {"k1", "k2", "k4"}


def test_a_crashed_worker_is_not_journalled(tmp_path: Path) -> None:
    journal = ValidationJournal(tmp_path / "j.jsonl")
    journal.append("k", "a", {"error_cause": "worker_crashed", "error": "a: killed"})
    assert journal.read() == {}
    journal.append("k", "a", {"error_cause": "parse_error", "error": "a: not a CIF"})
    assert journal.read()["k"]["error_cause"] == "parse_error"


def test_a_new_library_release_changes_the_fingerprint(monkeypatch) -> None:
    import importlib.metadata

    installed = code_fingerprint()
    real_version = importlib.metadata.version

    def upgraded(name: str) -> str:
        return "999.0" if name == "pymatgen" else real_version(name)

    code_fingerprint.cache_clear()
    monkeypatch.setattr(importlib.metadata, "version", upgraded)
    try:
        assert code_fingerprint() != installed
    finally:
        code_fingerprint.cache_clear()


def test_an_edit_of_the_physics_changes_the_fingerprint(tmp_path: Path, monkeypatch) -> None:
    """The journal is an adapter in another folder: it must hash the physics package."""
    import shutil

    from iondrag.adapters import journal

    assert (journal.science_package() / "transport.py").is_file()
    copy = tmp_path / "screening"
    shutil.copytree(journal.science_package(), copy)
    code_fingerprint.cache_clear()
    monkeypatch.setattr(journal, "science_package", lambda: copy)
    try:
        unedited = code_fingerprint()
        with (copy / "transport.py").open("a") as handle:
            handle.write("\n# an edit\n")
        code_fingerprint.cache_clear()
        edited = code_fingerprint()
        with (copy / "metrics.py").open("a") as handle:
            handle.write("\n# an edit of a module no record depends on\n")
        code_fingerprint.cache_clear()
        assert code_fingerprint() == edited
    finally:
        code_fingerprint.cache_clear()
    assert edited != unedited
