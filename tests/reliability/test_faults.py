"""Faults with real processes: random SIGKILLs and reruns, killed workers, concurrent writers,
and the Materials Project retry budget through the command line.

Extends tests/workflows (one kill after two rows, two screens at two temperatures, a killed
worker of ``score_candidates``) and tests/adapters/sources/test_mp.py (retry budgets of
the client): here the kills land at seeded random moments (also before the first row and
while CIFs load), only the main process is killed once (its workers must not outlive it),
a worker is killed under the CLI, three writers share one database (two sources, and the
same run twice), and the MP faults go through ``iondrag screen --source mp``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest
from rel_helpers import (
    FAST_CLI,
    antifluorite,
    clean_env,
    count_rows,
    kill_group,
    nonfinite_cells,
    one_line_error,
    rocksalt,
    rows,
    run_cli,
    start_cli,
    write_cif,
)

pytestmark = pytest.mark.slow

SEED = 20250605

#: Small structures of different compositions (about a second each at 0.3 Å).
STRUCTURES: dict[str, Any] = {
    "lif": lambda: rocksalt("Li", "F", 4.03),
    "licl": lambda: rocksalt("Li", "Cl", 5.13),
    "libr": lambda: rocksalt("Li", "Br", 5.50),
    "naf": lambda: rocksalt("Na", "F", 4.63),
    "nacl": lambda: rocksalt("Na", "Cl", 5.64),
    "li2o": lambda: antifluorite("Li", "O", 4.61),
    "li2s": lambda: antifluorite("Li", "S", 5.71),
    "na2o": lambda: antifluorite("Na", "O", 5.55),
    "na2s": lambda: antifluorite("Na", "S", 6.54),
    "lii": lambda: rocksalt("Li", "I", 6.00),
}


def write_folder(folder: Path, ids: list[str], *, broken: bool = True) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for candidate_id in ids:
        write_cif(folder / f"{candidate_id}.cif", STRUCTURES[candidate_id]())
    if broken:
        (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nnot a cif\n")
        return [*ids, "broken"]
    return list(ids)


def finished_stamps(db: Path) -> dict[str, tuple[str, str]]:
    """candidate -> (scored_utc, written_utc) of the finished rows (every run)."""
    if not db.exists():
        return {}
    return {
        f"{r['run_id']}/{r['candidate_id']}": (r["scored_utc"], r["written_utc"])
        for r in rows(db)
        if r["status"] in ("ok", "failed")
    }


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                out.append(process)
        except psutil.Error:
            pass
    return out


def pool_workers(pid: int) -> list[psutil.Process]:
    """The scoring pool's workers (spawned), not the resource tracker or CIF loaders."""
    found = []
    for process in descendants(pid):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            found.append(process)
    return found


def _wait_rows_or_exit(process, db: Path, at_least: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if count_rows(db) >= at_least:
            return True
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} rows after {timeout} s")


def test_random_kills_then_rerun_every_candidate_once_nothing_recomputed(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ids = write_folder(tmp_path / "cifs", list(STRUCTURES))
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    args = ["screen", tmp_path / "cifs", *FAST_CLI, "--workers", "2", "--chunk-size", "3"]
    args += ["--db", db, "--quiet"]
    plan = [
        ("group", "time", rng.uniform(0.5, 4.0)),  # often before the first row (imports, load)
        ("main-only", "rows", rng.randint(1, 4)),  # only the screen's own process
        ("group", "rows", rng.randint(5, len(ids) - 2)),
    ]
    kept: dict[str, tuple[str, str]] = {}
    launches, kills = 0, []
    for mode, trigger, value in plan:
        process = start_cli(args, env)
        launches += 1
        if trigger == "time":
            time.sleep(value)
            running = process.poll() is None
        else:
            running = _wait_rows_or_exit(process, db, int(value), timeout=300)
            time.sleep(rng.uniform(0.0, 0.8))
            running = running and process.poll() is None
        if not running:  # finished before the kill: nothing to inject
            process.communicate(timeout=60)
            continue
        if mode == "main-only":
            children = descendants(process.pid)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)  # not communicate(): orphans would hold stderr open
            # the workers notice that the screen is gone and stop (no orphans holding memory)
            deadline = time.monotonic() + 30
            while alive(children) and time.monotonic() < deadline:
                time.sleep(0.2)
            orphans = alive(children)
            described = [" ".join(p.cmdline())[-80:] for p in orphans]
            for orphan in orphans:
                orphan.kill()
            process.communicate(timeout=60)
            assert not orphans, described
        else:
            kill_group(process)
        kills.append((mode, trigger, value, count_rows(db)))
        stamps = finished_stamps(db)
        assert all(stamps[k] == v for k, v in kept.items())  # never rewritten
        kept = stamps
    print("kills (mode, trigger, value, rows at kill):", kills)
    assert len(kills) >= 2, kills

    final = run_cli(args, env)
    launches += 1
    assert final.returncode == 0, final.stderr
    table = rows(db)
    assert sorted(r["candidate_id"] for r in table) == sorted(ids)  # each exactly once
    assert {r["status"] for r in table if r["candidate_id"] != "broken"} == {"ok"}
    after = finished_stamps(db)
    assert all(after[k] == v for k, v in kept.items())  # finished before a kill: not rescored
    assert nonfinite_cells(db) == []
    with closing(sqlite3.connect(db)) as conn:
        status, starts, missing = conn.execute(
            "SELECT status, n_starts, n_missing FROM runs"
        ).fetchone()
    # a kill before the run row was written does not count as a start
    assert status == "finished" and missing == 0 and starts <= launches


def test_killed_worker_under_the_cli_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    ids = write_folder(tmp_path / "cifs", list(STRUCTURES))
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    args = ["screen", tmp_path / "cifs", "--grid", "0.25", "--arrhenius", "none"]
    args += ["--workers", "2", "--chunk-size", "20", "--db", db, "--quiet"]
    process = start_cli(args, env)
    try:
        assert _wait_rows_or_exit(process, db, rng.randint(1, 3), timeout=300)
        assert _wait_for(lambda: len(pool_workers(process.pid)) == 2, 60)
        victim = rng.choice(pool_workers(process.pid))
        before = finished_stamps(db)
        victim.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            kill_group(process)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    table = {r["candidate_id"]: r for r in rows(db)}
    assert sorted(table) == sorted(ids)
    # the killed worker's candidates were scored again in a fresh pool: no error rows
    assert {k: r["status"] for k, r in table.items()} == {
        k: ("failed" if k == "broken" else "ok") for k in ids
    }
    after = finished_stamps(db)
    assert all(after[k] == v for k, v in before.items())


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_three_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    first = write_folder(tmp_path / "a", ["lif", "licl", "naf", "li2o"])
    second = write_folder(tmp_path / "b", ["nacl", "li2s", "na2o", "lii"], broken=False)
    env, db = clean_env(tmp_path), tmp_path / "shared.sqlite"

    def command(folder: str) -> list[Any]:
        options = ["--workers", "1", "--chunk-size", "1", "--db", db, "--quiet"]
        return ["screen", tmp_path / folder, *FAST_CLI, *options]

    # two sources, and the first one twice (the same run id) at the same time
    processes = [start_cli(command(folder), env) for folder in ("a", "b", "a")]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    table = rows(db)
    with closing(sqlite3.connect(db)) as conn:
        runs = dict(conn.execute("SELECT run_id, n_starts FROM runs").fetchall())
        statuses = {r[0] for r in conn.execute("SELECT status FROM runs")}
        documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    assert len(runs) == 2 and statuses == {"finished"}
    by_run: dict[str, list[str]] = {}
    for row in table:
        by_run.setdefault(row["run_id"], []).append(row["candidate_id"])
    assert sorted(sorted(v) for v in by_run.values()) == sorted([sorted(first), sorted(second)])
    assert len(table) == len(first) + len(second) == documents  # one row (and document) each
    assert sorted(runs.values()) == [1, 2]
    assert {r["status"] for r in table if r["candidate_id"] != "broken"} == {"ok"}


# --- Materials Project through the command line ----------------------------------------------


def _mp_env(tmp_path: Path, server) -> dict[str, str]:
    return clean_env(tmp_path, MP_API_KEY=server.state.api_key, MP_API_ENDPOINT=server.endpoint)


MP_ARGS = ("screen", "--source", "mp", "--elements", "Li,F", *FAST_CLI, "--workers", "1")


def test_mp_screen_stops_after_the_retry_budget(mp_server, tmp_path) -> None:
    # 5xx budgets (and every route) are covered at the client level in test_mp.py
    route, words = "/materials/summary/", "rate-limiting this client (HTTP 429)"
    mp_server.add_fault(429, times=None, route=route, retry_after="1")  # 1 s per retry
    db = tmp_path / "rank.sqlite"
    completed = run_cli([*MP_ARGS, "--db", db], _mp_env(tmp_path, mp_server))
    assert completed.returncode == 1
    line = one_line_error(completed.stderr)
    assert line.startswith("iondrag screen: error: ") and words in line
    assert "retry budget spent" in line and "max_retries=4" in line
    assert mp_server.count(route) == 5  # the first try and 4 retries
    assert "internal error" not in line
    with closing(sqlite3.connect(db)) as conn:  # nothing written half
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    cache = tmp_path / "iondrag_home" / "mp_cache.sqlite"
    if cache.exists():
        with closing(sqlite3.connect(cache)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM mp_queries").fetchone()[0] == 0


def test_mp_screen_survives_transient_faults(mp_server, tmp_path) -> None:
    for status, route in ((429, "/materials/summary/"), (502, "/materials/summary/")):
        mp_server.add_fault(status, times=1, route=route, retry_after="1")
    mp_server.add_fault(503, times=1, route="/heartbeat", retry_after="1")
    mp_server.add_fault(429, times=1, route="/materials/elasticity/", retry_after="1")
    db, out = tmp_path / "rank.sqlite", tmp_path / "ranking.json"
    completed = run_cli([*MP_ARGS, "--db", db, "--json", out], _mp_env(tmp_path, mp_server))
    assert completed.returncode == 0, completed.stderr
    assert [r.status for r in mp_server.requests_to("/materials/summary/")] == [429, 502, 200]
    assert [r.status for r in mp_server.requests_to("/materials/elasticity/")] == [429, 200]
    table = rows(db)
    assert [(r["candidate_id"], r["status"], r["source"]) for r in table] == [
        ("mp-1138", "ok", "mp")
    ]
    assert table[0]["elastic_source"] and "mp-1138" in table[0]["elastic_source"]
