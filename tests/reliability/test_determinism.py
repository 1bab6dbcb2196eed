"""Determinism: the same candidates and parameters give bit-identical results.

Compared as JSON text (floats written with repr: equal text means equal bits), with the
timing fields removed: across two runs in one process, across workers=1 and workers=2, and
across two ``iondrag screen`` processes into separate databases. Langevin runs with the same
seed are identical in this process and in a spawned worker, on a real candidate's path.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langevin_reference import langevin_path_diffusion, run_langevin
from pymatgen.core import Lattice, Structure
from rel_helpers import (
    FAST_CLI,
    FAST_PHYSICS,
    antifluorite,
    clean_env,
    rocksalt,
    run_cli,
    write_cif,
)

from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.pipeline import score_candidate
from iondrag.workflows.parallel import abort_pools, score_candidates

PARAMETERS = ScreeningParameters(**FAST_PHYSICS)

#: Fields that measure time, not results.
TIMING_FIELDS = ("seconds", "written_utc", "scored_utc", "seconds_total", "retrieved_utc")


def _perturbed_li2o(seed: int = 3) -> Structure:
    """Li2O with seeded random displacements (0.05 Å) and a 1 % strain: no symmetry left."""
    structure = antifluorite("Li", "O", 4.61)
    rng = np.random.default_rng(seed)
    matrix = structure.lattice.matrix @ (np.eye(3) + 0.01 * rng.standard_normal((3, 3)))
    cart = structure.cart_coords + 0.05 * rng.standard_normal((len(structure), 3))
    return Structure(Lattice(matrix), structure.species, cart, coords_are_cartesian=True)


def _disordered() -> Structure:
    """Rock-salt (Li0.75Na0.25)Cl: mixed cation sites, mean field."""
    structure = rocksalt("Li", "Cl", 5.25)
    for index in range(4):
        structure.replace(index, {"Li": 0.75, "Na": 0.25})
    return structure


STRUCTURES = {
    "lif": lambda: rocksalt("Li", "F", 4.03),
    "nacl": lambda: rocksalt("Na", "Cl", 5.64),
    "li2o-perturbed": _perturbed_li2o,
    "linacl-disordered": _disordered,
}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def canonical(result_json: str) -> str:
    return json.dumps(_strip(json.loads(result_json)), sort_keys=True)


@pytest.fixture(scope="module")
def candidates() -> list[Candidate]:
    return [
        Candidate(candidate_id=name, source="structure", structure=build())
        for name, build in STRUCTURES.items()
    ]


@pytest.fixture(scope="module")
def first_run(candidates) -> list[str]:
    results = [canonical(r.model_dump_json()) for r, _ in score_candidates(candidates, PARAMETERS)]
    assert [json.loads(r)["status"] for r in results] == ["ok"] * len(candidates)
    return results


def test_two_runs_in_one_process_are_bit_identical(candidates, first_run) -> None:
    again = [canonical(score_candidate(c, PARAMETERS)[0].model_dump_json()) for c in candidates]
    assert again == first_run


@pytest.mark.slow
def test_two_workers_give_bit_identical_results(candidates, first_run) -> None:
    try:
        parallel = score_candidates(candidates, PARAMETERS, workers=2)
    finally:
        abort_pools()
    assert [canonical(r.model_dump_json()) for r, _ in parallel] == first_run


def _cli_documents(db: Path) -> dict[str, tuple[str, dict]]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        docs = {
            r["candidate_id"]: canonical(r["json"]) for r in conn.execute("SELECT * FROM documents")
        }
        table = {
            r["candidate_id"]: {k: v for k, v in dict(r).items() if k not in TIMING_FIELDS}
            for r in conn.execute("SELECT * FROM results")
        }
    return {k: (docs[k], table[k]) for k in table}


@pytest.mark.slow
def test_two_cli_screens_workers_1_and_2_are_bit_identical(tmp_path: Path) -> None:
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, build in STRUCTURES.items():
        write_cif(folder / f"{name}.cif", build())
    outcomes = []
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.sqlite"
        completed = run_cli(
            ["screen", folder, *FAST_CLI, "--workers", workers, "--db", db, "--quiet"],
            clean_env(tmp_path / f"home{workers}"),
        )
        assert completed.returncode == 0, completed.stderr
        outcomes.append(_cli_documents(db))
    serial, parallel = outcomes
    assert sorted(serial) == sorted(STRUCTURES)
    assert {k: v[1]["status"] for k, v in serial.items()} == dict.fromkeys(STRUCTURES, "ok")
    for name in STRUCTURES:
        assert serial[name][1] == parallel[name][1], name  # the ranking row, run id included
        assert serial[name][0] == parallel[name][0], name  # the full document


# --- Langevin -------------------------------------------------------------------------------

LANGEVIN = {"n_particles": 48, "max_steps": 4000}


def _path_diffusion(path: dict, seed: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # capped number of steps: intended
        return langevin_path_diffusion(
            path["arc_length_A"],
            path["energy_eV"],
            path["gamma_parallel_kg_per_s"],
            path["length_A"],
            6.94,
            600.0,
            seed=seed,
            **LANGEVIN,
        )


def _harmonic_run(seed: int) -> tuple[np.ndarray, np.ndarray]:
    gamma = np.array([[2e-13, 5e-14, 0.0], [5e-14, 1e-13, 0.0], [0.0, 0.0, 3e-13]])
    trajectory = run_langevin(
        np.zeros((16, 3)),
        lambda r: -2.0 * r,
        lambda r: np.broadcast_to(gamma, (len(r), 3, 3)),
        6.94,
        300.0,
        1.0,
        400,
        seed=seed,
        sample_every=10,
    )
    return trajectory.times_s, trajectory.positions_A


@pytest.fixture(scope="module")
def li2o_path(first_run) -> dict:
    document = json.loads(first_run[list(STRUCTURES).index("li2o-perturbed")])
    assert document["path"]["length_A"] > 0
    return document["path"]


@pytest.mark.slow
def test_langevin_runs_with_a_seed_are_identical_across_processes(li2o_path) -> None:
    here = _path_diffusion(li2o_path, seed=11)
    again = _path_diffusion(li2o_path, seed=11)
    other = _path_diffusion(li2o_path, seed=12)
    times, positions = _harmonic_run(seed=5)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(_path_diffusion, li2o_path, 11).result()
        times_there, positions_there = pool.submit(_harmonic_run, 5).result()
    assert np.isfinite(here) and here > 0
    assert here == again == there  # bit for bit
    assert other != here
    assert np.array_equal(times, times_there) and np.array_equal(positions, positions_there)
    assert not np.array_equal(positions, _harmonic_run(seed=6)[1])
