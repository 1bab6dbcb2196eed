"""The Materials Project filters on the command line, against the local MP test server."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
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
    done = run_cli(["screen", "--mp-cache-max-age-days", "3"], clean_env(tmp_path))
    assert done.returncode == 2 and "need --source mp" in done.stderr
    for bad in ("-1", "nan", "soon"):
        done = run_cli(
            ["screen", "--source", "mp", "--mp-cache-max-age-days", bad], clean_env(tmp_path)
        )
        assert done.returncode == 2 and "--mp-cache-max-age-days" in done.stderr, done.stderr


def _age_mp_cache(env: dict[str, str], days: float) -> None:
    """Write the retrieval time of every cached Materials Project answer ``days`` back."""
    then = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    cache = Path(env["IONDRAG_HOME"]) / "mp_cache.sqlite"  # the settings default
    with closing(sqlite3.connect(cache)) as connection, connection:
        assert connection.execute("UPDATE mp_queries SET retrieved_utc = ?", (then,)).rowcount


def test_cache_maximum_age_option_and_setting(mp_server, tmp_path) -> None:
    env = clean_env(
        tmp_path, MP_API_KEY=mp_server.state.api_key, MP_API_ENDPOINT=mp_server.endpoint
    )
    args = ["screen", "--source", "mp", "--material-ids", "mp-1138", *FAST_CLI]
    args += ["--workers", "1", "--db", tmp_path / "rank.sqlite"]

    def summary_requests() -> int:
        return len(mp_server.requests_to("/materials/summary/"))

    first = run_cli(args, env)
    assert first.returncode == 0, first.stderr
    asked = summary_requests()
    assert asked > 0

    _age_mp_cache(env, 10)
    young_enough = run_cli([*args, "--mp-cache-max-age-days", "20"], env)
    assert young_enough.returncode == 0, young_enough.stderr
    assert summary_requests() == asked  # fresh: not asked
    too_old = run_cli([*args, "--mp-cache-max-age-days", "5"], env)
    assert too_old.returncode == 0, too_old.stderr
    assert summary_requests() > asked  # expired: asked again
    # the same run either way: the maximum age is not part of the run id
    assert "nothing to do" in young_enough.stdout and "nothing to do" in too_old.stdout

    asked = summary_requests()
    _age_mp_cache(env, 10)
    default = run_cli(args, env)  # the setting's default, 30 days: fresh
    assert default.returncode == 0, default.stderr
    assert summary_requests() == asked
    from_setting = run_cli(args, {**env, "IONDRAG_MP_CACHE_MAX_AGE_DAYS": "5"})
    assert from_setting.returncode == 0, from_setting.stderr
    assert summary_requests() > asked


def test_cache_maximum_age_help_states_the_setting(tmp_path) -> None:
    from iondrag.screening.settings import IondragSettings
    from iondrag.workflows.cli import build_parser

    # no value given: None, and the setting decides when the screen runs
    assert build_parser().parse_args(["screen"]).mp_cache_max_age_days is None
    field = IondragSettings.model_fields["mp_cache_max_age_days"]
    shown = run_cli(["screen", "--help"], clean_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    start = text.index("--mp-cache-max-age-days DAYS ask")
    end = text.index(")", text.index("IONDRAG_MP_CACHE_MAX_AGE_DAYS", start)) + 1
    help_text = text[start:end]
    assert "the setting mp_cache_max_age_days" in help_text
    assert help_text.endswith(f"IONDRAG_MP_CACHE_MAX_AGE_DAYS, {field.default:g})")
