"""Peak memory of one candidate against the memory budget (issue 15, item 3).

Two modes.

Budget runs (the default): every cell at every grid spacing under every budget, each scored
in a fresh process, as a screen's worker scores it (the candidate unpickled, one BLAS
thread), printing the peak resident set (VmHWM) of that process over the budget. The target
is a ratio of at most 1.25 for every run; a candidate whose coarsest grid does not fit fails
with ``grid_too_large`` (the ratio is then that of the structure work before the check).

    python benchmarks/bench_memory.py                       # the quick set (~7 min, 1 job)
    python benchmarks/bench_memory.py --jobs 2              # two runs at a time
    python benchmarks/bench_memory.py --full                # 2 to 21,952 atoms, 0.1 to 0.5 A,
                                                            # 300 MB to 2 GB (about an hour)
    python benchmarks/bench_memory.py --cells lif-2,lif-4x --grids 0.2 --budgets 2048
    python benchmarks/bench_memory.py --cells lif-4x --grids 0.2 --budgets 800,2048 \
        --param temperature_K=3000      # the transport region fills the grid: the worst case

Cells (``--cells``): ``lif-2`` LiF's 2-atom cell; ``lif-N`` the N x N x N conventional
supercell (8 N^3 atoms; reduced to the 2-atom cell by default, as a screen does);
``lif-Nx`` the same supercell analysed as given (``reduce_to_primitive=False``);
``lowsym-N`` the supercell with a seeded tenth of the Li replaced by Na (no translation
symmetry: the whole cell is analysed).

Stage profile (``--stages CELL GRID``): one candidate in this process under
``tracemalloc``, the peak of every stage of the analysis (potential, percolation, Hessian
and drag, path, homogenisation, carriers and Frenkel pair, ...) above the memory held when
it started, in MB, with the grid, region and stencil sizes; the figures behind
``iondrag.screening.memory``:

    python benchmarks/bench_memory.py --stages lif-4x 0.2
    python benchmarks/bench_memory.py --stages lif-4x 0.2 --param temperature_K=3000

Memory in MB (10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUICK_CELLS = "lif-2,lif-4,lif-3x,lif-6x,lowsym-5,lowsym-8,lif-14,lif-14x"
QUICK_GRIDS = "0.1,0.2,0.3,0.5"
QUICK_BUDGETS = "300,800"
FULL_CELLS = (
    "lif-2,lif-2x,lif-4,lif-3x,lif-4x,lif-6x,lif-10x,lowsym-5,lowsym-8,lowsym-10,lif-14,lif-14x"
)
FULL_GRIDS = "0.1,0.15,0.2,0.3,0.4,0.5"
FULL_BUDGETS = "300,500,800,2048"

#: Largest peak resident memory over the budget the issue accepts.
TARGET_RATIO = 1.25


def build_cell(name: str) -> tuple[Any, dict[str, Any]]:
    """Return the structure of a named cell and the parameters it needs (module docstring)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    conventional = Structure(
        Lattice.cubic(4.03), ["Li"] * 4 + ["F"] * 4, np.vstack([fcc, fcc + 0.5])
    )
    kind, _, size = name.partition("-")
    if kind == "lif" and size == "2":
        return conventional.get_primitive_structure(), {}
    as_given = size.endswith("x")
    n = int(size.rstrip("x"))
    cell = conventional.copy()
    cell.make_supercell([n, n, n])
    extra: dict[str, Any] = {"reduce_to_primitive": False} if as_given else {}
    if kind == "lowsym":
        rng = np.random.default_rng(n)
        lithium = [i for i, site in enumerate(cell) if site.specie.symbol == "Li"]
        for i in rng.choice(lithium, len(lithium) // 10, replace=False):
            cell.replace(int(i), "Na")
    elif kind != "lif":
        raise SystemExit(f"unknown cell {name!r} (lif-2, lif-N, lif-Nx, lowsym-N)")
    # oxidation states given, as a Materials Project candidate has them: pymatgen's
    # bond-valence analysis takes minutes on 10,000 sites (time, not memory)
    cell.add_oxidation_state_by_element({"Li": 1, "Na": 1, "F": -1})
    return cell, extra


def _vm_hwm_MB() -> float:
    """Peak resident set of this process (VmHWM), MB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/self/status")


def _one_run(path: str) -> None:
    """Child process: score the pickled candidate, print one JSON line."""
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np

    from iondrag.screening.memory import candidate_memory
    from iondrag.screening.pipeline import score_candidate

    with open(path, "rb") as handle:
        candidate, parameters = pickle.load(handle)
    started = time.perf_counter()
    result, _ = score_candidate(candidate, parameters)
    seconds = time.perf_counter() - started
    peak_MB = _vm_hwm_MB()  # before the estimate below reduces the cell once more
    shape: Any = tuple(result.grid_shape or (0, 0, 0))
    estimate = None
    if shape[0]:
        from iondrag.screening.structures import reduced_primitive_cell

        cell = candidate.structure
        if parameters.reduce_to_primitive:
            cell = reduced_primitive_cell(cell)
        estimate = candidate_memory(
            cell.lattice.matrix, shape, cutoff_A=parameters.cutoff_A, n_sites=len(cell)
        ).total_MB
    print(
        json.dumps(
            {
                "peak_MB": peak_MB,
                "status": result.status,
                "points": int(np.prod(shape)),
                "spacing_A": result.grid_spacing_A,
                "estimate_MB": estimate,
                "coarsened": any("coarsened" in w for w in result.warnings),
                "error": result.error,
                "seconds": seconds,
            }
        )
    )


def budget_run(
    cell: str,
    grid_A: float,
    budget_MB: float,
    workdir: Path,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score one cell in a fresh process (``params``: more parameters); return its row."""
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.parameters import ScreeningParameters

    structure, extra = build_cell(cell)
    parameters = ScreeningParameters(
        grid_spacing_A=grid_A,
        memory_budget_MB=budget_MB,
        arrhenius_temperatures_K=(),
        **{**extra, **(params or {})},
    )
    candidate = Candidate(candidate_id=cell, source="structure", structure=structure)
    path = workdir / f"{cell}-{grid_A}-{budget_MB}.pickle"
    with open(path, "wb") as handle:
        pickle.dump((candidate, parameters), handle)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--one-run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    try:
        row = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        row = {"peak_MB": float("nan"), "status": f"crashed ({done.returncode})", "points": 0}
        row["error"] = done.stderr.strip().splitlines()[-1:] or [""]
    row.update(atoms=len(structure), cell=cell, grid_A=grid_A, budget_MB=budget_MB, wall_s=wall)
    row["ratio"] = row["peak_MB"] / budget_MB
    return row


def _print_row(row: dict[str, Any]) -> None:
    estimate = row.get("estimate_MB")
    spacing = row.get("spacing_A")
    note = "coarsened" if row.get("coarsened") else ""
    if row["status"] != "ok":
        note = (
            (row.get("error") or row["status"])[:60]
            if isinstance(row.get("error"), str)
            else row["status"]
        )
    print(
        f"{row['cell']:>10} {row['atoms']:>6} {row['grid_A']:>5.2f} {row['budget_MB']:>6.0f} "
        f"{(f'{spacing:.3f}' if spacing else '-'):>7} {row['points']:>9} "
        f"{(f'{estimate:.0f}' if estimate else '-'):>8} {row['peak_MB']:>7.0f} "
        f"{row['ratio']:>5.2f} {row['wall_s']:>6.1f}  {note}",
        flush=True,
    )


def budget_runs(
    cells: list[str],
    grids: list[float],
    budgets: list[float],
    jobs: int,
    params: dict[str, Any] | None = None,
) -> int:
    """Run every combination; print the table; return the number of runs over the target."""
    print(
        f"{'cell':>10} {'atoms':>6} {'grid':>5} {'budget':>6} {'used_A':>7} {'points':>9} "
        f"{'est_MB':>8} {'peak_MB':>7} {'ratio':>5} {'wall_s':>6}  note"
    )
    combos = [(c, g, b) for b in budgets for c in cells for g in grids]
    rows = []
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(max_workers=jobs) as pool:
        work = Path(folder)
        for row in pool.map(
            lambda combo: budget_run(combo[0], combo[1], combo[2], work, params), combos
        ):
            _print_row(row)
            rows.append(row)
    worst = max(rows, key=lambda r: r["ratio"])
    over = [r for r in rows if not r["ratio"] <= TARGET_RATIO]
    print(
        f"\n{len(rows)} runs, worst peak/budget {worst['ratio']:.2f} ({worst['cell']}, "
        f"{worst['grid_A']} A, {worst['budget_MB']:.0f} MB); {len(over)} over {TARGET_RATIO}"
    )
    return len(over)


def stage_profile(cell: str, grid_A: float, params: dict[str, Any]) -> None:
    """Peak memory of every stage of one candidate's analysis under tracemalloc."""
    import tracemalloc
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np

    import iondrag.screening.pipeline as pipeline
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.memory import candidate_memory, stencil_points
    from iondrag.screening.parameters import ScreeningParameters

    structure, extra = build_cell(cell)
    parameters = ScreeningParameters(
        grid_spacing_A=grid_A, memory_budget_MB=1e7, **{**extra, **params}
    )
    stages = [
        "reduced_primitive_cell",
        "prepare_framework",
        "build_pair_field",
        "_elastic_for",
        "evaluate_grid",
        "percolation_energies",
        "periodic_components",
        "drag_tensor",
        "grid_percolating_path",
        "relax_path",
        "evaluate_points",
        "regularised_drag",
        "homogenised_diffusion",
        "site_connection_levels_eV",
        "framework_sublattice",
        "grid_local_minima",
        "far_from_all",
        "frenkel_pair",
        "result_document",
    ]
    rows: list[tuple[str, float, float, float, float]] = []
    depth = [0]
    tracemalloc.start()
    origin = tracemalloc.get_traced_memory()[0]

    def wrap(name: str, function: Any) -> Any:
        def measured(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return function(*args, **kwargs)
            depth[0] += 1
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                rows.append(
                    (
                        name,
                        (held - origin) / 1e6,
                        (peak - held) / 1e6,
                        time.perf_counter() - started,
                        _vm_hwm_MB(),
                    )
                )
                depth[0] -= 1

        return measured

    for name in stages:
        setattr(pipeline, name, wrap(name, getattr(pipeline, name)))
    candidate = Candidate(candidate_id=cell, source="structure", structure=structure)
    result, _ = pipeline.score_candidate(candidate, parameters)
    shape: Any = tuple(result.grid_shape or (0, 0, 0))
    points = int(np.prod(shape))
    region = (result.framework or {}).get("n_transport_region_points", 0)
    lattice = np.array(structure.lattice.matrix)
    n_sites = len(structure)
    if parameters.reduce_to_primitive:
        reduced = pipeline.reduced_primitive_cell(structure)
        lattice, n_sites = np.array(reduced.lattice.matrix), len(reduced)
    print(
        f"{cell} ({len(structure)} atoms, {n_sites} analysed) at {grid_A} A: {result.status}, "
        f"grid {shape} = {points} points, region {region} ({region / max(points, 1):.0%}), "
        f"stencil ~{stencil_points(lattice, shape, parameters.cutoff_A) if points else 0} points"
    )
    print(
        f"{'stage':<26} {'held_MB':>8} {'peak_MB':>8} {'B/point':>8} {'B/region':>8} {'s':>6} "
        f"{'rss_peak_MB':>11}"
    )
    for name, held, peak, seconds, resident in rows:
        per_point = peak * 1e6 / points if points else float("nan")
        per_region = peak * 1e6 / region if region else float("nan")
        print(
            f"{name:<26} {held:>8.1f} {peak:>8.1f} {per_point:>8.0f} {per_region:>8.0f} "
            f"{seconds:>6.2f} {resident:>11.0f}"
        )
    traced_peak = max((held + peak for _, held, peak, _, _ in rows), default=0.0)
    if points:
        estimate = candidate_memory(lattice, shape, cutoff_A=parameters.cutoff_A, n_sites=n_sites)
        print(
            f"largest traced peak {traced_peak:.0f} MB above the process at start; resident peak "
            f"{_vm_hwm_MB():.0f} MB; estimate {estimate.describe()}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=None, help=f"comma-separated (quick: {QUICK_CELLS})")
    parser.add_argument("--grids", default=None, help=f"spacings, A (quick: {QUICK_GRIDS})")
    parser.add_argument("--budgets", default=None, help=f"MB (quick: {QUICK_BUDGETS})")
    parser.add_argument("--full", action="store_true", help="the full range (about an hour)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--stages", nargs=2, metavar=("CELL", "GRID_A"), help="stage profile")
    parser.add_argument(
        "--param", action="append", default=[], help="KEY=VALUE, a parameter of every run"
    )
    parser.add_argument("--one-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        _one_run(args.one_run)
        return
    params: dict[str, Any] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    if args.stages:
        stage_profile(args.stages[0], float(args.stages[1]), params)
        return
    cells = args.cells or (FULL_CELLS if args.full else QUICK_CELLS)
    grids = args.grids or (FULL_GRIDS if args.full else QUICK_GRIDS)
    budgets = args.budgets or (FULL_BUDGETS if args.full else QUICK_BUDGETS)
    over = budget_runs(
        cells.split(","),
        [float(x) for x in grids.split(",")],
        [float(x) for x in budgets.split(",")],
        args.jobs,
        params,
    )
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
