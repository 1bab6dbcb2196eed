"""Benchmark of the per-structure pipeline against bvlain's BVSE, on OBELiX structures.

For every ordered OBELiX training structure with at most --max-atoms atoms (default 200),
it times, interleaved (so both see the same machine load):

* iondrag: the whole pipeline (framework, potential on the 0.2 A grid, percolation, drag,
  path, mobility, conductivity, Arrhenius fit) for one structure, one core;
* bvlain: its BVSE grid at the same 0.2 A spacing plus its percolation barriers.

Then, in a second pass with tracemalloc, the peak memory of each. Prints the figures and the
ratios. The OBELiX folder comes from IONDRAG_OBELIX_DIR (default ../shared/data/obelix-train
beside the repository); without it the benchmark says so and exits.

    python benchmarks/bench_pipeline.py [--max-atoms 200] [--limit 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]


def obelix_dir() -> Path:
    return Path(os.environ.get("IONDRAG_OBELIX_DIR", REPO.parent / "shared/data/obelix-train"))


def ordered_structures(folder: Path, max_atoms: int, limit: int):
    from pymatgen.core import Structure

    out = []
    for path in sorted((folder / "cifs").glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                structure = Structure.from_file(path)
            except Exception:  # unreadable files are not part of this benchmark
                continue
        if structure.is_ordered and len(structure) <= max_atoms and "Li" in structure.symbol_set:
            out.append((path.stem, structure))
    # spread over sizes: sort by size and take evenly spaced ones
    out.sort(key=lambda item: len(item[1]))
    if len(out) > limit:
        index = np.linspace(0, len(out) - 1, limit).round().astype(int)
        out = [out[i] for i in sorted(set(index))]
    return out


def run_iondrag(cid, structure):
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.pipeline import score_candidate

    candidate = Candidate(candidate_id=cid, source="cif", structure=structure)
    result, _ = score_candidate(candidate, ScreeningParameters())
    return result


def run_bvlain(structure, states):
    from bvlain import Lain

    decorated = structure.copy()
    decorated.add_oxidation_state_by_element({el: round(q) for el, q in states.items()})
    lain = Lain(verbose=False)
    lain.read_structure(decorated, oxi_check=False)
    lain.bvse_distribution(mobile_ion="Li1+", resolution=0.2)
    return lain.percolation_barriers(encut=5.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=int, default=200)
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args()
    folder = obelix_dir()
    if not (folder / "cifs").is_dir():
        print(f"OBELiX data not found at {folder}; set IONDRAG_OBELIX_DIR. Nothing measured.")
        return 0
    try:
        import bvlain  # noqa: F401
    except ImportError:
        print("bvlain is not installed (pip install -e '.[test]'); nothing measured.")
        return 0
    structures = ordered_structures(folder, args.max_atoms, args.limit)
    print(
        f"{len(structures)} ordered OBELiX structures, {len(structures[0][1])}-"
        f"{len(structures[-1][1])} atoms; one core (BLAS threads = 1)"
    )
    from iondrag.screening.structures import prepare_framework

    # warm up imports and caches (pymatgen's bond-valence tables load once per process)
    run_iondrag(*structures[0])
    rows = []
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cid, structure in structures:
            states = prepare_framework(structure).oxidation_states
            start = time.perf_counter()
            result = run_iondrag(cid, structure)
            ours = time.perf_counter() - start
            start = time.perf_counter()
            try:
                theirs_barriers = run_bvlain(structure, states)
            except Exception as error:  # bvlain fails on some inputs; record and go on
                theirs_barriers = {"error": str(error)[:60]}
            theirs = time.perf_counter() - start
            rows.append((cid, len(structure), ours, theirs, result, theirs_barriers))
            b1 = result.barrier_1d_eV
            t1 = theirs_barriers.get("E_1D")
            print(
                f"  {cid:>4} {len(structure):4d} atoms  iondrag {ours:6.2f} s"
                f"  bvlain {theirs:6.2f} s"
                f"  E_1D {b1 if b1 is None else round(b1, 3)} vs "
                f"{t1 if t1 is None else round(float(t1), 3)}  status {result.status}",
                flush=True,
            )
    ours_times = [r[2] for r in rows]
    their_times = [r[3] for r in rows]
    print()
    print(
        f"iondrag whole pipeline: median {statistics.median(ours_times):.2f} s/structure, "
        f"p90 {np.percentile(ours_times, 90):.2f} s, total {sum(ours_times):.1f} s"
    )
    print(
        f"bvlain BVSE + percolation: median {statistics.median(their_times):.2f} s/structure, "
        f"total {sum(their_times):.1f} s"
    )
    print(
        f"throughput ratio iondrag/bvlain (same structures, same run): "
        f"{sum(their_times) / sum(ours_times):.2f}x  (median per-structure ratio "
        f"{statistics.median(t / o for o, t in zip(ours_times, their_times, strict=True)):.2f}x)"
    )
    # peak memory, second pass on the three largest structures
    print()
    for cid, structure in structures[-3:]:
        states = prepare_framework(structure).oxidation_states
        tracemalloc.start()
        run_iondrag(cid, structure)
        ours_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        tracemalloc.start()
        with contextlib.suppress(Exception):
            run_bvlain(structure, states)
        theirs_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(
            f"peak memory {cid} ({len(structure)} atoms): iondrag {ours_peak:.0f} MB, "
            f"bvlain {theirs_peak:.0f} MB"
        )
    import resource

    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
