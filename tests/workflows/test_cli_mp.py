"""The Materials Project filters on the command line, against the local MP test server."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from wf_helpers import FAST_CLI, clean_env, run_cli


def _rows(db: Path) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY candidate_id")]


def test_band_gap_and_element_filters_and_the_band_gap_column(mp_server, tmp_path) -> None:
    env = clean_env(
        tmp_path, MP_API_KEY=mp_server.state.api_key, MP_API_ENDPOINT=mp_server.endpoint
    )
    db = tmp_path / "rank.sqlite"
    args = [
        "screen",
        "--source",
        "mp",
        "--elements",
        "Li",
        "--max-band-gap",
        "6",
        "--min-band-gap",
        "2",
        "--exclude-elements",
        "S",
        *FAST_CLI,
        "--workers",
        "1",
        "--db",
        db,
    ]
    first = run_cli(args, env)
    assert first.returncode == 0, first.stderr
    (row,) = _rows(db)  # LiF (8.7 eV), LiCl (6.3) too wide; Li3N (1.0) too narrow; Li2S: S
    assert row["candidate_id"] == "mp-1960" and row["status"] == "ok"
    assert row["band_gap_eV"] == 5.0 and row["likely_electronic_conductor"] == 0
    summary = mp_server.requests_to("/materials/summary/")
    assert summary and float(summary[-1].params["band_gap_max"]) == 6.0
    n_requests = len(summary)

    cached = run_cli(args, env)  # the cache answers: the server is not asked
    assert len(mp_server.requests_to("/materials/summary/")) == n_requests
    refreshed = run_cli([*args, "--refresh-cache"], env)
    assert refreshed.returncode == 0, refreshed.stderr
    assert len(mp_server.requests_to("/materials/summary/")) > n_requests
    # the same run: refreshing the cache does not change the run id
    assert "nothing to do" in cached.stdout and "nothing to do" in refreshed.stdout

    by_formula = run_cli(
        ["screen", "--source", "mp", "--formula", "LiF", *FAST_CLI, "--workers", "1", "--db", db],
        env,
    )
    assert by_formula.returncode == 0, by_formula.stderr
    by_id = run_cli(
        [
            "screen",
            "--source",
            "mp",
            "--material-ids",
            "mp-1138",
            *FAST_CLI,
            "--workers",
            "1",
            "--db",
            db,
        ],
        env,
    )
    assert by_id.returncode == 0, by_id.stderr
    assert {r["candidate_id"] for r in _rows(db)} == {"mp-1960", "mp-1138"}


def test_mp_filters_need_the_mp_source(tmp_path) -> None:
    done = run_cli(["screen", "--max-band-gap", "3"], clean_env(tmp_path))
    assert done.returncode == 2 and "need --source mp" in done.stderr
    done = run_cli(["screen", "--refresh-cache"], clean_env(tmp_path))
    assert done.returncode == 2 and "need --source mp" in done.stderr
