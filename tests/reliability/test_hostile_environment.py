"""Issue 15: names, parameters, signals and files that an adversarial probe broke the CLI with.

Each test failed before its fix: a file name that is not UTF-8 aborted the screen at the
database insert, control characters reached the terminal, unreachable parameters hung or
failed every candidate, --workers had no cap, --json DIR failed after the whole screen, a
corrupt job store said only "file is not a database", and SIGTERM left the run "running".
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from rel_helpers import (
    FAST_CLI,
    REPO_ROOT,
    clean_env,
    count_rows,
    kill_group,
    one_line_error,
    rocksalt,
    rows,
    run_cli,
    start_cli,
    wait_until,
    write_cif,
)

from iondrag.workflows.cli import main


def _lif_folder(folder: Path, names: list[bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = write_cif(folder / "_tmp.cif", rocksalt("Li", "F", 4.03)).read_text()
    (folder / "_tmp.cif").unlink()
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "w") as handle:
            handle.write(text)
    return folder


# --------------------------------------------------------------------------------------------
# usage errors: exit code 2, one line, before any work (in process: nothing is started)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--param", "percolation_tolerance_eV=1e-17"], "percolation_tolerance_eV"),
        (["--temperature", "1e-300"], "temperature_K"),
        (["--param", "cutoff_A=4", "--param", "switch_width_A=4.5"], "switch_width_A"),
        (["--param", "window_kT=1e300"], "window_kT"),
        (["--arrhenius", "300,1e300"], "Arrhenius"),
        (["--workers", "99999999999"], "--workers"),
    ],
)
def test_unreachable_parameters_are_usage_errors(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.setenv("IONDRAG_HOME", str(tmp_path / "home"))
    try:
        code = main(["screen", "--ids", "lif-fm3m", "--db", str(tmp_path / "r.sqlite"), *args])
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in one_line_error(err)
    assert not (tmp_path / "r.sqlite").exists()  # refused before any work


def test_bisection_at_the_float_spacing_ends(tmp_path):
    """percolation_energies with a tolerance below the float spacing of U used to spin."""
    script = textwrap.dedent(
        """
        import numpy as np
        from iondrag.screening.percolation import percolation_energies
        x = np.linspace(0, 1, 12, endpoint=False)
        c = np.cos(2 * np.pi * x)
        u = c[:, None, None] + c[None, :, None] + c[None, None, :]  # E_1 = -1 on the grid
        result = percolation_energies(u, tolerance_eV=1e-17)
        print(result.energies_eV[1], result.evaluations)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    level, evaluations = completed.stdout.split()
    assert abs(float(level) + 1.0) < 1e-6 and int(evaluations) < 3 * 70


# --------------------------------------------------------------------------------------------
# names and terminal output
# --------------------------------------------------------------------------------------------


def test_names_that_are_not_utf8_or_carry_escapes_are_screened_and_printed_escaped(tmp_path):
    folder = _lif_folder(tmp_path / "cifs", [b"\xff.cif", b"\x1b[31mred.cif", b"plain.cif"])
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    completed = run_cli(["screen", folder, *FAST_CLI, "--workers", "1", "--db", db], env)
    assert completed.returncode == 0, completed.stderr
    assert "\x1b" not in completed.stdout and "\x1b" not in completed.stderr
    table = {r["candidate_id"]: r["status"] for r in rows(db)}
    assert table == {"\\xff": "ok", "\\x1b[31mred": "ok", "plain": "ok"}
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "finished"
    query = run_cli(["query", "SELECT candidate_id, error FROM results", "--db", db], env)
    assert query.returncode == 0 and "\x1b" not in query.stdout
    assert "\\x1b[31mred" in query.stdout


def test_query_results_with_control_characters_are_printed_escaped(tmp_path, capsys):
    db = tmp_path / "rank.sqlite"
    from iondrag.adapters import database

    with closing(database.connect(db)):
        pass
    for fmt in ("table", "csv"):
        sql = "SELECT 'a' || char(27) || '[2J' || char(7) AS x"
        code = main(["query", sql, "--db", str(db), "--format", fmt])
        out = capsys.readouterr().out
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J\\x07" in out


# --------------------------------------------------------------------------------------------
# files: outputs checked before the work, clear messages
# --------------------------------------------------------------------------------------------


def test_json_into_a_folder_is_refused_before_the_screen(tmp_path):
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    (tmp_path / "out").mkdir()
    completed = run_cli(
        ["screen", "--ids", "lif-fm3m", *FAST_CLI, "--db", db, "--json", tmp_path / "out"], env
    )
    assert completed.returncode == 2
    line = one_line_error(completed.stderr)
    assert "--json" in line and str(tmp_path / "out") in line and "folder" in line
    assert count_rows(db) == 0


def test_corrupt_job_store_is_named_with_what_to_do(tmp_path):
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    store = Path(env["IONDRAG_HOME"]) / "jobstore"
    store.mkdir(parents=True)
    (store / "outputs.sqlite").write_bytes(os.urandom(4096))
    completed = run_cli(["screen", "--ids", "lif-fm3m", *FAST_CLI, "--db", db], env)
    assert completed.returncode == 1
    line = one_line_error(completed.stderr)
    assert str(store) in line and "not a database" in line and "move" in line


def test_unusable_home_without_db_is_named_with_what_to_do(tmp_path):
    env = clean_env(tmp_path)
    (tmp_path / "a-file").write_text("")
    env["IONDRAG_HOME"] = str(tmp_path / "a-file" / "home")  # a folder under a regular file
    completed = run_cli(["screen", "--ids", "lif-fm3m", *FAST_CLI], env)
    assert completed.returncode == 1
    line = one_line_error(completed.stderr)
    assert str(tmp_path / "a-file" / "home") in line and "--db" in line


def test_fifo_as_path_is_refused_without_blocking(tmp_path):
    env = clean_env(tmp_path)
    os.mkfifo(tmp_path / "pipe.cif")
    completed = run_cli(["screen", tmp_path / "pipe.cif", *FAST_CLI], env, timeout=120)
    assert completed.returncode == 1
    line = one_line_error(completed.stderr)
    assert str(tmp_path / "pipe.cif") in line and "not a regular file" in line


def test_workers_are_capped_by_the_candidates_and_say_so(tmp_path):
    folder = _lif_folder(tmp_path / "cifs", [b"a.cif", b"b.cif"])
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    completed = run_cli(
        ["screen", folder, *FAST_CLI, "--workers", "30", "--db", db, "--quiet"], env
    )
    assert completed.returncode == 0, completed.stderr
    assert "using 2 workers, not 30 (2 candidates)" in completed.stderr
    assert {r["status"] for r in rows(db)} == {"ok"}


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


def test_sigterm_is_handled_like_ctrl_c_and_marks_the_run(tmp_path):
    folder = _lif_folder(tmp_path / "cifs", [f"lif{i:02d}.cif".encode() for i in range(12)])
    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    args = ["screen", folder, "--grid", "0.2", "--arrhenius", "none", "--workers", "1"]
    process = start_cli([*args, "--chunk-size", "4", "--db", db, "--quiet"], env)
    try:
        assert wait_until(lambda: count_rows(db) >= 1, timeout=300)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            kill_group(process)
    assert process.returncode == 143, stderr
    assert "terminated" in one_line_error(stderr)
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
    assert count_rows(db) < 12


def test_read_only_database_is_not_called_malformed(tmp_path):
    """Root ignores file modes: an immutable file (chattr +i) is read-only even for root."""
    import shutil

    env, db = clean_env(tmp_path), tmp_path / "rank.sqlite"
    from iondrag.adapters import database

    with closing(database.connect(db)):
        pass
    if shutil.which("chattr") is None:
        pytest.skip("chattr not available")
    made = subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False)
    if made.returncode != 0:
        db.chmod(0o444)
        if os.access(db, os.W_OK):
            pytest.skip("cannot make a file read-only here (root without chattr)")
    try:
        completed = run_cli(["screen", "--ids", "lif-fm3m", *FAST_CLI, "--db", db], env)
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True, check=False)
        db.chmod(0o644)
    assert completed.returncode == 1
    line = one_line_error(completed.stderr)
    assert str(db) in line and "malformed" not in line and "--db" in line
