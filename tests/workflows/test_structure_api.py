"""The Python API an atomate2 user writes: ScreenMaker().make(structure) under run_locally."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from jobflow import run_locally
from pymatgen.core import Lattice, Structure
from wf_helpers import FAST_PHYSICS

from iondrag.adapters.stores import file_job_store
from iondrag.screening.candidates import Candidate
from iondrag.workflows.makers import ScreenMaker, as_candidates

pytestmark = pytest.mark.filterwarnings("ignore:cd is deprecated:FutureWarning")


def rock_salt(a: float = 4.03) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def test_candidate_from_structure_ids_are_stable() -> None:
    lif = rock_salt()
    first = Candidate.from_structure(lif)
    assert first.source == "structure" and first.formula == "LiF" and first.ok
    assert first.candidate_id.startswith("LiF-")
    assert Candidate.from_structure(rock_salt()).candidate_id == first.candidate_id
    assert Candidate.from_structure(rock_salt(4.1)).candidate_id != first.candidate_id
    named = Candidate.from_structure(lif, "my-lif", mobile_ion="Li")
    assert named.candidate_id == "my-lif" and named.mobile_ion == "Li"
    assert first.structure is not lif  # a copy
    with pytest.raises(TypeError, match="pymatgen Structure"):
        Candidate.from_structure("LiF")  # type: ignore[arg-type]


def test_as_candidates_accepts_structures_pairs_and_candidates() -> None:
    lif = rock_salt()
    assert [c.formula for c in as_candidates(lif)] == ["LiF"]
    assert [c.candidate_id for c in as_candidates([("a", lif), ("b", rock_salt(4.1))])] == [
        "a",
        "b",
    ]
    assert len(as_candidates([lif, Candidate.from_structure(lif, "x")])) == 2
    with pytest.raises(ValueError, match="unique"):
        as_candidates([lif, lif])
    with pytest.raises(TypeError, match="Structure"):
        as_candidates([1.0])


def test_make_takes_structures_in_every_form() -> None:
    maker = ScreenMaker.from_options(**FAST_PHYSICS)
    lif = rock_salt()
    one = maker.make(lif)
    assert one.jobs[0].function_kwargs["candidates"][0].formula == "LiF"
    assert maker.run_id(lif) == maker.run_id(candidates=[lif])
    pairs = maker.make([("lif", lif)]).jobs[0].function_kwargs["candidates"]
    assert [c.candidate_id for c in pairs] == ["lif"]
    listed = maker.make(candidates=[lif, rock_salt(4.1)]).jobs[0].function_kwargs["candidates"]
    assert len(listed) == 2
    with pytest.raises(ValueError, match="not both"):
        maker.make(lif, candidates=[lif])


def test_make_structure_runs_locally(tmp_path: Path, iondrag_home: Path) -> None:
    db = tmp_path / "rank.sqlite"
    maker = ScreenMaker.from_options(db_path=str(db), **FAST_PHYSICS)
    flow = maker.make([("lif", rock_salt())])
    responses = run_locally(
        flow, store=file_job_store(tmp_path / "store"), log=False, ensure_success=True
    )
    assert responses
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT candidate_id, source, formula, status, sigma_S_per_cm FROM results"
        ).fetchall()
    assert len(rows) == 1
    candidate_id, source, formula, status, sigma = rows[0]
    assert (candidate_id, source, formula, status) == ("lif", "structure", "LiF", "ok")
    assert sigma > 0


def test_run_locally_does_not_print_jobflows_cd_warning(tmp_path: Path) -> None:
    import subprocess
    import sys

    from wf_helpers import clean_env

    script = (
        "from jobflow import run_locally\n"
        "from pymatgen.core import Lattice, Structure\n"
        "from iondrag.workflows import ScreenMaker\n"
        "s = Structure.from_spacegroup('Fm-3m', Lattice.cubic(4.03), ['Li', 'F'],"
        " [[0, 0, 0], [0.5, 0.5, 0.5]])\n"
        "maker = ScreenMaker.from_options(grid_spacing_A=0.3, arrhenius_temperatures_K=())\n"
        "run_locally(maker.make(s), log=False, ensure_success=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cd is deprecated" not in done.stderr
