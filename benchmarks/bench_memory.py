"""Peak memory of one candidate against the grid-memory estimate (issue 15, item 3).

Scores rock-salt LiF supercells (8 to 8 n^3 atoms) at several grid spacings, each in a fresh
process, and prints the peak resident memory above the process's baseline (the science
imported) next to ``iondrag.screening.potential.grid_memory_MB`` of the grid it used:

    python benchmarks/bench_memory.py                    # 1x1x1 to 3x3x3, 0.5 to 0.15 A
    python benchmarks/bench_memory.py --sizes 1,2 --grids 0.3,0.2

The bytes per grid point it prints are what ``BYTES_PER_GRID_POINT`` should be for the
budget to bound memory; the estimate is not changed here (a larger constant coarsens the
grids of large cells under the default budget, which changes their predictions).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _measure(size: int, grid_A: float, queue: multiprocessing.Queue) -> None:
    import warnings

    import numpy as np
    from pymatgen.core import Lattice, Structure

    from iondrag.screening.candidates import Candidate
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.pipeline import score_candidate
    from iondrag.screening.potential import grid_memory_MB

    warnings.simplefilter("ignore")
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cell = Structure(Lattice.cubic(4.03), ["Li"] * 4 + ["F"] * 4, np.vstack([fcc, fcc + 0.5]))
    cell.make_supercell([size, size, size])
    baseline = _peak_kb()
    parameters = ScreeningParameters(
        grid_spacing_A=grid_A, arrhenius_temperatures_K=(), memory_budget_MB=1e6
    )
    candidate = Candidate(candidate_id=f"lif-{size}", source="structure", structure=cell)
    result, _ = score_candidate(candidate, parameters)
    shape = tuple(result.grid_shape or (0, 0, 0))
    points = int(np.prod(shape))
    queue.put(
        {
            "atoms": len(cell),
            "grid_A": grid_A,
            "points": points,
            "status": result.status,
            "estimate_MB": grid_memory_MB(shape) if points else float("nan"),
            "peak_above_baseline_MB": (_peak_kb() - baseline) / 1024.0,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,3", help="supercell multiples of LiF")
    parser.add_argument("--grids", default="0.5,0.3,0.2,0.15", help="grid spacings, A")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"{'atoms':>6} {'grid_A':>6} {'points':>9} {'estimate_MB':>11} {'peak_MB':>8} B/point")
    for size in (int(x) for x in args.sizes.split(",")):
        for grid in (float(x) for x in args.grids.split(",")):
            queue: multiprocessing.Queue = context.Queue()
            process = context.Process(target=_measure, args=(size, grid, queue))
            process.start()
            row = queue.get()
            process.join()
            per_point = row["peak_above_baseline_MB"] * 1024 * 1024 / max(row["points"], 1)
            print(
                f"{row['atoms']:>6} {row['grid_A']:>6.2f} {row['points']:>9} "
                f"{row['estimate_MB']:>11.1f} {row['peak_above_baseline_MB']:>8.1f} "
                f"{per_point:>7.0f}  {row['status']}"
            )


if __name__ == "__main__":
    main()
