"""How good are estimated softBV parameters for pairs the table lacks (Li-P3-, Li-H-, ...)?

iondrag.screening.forcefield.estimated_morse_parameters regresses the softBV table (b = 1/alpha,
R_min, D0) on the anions' O'Keeffe-Brese size and softness, with one offset per cation
state. An anion missing from the table (P3-, H-) is a case the regression has not seen, so
its error is measured here by leaving each of the table's anions out in turn:

1. parameters: fit without anion X, predict every table entry of X; rms relative error of
   b and D0 and rms error of R_min (A), per anion;
2. barriers: for every embedded candidate, replace the mobile ion's Morse term with each of
   its framework anions X by the estimate from the fit without X, and compare the 1D and 3D
   percolation barriers (eV) with those from the table (same grid, same everything else).

    python benchmarks/estimated_parameters.py [--grid 0.25] [--ids a,b,...]

Prints both tables and the summary figures quoted in docs/validation.md.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np

from iondrag.adapters.sources.embedded import load_embedded_candidates
from iondrag.screening.analysis import analyse_candidate
from iondrag.screening.forcefield import (
    fit_softbv_extension,
    has_table_entry,
    held_out_anion_errors,
    softbv_table,
)
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.structures import prepare_framework


def parameter_errors() -> dict[str, dict[str, float]]:
    """Leave-one-anion-out rms errors of b (relative), D0 (relative) and R_min (A)."""
    table = softbv_table()
    anions = sorted({an for states in table.values() for by in states.values() for an in by})
    out: dict[str, dict[str, float]] = {}
    for anion in anions:
        errors = held_out_anion_errors(anion)
        out[anion] = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
        out[anion]["n"] = len(errors["b"])
    return out


def _barriers(structure, parameters, mobile_ion) -> tuple[float, float]:
    barriers = analyse_candidate(structure, parameters, mobile_ion=mobile_ion).landscape.percolation
    return float(barriers.barriers_eV[1]), float(barriers.barriers_eV[3])


def barrier_errors(grid_A: float, ids: set[str] | None) -> list[dict]:
    """Barriers with the table vs with the leave-one-anion-out estimate for one pair."""
    parameters = ScreeningParameters(grid_spacing_A=grid_A)
    table = softbv_table()
    original = copy.deepcopy(table)
    rows = []
    for candidate in load_embedded_candidates():
        if ids and candidate.candidate_id not in ids:
            continue
        structure = candidate.structure
        try:
            framework = prepare_framework(structure, candidate.mobile_ion)
            mobile = framework.mobile_element
            e1, e3 = _barriers(structure, parameters, mobile)
        except Exception as error:  # a benchmark: report and go on
            print(f"{candidate.candidate_id}: {type(error).__name__}: {error}")
            continue
        framework_anions = {
            (el, round(q))
            for el, q in zip(framework.elements, framework.charges_e, strict=True)
            if q < 0
        }
        for anion, q_a in sorted(framework_anions):
            q_m = 1
            if not has_table_entry(mobile, q_m, anion, q_a):
                continue  # estimated already (e.g. Li-P3-): nothing to compare with
            model = fit_softbv_extension(exclude_anion=anion)
            try:
                d0, r_min, alpha = model.predict(mobile, q_m, anion, q_a)
            except KeyError:
                continue
            # swap the one entry in the cached table, run, restore
            table[mobile][str(q_m)][anion][str(q_a)] = {
                **original[mobile][str(q_m)][anion][str(q_a)],
                "d0": d0,
                "r_min": r_min,
                "alpha": alpha,
            }
            try:
                f1, f3 = _barriers(structure, parameters, mobile)
            except Exception as error:
                f1 = f3 = float("nan")
                print(f"{candidate.candidate_id} ({anion} estimated): {type(error).__name__}")
            finally:
                table[mobile][str(q_m)][anion] = copy.deepcopy(original[mobile][str(q_m)][anion])
            rows.append(
                {
                    "id": candidate.candidate_id,
                    "pair": f"{mobile}-{anion}",
                    "E1_table": e1,
                    "E1_est": f1,
                    "E3_table": e3,
                    "E3_est": f3,
                }
            )
            print(
                f"{candidate.candidate_id:32s} {mobile}-{anion:2s}  E_1D {e1:6.3f} -> {f1:6.3f}"
                f"  E_3D {e3:6.3f} -> {f3:6.3f} eV",
                flush=True,
            )
    return rows


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=float, default=0.25, help="grid spacing, A")
    parser.add_argument("--ids", default="", help="embedded IDs (comma list); default all")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    print("1. parameters, each anion left out of the fit (rms errors)")
    print(f"{'anion':6s} {'n':>4s} {'b':>7s} {'D0':>7s} {'R_min A':>8s}")
    errors = parameter_errors()
    for anion, e in errors.items():
        print(f"{anion:6s} {e['n']:4.0f} {e['b']:7.1%} {e['d0']:7.1%} {e['r_min_A']:8.3f}")
    weights = np.array([e["n"] for e in errors.values()])
    for key in ("b", "d0", "r_min_A"):
        pooled = np.sqrt(np.sum(weights * np.array([e[key] ** 2 for e in errors.values()])))
        print(f"pooled rms {key}: {pooled / np.sqrt(weights.sum()):.3f}")

    print(f"\n2. barriers, mobile-ion pair estimated without its anion (grid {args.grid} A)")
    t0 = time.perf_counter()
    rows = barrier_errors(args.grid, set(args.ids.split(",")) if args.ids else None)
    ok = [r for r in rows if np.isfinite(r["E1_est"]) and np.isfinite(r["E3_est"])]
    for key in ("E1", "E3"):
        table_values = np.array([r[f"{key}_table"] for r in ok])
        estimated = np.array([r[f"{key}_est"] for r in ok])
        finite = np.isfinite(table_values) & np.isfinite(estimated)
        diff = estimated[finite] - table_values[finite]
        print(
            f"{key}: n {finite.sum()}, mean diff {diff.mean():+.3f} eV, mean |diff| "
            f"{np.abs(diff).mean():.3f} eV, median |diff| {np.median(np.abs(diff)):.3f} eV, "
            f"Spearman(table, estimated) {_spearman(table_values[finite], estimated[finite]):.3f}"
        )
    seconds = time.perf_counter() - t0
    print(f"{len(rows)} pairs ({len(ok)} scored with the estimate), {seconds:.0f} s")


if __name__ == "__main__":
    main()
