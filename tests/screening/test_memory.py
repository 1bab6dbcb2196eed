"""The memory budget bounds memory (issue 15, item 3): the cost model and what it plans.

Peaks are measured in fresh processes (VmHWM of a process that scores one candidate as a
screen's worker does: ``benchmarks/bench_memory.py``), never inferred from timings.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from iondrag.screening import memory
from iondrag.screening.carriers import far_from_all, periodic_distances_A, site_clusters
from iondrag.screening.errors import GridTooLargeError
from iondrag.screening.memory import candidate_memory, plan_grid
from iondrag.screening.potential import grid_shape_for_spacing, make_grid

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The estimate is an upper bound of the measured peak, and not further above it than this
#: for small cells (it takes the transport region to fill the grid; LiF's fills ~54 %).
ESTIMATE_OVER_PEAK_FACTOR = 2.5

#: Largest measured peak over the budget accepted (the issue's target).
PEAK_OVER_BUDGET = 1.25


def _bench() -> ModuleType:
    """benchmarks/bench_memory.py, loaded by path."""
    name = "iondrag_bench_memory"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO_ROOT / "benchmarks" / "bench_memory.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Small cells scored in fresh processes under large and small budgets."""
    folder = tmp_path_factory.mktemp("bench_memory")
    bench = _bench()
    cases = {
        "lif-2 0.2 A": ("lif-2", 0.2, 100_000.0),
        "lif-2x 0.25 A": ("lif-2x", 0.25, 100_000.0),
        "lif-2 0.05 A under 300 MB": ("lif-2", 0.05, 300.0),
    }
    return {name: bench.budget_run(*case, folder) for name, case in cases.items()}


@pytest.mark.parametrize("case", ["lif-2 0.2 A", "lif-2x 0.25 A"])
def test_the_estimate_bounds_the_measured_peak_of_small_cells(fresh_runs, case):
    run = fresh_runs[case]
    assert run["status"] == "ok", run
    assert run["peak_MB"] <= run["estimate_MB"] <= ESTIMATE_OVER_PEAK_FACTOR * run["peak_MB"], run


def test_a_too_fine_grid_is_coarsened_with_a_warning_and_the_peak_stays_in_budget(fresh_runs):
    # LiF's 2-atom cell at 0.05 A: 11 million stencil points, ~1.2 GB before the budget
    # knew them (the old estimate: 39 MB)
    run = fresh_runs["lif-2 0.05 A under 300 MB"]
    assert run["status"] == "ok", run
    assert run["coarsened"], run
    assert run["spacing_A"] > 0.05
    assert run["estimate_MB"] <= 300.0
    assert run["peak_MB"] <= PEAK_OVER_BUDGET * 300.0, run


def test_the_coarsening_warning_names_budget_spacings_and_estimate():
    lattice = np.eye(3) * 20.0
    grid, notes = make_grid(lattice, 0.2, memory_budget_MB=500.0, n_sites=500)
    assert len(notes) == 1
    assert "coarsened from 0.2 A to" in notes[0] and "500 MB memory budget" in notes[0]
    assert "estimated peak" in notes[0]
    estimate = candidate_memory(lattice, grid.shape, cutoff_A=6.0, n_sites=500)
    assert estimate.total_MB <= 500.0
    # the finest that fits: 1 % finer does not
    finer = grid_shape_for_spacing(lattice, 20.0 / grid.shape[0] / 1.02)
    assert candidate_memory(lattice, finer, cutoff_A=6.0, n_sites=500).total_MB > 500.0


def test_refused_and_impossible_grids_name_the_budget_and_the_estimate():
    lattice = np.eye(3) * 40.0
    with pytest.raises(
        GridTooLargeError, match=r"big-cell: the 0.2 A grid needs ~\d+ MB"
    ) as refused:
        make_grid(
            lattice, 0.2, memory_budget_MB=500.0, on_too_large="refuse", candidate_id="big-cell"
        )
    assert "500 MB memory budget" in str(refused.value)
    with pytest.raises(GridTooLargeError) as impossible:
        make_grid(np.eye(3) * 150.0, 0.2, memory_budget_MB=2048.0, candidate_id="huge")
    message = str(impossible.value)
    assert "huge: cell too large for the 2048 MB memory budget" in message
    assert "coarsest grid (0.5 A) needs ~" in message and "IONDRAG_MEMORY_BUDGET_MB" in message
    assert "\n" not in message
    assert impossible.value.cause == "grid_too_large"


def test_the_estimate_counts_grid_stencil_and_sites():
    lattice = np.eye(3) * 10.0
    small = candidate_memory(lattice, (20, 20, 20), cutoff_A=6.0, n_sites=10)
    finer = candidate_memory(lattice, (40, 40, 40), cutoff_A=6.0, n_sites=10)
    more_sites = candidate_memory(lattice, (20, 20, 20), cutoff_A=6.0, n_sites=10_000)
    assert finer.grid_MB == pytest.approx(8 * small.grid_MB, rel=0.3)
    assert finer.stencil_MB == pytest.approx(8 * small.stencil_MB, rel=0.3)
    assert more_sites.total_MB - small.total_MB == pytest.approx(
        9_990 * memory.BYTES_PER_SITE / 1e6
    )
    assert small.total_MB > memory.BASE_MB


def test_plan_grid_keeps_a_grid_that_fits():
    lattice = np.eye(3) * 4.0
    shape, notes = plan_grid(
        lattice,
        0.2,
        lambda h: grid_shape_for_spacing(lattice, h),
        memory_budget_MB=2048.0,
        cutoff_A=6.0,
        n_sites=8,
    )
    assert shape == (20, 20, 20) and notes == []


def test_an_impossible_budget_fails_one_candidate_and_the_others_score(tmp_path):
    from pymatgen.io.cif import CifWriter

    sys.path.insert(0, str(REPO_ROOT / "tests" / "workflows"))
    from wf_helpers import FAST_CLI, clean_env, run_cli, write_cifs

    folder = write_cifs(tmp_path / "cifs", ["lif-fm3m", "nacl-fm3m"], broken=False)
    big, _ = _bench().build_cell("lowsym-6")  # 1,728 sites, no translation symmetry
    CifWriter(big).write_file(folder / "big-cell.cif")
    out = tmp_path / "ranking.json"
    completed = run_cli(
        [
            "screen",
            folder,
            *FAST_CLI,
            "--param",
            "memory_budget_MB=400",
            "--workers",
            "1",
            "--db",
            tmp_path / "results.sqlite",
            "--json",
            out,
            "--quiet",
        ],
        clean_env(tmp_path),
    )
    assert completed.returncode == 0, completed.stderr
    rows = {row["candidate_id"]: row for row in json.loads(out.read_text())}
    assert rows["lif-fm3m"]["status"] == "ok" and rows["nacl-fm3m"]["status"] == "ok"
    failed = rows["big-cell"]
    assert failed["status"] == "failed"
    assert failed["error_cause"] == "grid_too_large"
    assert "400 MB memory budget" in failed["error"]
    assert "needs ~" in failed["error"] and "MB" in failed["error"]


# ---------------------------------------------------------------------------------------
# the stages whose memory grew with grid x sites or the stencil now work in bounded blocks,
# with the same numbers


def test_periodic_distances_work_in_bounded_blocks_with_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(3)
    lattice = np.array([[9.0, 0.0, 0.0], [2.0, 8.0, 0.0], [1.0, -1.5, 7.5]])
    a, b = rng.random((400, 3)), rng.random((400, 3))
    tracemalloc.start()
    try:
        distances = periodic_distances_A(a, b, lattice)
        far = far_from_all(a, b, lattice, 1.5)
        peak_MB = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    # one (400 x 400 x 27) block would hold ~1 GB of temporaries; the blocks ~50 MB
    assert peak_MB < 100.0
    from iondrag.screening import carriers

    monkeypatch.setattr(carriers, "DISTANCE_BLOCK_TRIPLES", 500)  # rows and columns split
    assert np.array_equal(periodic_distances_A(a, b, lattice), distances)
    assert np.array_equal(far_from_all(a, b, lattice, 1.5), far)
    assert np.array_equal(far, np.all(distances >= 1.5, axis=1))
    close = rng.random((300, 3)) * 0.4
    labels = site_clusters(close, lattice, 1.5)
    monkeypatch.setattr(carriers, "DISTANCE_BLOCK_TRIPLES", 1 << 19)
    assert np.array_equal(site_clusters(close, lattice, 1.5), labels)


def test_the_homogenisation_lu_fallback_stays_within_the_budget(monkeypatch):
    from iondrag.screening import mobility

    n = 8
    axis = np.arange(n) / n
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    u = 0.08 * (np.cos(2 * np.pi * x) + np.cos(2 * np.pi * (y + z)))
    gamma = np.broadcast_to(1e-13 * np.eye(3), (n**3, 3, 3))
    steps = np.eye(3) * 0.3
    monkeypatch.setattr(mobility, "CG_MAX_ITERATIONS", 1)  # conjugate gradients give up
    monkeypatch.setattr(memory, "_direct_solver_allowance_MB", None)
    solved = mobility.homogenised_diffusion(u, steps, np.arange(u.size), gamma, 300.0)
    assert np.all(np.isfinite(solved.diffusion_m2_per_s))
    assert solved.solved
    # an LU beyond the budget is not run: the tensor is then unknown, and says why
    monkeypatch.setattr(memory, "_direct_solver_allowance_MB", 0.01)
    unsolved = mobility.homogenised_diffusion(u, steps, np.arange(u.size), gamma, 300.0)
    assert not unsolved.solved and np.all(np.isnan(unsolved.diffusion_m2_per_s))
    assert "the sparse LU on 511 unknowns needs ~" in unsolved.unsolved_reason
    assert "more than the memory budget leaves" in unsolved.unsolved_reason
    np.testing.assert_array_equal(unsolved.parallel_bound_m2_per_s, solved.parallel_bound_m2_per_s)


def test_the_primitive_search_of_a_large_cell_is_bounded(monkeypatch):
    from pymatgen.core import Lattice, Structure

    from iondrag.screening import structures

    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cell = Structure(Lattice.cubic(4.03), ["Li"] * 4 + ["F"] * 4, np.vstack([fcc, fcc + 0.5]))
    cell.make_supercell([3, 3, 3])
    assert structures.primitive_search_group(cell) == 108
    monkeypatch.setattr(structures, "PRIMITIVE_SEARCH_MAX_GROUP", 50)  # spglib's search
    reduced = structures.reduced_primitive_cell(cell)
    assert len(reduced) == 2
    assert reduced.volume == pytest.approx(4.03**3 / 4)
    assert sorted(site.specie.symbol for site in reduced) == ["F", "Li"]
