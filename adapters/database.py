"""The ranking database: one SQLite file holding every screen's results (stdlib + pandas).

Tables
------
``results``
    One row per candidate per run (``UNIQUE(run_id, candidate_id)``): the columns of the
    design contract, everything of :meth:`CandidateResult.ranking_row`, and the bookkeeping
    columns ``run_id``, ``written_utc`` (when the row entered this run), ``scored_utc`` (when
    the candidate was computed, kept when a result is reused), ``reused_from_run_id`` and
    ``seconds_total``.
``runs``
    One row per run: parameters (JSON and fingerprint), source spec (JSON), versions of
    iondrag/pymatgen/jobflow/numpy/python, timestamps, status and counts.
``documents``
    The full :class:`CandidateResult` JSON per (run_id, candidate_id), and the candidate
    itself (structure included) so that ``iondrag show`` needs nothing else.
``meta``
    Schema version and the application marker.
``columns``
    One line per ``results`` column saying what it is (:func:`column_descriptions`): which
    estimate a conductivity is, which barrier a barrier is.

Concurrency: WAL journal and a busy timeout, every write in a ``BEGIN IMMEDIATE``
transaction, so that writers in separate processes (two screens on the same file, the
chunks of a cluster run) wait for each other and lose nothing. Rows are written with upsert
semantics that keep exactly one row per (run_id, candidate_id): a finished row (status
``ok`` or ``failed``) is never overwritten by a later write for the same candidate
fingerprint; an ``error`` row (an unexpected exception) is replaced by the retry.

Everything here is pure (sqlite3 and pandas): the workflow layer calls these functions.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import platform
import sqlite3
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from iondrag.screening.candidates import Candidate
from iondrag.screening.errors import IondragError
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.schemas import DERIVED_COLUMNS, CandidateResult, result_fields

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "CONTRACT_COLUMNS",
    "FINISHED_STATUSES",
    "RESULT_COLUMNS",
    "SCHEMA_VERSION",
    "DatabaseFullError",
    "RankingDatabaseError",
    "ReusableResult",
    "canonical_json",
    "column_descriptions",
    "connect",
    "copy_results",
    "disk_full_message",
    "failure_counts",
    "find_reusable",
    "finish_run",
    "finished_candidates",
    "get_run",
    "insert_results",
    "is_disk_full",
    "latest_run_id",
    "load_document",
    "make_run_id",
    "prune_run",
    "read_ranking",
    "run_counts",
    "run_query",
    "start_run",
    "utc_now",
    "versions",
]

#: Bumped when the layout changes incompatibly.
SCHEMA_VERSION = 1

#: Marker in the ``meta`` table telling an iondrag ranking database from other SQLite files.
APPLICATION = "iondrag-ranking"

#: Columns that outside checks rely on (design.md, "Contracts"): the CandidateResult fields
#: marked ``contract``, and the run.
CONTRACT_COLUMNS: tuple[str, ...] = (*result_fields("contract"), "run_id")

#: Statuses of a finished candidate (never recomputed); ``error`` rows are retried.
FINISHED_STATUSES: tuple[str, ...] = ("ok", "failed")

#: Columns added by the database to each ranking row.
BOOKKEEPING_COLUMNS: dict[str, str] = {
    "run_id": "TEXT NOT NULL",
    "written_utc": "TEXT NOT NULL",
    "scored_utc": "TEXT",
    "reused_from_run_id": "TEXT",
    "seconds_total": "REAL",
}


def _field_sql_type(annotation: Any) -> str:
    """SQLite type of a CandidateResult field: REAL, INTEGER (int, bool) or TEXT."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    kinds.discard(type(None))
    if kinds <= {float}:
        return "REAL"
    if kinds and kinds <= {int, bool}:
        return "INTEGER"
    return "TEXT"


def _declared_result_columns() -> dict[str, str]:
    """Return the ``results`` columns from CandidateResult's ``column`` fields."""
    fields = CandidateResult.model_fields
    not_null = set(result_fields("not_null"))
    columns = {
        name: _field_sql_type(fields[name].annotation) + (" NOT NULL" if name in not_null else "")
        for name in result_fields("column")
    }
    columns.update({name: _field_sql_type(kind) for name, kind in DERIVED_COLUMNS.items()})
    return {**columns, **BOOKKEEPING_COLUMNS}


#: The ``results`` table at creation (name -> SQL type): the CandidateResult fields marked
#: ``column`` (types from their annotations) and the bookkeeping. Keys of ``ranking_row()``
#: that are not listed are added as columns when first written (see :func:`insert_results`).
RESULT_COLUMNS: dict[str, str] = _declared_result_columns()

#: Descriptions of ``results`` columns that their CandidateResult field does not describe.
_COLUMN_NOTES: dict[str, str] = {
    "candidate_id": "Id of the candidate, unique within its source.",
    "formula": "Reduced formula.",
    "source": "Where the candidate came from: embedded, mp, cif or structure (Python).",
    "ion": "Mobile ion (element symbol).",
    "temperature_K": "Temperature of sigma_S_per_cm and the tensor, K.",
    "sigma_tensor_method": "How the tensor estimate sigma_xx/yy/zz was made: "
    "homogenised_shape_scaled_to_path_channel (the shape of the 3D homogenised tensor, "
    "scaled to the path formula's channel value) or homogenised (headline_method "
    "homogenised: the 3D homogenised tensor itself).",
    "kramers_factor": "Kramers' inertial factor at the saddle (1: overdamped).",
    "damping_regime": "Damping regime of the ion at the saddle (overdamped, ...).",
    "elastic_source": "Where the elastic data behind Lambda came from.",
    "experimental_sigma_S_per_cm": "Measured conductivity near room temperature, S/cm, "
    "when the source has it.",
    "status": "ok (scored), failed (a documented input problem) or error (unexpected).",
    "error": "One-line reason a candidate was not scored.",
    "error_cause": "Short cause code of error (iondrag.screening.errors).",
    "parameters_fingerprint": "Hash of the physics parameters (reuse key).",
    "n_warnings": "Number of warnings of the row (estimated parameters, coarsened grid, "
    "...; marked * in the printed ranking).",
    "warnings_summary": "The row's warnings, joined by '; '.",
    "run_id": "The run (source + parameters) this row belongs to.",
    "written_utc": "When the row entered this run (UTC).",
    "scored_utc": "When the candidate was computed (kept when a result is reused).",
    "reused_from_run_id": "The run that computed a reused row (None: computed in this run).",
    "seconds_total": "Wall time of the candidate, s.",
}


def column_descriptions() -> dict[str, str]:
    """One line per column of ``results``: its meaning, from CandidateResult's field docs.

    Also written to the ``columns`` table of every ranking database
    (``iondrag query "SELECT * FROM columns"``).
    """
    fields = CandidateResult.model_fields
    out: dict[str, str] = {}
    for name in RESULT_COLUMNS:
        field = fields.get(name)
        text = _COLUMN_NOTES.get(name) or (field.description if field is not None else None)
        out[name] = " ".join((text or "").split())
    return out


_RUN_COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",
    "parameters_json": "TEXT NOT NULL",
    "parameters_fingerprint": "TEXT NOT NULL",
    "source_json": "TEXT NOT NULL",
    "iondrag_version": "TEXT",
    "pymatgen_version": "TEXT",
    "jobflow_version": "TEXT",
    "numpy_version": "TEXT",
    "python_version": "TEXT",
    "started_utc": "TEXT NOT NULL",
    "last_started_utc": "TEXT NOT NULL",
    "finished_utc": "TEXT",
    "n_starts": "INTEGER NOT NULL DEFAULT 1",
    "n_candidates": "INTEGER",
    "n_ok": "INTEGER",
    "n_failed": "INTEGER",
    "n_error": "INTEGER",
    "n_reused": "INTEGER",
    "n_missing": "INTEGER",
}

_INDEXES: tuple[str, ...] = (
    # top-N over every run, and within one run
    "CREATE INDEX IF NOT EXISTS results_sigma ON results(sigma_S_per_cm DESC)",
    "CREATE INDEX IF NOT EXISTS results_run_sigma ON results(run_id, sigma_S_per_cm DESC)",
    # reuse lookups across runs
    "CREATE INDEX IF NOT EXISTS results_reuse "
    "ON results(candidate_fingerprint, parameters_fingerprint, status)",
    # one candidate across runs (iondrag show), and lowest barriers
    "CREATE INDEX IF NOT EXISTS results_candidate ON results(candidate_id, written_utc)",
    "CREATE INDEX IF NOT EXISTS results_barrier ON results(barrier_eV)",
)

_SQLITE_HEADER = b"SQLite format 3\x00"

#: How long a writer waits for another process's transaction, ms.
BUSY_TIMEOUT_MS = 120_000


class RankingDatabaseError(IondragError):
    """The ranking database cannot be used: not SQLite, not iondrag's, missing, refused."""

    cause = "database"


class DatabaseFullError(RankingDatabaseError):
    """The ranking database cannot grow: its disk (or the user's quota) is full."""

    cause = "disk_full"


#: errno values of a write refused for want of space: no space left, quota exceeded.
_NO_SPACE_ERRNOS: frozenset[int] = frozenset(
    code for code in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if code
)


def is_disk_full(error: BaseException) -> bool:
    """Tell whether ``error`` is a write refused because the disk or quota is full.

    SQLite's ``SQLITE_FULL`` ("database or disk is full", also when ``max_page_count`` is
    reached) and ``OSError`` ENOSPC / EDQUOT, anywhere in the chain of causes.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_message(path: str | Path, what: str, remedy: str) -> str:
    """One line for a full disk: the file, the cause, what to do.

    Parameters
    ----------
    path
        The file that could not grow.
    what
        What the file is ("the ranking database", "the job store").
    remedy
        How to point it elsewhere (an option or a variable).
    """
    return (
        f"{what} {path} cannot grow: database or disk is full (no space left on its disk, "
        f"or its quota or size limit reached); free space there or {remedy}"
    )


#: How to put the ranking database elsewhere (in :func:`disk_full_message`).
DATABASE_ELSEWHERE = "pass --db FILE on a disk with space (or set IONDRAG_DB_PATH)"


def _database_file(conn: sqlite3.Connection) -> str:
    """Return the file of a connection's main database (or '?' when it cannot be read)."""
    try:
        for row in conn.execute("PRAGMA database_list").fetchall():
            if row[1] == "main":
                return str(row[2]) or "?"
    except sqlite3.Error:
        pass
    return "?"


@dataclass(frozen=True)
class ReusableResult:
    """A finished row of another run with the same candidate and parameters fingerprints."""

    run_id: str
    candidate_id: str
    candidate_fingerprint: str


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def utc_now() -> str:
    """Return the current UTC time, ISO 8601 with microseconds (sortable text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text (hash input)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def make_run_id(source_spec: Mapping[str, Any], parameters_fingerprint: str) -> str:
    """Deterministic run id of a screen: the same source and parameters give the same id.

    Parameters
    ----------
    source_spec
        Canonical description of the candidate source (JSON-able).
    parameters_fingerprint
        :meth:`ScreeningParameters.fingerprint`.

    Returns
    -------
    str
        ``"run-"`` and 12 hex digits.
    """
    text = canonical_json({"source": dict(source_spec), "parameters": parameters_fingerprint})
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def versions() -> dict[str, str | None]:
    """Versions of the packages that determine results (read from metadata, no imports)."""

    def _version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "iondrag": _version("iondrag"),
        "pymatgen": _version("pymatgen") or _version("pymatgen-core"),
        "jobflow": _version("jobflow"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
    }


def _sql_value(value: Any) -> Any:
    """Convert a Python value to its SQLite form (bool -> int, nan -> NULL, list -> JSON)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int | str):
        return value
    return canonical_json(value)


def _sql_type(value: Any) -> str:
    if isinstance(value, bool | int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


def _quote_identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise RankingDatabaseError(f"invalid column name {name!r}")
    return f'"{name}"'


# --------------------------------------------------------------------------------------------
# connection and schema
# --------------------------------------------------------------------------------------------


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise RankingDatabaseError(f"{path} is a folder, not a ranking database file")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            raise RankingDatabaseError(
                f"{path} is not an SQLite database (malformed or another kind of file)"
            )


def connect(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the ranking database, creating it (and its folder) unless ``read_only``.

    Parameters
    ----------
    path
        The SQLite file.
    read_only
        Open with ``mode=ro`` and an authorizer that refuses every write, ``ATTACH`` and
        transaction statements: for user SQL (``iondrag query``).

    Returns
    -------
    sqlite3.Connection
        In autocommit mode (transactions are explicit), rows as :class:`sqlite3.Row`.

    Raises
    ------
    RankingDatabaseError
        The file is not SQLite, is SQLite but not an iondrag ranking database, or (read
        only) does not exist.
    """
    path = Path(path).expanduser()
    _check_header(path)
    if read_only:
        if not path.exists():
            raise RankingDatabaseError(
                f"no ranking database at {path} (run `iondrag screen` first or pass --db)"
            )
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if is_disk_full(error):
                raise DatabaseFullError(
                    disk_full_message(path, "the ranking database", DATABASE_ELSEWHERE)
                ) from error
            raise
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if read_only:
            _check_iondrag(conn, path)
            conn.set_authorizer(_read_only_authorizer)
        else:
            _ensure_schema(conn, path)
    except sqlite3.OperationalError as error:
        conn.close()
        if is_disk_full(error):
            raise DatabaseFullError(
                disk_full_message(path, "the ranking database", DATABASE_ELSEWHERE)
            ) from error
        text = str(error)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            raise RankingDatabaseError(
                f"{path} cannot be written here ({text}); make the file and its folder "
                "writable or pass --db FILE"
            ) from error
        raise RankingDatabaseError(f"{path}: {error} (malformed ranking database?)") from error
    except sqlite3.DatabaseError as error:
        conn.close()
        raise RankingDatabaseError(f"{path}: {error} (malformed ranking database?)") from error
    except BaseException:
        conn.close()
        raise
    return conn


def _check_iondrag(conn: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return
    if "meta" not in tables:
        raise RankingDatabaseError(f"{path} is an SQLite database but not an iondrag one")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise RankingDatabaseError(f"{path} is an SQLite database but not an iondrag one")
    found = int(meta.get("schema_version", 0))
    if found > SCHEMA_VERSION:
        raise RankingDatabaseError(
            f"{path} has schema version {found}; this iondrag reads up to {SCHEMA_VERSION}"
        )


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    _check_iondrag(conn, path)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    with _transaction(conn):
        result_columns = ", ".join(f'"{name}" {kind}' for name, kind in RESULT_COLUMNS.items())
        run_columns = ", ".join(f'"{name}" {kind}' for name, kind in _RUN_COLUMNS.items())
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('application', ?), ('schema_version', ?)",
            (APPLICATION, str(SCHEMA_VERSION)),
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS results ({result_columns}, UNIQUE(run_id, candidate_id))"
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({run_columns})")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS documents (run_id TEXT NOT NULL, "
            "candidate_id TEXT NOT NULL, json TEXT NOT NULL, candidate_json TEXT, "
            "PRIMARY KEY (run_id, candidate_id))"
        )
        for statement in _INDEXES:
            conn.execute(statement)
        conn.execute("CREATE TABLE IF NOT EXISTS columns (name TEXT PRIMARY KEY, description TEXT)")
        conn.executemany(
            "INSERT OR REPLACE INTO columns VALUES (?, ?)", column_descriptions().items()
        )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): a writer waits its turn.

    Raises
    ------
    DatabaseFullError
        A write or the commit found the disk (or quota) full: one line naming the file.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except (sqlite3.Error, OSError) as error:
        if is_disk_full(error) and not isinstance(error, DatabaseFullError):
            raise DatabaseFullError(
                disk_full_message(_database_file(conn), "the ranking database", DATABASE_ELSEWHERE)
            ) from error
        raise


_WRITE_ACTIONS = {
    getattr(sqlite3, name)
    for name in (
        "SQLITE_INSERT",
        "SQLITE_UPDATE",
        "SQLITE_DELETE",
        "SQLITE_CREATE_INDEX",
        "SQLITE_CREATE_TABLE",
        "SQLITE_CREATE_TEMP_INDEX",
        "SQLITE_CREATE_TEMP_TABLE",
        "SQLITE_CREATE_TEMP_TRIGGER",
        "SQLITE_CREATE_TEMP_VIEW",
        "SQLITE_CREATE_TRIGGER",
        "SQLITE_CREATE_VIEW",
        "SQLITE_CREATE_VTABLE",
        "SQLITE_DROP_INDEX",
        "SQLITE_DROP_TABLE",
        "SQLITE_DROP_TEMP_INDEX",
        "SQLITE_DROP_TEMP_TABLE",
        "SQLITE_DROP_TEMP_TRIGGER",
        "SQLITE_DROP_TEMP_VIEW",
        "SQLITE_DROP_TRIGGER",
        "SQLITE_DROP_VIEW",
        "SQLITE_DROP_VTABLE",
        "SQLITE_ALTER_TABLE",
        "SQLITE_ATTACH",
        "SQLITE_DETACH",
        "SQLITE_REINDEX",
        "SQLITE_ANALYZE",
        "SQLITE_TRANSACTION",
        "SQLITE_SAVEPOINT",
    )
    if hasattr(sqlite3, name)
}


def _read_only_authorizer(action: int, arg1: Any, arg2: Any, db: Any, source: Any) -> int:
    if action in _WRITE_ACTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _result_columns(conn: sqlite3.Connection) -> list[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(results)")]


def _add_missing_columns(
    conn: sqlite3.Connection, row: Mapping[str, Any], known: list[str]
) -> list[str]:
    """Add columns for keys of ``row`` the table lacks (a newer ``ranking_row``)."""
    missing = [key for key in row if key not in known]
    for key in missing:
        kind = _sql_type(row[key]) if row[key] is not None else ""
        conn.execute(f"ALTER TABLE results ADD COLUMN {_quote_identifier(key)} {kind}".strip())
    return known + missing if missing else known


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def start_run(
    conn: sqlite3.Connection,
    run_id: str,
    parameters: ScreeningParameters,
    source_spec: Mapping[str, Any],
    *,
    n_candidates: int | None = None,
) -> dict[str, Any]:
    """Record that a run starts (or resumes); return its row.

    A new run gets a row with its parameters, source and versions; an existing one (a rerun
    of the same screen) keeps its start time and gets ``last_started_utc``, ``n_starts + 1``
    and status ``running``.

    Raises
    ------
    RankingDatabaseError
        ``run_id`` exists with other parameters (an explicit run id reused by mistake).
    """
    now = utc_now()
    fingerprint = parameters.fingerprint()
    found = versions()
    with _transaction(conn):
        existing = conn.execute(
            "SELECT parameters_fingerprint, source_json FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if existing is not None and existing[0] != fingerprint:
            raise RankingDatabaseError(
                f"run {run_id} exists with other parameters (fingerprint {existing[0]}, "
                f"now {fingerprint}); choose another run id"
            )
        if existing is not None and existing[1] != canonical_json(dict(source_spec)):
            raise RankingDatabaseError(
                f"run {run_id} exists for another source ({existing[1]}); choose another run id"
            )
        if existing is None:
            conn.execute(
                "INSERT INTO runs (run_id, status, parameters_json, parameters_fingerprint, "
                "source_json, iondrag_version, pymatgen_version, jobflow_version, "
                "numpy_version, python_version, started_utc, last_started_utc, n_starts, "
                "n_candidates) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (
                    run_id,
                    canonical_json(parameters.model_dump(mode="json")),
                    fingerprint,
                    canonical_json(dict(source_spec)),
                    found["iondrag"],
                    found["pymatgen"],
                    found["jobflow"],
                    found["numpy"],
                    found["python"],
                    now,
                    now,
                    n_candidates,
                ),
            )
        else:
            conn.execute(
                "UPDATE runs SET status = 'running', last_started_utc = ?, "
                "n_starts = n_starts + 1, finished_utc = NULL, "
                "n_candidates = COALESCE(?, n_candidates) WHERE run_id = ?",
                (now, n_candidates, run_id),
            )
    run = get_run(conn, run_id)
    assert run is not None
    return run


def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """Return the ``runs`` row of ``run_id`` as a dict, or None."""
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else dict(row)


def latest_run_id(conn: sqlite3.Connection) -> str | None:
    """Return the run started (or resumed) last, or None for an empty database."""
    row = conn.execute("SELECT run_id FROM runs ORDER BY last_started_utc DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def run_counts(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """Rows of a run by status, and how many were reused from other runs."""
    counts = {"n_rows": 0, "n_ok": 0, "n_failed": 0, "n_error": 0, "n_reused": 0}
    for status, reused, n in conn.execute(
        "SELECT status, reused_from_run_id IS NOT NULL, COUNT(*) FROM results "
        "WHERE run_id = ? GROUP BY 1, 2",
        (run_id,),
    ):
        counts["n_rows"] += n
        key = f"n_{status}"
        counts[key] = counts.get(key, 0) + n
        if reused:
            counts["n_reused"] += n
    return counts


def failure_counts(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """Failed and errored candidates of a run by cause (``error_cause``), largest first."""
    rows = conn.execute(
        "SELECT COALESCE(error_cause, status), COUNT(*) FROM results "
        "WHERE run_id = ? AND status != 'ok' GROUP BY 1 ORDER BY 2 DESC, 1",
        (run_id,),
    ).fetchall()
    return {str(cause): int(n) for cause, n in rows}


def mark_run_ended(conn: sqlite3.Connection, run_id: str, status: str) -> None:
    """Set ``status`` (``interrupted`` or ``failed``) on a run that is still ``running``.

    A run that finished (or was marked incomplete) keeps its status; rerunning the same
    screen resumes an interrupted or failed run like any other.
    """
    with _transaction(conn):
        conn.execute(
            "UPDATE runs SET status = ?, finished_utc = ? WHERE run_id = ? AND status = 'running'",
            (status, utc_now(), run_id),
        )


def check_writable(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a ranking database this process cannot write (read-only file or folder).

    Raises
    ------
    RankingDatabaseError
        Naming the file and what to do.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only file
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        raise RankingDatabaseError(
            f"{path} is read-only here ({error}); make it writable or pass --db FILE"
        ) from error


def finish_run(
    conn: sqlite3.Connection, run_id: str, *, expected_candidate_ids: Iterable[str] | None = None
) -> dict[str, Any]:
    """Mark a run finished (or ``incomplete`` when expected candidates have no row).

    Returns
    -------
    dict
        The updated ``runs`` row, plus ``missing_candidate_ids``.
    """
    present = {
        str(row[0])
        for row in conn.execute("SELECT candidate_id FROM results WHERE run_id = ?", (run_id,))
    }
    missing = sorted(set(expected_candidate_ids or ()) - present)
    counts = run_counts(conn, run_id)
    status = "incomplete" if missing else "finished"
    with _transaction(conn):
        conn.execute(
            "UPDATE runs SET status = ?, finished_utc = ?, n_ok = ?, n_failed = ?, "
            "n_error = ?, n_reused = ?, n_missing = ? WHERE run_id = ?",
            (
                status,
                utc_now(),
                counts["n_ok"],
                counts["n_failed"],
                counts["n_error"],
                counts["n_reused"],
                len(missing),
                run_id,
            ),
        )
    run = get_run(conn, run_id)
    if run is None:
        raise RankingDatabaseError(f"no run {run_id} in the ranking database")
    run["missing_candidate_ids"] = missing
    return run


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

# Replace an existing row only when it is not finished, or was computed for another
# structure (an edited CIF under the same name): one row per (run_id, candidate_id).
_REPLACE_CONDITION = (
    "results.status NOT IN ('ok', 'failed') "
    "OR results.candidate_fingerprint IS NOT excluded.candidate_fingerprint"
)


def _row_for(result: CandidateResult, run_id: str, now: str) -> dict[str, Any]:
    row = dict(result.ranking_row())
    row.update(
        run_id=run_id,
        written_utc=now,
        scored_utc=now,
        reused_from_run_id=None,
        seconds_total=result.seconds.get("total"),
    )
    return row


def insert_results(
    conn: sqlite3.Connection,
    run_id: str,
    results: Sequence[CandidateResult],
    candidates: Mapping[str, Candidate] | None = None,
) -> int:
    """Write results of a run in one transaction; return how many rows were written.

    Upsert: a candidate already finished in this run (same candidate fingerprint) keeps its
    row; a row with status ``error`` or another fingerprint is replaced. The full document
    (and the candidate, when given) goes to ``documents`` in the same transaction.
    """
    if not results:
        return 0
    now = utc_now()
    written = 0
    with _transaction(conn):
        known = _result_columns(conn)
        for result in results:
            row = _row_for(result, run_id, now)
            known = _add_missing_columns(conn, row, known)
            names = list(row)
            columns = ", ".join(_quote_identifier(name) for name in names)
            marks = ", ".join("?" for _ in names)
            updates = ", ".join(
                f"{_quote_identifier(name)} = excluded.{_quote_identifier(name)}"
                for name in names
                if name not in ("run_id", "candidate_id")
            )
            cursor = conn.execute(
                f"INSERT INTO results ({columns}) VALUES ({marks}) "
                f"ON CONFLICT(run_id, candidate_id) DO UPDATE SET {updates} "
                f"WHERE {_REPLACE_CONDITION}",
                [_sql_value(row[name]) for name in names],
            )
            if cursor.rowcount:
                written += 1
                candidate = (candidates or {}).get(result.candidate_id)
                conn.execute(
                    "INSERT INTO documents (run_id, candidate_id, json, candidate_json) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(run_id, candidate_id) DO UPDATE SET "
                    "json = excluded.json, candidate_json = "
                    "COALESCE(excluded.candidate_json, documents.candidate_json)",
                    (
                        run_id,
                        result.candidate_id,
                        result.model_dump_json(),
                        None if candidate is None else candidate.model_dump_json(),
                    ),
                )
    return written


def finished_candidates(conn: sqlite3.Connection, run_id: str) -> dict[str, str | None]:
    """Candidates of a run that are finished: candidate_id -> candidate_fingerprint."""
    marks = ", ".join("?" for _ in FINISHED_STATUSES)
    return {
        str(candidate_id): fingerprint
        for candidate_id, fingerprint in conn.execute(
            f"SELECT candidate_id, candidate_fingerprint FROM results "
            f"WHERE run_id = ? AND status IN ({marks})",
            (run_id, *FINISHED_STATUSES),
        )
    }


def find_reusable(
    conn: sqlite3.Connection,
    candidate_fingerprints: Iterable[str],
    parameters_fingerprint: str,
    *,
    exclude_run_id: str | None = None,
) -> dict[str, ReusableResult]:
    """Finished results of other runs for these candidates and parameters (newest first).

    Only runs of the same iondrag version count: a new version may compute differently.

    Returns
    -------
    dict
        candidate_fingerprint -> the newest finished row with that fingerprint and
        ``parameters_fingerprint`` (status ``ok`` or ``failed``), outside ``exclude_run_id``.
    """
    wanted = list(dict.fromkeys(candidate_fingerprints))
    found: dict[str, ReusableResult] = {}
    batch = 500
    for start in range(0, len(wanted), batch):
        part = wanted[start : start + batch]
        marks = ", ".join("?" for _ in part)
        rows = conn.execute(
            f"SELECT r.run_id, r.candidate_id, r.candidate_fingerprint FROM results r "
            f"JOIN runs u ON u.run_id = r.run_id "
            f"WHERE r.candidate_fingerprint IN ({marks}) AND r.parameters_fingerprint = ? "
            f"AND r.status IN ('ok', 'failed') AND r.run_id IS NOT ? "
            f"AND u.iondrag_version IS ? ORDER BY r.written_utc DESC",
            (*part, parameters_fingerprint, exclude_run_id, versions()["iondrag"]),
        ).fetchall()
        for run_id, candidate_id, fingerprint in rows:
            found.setdefault(
                str(fingerprint), ReusableResult(str(run_id), str(candidate_id), str(fingerprint))
            )
    return found


def copy_results(conn: sqlite3.Connection, run_id: str, sources: Iterable[ReusableResult]) -> int:
    """Copy finished rows (and their documents) of other runs into ``run_id``.

    The copy keeps ``scored_utc`` and records ``reused_from_run_id`` (the run that computed
    it); ``written_utc`` is now. Returns the number of rows copied.
    """
    sources = list(sources)
    if not sources:
        return 0
    now = utc_now()
    copied = 0
    with _transaction(conn):
        columns = _result_columns(conn)
        names = ", ".join(_quote_identifier(name) for name in columns)
        select = ", ".join(
            {
                "run_id": "?",
                "written_utc": "?",
                "scored_utc": "COALESCE(scored_utc, written_utc)",
                "reused_from_run_id": "COALESCE(reused_from_run_id, run_id)",
            }.get(name, _quote_identifier(name))
            for name in columns
        )
        updates = ", ".join(
            f"{_quote_identifier(name)} = excluded.{_quote_identifier(name)}"
            for name in columns
            if name not in ("run_id", "candidate_id")
        )
        for source in sources:
            cursor = conn.execute(
                f"INSERT INTO results ({names}) SELECT {select} FROM results "
                f"WHERE run_id = ? AND candidate_id = ? "
                f"ON CONFLICT(run_id, candidate_id) DO UPDATE SET {updates} "
                f"WHERE {_REPLACE_CONDITION}",
                (run_id, now, source.run_id, source.candidate_id),
            )
            if cursor.rowcount:
                copied += 1
                conn.execute(
                    "INSERT INTO documents (run_id, candidate_id, json, candidate_json) "
                    "SELECT ?, candidate_id, json, candidate_json FROM documents "
                    "WHERE run_id = ? AND candidate_id = ? "
                    "ON CONFLICT(run_id, candidate_id) DO UPDATE SET json = excluded.json, "
                    "candidate_json = excluded.candidate_json",
                    (run_id, source.run_id, source.candidate_id),
                )
    return copied


def read_ranking(conn: sqlite3.Connection, run_id: str) -> pd.DataFrame:
    """Return a run's rows ranked: highest ``sigma_S_per_cm`` first, unscored rows last."""
    frame = pd.read_sql_query(
        "SELECT * FROM results WHERE run_id = ? "
        "ORDER BY sigma_S_per_cm IS NULL, sigma_S_per_cm DESC, status, candidate_id",
        conn,
        params=(run_id,),
    )
    for name in ("dimensionality",):
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def load_document(
    conn: sqlite3.Connection, candidate_id: str, run_id: str | None = None
) -> tuple[str, CandidateResult, Candidate | None]:
    """Return (run_id, result document, candidate or None) of one candidate.

    Without ``run_id``: the newest row of that candidate in any run.

    Raises
    ------
    RankingDatabaseError
        No such candidate (in that run).
    """
    if run_id is None:
        row = conn.execute(
            "SELECT d.run_id, d.json, d.candidate_json FROM documents d JOIN results r "
            "ON r.run_id = d.run_id AND r.candidate_id = d.candidate_id "
            "WHERE d.candidate_id = ? ORDER BY r.written_utc DESC LIMIT 1",
            (candidate_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT run_id, json, candidate_json FROM documents "
            "WHERE candidate_id = ? AND run_id = ?",
            (candidate_id, run_id),
        ).fetchone()
    if row is None:
        where = f" in run {run_id}" if run_id else ""
        raise RankingDatabaseError(f"no candidate {candidate_id!r}{where} in the ranking database")
    candidate = None if row[2] is None else _validate_lenient(Candidate, row[2])
    return str(row[0]), _validate_lenient(CandidateResult, row[1]), candidate


def _validate_lenient(model: Any, text: str) -> Any:
    """Validate stored JSON, dropping fields a newer schema no longer has (older runs)."""
    from pydantic import ValidationError

    try:
        return model.model_validate_json(text)
    except ValidationError:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in model.model_fields}
        return model.model_validate(known)


def run_query(
    path: str | Path, sql: str, parameters: Sequence[Any] = (), *, max_rows: int | None = None
) -> pd.DataFrame:
    """Run user SQL on a read-only connection; return the rows as a DataFrame.

    With ``max_rows``, ``frame.attrs["rows_cut"]`` counts the rows left out.

    Raises
    ------
    RankingDatabaseError
        The file is unusable, or the statement writes (refused) or is invalid SQL.
    """
    with closing(connect(path, read_only=True)) as conn:
        try:
            cursor = conn.execute(sql, tuple(parameters))
            names = [item[0] for item in cursor.description or ()]
            rows = cursor.fetchmany(max_rows) if max_rows is not None else cursor.fetchall()
            cut = 0 if max_rows is None else sum(1 for _ in cursor)
        except sqlite3.DatabaseError as error:
            message = str(error)
            if "not authorized" in message or "readonly" in message:
                raise RankingDatabaseError(
                    "query refused: the ranking database is read-only for `iondrag query` "
                    "(SELECT statements only)"
                ) from error
            raise RankingDatabaseError(f"query failed: {message}") from error
    frame = pd.DataFrame([tuple(row) for row in rows], columns=names)
    frame.attrs["rows_cut"] = cut
    return frame


def prune_run(conn: sqlite3.Connection, run_id: str, keep_candidate_ids: Iterable[str]) -> int:
    """Delete rows (and documents) of a run whose candidate left the source; return how many.

    A run is "this source with these parameters": when a CIF is removed from the folder,
    its row leaves the run on the next screen of that folder.
    """
    keep = set(keep_candidate_ids)
    present = {
        str(row[0])
        for row in conn.execute("SELECT candidate_id FROM results WHERE run_id = ?", (run_id,))
    }
    stale = sorted(present - keep)
    if not stale:
        return 0
    with _transaction(conn):
        for candidate_id in stale:
            conn.execute(
                "DELETE FROM results WHERE run_id = ? AND candidate_id = ?", (run_id, candidate_id)
            )
            conn.execute(
                "DELETE FROM documents WHERE run_id = ? AND candidate_id = ?",
                (run_id, candidate_id),
            )
    return len(stale)
