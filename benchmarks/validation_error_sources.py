"""Where does the ranking and absolute error of `iondrag validate` come from?

Reads the JSON that `iondrag validate --json` wrote and the CIF folder it scored, and splits
the error (predicted minus measured log10 sigma, S/cm, upper bounds censored as in
iondrag.screening.metrics) by ingredient:

* the potential: error against the 3D percolation barrier (eV): a BVSE barrier that is too
  high shows as a negative error growing with the barrier;
* disorder: structures whose framework (mobile ion removed) is ordered vs partly occupied,
  and those whose mobile-ion sites are partly occupied;
* the carrier density: Spearman of the error with the mobile-ion density;
* families: mean error (bias) and Spearman per family (>= 5 scored);
* dimensionality: structures whose channels percolate in 1, 2 or 3 dimensions at E_1;
* the ranking: MAE|mo, the smallest MAE any order-preserving map of the predictions reaches
  (iondrag.screening.metrics.censored_monotone_mae), and the same bound for the measurements
  plus Gaussian noise, i.e. which Spearman an absolute-error target needs.

It also compares the headline with its barrier-only rival on each subset, which answers the
question of theory.md section 3 (does the drag change the ranking?) in the real pipeline.

Usage::

    python benchmarks/validation_error_sources.py validation.json --cifs DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from scipy.stats import spearmanr

from iondrag.screening.metrics import censored_monotone_mae, censored_signed_errors, scored_records


def disorder_flags(cif: Path, ion: str = "Li") -> tuple[bool, bool]:
    """Return (framework partly occupied, mobile sites partly occupied) for one CIF."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_file(cif)
    framework_partial = mobile_partial = False
    for site in structure:
        for species, occupancy in site.species.items():
            partial = occupancy < 0.999 or len(site.species) > 1
            if species.symbol == ion:
                mobile_partial |= partial
            else:
                framework_partial |= partial
    return framework_partial, mobile_partial


def _line(label: str, predicted: np.ndarray, measured: np.ndarray, bound: np.ndarray) -> str:
    errors = censored_signed_errors(predicted, measured, bound)
    rho = spearmanr(predicted, measured).statistic if len(predicted) > 2 else float("nan")
    return (
        f"  {label:32s} n {len(predicted):4d}  mean error {np.mean(errors):+6.2f}  "
        f"MAE {np.mean(np.abs(errors)):5.2f}  Spearman {rho:+.3f}  "
        f"MAE|mo {censored_monotone_mae(predicted, measured, bound):5.2f}"
    )


def noisy_truth_bounds(
    measured: np.ndarray, bound: np.ndarray, widths: tuple[float, ...], draws: int = 20
) -> list[tuple[float, float, float]]:
    """Spearman and monotone-map MAE bound of the measurements plus Gaussian noise.

    A predictor ``measured + N(0, width)`` (log10 S/cm) stands for a model whose only fault
    is its ranking; it tells which Spearman a predictor needs before any calibration can
    bring its MAE to a target. Returns (width, mean Spearman, mean bound) per width.
    """
    rng = np.random.default_rng(0)
    out = []
    for width in widths:
        rhos, bounds = [], []
        for _ in range(draws):
            noisy = measured + rng.normal(0.0, width, len(measured))
            rhos.append(spearmanr(noisy, measured).statistic)
            bounds.append(censored_monotone_mae(noisy, measured, bound))
        out.append((width, float(np.mean(rhos)), float(np.mean(bounds))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON written by iondrag validate --json")
    parser.add_argument("--cifs", type=Path, required=True, help="the CIF folder it scored")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    rows = scored_records(report["per_structure"])
    predicted = np.array([r["log10_sigma_pred"] for r in rows])
    measured = np.array([r["log10_sigma_exp"] for r in rows])
    bound = np.array([bool(r["upper_bound"]) for r in rows])
    barrier = np.array([r.get("barrier_3d_eV") or np.nan for r in rows])
    density = np.array([r.get("mobile_ion_density_per_m3") or np.nan for r in rows])
    errors = censored_signed_errors(predicted, measured, bound)
    print(f"{args.report}: {len(rows)} scored structures with a measurement")
    print(_line("all", predicted, measured, bound))
    print(
        f"  spread: predicted log10 sigma sd {np.std(predicted):.2f}, "
        f"measured sd {np.std(measured):.2f} (decades)"
    )

    print("\nthe potential: error by 3D barrier (eV)")
    edges = [0.0, 0.3, 0.5, 0.8, 1.2, np.inf]
    for lo, hi in itertools.pairwise(edges):
        mask = (barrier >= lo) & (barrier < hi)
        if mask.sum():
            print(
                _line(f"{lo:.1f} <= E_3D < {hi:.1f}", predicted[mask], measured[mask], bound[mask])
            )
    finite = np.isfinite(barrier)
    rho = spearmanr(barrier[finite], errors[finite]).statistic
    print(f"  Spearman(E_3D, error) = {rho:+.3f} (negative: high barriers predicted too low)")

    print("\ndimensionality of the conducting network at E_1 (the polycrystal average)")
    dimension = np.array([r.get("dimensionality") or 0 for r in rows])
    for d in (1, 2, 3):
        mask = dimension == d
        if mask.sum():
            print(_line(f"{d}D", predicted[mask], measured[mask], bound[mask]))

    print(
        "\nwhat ranking the absolute error needs (MAE|mo: best order-preserving map, "
        "in-sample; compare the headline's on the line 'all')"
    )
    for width, rho, mono in noisy_truth_bounds(measured, bound, (1.0, 2.0, 2.5, 3.0, 3.5, 4.0)):
        print(f"  measured + N(0, {width:.1f}) decades: Spearman {rho:.3f}, MAE|mo {mono:.2f}")

    print("\ndisorder (occupancies read from the CIFs)")
    flags = [disorder_flags(args.cifs / f"{r['id']}.cif") for r in rows]
    framework_partial = np.array([f[0] for f in flags])
    mobile_partial = np.array([f[1] for f in flags])
    for label, mask in (
        ("ordered framework", ~framework_partial),
        ("partly occupied framework", framework_partial),
        ("ordered mobile sites", ~mobile_partial),
        ("partly occupied mobile sites", mobile_partial),
    ):
        if mask.sum():
            print(_line(label, predicted[mask], measured[mask], bound[mask]))

    print("\nthe carrier density")
    finite = np.isfinite(density)
    rho = spearmanr(density[finite], errors[finite]).statistic
    rho_exp = spearmanr(density[finite], measured[finite]).statistic
    print(f"  Spearman(mobile-ion density, error) = {rho:+.3f}")
    print(f"  Spearman(mobile-ion density, measured) = {rho_exp:+.3f}")

    print("\nfamilies (>= 5 scored), sorted by mean error")
    families: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        families.setdefault(row.get("family") or "unknown", []).append(index)
    lines = []
    for family, members in families.items():
        if len(members) >= 5:
            idx = np.array(members)
            lines.append(
                (np.mean(errors[idx]), _line(family, predicted[idx], measured[idx], bound[idx]))
            )
    for _, text in sorted(lines):
        print(text)

    print("\nbarrier alone vs headline (Spearman with measured) on each subset")
    for label, mask in (
        ("all", np.ones(len(rows), dtype=bool)),
        ("ordered framework", ~framework_partial),
        ("partly occupied framework", framework_partial),
    ):
        ok = mask & np.isfinite(barrier)
        headline = spearmanr(predicted[ok], measured[ok]).statistic
        alone = spearmanr(-barrier[ok], measured[ok]).statistic
        print(f"  {label:28s} n {ok.sum():4d}  headline {headline:+.3f}  -E_3D alone {alone:+.3f}")


if __name__ == "__main__":
    main()
