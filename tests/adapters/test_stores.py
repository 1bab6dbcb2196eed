"""SQLiteStore: Mongo semantics of a maggma Store, persistence, processes, jobflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from jobflow import JobStore, job, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder

from iondrag.adapters.stores import SQLiteStore, file_job_store

pytestmark = pytest.mark.filterwarnings("ignore:cd is deprecated:FutureWarning")

DOCS = [
    {"task_id": 1, "name": "a", "value": 3.0, "tags": ["x", "y"], "nested": {"n": 1}},
    {"task_id": 2, "name": "b", "value": 1.0, "tags": ["y"], "nested": {"n": 2}},
    {"task_id": 3, "name": "c", "value": 2.0, "tags": [], "nested": {"n": 2}},
]


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path: Path):
    """The same tests against maggma's MemoryStore (mongomock) as the reference."""
    if request.param == "sqlite":
        made = SQLiteStore(str(tmp_path / "docs.sqlite"), key="task_id")
    else:
        made = MemoryStore(key="task_id")
    made.connect()
    made.update([dict(d) for d in DOCS])
    yield made
    made.close()


def strip(docs):
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


def test_query_semantics_match_memory_store(store) -> None:
    assert store.count() == 3
    assert store.count({"value": {"$gt": 1.5}}) == 2
    assert strip(store.query({"name": "b"}, properties=["name", "value"])) == [
        {"name": "b", "value": 1.0}
    ]
    assert [d["name"] for d in store.query({"task_id": {"$in": [3, 1]}}, sort={"value": 1})] == [
        "c",
        "a",
    ]
    assert [d["name"] for d in store.query(sort={"value": -1}, limit=2)] == ["a", "c"]
    assert [d["name"] for d in store.query({"nested.n": 2}, sort={"name": 1}, skip=1)] == ["c"]
    assert [d["name"] for d in store.query({"tags": "y"}, sort={"name": 1})] == ["a", "b"]
    assert sorted(store.distinct("nested.n")) == [1, 2]
    groups = {key["nested"]["n"]: len(docs) for key, docs in store.groupby("nested.n")}
    assert groups == {1: 1, 2: 2}
    store.update({"task_id": 2, "name": "b2", "value": 9.0})
    assert store.count() == 3 and store.query_one({"task_id": 2})["name"] == "b2"
    store.remove_docs({"value": {"$lt": 2.5}})
    assert sorted(d["task_id"] for d in store.query()) == [1, 2]


def test_sqlite_store_persists_and_serialises(tmp_path: Path) -> None:
    path = str(tmp_path / "docs.sqlite")
    first = SQLiteStore(path, table_name="outputs", key="uuid")
    first.connect()
    when = datetime(2024, 5, 1, 12, 0, 0)
    first.update([{"uuid": "u1", "index": 1, "completed": when, "output": {"x": [1, 2]}}])
    first.close()
    again = MontyDecoder().process_decoded(first.as_dict())
    assert isinstance(again, SQLiteStore) and again == first
    again.connect()
    doc = again.query_one({"uuid": "u1"})
    assert doc["output"] == {"x": [1, 2]} and doc["completed"] == when
    plan = again._conn.execute(  # the uuid lookup uses the expression index
        "EXPLAIN QUERY PLAN SELECT id FROM outputs WHERE json_extract(doc, '$.uuid') = 'u1'"
    ).fetchall()
    assert "outputs_uuid" in str(plan)


WRITER = textwrap.dedent(
    """
    import sys
    from iondrag.adapters.stores import SQLiteStore
    store = SQLiteStore(sys.argv[1], key="blob_uuid")
    store.connect()
    for i in range(int(sys.argv[3])):
        store.update({"blob_uuid": f"{sys.argv[2]}-{i}", "data": "x" * 1000})
    """
)


def test_sqlite_store_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "data.sqlite")
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, name, "100"], stderr=subprocess.PIPE)
        for name in ("p", "q", "r")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    store = SQLiteStore(path, key="blob_uuid")
    store.connect()
    assert store.count() == 300


@job
def _add(a: int, b: int) -> int:
    return a + b


@job(data="payload")
def _big(n: int) -> dict:
    return {"n": n, "payload": list(range(n))}


def test_job_store_of_sqlite_stores_runs_jobflow(tmp_path: Path) -> None:
    store = file_job_store(tmp_path / "js")
    first = _add(1, 2)
    second = _add(first.output, 10)
    big = _big(second.output)
    run_locally([first, second, big], store=store, log=False, ensure_success=True)
    reopened = file_job_store(tmp_path / "js")  # persisted: a new process would see the same
    reopened.connect()
    assert reopened.get_output(second.uuid) == 13
    assert reopened.get_output(big.uuid, load=True)["payload"] == list(range(13))
    assert reopened.additional_stores["data"].count() == 1
    assert isinstance(reopened, JobStore)


def test_a_full_job_store_is_one_line_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    from iondrag.adapters.stores import JobStoreFullError

    path = tmp_path / "jobstore" / "outputs.sqlite"
    made = SQLiteStore(str(path), key="task_id")
    made.connect()
    made.update([dict(d) for d in DOCS])
    conn = made._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite: "database or disk is full"
    with pytest.raises(JobStoreFullError) as raised:
        made.update({"task_id": 9, "blob": "x" * 200_000})
    message = str(raised.value)
    assert str(path) in message and "database or disk is full" in message
    assert "free space" in message and "IONDRAG_HOME" in message
    assert "\n" not in message
    assert not conn.in_transaction
    assert made.count() == 3  # rolled back, the store still answers
    made.close()


def test_a_screen_on_a_full_job_store_stops_with_that_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from iondrag.workflows import cli

    monkeypatch.setenv("IONDRAG_HOME", str(tmp_path / "home"))
    for name in ("JOBFLOW_CONFIG_FILE", "JOBFLOW_JOB_STORE", "IONDRAG_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    connect = SQLiteStore.connect

    def full_after_connect(self: SQLiteStore, force_reset: bool = False) -> None:
        connect(self, force_reset)
        conn = self._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(SQLiteStore, "connect", full_after_connect)
    code = cli.main(
        [
            "screen",
            "--ids",
            "lif-fm3m",
            "--grid",
            "0.5",
            "--arrhenius",
            "none",
            "--quiet",
            "--db",
            str(tmp_path / "results.sqlite"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("iondrag screen: error: the job store ")
    assert str(tmp_path / "home" / "jobstore") in line
    assert "database or disk is full" in line and "free space" in line
    assert "internal error" not in line


def test_a_screen_on_a_full_ranking_database_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from iondrag.adapters import database
    from iondrag.workflows import cli

    monkeypatch.setenv("IONDRAG_HOME", str(tmp_path / "home"))
    for name in ("JOBFLOW_CONFIG_FILE", "JOBFLOW_JOB_STORE", "IONDRAG_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    connect = database.connect

    def full_after_connect(path, *, read_only=False):  # type: ignore[no-untyped-def]
        conn = connect(path, read_only=read_only)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(database, "connect", full_after_connect)
    db = tmp_path / "results.sqlite"
    args = ["screen", "--ids", "lif-fm3m", "--grid", "0.5", "--arrhenius", "none", "--quiet"]
    code = cli.main([*args, "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"iondrag screen: error: the ranking database {db} cannot grow")
    assert "database or disk is full" in line and "free space" in line and "--db FILE" in line
