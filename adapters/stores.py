"""Job stores: a file-backed default that needs no server, or jobflow's configured one.

:class:`SQLiteStore` is a small maggma :class:`~maggma.core.Store` over one SQLite file:
each document is a row of (Mongo extended) JSON; equality and ``$in`` criteria on indexed
fields (``uuid``, ``index``, ``blob_uuid``, ... : SQLite expression indexes on
``json_extract``) narrow the rows in SQL, and every criterion is then checked with
mongomock's filter, so queries mean what they mean on MongoDB. Writes are single
transactions in WAL mode with a busy timeout: several processes (two screens, the chunk
jobs of a FireWorks run) can share the files.

Why not one of maggma's file stores: ``JSONStore`` rewrites the whole file on each update
(quadratic in the number of jobs, and two processes overwrite each other's documents);
``MontyStore`` needs the extra ``montydb`` dependency and scans and decodes every document
for each lookup (no indexes), which becomes slow as the store grows across screens, with
the large grid blobs of the data store in particular.

:func:`default_job_store` returns jobflow's ``SETTINGS.JOB_STORE`` when jobflow is
configured (``JOBFLOW_CONFIG_FILE``, ``JOBFLOW_JOB_STORE`` or ``~/.jobflow.yaml``: that is
how a MongoStore is used on a cluster), otherwise a :class:`jobflow.JobStore` with a
:class:`SQLiteStore` for documents and another for the ``data`` additional store under
``<IONDRAG_HOME>/jobstore/``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maggma.core import Sort, Store

if TYPE_CHECKING:
    from jobflow import JobStore

__all__ = [
    "JobStoreFullError",
    "SQLiteStore",
    "default_job_store",
    "file_job_store",
    "jobflow_is_configured",
]


class JobStoreFullError(OSError):
    """A job store file cannot grow: its disk (or the user's quota) is full.

    An ``OSError``: the command line prints its one line (the file, the cause, what to do).
    """


#: Fields with an index by default: what jobflow looks documents up by.
DEFAULT_INDEXED_FIELDS: tuple[str, ...] = ("uuid", "index", "blob_uuid", "job_uuid", "name")


def _dumps(document: dict[str, Any]) -> str:
    from bson import json_util

    return json_util.dumps(document)


def _loads(text: str) -> dict[str, Any]:
    from bson import json_util

    return json_util.loads(text)


def _json_path(field: str) -> str:
    if not field.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"unsupported field name for an index: {field!r}")
    return f"$.{field}"


class SQLiteStore(Store):
    """A maggma Store of JSON documents in one SQLite table (no server, process-safe).

    Parameters
    ----------
    database_path
        The SQLite file (created with its folder on connect).
    table_name
        Table holding the documents; several stores may share one file.
    indexed_fields
        Top-level fields with an expression index (the key field is always added).
    timeout_s
        How long a writer waits for another process's transaction.
    **kwargs
        Passed to :class:`maggma.core.Store` (``key``, ``last_updated_field``, ...).
    """

    def __init__(
        self,
        database_path: str,
        table_name: str = "documents",
        indexed_fields: list[str] | tuple[str, ...] = DEFAULT_INDEXED_FIELDS,
        timeout_s: float = 120.0,
        **kwargs: Any,
    ) -> None:
        if not table_name.replace("_", "").isalnum():
            raise ValueError(f"table_name must be letters, digits and _, got {table_name!r}")
        self.database_path = str(database_path)
        self.table_name = table_name
        self.indexed_fields = list(indexed_fields)
        self.timeout_s = float(timeout_s)
        self.kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        super().__init__(**kwargs)

    # -- maggma interface -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Return ``sqlite://<path>#<table>``."""
        return f"sqlite://{self.database_path}#{self.table_name}"

    @property
    def _collection(self) -> Any:
        raise NotImplementedError("SQLiteStore has no pymongo collection; use query/update")

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (creating table and indexes); a no-op when already connected."""
        with self._lock:
            if self._conn is not None and not force_reset:
                return
            if self._conn is not None:
                self._conn.close()
            path = Path(self.database_path).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.table_name}" '
                    "(id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL)"
                )
            except (sqlite3.Error, OSError) as error:
                if _is_disk_full(error):
                    raise self._full(error) from error
                raise
            self._conn = conn
            for field in dict.fromkeys([*self.indexed_fields, *self._key_fields(None)]):
                self.ensure_index(field)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def count(self, criteria: dict | None = None, hint: dict | None = None) -> int:
        """Count the documents matching ``criteria``."""
        return sum(1 for _ in self._matching(criteria))

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        """Yield the documents matching ``criteria`` (Mongo semantics), sorted and projected."""
        docs = [doc for _, doc in self._matching(criteria)]
        for field, direction in reversed(list((sort or {}).items())):
            value = direction.value if isinstance(direction, Sort) else int(direction)
            docs.sort(key=_field_sort_key(field), reverse=value < 0)
        docs = docs[skip:]
        if limit:
            docs = docs[:limit]
        for doc in docs:
            yield _project(doc, properties)

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field`` among the matching documents (lists flattened)."""
        values: list[Any] = []
        for _, doc in self._matching(criteria):
            value = _get(doc, field)
            for item in value if isinstance(value, list) else [value]:
                if item is not None and item not in values:
                    values.append(item)
        return values

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        """Group the matching documents by ``keys`` (as maggma's MemoryStore does)."""
        keys = keys if isinstance(keys, list) else [keys]
        docs = [
            doc
            for _, doc in self._matching(criteria)
            if all(_get(doc, key, _MISSING) is not _MISSING for key in keys)
        ]

        def grouping(doc: dict) -> tuple:
            return tuple(_sort_key(_get(doc, key)) for key in keys)

        for _, group in groupby(sorted(docs, key=grouping), key=grouping):
            members = list(group)
            head: dict[str, Any] = {}
            for key in keys:
                _set(head, key, _get(members[0], key))
            yield head, [_project(doc, properties) for doc in members]

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Insert or replace documents: one per value of ``key`` (Mongo's replace/upsert)."""
        from monty.json import jsanitize

        docs = docs if isinstance(docs, list) else [docs]
        key_fields = self._key_fields(key)
        conn = self._connection()
        with self._lock, _transaction(conn, self._full):
            for doc in docs:
                doc = jsanitize(doc, allow_bson=True)
                if self.validator is not None and not self.validator.is_valid(doc):
                    if getattr(self.validator, "strict", False):
                        raise ValueError(self.validator.validation_errors(doc))
                    self.logger.error(self.validator.validation_errors(doc))
                    continue
                missing = [field for field in key_fields if field not in doc]
                if missing:
                    raise KeyError(f"document lacks the key field(s) {missing}")
                criteria = {field: doc[field] for field in key_fields}
                existing = [row_id for row_id, _ in self._matching(criteria, conn=conn)]
                text = _dumps(doc)
                if existing:
                    conn.execute(
                        f'UPDATE "{self.table_name}" SET doc = ? WHERE id = ?', (text, existing[0])
                    )
                    if len(existing) > 1:
                        marks = ", ".join("?" for _ in existing[1:])
                        conn.execute(
                            f'DELETE FROM "{self.table_name}" WHERE id IN ({marks})', existing[1:]
                        )
                else:
                    conn.execute(f'INSERT INTO "{self.table_name}" (doc) VALUES (?)', (text,))

    def remove_docs(self, criteria: dict) -> None:
        """Delete the documents matching ``criteria``."""
        conn = self._connection()
        with self._lock, _transaction(conn, self._full):
            ids = [row_id for row_id, _ in self._matching(criteria, conn=conn)]
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ", ".join("?" for _ in part)
                conn.execute(f'DELETE FROM "{self.table_name}" WHERE id IN ({marks})', part)

    def ensure_index(self, key: str, unique: bool | None = False) -> bool:
        """Create an expression index on a top-level or dotted field; True when it exists."""
        conn = self._connection()
        safe = key.replace(".", "__")
        unique_sql = "UNIQUE " if unique else ""
        try:
            conn.execute(
                f'CREATE {unique_sql}INDEX IF NOT EXISTS "{self.table_name}_{safe}" '
                f"ON \"{self.table_name}\"(json_extract(doc, '{_json_path(key)}'))"
            )
        except (sqlite3.DatabaseError, ValueError):
            return False
        if key not in self.indexed_fields:
            self.indexed_fields.append(key)
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SQLiteStore):
            return False
        return (self.database_path, self.table_name) == (other.database_path, other.table_name)

    def __hash__(self) -> int:
        return hash((self.database_path, self.table_name))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_conn"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- internals ---------------------------------------------------------------------------

    def _full(self, error: BaseException) -> JobStoreFullError:
        """Return the one-line error of a write refused for want of space (``error``'s)."""
        from iondrag.adapters.database import disk_full_message

        return JobStoreFullError(
            disk_full_message(
                Path(self.database_path).expanduser(),
                "the job store",
                "point the job store elsewhere: IONDRAG_HOME=DIR on a disk with space (it "
                "holds only intermediate outputs), or a jobflow JOB_STORE",
            )
        )

    def _key_fields(self, key: list | str | None) -> list[str]:
        key = key if key is not None else self.key
        return list(key) if isinstance(key, list | tuple) else [key]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def _matching(
        self, criteria: dict | None, conn: sqlite3.Connection | None = None
    ) -> Iterator[tuple[int, dict]]:
        """(row id, document) of every document matching ``criteria``, in insertion order."""
        from mongomock.filtering import filter_applies

        criteria = criteria or {}
        where, values = self._sql_filter(criteria)
        conn = conn or self._connection()
        with self._lock:
            rows = conn.execute(
                f'SELECT id, doc FROM "{self.table_name}"{where} ORDER BY id', values
            ).fetchall()
        for row_id, text in rows:
            doc = _loads(text)
            if not criteria or filter_applies(criteria, doc):
                yield row_id, doc

    def _sql_filter(self, criteria: dict) -> tuple[str, list[Any]]:
        """WHERE clause for equality/``$in`` criteria on indexed fields (a pre-filter)."""
        clauses: list[str] = []
        values: list[Any] = []
        for field, condition in criteria.items():
            if field not in self.indexed_fields or field.startswith("$"):
                continue
            expression = f"json_extract(doc, '{_json_path(field)}')"
            if _is_scalar(condition):
                clauses.append(f"{expression} = ?")
                values.append(condition)
            elif (
                isinstance(condition, dict)
                and set(condition) == {"$in"}
                and isinstance(condition["$in"], list | tuple)
                and all(_is_scalar(item) for item in condition["$in"])
            ):
                items = list(condition["$in"])
                if not items:
                    clauses.append("0")
                    continue
                clauses.append(f"{expression} IN ({', '.join('?' for _ in items)})")
                values.extend(items)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


class _Missing:
    pass


_MISSING = _Missing()


def _is_scalar(value: Any) -> bool:
    # bool is excluded: JSON true is stored as 1 and would also match the integer 1
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _get(doc: dict, field: str, default: Any = None) -> Any:
    value: Any = doc
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return default
    return value


def _set(doc: dict, field: str, value: Any) -> None:
    parts = field.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value


def _project(doc: dict, properties: dict | list | None) -> dict:
    if not properties:
        return doc
    if isinstance(properties, dict):
        wanted = [field for field, keep in properties.items() if keep]
        excluded = [field for field, keep in properties.items() if not keep]
        if excluded and not wanted:
            result = dict(doc)
            for field in excluded:
                result.pop(field, None)
            return result
    else:
        wanted = list(properties)
    projected: dict[str, Any] = {}
    for field in wanted:
        value = _get(doc, field, _MISSING)
        if value is not _MISSING:
            _set(projected, field, value)
    return projected


def _field_sort_key(field: str) -> Any:
    def key(doc: dict) -> tuple[int, Any]:
        return _sort_key(_get(doc, field))

    return key


def _sort_key(value: Any) -> tuple[int, Any]:
    """Sort None first, then numbers, then text, then anything else as text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, str(value))


class _TransactionContext:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); a full disk -> ``full(error)``."""

    def __init__(
        self, conn: sqlite3.Connection, full: Callable[[BaseException], Exception]
    ) -> None:
        self.conn = conn
        self.full = full

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            if _is_disk_full(error):
                raise self.full(error) from error
            raise
        return self.conn

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as error:
                value = error
        if self.conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            self.conn.execute("ROLLBACK")
        if value is not None and _is_disk_full(value):
            raise self.full(value) from value
        if kind is None:
            raise value


def _transaction(
    conn: sqlite3.Connection, full: Callable[[BaseException], Exception]
) -> _TransactionContext:
    return _TransactionContext(conn, full)


def _is_disk_full(error: BaseException) -> bool:
    from iondrag.adapters.database import is_disk_full

    return is_disk_full(error)


# --------------------------------------------------------------------------------------------
# job stores
# --------------------------------------------------------------------------------------------


def jobflow_is_configured() -> bool:
    """Tell whether the user configured jobflow (its settings then choose the job store)."""
    if os.environ.get("JOBFLOW_JOB_STORE"):
        return True
    config = os.environ.get("JOBFLOW_CONFIG_FILE") or "~/.jobflow.yaml"
    return Path(config).expanduser().is_file()


def file_job_store(folder: str | Path) -> JobStore:
    """Return a JobStore of two SQLite files in ``folder`` (outputs, data)."""
    from jobflow import JobStore

    folder = Path(folder).expanduser().resolve()
    return JobStore(
        SQLiteStore(str(folder / "outputs.sqlite"), table_name="outputs"),
        additional_stores={"data": SQLiteStore(str(folder / "data.sqlite"), table_name="data")},
    )


def default_job_store() -> JobStore:
    """Return the job store of a screen: jobflow's configured one, else files in IONDRAG_HOME.

    Returns
    -------
    jobflow.JobStore
        ``jobflow.SETTINGS.JOB_STORE`` when :func:`jobflow_is_configured`, otherwise
        :func:`file_job_store` of ``get_settings().home / "jobstore"`` (read now).
    """
    if jobflow_is_configured():
        from jobflow import SETTINGS

        return SETTINGS.JOB_STORE
    from iondrag.screening.settings import get_settings

    return file_job_store(get_settings().home / "jobstore")
