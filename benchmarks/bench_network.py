"""Timing of the random-network solver (screening/network.py) on simple-cubic supercells.

For each L it times, on one core (threadpool_limits(1), as the pipeline runs), the best of
--repeats calls of:

* effective_conductivity with bimodal conductances 1:4 (narrow spread: ``auto`` runs
  Jacobi-preconditioned conjugate gradients), and the same with sparse LU;
* effective_conductivity with barriers uniform in [0, 1] eV at 300 K (g over 17 decades:
  ``auto`` runs CG preconditioned by the factor of the strong bonds), and with sparse LU;
* critical_path_barrier_eV for those barriers;
* one draw of random_network_conductivity (site blocking 0.3, uniform barrier 0.3 eV),
  i.e. the time per draw including its share of the unblocked reference.

Each effective_conductivity call solves all three field directions.

    python benchmarks/bench_network.py [--sizes 20,30] [--repeats 3] [--no-direct]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from iondrag.screening.network import (
    critical_path_barrier_eV,
    effective_conductivity,
    random_network_conductivity,
    simple_cubic_bonds,
)
from iondrag.screening.units import thermal_energy_eV


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def time_size(L: int, repeats: int, direct: bool) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each call on the L^3 simple-cubic network."""
    net = simple_cubic_bonds(L)
    rng = np.random.default_rng(0)
    bimodal = np.where(rng.random(net.n_bonds) < 0.5, 1.0, 4.0)
    barrier = rng.random(net.n_bonds)
    wide = np.exp(-barrier / thermal_energy_eV(300.0))
    geometry = (net.n_sites, net.bond_i, net.bond_j, net.bond_shift_A)

    def sigma(g, solver="auto"):
        return effective_conductivity(*geometry, g, net.cell_matrix_A, solver=solver)

    rows = {
        "bimodal 1:4, auto (CG)": best_of(repeats, lambda: sigma(bimodal)),
        "17 decades, auto": best_of(repeats, lambda: sigma(wide)),
        "critical path": best_of(
            repeats, lambda: critical_path_barrier_eV(*geometry, barrier, net.cell_matrix_A)
        ),
        "one random draw": best_of(
            repeats,
            lambda: random_network_conductivity(
                net, np.full(3, 0.3), np.array([0.3]), 300.0, n_draws=1
            ),
        ),
    }
    if direct:
        rows["bimodal 1:4, direct (LU)"] = best_of(repeats, lambda: sigma(bimodal, "direct"))
        rows["17 decades, direct (LU)"] = best_of(repeats, lambda: sigma(wide, "direct"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,30")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-direct", action="store_true", help="skip the sparse-LU timings")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        for L in (int(x) for x in args.sizes.split(",")):
            for name, seconds in time_size(L, args.repeats, not args.no_direct).items():
                print(f"L={L:3d} sites={L**3:7d}  {name:26s} {seconds:7.3f} s", flush=True)


if __name__ == "__main__":
    main()
