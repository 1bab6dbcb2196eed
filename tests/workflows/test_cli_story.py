"""What the CLI tells a user: two labelled estimates, named barriers, failures, progress."""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from wf_helpers import FAST_CLI, clean_env, run_cli, write_cifs

from iondrag.adapters.database import RESULT_COLUMNS, column_descriptions
from iondrag.workflows.cli import _Bar, _matrix
from iondrag.workflows.ranking import format_ranking

IDS = "lif-fm3m,li3p-p63mmc"  # one scores, one fails (missing softBV parameters)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("story")
    env = clean_env(tmp)
    db = tmp / "rank.sqlite"
    args = ["screen", "--ids", IDS, *FAST_CLI, "--workers", "1", "--db", db]
    first = run_cli(args, env)
    second = run_cli(args, env)
    return {"tmp": tmp, "env": env, "db": db, "first": first, "second": second}


def test_table_labels_the_two_estimates_and_the_barriers(screened) -> None:
    out = screened["first"].stdout
    assert screened["first"].returncode == 0, screened["first"].stderr
    header = out.splitlines()[0].split()
    assert {"E_1D_eV", "E_path_eV", "sigma_S_per_cm", "tensor_max_S_per_cm"} <= set(header)
    assert "ranked by sigma_S_per_cm, the headline estimate" in out
    assert "tensor_max_S_per_cm: the second estimate" in out
    assert "E_1D_eV: 1D percolation barrier (DB column barrier_eV)" in out


def test_failed_candidates_listed_with_their_cause_under_the_table(screened) -> None:
    out = screened["first"].stdout
    assert "not scored (1):" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("li3p-p63mmc:"))
    assert "no softBV parameters" in line and line.count("missing_parameters") == 1


def test_rerun_with_nothing_to_do_says_so(screened) -> None:
    first, second = screened["first"].stdout, screened["second"].stdout
    assert "now: 2 computed, 0 reused from earlier runs, 0 already finished" in first
    assert "nothing to do: all 2 already finished in this run" in second
    assert "1 scored" not in second


def test_progress_without_a_terminal_prints_lines_not_carriage_returns(screened) -> None:
    err = screened["first"].stderr
    assert "\r" not in err
    assert "screening: 2/2 cand" in err
    assert "(2 reused or already finished)" in screened["second"].stderr


def test_show_names_estimates_barriers_and_glosses(screened) -> None:
    shown = run_cli(["show", "lif-fm3m", "--db", screened["db"]], screened["env"])
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    for text in (
        "conductivity, two estimates",
        "headline  sigma",
        "ranks the table (sigma_S_per_cm)",
        "tensor    single-crystal sigma",
        "1D percolation barrier (barrier_eV)",
        "(path_barrier_eV)",
        "the ranking uses none of them directly",
        "friction on the ion along its path",
        "Lambda (s^3/kg): the framework's elastic response",
    ):
        assert text in out, text
    # LiF is cubic: the off-diagonal entries are numerical noise and print as 0
    tensor = out.split("tensor    single-crystal")[1].split("principal values")[0]
    assert "e-1" not in tensor and "e-2" not in tensor


def test_show_of_a_failed_row_prints_its_cause_once(screened) -> None:
    shown = run_cli(["show", "li3p-p63mmc", "--db", screened["db"]], screened["env"])
    error_line = next(line for line in shown.stdout.splitlines() if line.startswith("error"))
    assert error_line.count("missing_parameters") == 1


def test_columns_table_describes_every_result_column(screened) -> None:
    described = column_descriptions()
    assert set(described) == set(RESULT_COLUMNS)
    assert all(described.values())
    assert "1D percolation barrier" in described["barrier_eV"]
    assert "Headline" in described["sigma_S_per_cm"]
    assert "Second estimate" in described["sigma_xx_S_per_cm"]
    assert "Arrhenius" in described["activation_energy_eV"]
    with closing(sqlite3.connect(screened["db"])) as conn:
        rows = dict(conn.execute("SELECT name, description FROM columns").fetchall())
        method, path_barrier = conn.execute(
            "SELECT sigma_tensor_method, path_barrier_eV FROM results "
            "WHERE candidate_id = 'lif-fm3m'"
        ).fetchone()
    assert rows["sigma_S_per_cm"] == described["sigma_S_per_cm"]
    assert method == "homogenised_shape_scaled_to_path_channel" and path_barrier > 0


def test_query_says_how_many_rows_max_rows_cut_and_keeps_errors_whole(screened) -> None:
    done = run_cli(
        [
            "query",
            "SELECT candidate_id, error FROM results ORDER BY candidate_id",
            "--db",
            screened["db"],
            "--max-rows",
            "1",
        ],
        screened["env"],
    )
    assert done.returncode == 0, done.stderr
    assert "(1 more row not printed: --max-rows 1)" in done.stderr
    errors = run_cli(
        ["query", "SELECT error FROM results WHERE status != 'ok'", "--db", screened["db"]],
        screened["env"],
    )
    assert "li3p-p63mmc: no softBV parameters for Li+1-P-3 [missing_parameters]" in errors.stdout


def test_validate_shows_progress_and_names_the_table_given(tmp_path: Path) -> None:
    cifs = write_cifs(tmp_path / "cifs", ["lif-fm3m"], broken=False)
    table = tmp_path / "mine.csv"
    table.write_text("ID,Ionic conductivity (S cm-1)\nlif-fm3m,1e-9\n")
    done = run_cli(
        ["validate", "--cifs", cifs, "--table", table, "--workers", "1", "--grid", "0.3"],
        clean_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "validating: 1/1 struct" in done.stderr and "\r" not in done.stderr
    assert "data: table mine.csv" in done.stdout and "OBELiX" not in done.stdout


def test_warning_rows_are_marked_in_the_table() -> None:
    frame = pd.DataFrame(
        {
            "rank": [1, 2],
            "candidate_id": ["a", "b"],
            "status": ["ok", "ok"],
            "sigma_S_per_cm": [1e-3, 1e-4],
            "sigma_xx_S_per_cm": [2e-3, 1e-4],
            "sigma_yy_S_per_cm": [1e-3, 1e-4],
            "sigma_zz_S_per_cm": [1e-3, 1e-4],
            "n_warnings": [0, 2],
            "likely_electronic_conductor": [1, 0],
        }
    )
    lines = format_ranking(frame).splitlines()
    assert "a!" in lines[1] and "b*" in lines[2] and "b*!" not in lines[2]
    assert "0.002" in lines[1]  # tensor_max: the largest diagonal component


def test_matrix_prints_noise_as_zero() -> None:
    text = _matrix([[7.5e-4, -8.3e-18, 0.0], [-8.3e-18, 7.5e-4, 0.0], [0.0, 0.0, 1e-7]], "")
    assert "e-18" not in text and "1.000e-07" in text


def test_bar_on_a_terminal_counts_only_new_candidates_in_its_rate() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = _Bar("screening", stream=Terminal())
    bar.update(60, 61, prior=60)
    assert bar._bar is not None and bar._bar.initial == 60
    bar.update(61, 61, prior=60)
    rate = bar._bar.format_dict["rate"]
    assert rate is None or rate < 100
    bar.close()


def test_params_lists_every_parameter_from_the_model(tmp_path: Path) -> None:
    from iondrag.screening.parameters import ScreeningParameters

    env = clean_env(tmp_path)
    listed = run_cli(["params"], env)
    assert listed.returncode == 0, listed.stderr
    for name in ScreeningParameters.model_fields:
        assert f"\n{name} = " in listed.stdout, name
    assert (
        "temperature_K = 300.0  (K; float; >= 50, <= 5000)  [also --temperature]" in listed.stdout
    )
    assert "framework_relaxation = elastic  (frozen/elastic)" in listed.stdout
    helped = run_cli(["screen", "--param", "help"], env)
    assert helped.returncode == 0 and helped.stdout == listed.stdout
    as_json = run_cli(["params", "--format", "json"], env)
    keys = [row["key"] for row in __import__("json").loads(as_json.stdout)]
    assert keys == list(ScreeningParameters.model_fields)


def test_show_png_renders_profile_drag_and_slice(screened) -> None:
    pytest.importorskip("matplotlib")
    png = screened["tmp"] / "lif.png"
    shown = run_cli(["show", "lif-fm3m", "--db", screened["db"], "--png", png], screened["env"])
    assert shown.returncode == 0, shown.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 1.5 * height  # profile, drag and slice side by side


def test_plot_geometry_helpers() -> None:
    import numpy as np

    from iondrag.workflows.plots import in_plane_mask, plane_coordinates, profile_from_minimum

    shifted, saddle, barrier = profile_from_minimum([0.3, 0.5, 0.9, 0.4])
    assert shifted.min() == 0.0 and saddle == 2 and barrier == pytest.approx(0.6)
    hexagonal = np.array([[3.0, 0.0, 0.0], [-1.5, 1.5 * np.sqrt(3), 0.0], [0.0, 0.0, 5.0]])
    xy = plane_coordinates(hexagonal, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert np.linalg.norm(xy[1]) == pytest.approx(3.0)
    assert np.degrees(np.arccos(xy[0] @ xy[1] / 9.0)) == pytest.approx(120.0)
    mask = in_plane_mask(np.array([0.99, 0.02, 0.5]), 0.0, 0.03)
    assert mask.tolist() == [True, True, False]
