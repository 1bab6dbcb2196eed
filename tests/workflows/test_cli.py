"""The ``iondrag`` command in real subprocesses: screen, query, show, exit codes, resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from wf_helpers import (
    FAST_CLI,
    SMALL_IDS,
    clean_env,
    cli_command,
    one_line_error,
    run_cli,
    write_cifs,
)

from iondrag.adapters.database import CONTRACT_COLUMNS


def results(db: Path, run_id: str | None = None) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM results" + (" WHERE run_id = ?" if run_id else "")
        return [dict(r) for r in conn.execute(sql, (run_id,) if run_id else ())]


@pytest.fixture(scope="module")
def screened(tmp_path_factory, small_cifs):
    """``iondrag screen <cifs> --json`` once, with the installed entry point."""
    tmp = tmp_path_factory.mktemp("cli")
    env = clean_env(tmp)
    db, out = tmp / "rank.sqlite", tmp / "ranking.json"
    script = Path(sys.executable).with_name("iondrag")
    command = [str(script)] if script.exists() else cli_command([])
    completed = subprocess.run(
        [
            *command,
            "screen",
            "--source",
            "cif",
            str(small_cifs),
            *FAST_CLI,
            "--workers",
            "1",
            "--chunk-size",
            "2",
            "--db",
            str(db),
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return {"tmp": tmp, "env": env, "db": db, "json": out, "completed": completed}


def test_screen_prints_the_ranking_and_exits_0(screened) -> None:
    completed = screened["completed"]
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "li2o-fm3m" in out and "nacl-fm3m" in out
    assert out.index("li2o-fm3m") < out.index("lif-fm3m") < out.index("nacl-fm3m")  # ranked
    assert "5 candidates, 3 scored, 2 failed" in out
    assert "missing_parameters 1" in out and "parse_error 1" in out
    assert "Traceback" not in completed.stderr


def test_screen_writes_one_row_per_candidate_and_json(screened) -> None:
    rows = results(screened["db"])
    assert sorted(r["candidate_id"] for r in rows) == sorted([*SMALL_IDS, "broken"])
    broken = next(r for r in rows if r["candidate_id"] == "broken")
    assert broken["status"] == "failed" and broken["error_cause"] == "parse_error"
    assert "broken.cif" in broken["error"]
    records = json.loads(screened["json"].read_text())
    assert len(records) == 5
    assert all(set(CONTRACT_COLUMNS) <= set(r) for r in records)
    by_id = {r["candidate_id"]: r for r in records}
    assert by_id["broken"]["status"] != "ok" and by_id["broken"]["error"]
    assert by_id["li3p-p63mmc"]["error"] and by_id["li3p-p63mmc"]["sigma_S_per_cm"] is None
    assert by_id["li2o-fm3m"]["status"] == "ok" and by_id["li2o-fm3m"]["error"] is None
    assert [r["candidate_id"] for r in records][:3] == ["li2o-fm3m", "lif-fm3m", "nacl-fm3m"]


def test_query_prints_a_table_csv_json_and_refuses_writes(screened) -> None:
    db, env = screened["db"], screened["env"]
    sql = "SELECT formula, sigma_S_per_cm FROM results ORDER BY sigma_S_per_cm DESC LIMIT 2"
    table = run_cli(["query", sql, "--db", db], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["formula", "sigma_S_per_cm"]
    assert lines[1].split()[0] == "Li2O" and lines[2].split()[0] == "LiF"
    as_json = run_cli(["query", sql, "--db", db, "--format", "json"], env)
    assert [r["formula"] for r in json.loads(as_json.stdout)] == ["Li2O", "LiF"]
    refused = run_cli(["query", "DELETE FROM results", "--db", db], env)
    assert refused.returncode == 1
    assert "refused" in one_line_error(refused.stderr)
    assert len(results(db)) == 5


def test_show_prints_tensors_and_writes_a_png(screened) -> None:
    png = screened["tmp"] / "li2o.png"
    shown = run_cli(["show", "li2o-fm3m", "--db", screened["db"], "--png", png], screened["env"])
    assert shown.returncode == 0, shown.stderr
    for text in (
        "barriers",
        "single-crystal sigma (S/cm",
        "diffusion tensor",
        "Lambda",
        "U(s)",
        "3D",
    ):
        assert text in shown.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    failed = run_cli(["show", "broken", "--db", screened["db"]], screened["env"])
    assert failed.returncode == 0 and "parse_error" in failed.stdout
    missing = run_cli(["show", "nope", "--db", screened["db"]], screened["env"])
    assert missing.returncode == 1 and "no candidate 'nope'" in one_line_error(missing.stderr)


def test_exit_codes_and_one_line_errors(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    usage = run_cli(["screen", "--workers", "0"], env)
    assert usage.returncode == 2 and "--workers" in one_line_error(usage.stderr)
    usage = run_cli(["screen", "--grid", "5"], env)
    assert usage.returncode == 2 and "grid_spacing_A" in one_line_error(usage.stderr)
    usage = run_cli(["screen", "--elements", "Li"], env)
    assert usage.returncode == 2 and "--source mp" in one_line_error(usage.stderr)
    missing = run_cli(["screen", "--source", "cif", tmp_path / "nowhere"], env)
    assert missing.returncode == 1 and "does not exist" in one_line_error(missing.stderr)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("definitely not sqlite\n")
    malformed = run_cli(["screen", "--db", garbage], env)
    assert malformed.returncode == 1 and "not an SQLite database" in one_line_error(
        malformed.stderr
    )
    assert garbage.read_text() == "definitely not sqlite\n"
    malformed = run_cli(["query", "SELECT 1", "--db", garbage], env)
    assert malformed.returncode == 1 and "not an SQLite database" in one_line_error(
        malformed.stderr
    )
    no_key = run_cli(
        ["screen", "--source", "mp", "--elements", "Li,S", "--db", tmp_path / "x"], env
    )
    assert no_key.returncode == 1 and "MP_API_KEY" in one_line_error(no_key.stderr)
    debug = run_cli(["query", "SELECT 1", "--db", garbage, "--debug"], env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_validate_command_is_wired(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    helped = run_cli(["validate", "--help"], env)
    assert helped.returncode == 0 and "--cifs" in helped.stdout
    usage = run_cli(["validate", "--cifs", tmp_path], env)
    assert usage.returncode == 2 and "--table" in one_line_error(usage.stderr)
    missing = run_cli(["validate", "--cifs", tmp_path / "none", "--table", tmp_path / "t.csv"], env)
    assert missing.returncode == 1 and "does not exist" in one_line_error(missing.stderr)


def test_validate_runs_on_cifs_and_a_table(tmp_path: Path, small_cifs: Path) -> None:
    pytest.importorskip("iondrag.screening.metrics")
    table = tmp_path / "measured.csv"
    table.write_text(
        "ID,Ionic conductivity (S cm-1)\n"
        "li2o-fm3m,1E-5\nlif-fm3m,1E-9\nnacl-fm3m,<1E-10\nli3p-p63mmc,1E-4\n"
    )
    out = tmp_path / "validation.json"
    args = [
        "validate",
        "--cifs",
        small_cifs,
        "--table",
        table,
        "--json",
        out,
        "--grid",
        "0.4",
        "--param",
        "grid_spacing_A=0.3",  # --param wins over the dedicated flag
        "--workers",
        "1",
        "--quiet",
    ]
    completed = run_cli(args, clean_env(tmp_path))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(out.read_text())
    assert report["parameters"]["grid_spacing_A"] == 0.3
    for key in (
        "n_scored",
        "n_failed",
        "spearman",
        "kendall",
        "roc_auc_1e-4",
        "seconds_per_structure_median",
        "per_structure",
    ):
        assert key in report, key
    assert report["n_scored"] + report["n_failed"] == 4
    assert {item["id"] for item in report["per_structure"]} == {
        "li2o-fm3m",
        "lif-fm3m",
        "nacl-fm3m",
        "li3p-p63mmc",
    }


def _row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _journal_lines(folder: Path) -> int:
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return files[0].read_text().count("\n") if files else 0


def _kill_after(args: list, env: dict[str, str], done: Callable[[], int], at_least: int) -> None:
    """Run the CLI and SIGKILL its process group once ``done()`` reaches ``at_least``."""
    process = subprocess.Popen(
        cli_command(args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while done() < at_least:
            assert process.poll() is None, "the command finished before it could be killed"
            assert time.monotonic() < deadline, f"fewer than {at_least} done after 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)


@pytest.mark.slow
def test_killed_screen_resumes_without_recomputing(tmp_path: Path) -> None:
    ids = [
        "lif-fm3m",
        "licl-fm3m",
        "libr-fm3m",
        "naf-fm3m",
        "nacl-fm3m",
        "li2o-fm3m",
        "li2s-fm3m",
        "na2o-fm3m",
    ]
    folder = write_cifs(tmp_path / "cifs", ids, broken=False)
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    args = [
        "screen",
        folder,
        "--grid",
        "0.25",
        "--workers",
        "1",
        "--chunk-size",
        "3",
        "--db",
        db,
        "--quiet",
    ]
    _kill_after(args, env, lambda: _row_count(db), 2)
    before = {r["candidate_id"]: r["written_utc"] for r in results(db)}
    assert 2 <= len(before) < len(ids)

    resumed = run_cli(args, env)
    assert resumed.returncode == 0, resumed.stderr
    after = results(db)
    assert sorted(r["candidate_id"] for r in after) == sorted(ids)  # each exactly once
    written = {r["candidate_id"]: r["written_utc"] for r in after}
    assert all(written[c] == stamp for c, stamp in before.items())  # not recomputed
    with closing(sqlite3.connect(db)) as conn:
        status, starts = conn.execute("SELECT status, n_starts FROM runs").fetchone()
    assert (status, starts) == ("finished", 2)


@pytest.mark.slow
def test_killed_validate_resumes_from_its_journal(tmp_path: Path) -> None:
    ids = ["lif-fm3m", "licl-fm3m", "libr-fm3m", "naf-fm3m", "nacl-fm3m", "li2o-fm3m"]
    folder = write_cifs(tmp_path / "cifs", ids, broken=False)
    table = tmp_path / "measured.csv"
    values = ["<1E-10", "1E-9", "1E-8", "<1E-10", "1E-9", "1E-7"]
    table.write_text(
        "ID,Ionic conductivity (S cm-1)\n"
        + "".join(f"{i},{v}\n" for i, v in zip(ids, values, strict=True))
    )
    env, out = clean_env(tmp_path), tmp_path / "validation.json"
    args = ["validate", "--cifs", folder, "--table", table, "--json", out]
    args += ["--grid", "0.25", "--workers", "1", "--quiet"]
    journal = Path(env["IONDRAG_HOME"]) / "validate"
    _kill_after(args, env, lambda: _journal_lines(journal), 2)
    files = sorted(journal.glob("*.jsonl"))
    assert not out.exists()
    before = {
        json.loads(line)["id"]: json.loads(line)["record"]
        for line in files[0].read_text().splitlines()
        if line.endswith("}")
    }
    assert 2 <= len(before) < len(ids)

    resumed = run_cli(args, env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"journal: {len(before)} of {len(ids)} records reused" in resumed.stdout
    report = json.loads(out.read_text())
    assert report["inputs"]["n_reused_from_journal"] == len(before)
    assert report["n_scored"] == len(ids)
    by_id = {r["id"]: r for r in report["per_structure"]}
    for ident, record in before.items():  # reused as written, timings included
        assert by_id[ident]["wall_seconds"] == record["wall_seconds"]
        assert by_id[ident]["log10_sigma_pred"] == record["log10_sigma_pred"]

    fresh = run_cli([*args, "--fresh"], env)
    assert fresh.returncode == 0, fresh.stderr
    again = json.loads(out.read_text())
    assert again["inputs"]["n_reused_from_journal"] == 0
    assert [r["log10_sigma_pred"] for r in again["per_structure"]] == [
        r["log10_sigma_pred"] for r in report["per_structure"]
    ]


@pytest.mark.slow
def test_two_screens_writing_one_database_lose_nothing(tmp_path: Path, small_cifs: Path) -> None:
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    processes = [
        subprocess.Popen(
            cli_command(
                [
                    "screen",
                    small_cifs,
                    *FAST_CLI,
                    "--temperature",
                    temperature,
                    "--workers",
                    "1",
                    "--chunk-size",
                    "1",
                    "--db",
                    db,
                    "--quiet",
                ]
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for temperature in ("300", "600")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    rows = results(db)
    assert len(rows) == 10
    assert {(r["temperature_K"], r["candidate_id"]) for r in rows} == {
        (t, c) for t in (300.0, 600.0) for c in [*SMALL_IDS, "broken"]
    }
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*), MIN(status) FROM runs").fetchone() == (2, "finished")
