"""The ranking database: schema, upserts, reuse, read-only queries, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from iondrag.adapters import database
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.schemas import CandidateResult

PARAMETERS = ScreeningParameters(grid_spacing_A=0.3, arrhenius_temperatures_K=())


def result(
    candidate_id: str,
    *,
    status: str = "ok",
    sigma: float | None = 1e-3,
    fingerprint: str | None = None,
    parameters_fingerprint: str | None = None,
) -> CandidateResult:
    return CandidateResult(
        candidate_id=candidate_id,
        formula="LiX",
        source="structure",
        ion="Li",
        status=status,  # type: ignore[arg-type]
        error=None if status == "ok" else f"{candidate_id}: broken [cause]",
        error_cause=None if status == "ok" else "cause",
        temperature_K=300.0,
        parameters_fingerprint=parameters_fingerprint or PARAMETERS.fingerprint(),
        candidate_fingerprint=fingerprint or f"fp-{candidate_id}",
        barrier_eV=0.3 if status == "ok" else None,
        dimensionality=3 if status == "ok" else None,
        sigma_S_per_cm=sigma if status == "ok" else None,
        sigma_xx_S_per_cm=sigma if status == "ok" else None,
        sigma_yy_S_per_cm=sigma if status == "ok" else None,
        sigma_zz_S_per_cm=sigma if status == "ok" else None,
        drag_saddle_kg_per_s=1e-13 if status == "ok" else None,
        seconds={"total": 1.5},
    )


@pytest.fixture
def conn(tmp_path: Path):
    with closing(database.connect(tmp_path / "rank.sqlite")) as connection:
        yield connection


def rows(conn: sqlite3.Connection, run_id: str) -> dict[str, dict]:
    return {
        r["candidate_id"]: dict(r)
        for r in conn.execute("SELECT * FROM results WHERE run_id = ?", (run_id,))
    }


def test_schema_has_contract_columns_wal_and_meta(conn: sqlite3.Connection) -> None:
    columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    assert set(database.CONTRACT_COLUMNS) <= columns
    assert set(result("a").ranking_row()) <= columns
    assert {"run_id", "written_utc", "scored_utc", "reused_from_run_id"} <= columns
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"results", "runs", "documents", "meta"} <= tables


def test_insert_keeps_exactly_one_row_and_finished_rows(conn: sqlite3.Connection) -> None:
    database.start_run(conn, "r1", PARAMETERS, {"source": "test"}, n_candidates=3)
    assert database.insert_results(conn, "r1", [result("a"), result("b", status="error")]) == 2
    first = rows(conn, "r1")
    # a finished row is never overwritten by the same candidate; an error row is retried
    assert database.insert_results(conn, "r1", [result("a", sigma=5.0), result("b")]) == 1
    second = rows(conn, "r1")
    assert second["a"]["sigma_S_per_cm"] == pytest.approx(1e-3)
    assert second["a"]["written_utc"] == first["a"]["written_utc"]
    assert second["b"]["status"] == "ok"
    # an edited structure (new candidate fingerprint) under the same id replaces the row
    database.insert_results(conn, "r1", [result("a", sigma=7.0, fingerprint="fp-new")])
    assert rows(conn, "r1")["a"]["sigma_S_per_cm"] == pytest.approx(7.0)
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    assert conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 2
    assert database.finished_candidates(conn, "r1") == {"a": "fp-new", "b": "fp-b"}


def test_runs_are_recorded_and_resumed(conn: sqlite3.Connection) -> None:
    run = database.start_run(conn, "r1", PARAMETERS, {"source": "test"}, n_candidates=2)
    assert run["status"] == "running" and run["n_starts"] == 1
    assert run["parameters_fingerprint"] == PARAMETERS.fingerprint()
    assert run["pymatgen_version"] and run["numpy_version"] and run["jobflow_version"]
    again = database.start_run(conn, "r1", PARAMETERS, {"source": "test"})
    assert again["n_starts"] == 2 and again["started_utc"] == run["started_utc"]
    with pytest.raises(database.RankingDatabaseError, match="other parameters"):
        database.start_run(conn, "r1", ScreeningParameters(), {"source": "test"})
    with pytest.raises(database.RankingDatabaseError, match="another source"):
        database.start_run(conn, "r1", PARAMETERS, {"source": "elsewhere"})
    database.insert_results(conn, "r1", [result("a"), result("b", status="failed")])
    finished = database.finish_run(conn, "r1", expected_candidate_ids=["a", "b", "c"])
    assert finished["status"] == "incomplete" and finished["missing_candidate_ids"] == ["c"]
    assert (finished["n_ok"], finished["n_failed"], finished["n_missing"]) == (1, 1, 1)
    assert database.failure_counts(conn, "r1") == {"cause": 1}
    assert database.latest_run_id(conn) == "r1"


def test_reuse_copies_finished_rows_from_other_runs(conn: sqlite3.Connection) -> None:
    database.start_run(conn, "r1", PARAMETERS, {"source": "one"})
    database.insert_results(
        conn, "r1", [result("a"), result("b", status="failed"), result("c", status="error")]
    )
    database.start_run(conn, "r2", PARAMETERS, {"source": "two"})
    found = database.find_reusable(
        conn, ["fp-a", "fp-b", "fp-c", "fp-z"], PARAMETERS.fingerprint(), exclude_run_id="r2"
    )
    assert set(found) == {"fp-a", "fp-b"}  # "error" rows are recomputed, not reused
    other = database.find_reusable(conn, ["fp-a"], "another-fingerprint", exclude_run_id="r2")
    assert other == {}
    assert database.copy_results(conn, "r2", found.values()) == 2
    assert database.copy_results(conn, "r2", found.values()) == 0  # idempotent
    copied, original = rows(conn, "r2"), rows(conn, "r1")
    assert copied["a"]["reused_from_run_id"] == "r1"
    assert copied["a"]["scored_utc"] == original["a"]["scored_utc"]
    assert copied["a"]["sigma_S_per_cm"] == original["a"]["sigma_S_per_cm"]
    run_id, document, _ = database.load_document(conn, "a", "r2")
    assert run_id == "r2" and document.sigma_S_per_cm == pytest.approx(1e-3)
    assert database.run_counts(conn, "r2")["n_reused"] == 2


def test_ranking_order_and_prune(conn: sqlite3.Connection) -> None:
    database.start_run(conn, "r1", PARAMETERS, {"source": "test"})
    database.insert_results(
        conn,
        "r1",
        [result("low", sigma=1e-9), result("bad", status="failed"), result("high", sigma=1e-2)],
    )
    frame = database.read_ranking(conn, "r1")
    assert list(frame["candidate_id"]) == ["high", "low", "bad"]
    assert list(frame["rank"]) == [1, 2, 3]
    assert str(frame["dimensionality"].dtype) == "Int64"
    assert database.prune_run(conn, "r1", ["high", "low"]) == 1
    assert set(rows(conn, "r1")) == {"high", "low"}


def test_new_ranking_row_keys_become_columns(conn: sqlite3.Connection, monkeypatch) -> None:
    original = CandidateResult.ranking_row

    def extended(self: CandidateResult) -> dict:
        return {**original(self), "new_metric_eV": 0.5}

    monkeypatch.setattr(CandidateResult, "ranking_row", extended)
    database.start_run(conn, "r1", PARAMETERS, {"source": "test"})
    database.insert_results(conn, "r1", [result("a")])
    assert rows(conn, "r1")["a"]["new_metric_eV"] == 0.5


def test_run_id_is_deterministic() -> None:
    spec = {"source": "cif", "path": "/data/cifs", "options": {}}
    first = database.make_run_id(spec, PARAMETERS.fingerprint())
    assert first == database.make_run_id(dict(reversed(spec.items())), PARAMETERS.fingerprint())
    assert first != database.make_run_id(spec, ScreeningParameters().fingerprint())
    assert first.startswith("run-")


def test_query_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "rank.sqlite"
    with closing(database.connect(path)) as conn:
        database.start_run(conn, "r1", PARAMETERS, {"source": "test"})
        database.insert_results(conn, "r1", [result("a"), result("b", sigma=2e-3)])
    frame = database.run_query(
        path, "SELECT candidate_id FROM results ORDER BY sigma_S_per_cm DESC LIMIT 1"
    )
    assert frame["candidate_id"].tolist() == ["b"]
    for statement in (
        "DELETE FROM results",
        "UPDATE results SET status = 'x'",
        "DROP TABLE results",
        "CREATE TABLE x (a)",
        f"ATTACH DATABASE '{tmp_path / 'other.sqlite'}' AS other",
    ):
        with pytest.raises(database.RankingDatabaseError, match="refused"):
            database.run_query(path, statement)
    assert not (tmp_path / "other.sqlite").exists()
    with pytest.raises(database.RankingDatabaseError, match="no such table"):
        database.run_query(path, "SELECT * FROM missing_table")
    with pytest.raises(database.RankingDatabaseError, match="no ranking database"):
        database.run_query(tmp_path / "missing.sqlite", "SELECT 1")
    with closing(database.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2


def test_malformed_and_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("this is not a database\n" * 10)
    with pytest.raises(database.RankingDatabaseError, match="not an SQLite database"):
        database.connect(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with closing(sqlite3.connect(foreign)) as other:
        other.execute("CREATE TABLE things (a)")
        other.commit()
    with pytest.raises(database.RankingDatabaseError, match="not an iondrag one"):
        database.connect(foreign)
    with pytest.raises(database.RankingDatabaseError):
        database.connect(tmp_path)  # a folder


def test_top10_query_uses_the_sigma_index(conn: sqlite3.Connection) -> None:
    plan = " ".join(
        str(tuple(r))
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT formula, sigma_S_per_cm FROM results "
            "ORDER BY sigma_S_per_cm DESC LIMIT 10"
        )
    )
    assert "results_sigma" in plan and "TEMP B-TREE" not in plan


WRITER = textwrap.dedent(
    """
    import sys
    from contextlib import closing
    from iondrag.adapters import database
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.schemas import CandidateResult

    path, run_id, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    parameters = ScreeningParameters(grid_spacing_A=0.3, arrhenius_temperatures_K=())
    with closing(database.connect(path)) as conn:
        database.start_run(conn, run_id, parameters, {"source": run_id})
        for i in range(start, start + count):
            doc = CandidateResult(
                candidate_id=f"c{i:04d}", source="structure", status="ok", temperature_K=300.0,
                parameters_fingerprint=parameters.fingerprint(), candidate_fingerprint=f"f{i}",
                sigma_S_per_cm=float(i),
            )
            database.insert_results(conn, run_id, [doc])
    """
)


def test_concurrent_writers_in_separate_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rank.sqlite"
    # four processes: two runs, and in each run two writers overlapping on 50 candidates
    jobs = [("rA", 0, 150), ("rA", 100, 150), ("rB", 0, 150), ("rB", 100, 150)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), run, str(start), str(count)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for run, start, count in jobs
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    with closing(database.connect(path)) as conn:
        for run in ("rA", "rB"):
            ids = [
                r[0]
                for r in conn.execute("SELECT candidate_id FROM results WHERE run_id=?", (run,))
            ]
            assert len(ids) == len(set(ids)) == 250
        assert conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 500
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_documents_of_older_schemas_still_load(conn: sqlite3.Connection) -> None:
    database.start_run(conn, "r1", PARAMETERS, {"source": "test"})
    database.insert_results(conn, "r1", [result("a")])
    conn.execute(  # a field that an older version wrote and this one no longer has
        "UPDATE documents SET json = json_set(json, '$.retired_field_eV', 1.0)"
    )
    _, document, candidate = database.load_document(conn, "a")
    assert document.candidate_id == "a" and candidate is None


def _fill(conn: sqlite3.Connection) -> None:
    """Let the database grow by no page more: SQLite then says "database or disk is full"."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_one_line_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "rank.sqlite"
    with closing(database.connect(path)) as conn:
        database.start_run(conn, "r1", PARAMETERS, {"kind": "test"}, n_candidates=1)
        _fill(conn)
        big = result("a")
        big.warnings = ["x" * 200_000]  # more than the pages left
        with pytest.raises(database.DatabaseFullError) as raised:
            database.insert_results(conn, "r1", [big])
        message = str(raised.value)
        assert str(path) in message
        assert "database or disk is full" in message
        assert "free space" in message and "--db FILE" in message
        assert "\n" not in message
        assert raised.value.cause == "disk_full"
        assert not conn.in_transaction  # rolled back: the database stays usable
        assert rows(conn, "r1") == {}


def test_disk_full_is_recognised_in_sqlite_and_os_errors() -> None:
    import errno

    assert database.is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert database.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert database.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("job failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert database.is_disk_full(wrapped)
    assert not database.is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not database.is_disk_full(OSError(errno.EACCES, "Permission denied"))
