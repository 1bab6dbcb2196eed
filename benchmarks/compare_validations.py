"""Compare two `iondrag validate` runs structure by structure (paired).

Each global choice in docs/validation.md was settled by two runs that differ only in that
choice (``--param KEY=VALUE``). This prints, on the structures both runs scored, the
headline Spearman and censored MAE (log10 S/cm) of each, the paired bootstrap interval of
the Spearman difference (screening.validation.paired_bootstrap_spearman_difference: the
same resampled structures enter both) and the structures whose prediction moved most.

Usage::

    python benchmarks/compare_validations.py base.json variant.json [--top 10]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from screening.validation import (
    censored_mae,
    paired_bootstrap_spearman_difference,
    scored_records,
    spearman,
)


def scored(report: Path) -> dict[str, dict]:
    """Rows of one report that have a finite headline prediction, by structure id."""
    rows = json.loads(report.read_text())["per_structure"]
    return {row["id"]: row for row in scored_records(rows, finite_prediction=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="JSON of the reference run")
    parser.add_argument("variant", type=Path, help="JSON of the run with one choice changed")
    parser.add_argument("--top", type=int, default=10, help="largest moves to list")
    args = parser.parse_args()

    base, variant = scored(args.base), scored(args.variant)
    common = sorted(set(base) & set(variant))
    measured = np.array([base[i]["log10_sigma_exp"] for i in common])
    bound = np.array([bool(base[i]["upper_bound"]) for i in common])
    p_base = np.array([base[i]["log10_sigma_pred"] for i in common])
    p_variant = np.array([variant[i]["log10_sigma_pred"] for i in common])
    print(f"{len(common)} structures scored by both ({len(base)} base, {len(variant)} variant)")
    for label, predicted in (("base", p_base), ("variant", p_variant)):
        print(
            f"  {label:8s} Spearman {spearman(predicted, measured):.3f}  "
            f"MAE {censored_mae(predicted, measured, bound):.2f} (log10 S/cm, censored)"
        )
    diff = paired_bootstrap_spearman_difference(p_base, p_variant, measured)
    print(
        f"  Spearman base - variant {diff['difference']:+.3f} "
        f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] "
        f"(paired bootstrap, {diff['n_resamples']} resamples)"
    )
    moved = np.argsort(-np.abs(p_variant - p_base))[: args.top]
    print("  largest moves (log10 S/cm): id, formula, measured, base -> variant")
    for k in moved:
        row = base[common[k]]
        print(
            f"    {common[k]:5s} {row['formula'][:28]:28s} {measured[k]:7.2f}  "
            f"{p_base[k]:8.2f} -> {p_variant[k]:8.2f}"
        )


if __name__ == "__main__":
    main()
