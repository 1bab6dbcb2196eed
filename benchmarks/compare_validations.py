"""Compare two `iondrag validate` runs structure by structure (paired).

Each global choice in docs/validation.md was settled by two runs that differ only in that
choice (``--param KEY=VALUE``). This prints, on the structures both runs scored, the
headline Spearman and censored MAE (log10 S/cm) of each, the paired bootstrap interval of
the Spearman difference (iondrag.screening.metrics.paired_bootstrap_spearman_difference: the
same resampled structures enter both) and the structures whose prediction moved most.

Usage::

    python benchmarks/compare_validations.py base.json variant.json [--top 10]
    # an ablation field of one run against its headline
    python benchmarks/compare_validations.py run.json run.json \
        --variant-field log10_sigma_average_bruggeman

Every comparison is also printed on each family-disjoint half (records' ``half``, A and B;
docs/validation.md): a choice is adopted only if it wins on the half it was tuned on and
holds on the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from iondrag.screening.metrics import (
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
    parser.add_argument("--base-field", default="log10_sigma_pred", help="record field of base")
    parser.add_argument(
        "--variant-field", default="log10_sigma_pred", help="record field of the variant"
    )
    args = parser.parse_args()

    base, variant = scored(args.base), scored(args.variant)
    common = sorted(
        i
        for i in set(base) & set(variant)
        if _finite(base[i].get(args.base_field)) and _finite(variant[i].get(args.variant_field))
    )
    print(f"{len(common)} structures scored by both ({len(base)} base, {len(variant)} variant)")
    halves = sorted({str(base[i].get("half")) for i in common if base[i].get("half")})
    for half in [None, *halves]:
        ids = [i for i in common if half is None or base[i].get("half") == half]
        if ids:
            _compare(ids, base, variant, args.base_field, args.variant_field, half)
    p_base = np.array([base[i][args.base_field] for i in common], dtype=float)
    p_variant = np.array([variant[i][args.variant_field] for i in common], dtype=float)
    measured = np.array([base[i]["log10_sigma_exp"] for i in common])
    moved = np.argsort(-np.abs(p_variant - p_base))[: args.top]
    print("  largest moves (log10 S/cm): id, formula, measured, base -> variant")
    for k in moved:
        row = base[common[k]]
        print(
            f"    {common[k]:5s} {str(row['formula'])[:28]:28s} {measured[k]:7.2f}  "
            f"{p_base[k]:8.2f} -> {p_variant[k]:8.2f}"
        )


def _finite(value: object) -> bool:
    return value is not None and bool(np.isfinite(float(value)))  # type: ignore[arg-type]


def _compare(
    ids: list[str],
    base: dict[str, dict],
    variant: dict[str, dict],
    base_field: str,
    variant_field: str,
    half: str | None,
) -> None:
    """Print both runs' Spearman and MAE on ``ids`` and the paired Spearman difference."""
    measured = np.array([base[i]["log10_sigma_exp"] for i in ids])
    bound = np.array([bool(base[i]["upper_bound"]) for i in ids])
    p_base = np.array([base[i][base_field] for i in ids], dtype=float)
    p_variant = np.array([variant[i][variant_field] for i in ids], dtype=float)
    print(f"  {'all' if half is None else 'half ' + half} ({len(ids)} structures)")
    for label, predicted in (("base", p_base), ("variant", p_variant)):
        print(
            f"    {label:8s} Spearman {spearman(predicted, measured):.3f}  "
            f"MAE {censored_mae(predicted, measured, bound):.2f} (log10 S/cm, censored)"
        )
    diff = paired_bootstrap_spearman_difference(p_base, p_variant, measured)
    print(
        f"    Spearman base - variant {diff['difference']:+.3f} "
        f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] "
        f"(paired bootstrap, {diff['n_resamples']} resamples)"
    )


if __name__ == "__main__":
    main()
