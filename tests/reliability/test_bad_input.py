"""Bad input through the CLI and the Python API: every bad case is a failed row, nothing else.

One CIF folder holds a file per bad case (empty, binary, truncated, no mobile ion,
overlapping atoms, no force-field parameters, a cell too large for the memory budget, a
charged composition, only cations, NaN/inf coordinates, a NaN cell) and three good ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from rel_helpers import (
    DOCUMENTED_CAUSES,
    FAST_CLI,
    FAST_PHYSICS,
    assert_strict_json,
    clean_env,
    nonfinite_cells,
    nonfinite_floats,
    rocksalt,
    rows,
    run_cli,
)

from iondrag.adapters.database import CONTRACT_COLUMNS
from iondrag.adapters.sources.cif import load_cif_candidates
from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.pipeline import score_candidate
from iondrag.workflows.cli import main

#: IONDRAG_MEMORY_BUDGET_MB of the CLI screen: the good cells need ~200 MB at 0.3 Å (the
#: worker's own 130 MB included, iondrag.screening.memory), the huge cell ~66 GB even at 0.5 Å.
BUDGET_MB = "400"


def _names_candidate(error: str, candidate_id: str) -> bool:
    head = error.split(":", 1)[0]
    return head in (candidate_id, f"{candidate_id}.cif")


@pytest.fixture(scope="module")
def screened(tmp_path_factory, bad_and_good_cifs):
    """``iondrag screen --source cif DIR --json OUT --db DB`` once, on 2 workers."""
    tmp = tmp_path_factory.mktemp("bad_cli")
    env = clean_env(tmp, IONDRAG_MEMORY_BUDGET_MB=BUDGET_MB)
    db, out = tmp / "rank.sqlite", tmp / "ranking.json"
    completed = run_cli(
        [
            "screen",
            "--source",
            "cif",
            bad_and_good_cifs["folder"],
            *FAST_CLI,
            "--workers",
            "2",
            "--chunk-size",
            "6",
            "--db",
            db,
            "--json",
            out,
        ],
        env,
    )
    return {"tmp": tmp, "env": env, "db": db, "json": out, "completed": completed}


def test_cli_screen_runs_through_bad_input(screened, bad_and_good_cifs) -> None:
    completed = screened["completed"]
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr and "internal error" not in completed.stderr
    n_bad, n_good = len(bad_and_good_cifs["bad"]), len(bad_and_good_cifs["good"])
    assert f"{n_bad + n_good} candidates, {n_good} scored, {n_bad} failed" in completed.stdout
    for cause in set(bad_and_good_cifs["bad"].values()):
        assert cause in completed.stdout  # failures by cause in the summary


def test_cli_one_row_per_file_with_cause(screened, bad_and_good_cifs) -> None:
    table = {r["candidate_id"]: r for r in rows(screened["db"])}
    expected = bad_and_good_cifs["bad"]
    assert sorted(table) == sorted([*expected, *bad_and_good_cifs["good"]])
    for candidate_id, cause in expected.items():
        row = table[candidate_id]
        assert row["status"] == "failed", row
        assert row["error_cause"] == cause, (candidate_id, row["error"])
        assert "\n" not in row["error"] and _names_candidate(row["error"], candidate_id), row
        assert row["sigma_S_per_cm"] is None and row["barrier_eV"] is None
    assert f"{BUDGET_MB} MB" in table["huge-cell"]["error"]  # the budget reached the workers
    for candidate_id in bad_and_good_cifs["good"]:
        row = table[candidate_id]
        assert row["status"] == "ok" and row["error"] is None and row["error_cause"] is None
        assert all(row[c] is not None for c in CONTRACT_COLUMNS if c not in ("error",)), row
        assert 0 < row["sigma_S_per_cm"] < 1e3 and row["barrier_eV"] > 0


def test_cli_json_and_database_hold_no_nan(screened, bad_and_good_cifs) -> None:
    records = assert_strict_json(screened["json"].read_text())
    assert not list(screened["json"].parent.glob("*.partial"))
    assert len(records) == len(bad_and_good_cifs["bad"]) + len(bad_and_good_cifs["good"])
    assert all(set(CONTRACT_COLUMNS) <= set(r) for r in records)
    assert nonfinite_floats(records) == []
    assert nonfinite_cells(screened["db"]) == []
    with closing(sqlite3.connect(screened["db"])) as conn:
        # nothing written half: one document per row, the run finished with every count
        orphans = conn.execute(
            "SELECT COUNT(*) FROM results r LEFT JOIN documents d ON d.run_id = r.run_id "
            "AND d.candidate_id = r.candidate_id WHERE d.json IS NULL"
        ).fetchone()[0]
        run = conn.execute(
            "SELECT status, n_candidates, n_ok, n_failed, n_error, n_missing FROM runs"
        ).fetchall()
    n_bad, n_good = len(bad_and_good_cifs["bad"]), len(bad_and_good_cifs["good"])
    assert orphans == 0
    assert run == [("finished", n_bad + n_good, n_good, n_bad, 0, 0)]


def test_cli_show_reports_a_failed_candidate(screened) -> None:
    shown = run_cli(["show", "overlapping", "--db", screened["db"]], screened["env"])
    assert shown.returncode == 0, shown.stderr
    assert "status failed" in shown.stdout and "[overlapping_atoms]" in shown.stdout


# --- the Python API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parameters() -> ScreeningParameters:
    return ScreeningParameters(**FAST_PHYSICS)


def test_api_load_and_score_each_file(bad_and_good_cifs, parameters) -> None:
    folder = bad_and_good_cifs["folder"]
    candidates = load_cif_candidates(folder)  # never raises for a bad file
    assert [c.candidate_id for c in candidates] == sorted(p.stem for p in folder.glob("*.cif"))
    for candidate in candidates:
        result, grids = score_candidate(candidate, parameters)
        assert grids is None
        cause = bad_and_good_cifs["bad"].get(candidate.candidate_id)
        if cause is None:
            assert result.status == "ok", result.error
            assert nonfinite_floats(result.model_dump()) == []
        else:
            assert (result.status, result.error_cause) == ("failed", cause), result.error
            assert _names_candidate(result.error, candidate.candidate_id), result.error
            assert "\n" not in result.error
        assert_strict_json(result.model_dump_json())


def _nan_coordinates() -> Structure:
    return Structure(Lattice.cubic(4.03), ["Li", "F"], [[math.nan, 0, 0], [0.5, 0.5, 0.5]])


def _flat_cell() -> Structure:
    return Structure(
        Lattice([[4, 0, 0], [8, 0, 0], [0, 0, 4]]), ["Li", "F"], [[0, 0, 0], [0.5, 0, 0.5]]
    )


API_CASES = {
    # name: (structure builder, parameter overrides, expected cause)
    "nan-coordinates": (_nan_coordinates, {}, "invalid_structure"),
    "inf-coordinates": (
        lambda: Structure(Lattice.cubic(4.03), ["Li", "F"], [[0, math.inf, 0], [0.5, 0.5, 0.5]]),
        {},
        "invalid_structure",
    ),
    "flat-cell": (_flat_cell, {}, "invalid_structure"),
    "no-sites": (lambda: Structure(Lattice.cubic(4.0), [], []), {}, "invalid_structure"),
    "requested-ion-absent": (lambda: rocksalt("Li", "F", 4.03), {"ion": "Na"}, "no_mobile_species"),
    "only-the-mobile-ion": (
        lambda: Structure(Lattice.cubic(3.5), ["Li"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),
        {},
        "oxidation_states",
    ),
    "budget-refused": (
        lambda: rocksalt("Li", "F", 4.03),
        {"memory_budget_MB": 0.05, "on_grid_too_large": "refuse"},
        "grid_too_large",
    ),
    "duplicate-site": (
        lambda: Structure(
            Lattice.cubic(4.03), ["Li", "F", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
        ),
        {},
        "overlapping_atoms",
    ),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_api_bad_structures(name: str) -> None:
    build, overrides, cause = API_CASES[name]
    parameters = ScreeningParameters(**{**FAST_PHYSICS, **overrides})
    candidate = Candidate(candidate_id=f"api-{name}", source="structure", structure=build())
    result, _ = score_candidate(candidate, parameters)
    assert (result.status, result.error_cause) == ("failed", cause), result.error
    assert result.error.startswith(f"api-{name}: ") and "\n" not in result.error
    assert cause in DOCUMENTED_CAUSES
    assert_strict_json(result.model_dump_json())


def test_api_candidate_without_structure(parameters) -> None:
    result, _ = score_candidate(Candidate(candidate_id="nothing", source="cif"), parameters)
    assert (result.status, result.error_cause) == ("failed", "parse_error")
    assert result.error == "nothing: no structure"


# --- malformed ranking databases ---------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def malformed_dbs(tmp_path_factory, screened) -> dict[str, Path]:
    """Garbage bytes, a foreign SQLite file and three truncations of a real ranking DB."""
    tmp = tmp_path_factory.mktemp("malformed")
    real = screened["db"]
    assert not Path(f"{real}-wal").exists() or Path(f"{real}-wal").stat().st_size == 0
    data = real.read_bytes()
    assert len(data) > 3 * 4096
    files = {
        "garbage": np.random.default_rng(5).integers(0, 256, 6000, dtype=np.uint8).tobytes(),
        "text": b"definitely not a database\n" * 40,
        "truncated-half": data[: len(data) // 2],
        "truncated-one-page": data[:4096],
        "truncated-header": data[:100],
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp / f"{name}.sqlite"
        paths[name].write_bytes(blob)
    foreign = tmp / "foreign.sqlite"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE results (candidate_id TEXT, sigma REAL)")
        conn.execute("INSERT INTO results VALUES ('x', 1.0)")
        conn.commit()
    paths["foreign"] = foreign
    return paths


@pytest.mark.parametrize("command", ["screen", "query", "show"])
@pytest.mark.parametrize(
    "name",
    ["garbage", "text", "foreign", "truncated-half", "truncated-one-page", "truncated-header"],
)
def test_malformed_database_is_refused_untouched(
    command, name, malformed_dbs, tmp_path, iondrag_home, capsys
) -> None:
    path = tmp_path / "copy.sqlite"
    shutil.copyfile(malformed_dbs[name], path)
    before = _sha(path)
    one_bad = tmp_path / "cifs"
    one_bad.mkdir()
    (one_bad / "x.cif").write_text("not a cif\n")  # a screen that would be instant
    argv = {
        "screen": ["screen", "--source", "cif", str(one_bad), "--workers", "1", "--quiet"],
        "query": ["query", "SELECT COUNT(*) FROM results"],
        "show": ["show", "good-lif"],
    }[command]
    code = main([*argv, "--db", str(path)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 1, (captured.out, captured.err)
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"iondrag {command}: error: ") and str(path) in lines[0]
    assert "internal error" not in lines[0]
    assert captured.out == ""
    assert _sha(path) == before
    assert not (iondrag_home / "jobstore").exists()  # refused before any work


def test_malformed_database_is_refused_by_the_real_command(malformed_dbs, tmp_path) -> None:
    path = tmp_path / "copy.sqlite"
    shutil.copyfile(malformed_dbs["truncated-half"], path)
    before = _sha(path)
    completed = run_cli(["query", "SELECT * FROM runs", "--db", path], clean_env(tmp_path))
    assert completed.returncode == 1
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "malformed" in lines[0], completed.stderr
    assert _sha(path) == before
    assert json.dumps(lines)  # printable
