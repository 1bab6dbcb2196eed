"""Helpers of the reliability tests: structures, bad-input files, subprocesses, checks.

Kept free of pytest fixtures so that ``benchmarks/bench_reliability.py`` can import it too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]

# the subprocess environment and command line of the workflow tests (wf_helpers.py), also
# when this module is imported from benchmarks/ or without tests/workflows collected
sys.path.insert(0, str(REPO_ROOT / "tests" / "workflows"))
from wf_helpers import FAST_CLI as FAST_CLI  # noqa: E402  (re-exported)
from wf_helpers import FAST_PHYSICS as FAST_PHYSICS  # noqa: E402  (re-exported)
from wf_helpers import clean_env as clean_env  # noqa: E402  (re-exported)
from wf_helpers import cli_command  # noqa: E402

#: Every cause code a failed candidate may carry (the IondragError subclasses of the
#: science, plus the codes the sources set on candidates they could not load).
DOCUMENTED_CAUSES: frozenset[str] = frozenset(
    {
        "invalid_input",
        "parse_error",
        "invalid_structure",
        "no_mobile_species",
        "overlapping_atoms",
        "oxidation_states",
        "missing_parameters",
        "grid_too_large",
        "no_percolation",
        "elastic_data",
        "source_error",
    }
)

FCC = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])


def rocksalt(cation: str, anion: str, a: float):
    """Conventional rock-salt cell with explicit sites (from_spacegroup is slow)."""
    from pymatgen.core import Lattice, Structure

    coords = np.vstack([FCC, (FCC + 0.5) % 1.0])
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, coords)


def antifluorite(cation: str, anion: str, a: float):
    """Conventional antifluorite cell (anions fcc, cations on the tetrahedral sites)."""
    from pymatgen.core import Lattice, Structure

    coords = np.vstack([(FCC + 0.25) % 1.0, (FCC + 0.75) % 1.0, FCC])
    return Structure(Lattice.cubic(a), [cation] * 8 + [anion] * 4, coords)


#: Small structures that score (ids of the "good" files and their builders).
GOOD_STRUCTURES: dict[str, Any] = {
    "good-lif": lambda: rocksalt("Li", "F", 4.03),
    "good-nacl": lambda: rocksalt("Na", "Cl", 5.64),
    "good-li2o": lambda: antifluorite("Li", "O", 4.61),
}


def write_cif(path: Path, structure: Any) -> Path:
    from pymatgen.io.cif import CifWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CifWriter(structure).write_file(path)
    return path


def _replace_first_coordinate(text: str, element: str, value: str) -> str:
    """Replace the fract_x of the first atom-site row of ``element`` by ``value``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        parts = line.split()
        # CifWriter rows: symbol label multiplicity x y z occupancy
        if len(parts) == 7 and parts[0] == element:
            parts[3] = value
            lines[index] = "  " + "  ".join(parts)
            return "\n".join(lines) + "\n"
    raise AssertionError(f"no atom-site row of {element} in the CIF")


def write_bad_cases(folder: Path) -> dict[str, str]:
    """Write one CIF per bad-input case into ``folder``; return id -> expected cause.

    The "huge" cell (a 150 Å cube) needs ~300 GB at 0.3 Å (iondrag.screening.memory): beyond the
    default 2 GB budget even after coarsening to 0.5 Å (grid_too_large, whatever
    IONDRAG_MEMORY_BUDGET_MB up to ~66 GB says).
    """
    from pymatgen.core import Lattice, Structure

    from iondrag.adapters.sources.embedded import embedded_structure

    folder.mkdir(parents=True, exist_ok=True)
    lif_text = write_cif(folder / "_tmp.cif", rocksalt("Li", "F", 4.03)).read_text()
    (folder / "_tmp.cif").unlink()
    li2f = Structure(
        Lattice.cubic(4.03),
        ["Li"] * 8 + ["F"] * 4,
        np.vstack([(FCC + 0.25) % 1.0, (FCC + 0.75) % 1.0, FCC]),
    )
    overlapping = rocksalt("Li", "F", 4.03)
    overlapping.append("F", [0.02, 0.0, 0.0])  # 0.08 Å from the Li at the origin
    expected = {
        "empty": "parse_error",
        "binary": "parse_error",
        "truncated": "parse_error",
        "no-ion-mgo": "no_mobile_species",
        "overlapping": "overlapping_atoms",
        "no-params-li3p": "missing_parameters",
        "huge-cell": "grid_too_large",
        "charged-li2f": "oxidation_states",
        "only-cations": "oxidation_states",
        "nan-coordinate": "invalid_structure",
        "inf-coordinate": "invalid_structure",
        "nan-cell": "invalid_structure",
    }
    (folder / "empty.cif").write_bytes(b"")
    (folder / "binary.cif").write_bytes(bytes(range(256)) * 8)
    (folder / "truncated.cif").write_text(lif_text[: len(lif_text) // 2])
    write_cif(folder / "no-ion-mgo.cif", rocksalt("Mg", "O", 4.21))
    write_cif(folder / "overlapping.cif", overlapping)
    write_cif(folder / "no-params-li3p.cif", embedded_structure("li3p-p63mmc"))
    write_cif(
        folder / "huge-cell.cif",
        Structure(Lattice.cubic(150.0), ["Li", "F"], [[0, 0, 0], [0.0133, 0, 0]]),
    )
    write_cif(folder / "charged-li2f.cif", li2f)
    write_cif(
        folder / "only-cations.cif",
        Structure(Lattice.cubic(4.0), ["Li", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    )
    (folder / "nan-coordinate.cif").write_text(_replace_first_coordinate(lif_text, "Li", "nan"))
    (folder / "inf-coordinate.cif").write_text(_replace_first_coordinate(lif_text, "F", "-inf"))
    (folder / "nan-cell.cif").write_text(
        lif_text.replace("_cell_length_b   4.03000000", "_cell_length_b   nan")
    )
    assert "_cell_length_b   nan" in (folder / "nan-cell.cif").read_text()
    return expected


def write_good_cases(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for candidate_id, build in GOOD_STRUCTURES.items():
        write_cif(folder / f"{candidate_id}.cif", build())
    return list(GOOD_STRUCTURES)


# --------------------------------------------------------------------------------------------
# subprocesses
# --------------------------------------------------------------------------------------------


def run_cli(
    args: Sequence[object], env: dict[str, str], *, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(args),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(args: Sequence[object], env: dict[str, str]) -> subprocess.Popen:
    """Start the CLI in its own session (so that its process group can be killed)."""
    return subprocess.Popen(
        cli_command(args),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of ``process`` (the screen and its workers) and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------------------------
# database checks
# --------------------------------------------------------------------------------------------


def rows(db: Path, run_id: str | None = None, sql_where: str = "") -> list[dict[str, Any]]:
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        conn.row_factory = sqlite3.Row
        where = " WHERE run_id = ?" if run_id else ""
        params: tuple = (run_id,) if run_id else ()
        return [dict(r) for r in conn.execute(f"SELECT * FROM results{where}{sql_where}", params)]


def count_rows(db: Path) -> int:
    """Rows in ``results`` (0 while the file or table does not exist yet)."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def nonfinite_cells(db: Path) -> list[tuple[str, str, str]]:
    """(table, column, candidate) of every REAL cell of the database that is NaN or ±inf.

    SQLite stores a NaN bound as a parameter as NULL, so a stored NaN can only be text or
    an infinity; both are looked for, in every column of ``results`` and ``runs``.
    """
    found: list[tuple[str, str, str]] = []
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        for table, key in (("results", "candidate_id"), ("runs", "run_id")):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                bad = conn.execute(
                    f"SELECT {key} FROM {table} WHERE (typeof(\"{column}\") = 'real' AND "
                    f'(abs("{column}") > 1.7976931348623157e308 OR "{column}" != "{column}")) '
                    f'OR (typeof("{column}") = \'text\' AND lower("{column}") IN '
                    "('nan', 'inf', '-inf', 'infinity', '-infinity'))"
                ).fetchall()
                found += [(table, column, str(b[0])) for b in bad]
        for (text,) in conn.execute("SELECT json FROM documents"):
            assert_strict_json(text)
        for (text,) in conn.execute(
            "SELECT candidate_json FROM documents WHERE candidate_json IS NOT NULL"
        ):
            assert_strict_json(text)
    return found


def _refuse_constant(name: str) -> float:
    raise AssertionError(f"non-finite number {name} in JSON")


def assert_strict_json(text: str) -> Any:
    """Parse JSON refusing NaN/Infinity; return the data."""
    return json.loads(text, parse_constant=_refuse_constant)


def nonfinite_floats(value: Any, where: str = "") -> list[str]:
    """Paths of every float in a nested structure that is NaN or infinite."""
    bad: list[str] = []
    if isinstance(value, float):
        if not math.isfinite(value):
            bad.append(where or "<value>")
    elif isinstance(value, dict):
        for key, item in value.items():
            bad += nonfinite_floats(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            bad += nonfinite_floats(item, f"{where}[{index}]")
    return bad


def consistency(db: Path, run_id: str, expected_ids: Iterable[str]) -> dict[str, Any]:
    """One row and one document per expected candidate, nothing else, nothing non-finite."""
    expected = sorted(expected_ids)
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        ids = [
            r[0]
            for r in conn.execute("SELECT candidate_id FROM results WHERE run_id = ?", (run_id,))
        ]
        docs = [
            r[0]
            for r in conn.execute("SELECT candidate_id FROM documents WHERE run_id = ?", (run_id,))
        ]
        statuses = dict(
            conn.execute(
                "SELECT status, COUNT(*) FROM results WHERE run_id = ? GROUP BY status", (run_id,)
            ).fetchall()
        )
    return {
        "n_expected": len(expected),
        "n_rows": len(ids),
        "n_distinct": len(set(ids)),
        "missing": sorted(set(expected) - set(ids)),
        "unexpected": sorted(set(ids) - set(expected)),
        "rows_without_document": sorted(set(ids) - set(docs)),
        "statuses": statuses,
    }


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
