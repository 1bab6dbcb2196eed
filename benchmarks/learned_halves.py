"""The learned model across the family-disjoint halves: trained on one, judged on the other.

``iondrag learn`` reports a five-fold family-grouped cross-validation. The project's rule
for a global choice is stricter: tune on one family-disjoint half of the training split
(:func:`iondrag.screening.metrics.family_halves`) and check on the other. This script
fits the shipped model's recipe (feature set ``both``, the same forest, seed 0) on the rows
of one half only and predicts the other half, then does the reverse, and prints beside it
the physics headline on the same structures. Which column ranks the screen by default is
such a global choice (``iondrag screen --rank-by``).

Run (scores through validate's journal: seconds when ``iondrag validate`` or ``iondrag
learn`` already ran in the same ``IONDRAG_HOME``, about 2 minutes on 2 cores otherwise)::

    python benchmarks/learned_halves.py --cifs ../shared/data/obelix-train/cifs \\
        --table ../shared/data/obelix-train/train.csv --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OBELIX = Path(
    os.environ.get("IONDRAG_OBELIX_DIR", REPO.parent / "shared" / "data" / "obelix-train")
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifs", type=Path, default=DEFAULT_OBELIX / "cifs")
    parser.add_argument("--table", type=Path, default=DEFAULT_OBELIX / "train.csv")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the forest (0: shipped)")
    args = parser.parse_args(argv)
    if not args.cifs.is_dir() or not args.table.is_file():
        print(
            f"skipped: OBELiX training data not found at {args.cifs} / {args.table} "
            "(give --cifs and --table, or set IONDRAG_OBELIX_DIR)"
        )
        return 0

    from iondrag.screening import learning
    from iondrag.screening.metrics import family_halves
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.workflows.learn import training_rows
    from iondrag.workflows.validate import run_validation

    report = run_validation(
        args.cifs, args.table, parameters=ScreeningParameters(), workers=args.workers
    )
    records = {str(r["id"]): r for r in report.per_structure}
    rows = [r for r in training_rows(args.cifs, args.table, report.per_structure) if r["has_cif"]]
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row["family"]] = sizes.get(row["family"], 0) + 1
    half_of = family_halves(sizes)
    names = learning.feature_names("both")
    x = learning.design_matrix([r["features"] for r in rows], names)
    y = np.array([r["log10_sigma_exp"] for r in rows])
    bound = np.array([r["upper_bound"] for r in rows])
    groups = [r["family"] for r in rows]
    half = np.array([half_of[g] for g in groups])
    scored = np.array([r["physics_scored"] for r in rows])
    physics = np.array(
        [
            np.nan
            if records[r["id"]].get("log10_sigma_pred") is None
            else float(records[r["id"]]["log10_sigma_pred"])
            for r in rows
        ]
    )

    differences: dict[str, dict[str, dict[str, float | None]]] = {}
    out_of_half = np.full(len(rows), np.nan)
    print("trained on one family-disjoint half, judged on the other (physics-scored rows)")
    print(f"{'judged on':>10} {'predictor':>26} {'n':>4} {'Spearman':>9} {'MAE':>6} {'AUC':>6}")
    for judged in ("A", "B"):
        train = half != judged
        test = (half == judged) & scored
        n_splits = min(5, len(set(np.array(groups)[train])))
        model, _ = learning.fit_model(
            x[train],
            y[train],
            bound[train],
            list(np.array(groups)[train]),
            names,
            n_splits=n_splits,
            seed=args.seed,
        )
        learned = model.predict_matrix(x[test])["log10_sigma"]
        for label, predicted in (
            (f"learned (trained on {'B' if judged == 'A' else 'A'})", learned),
            ("physics headline", physics[test]),
        ):
            m = learning.evaluate_predictions(predicted, y[test], bound[test])
            print(
                f"{judged:>10} {label:>26} {m['n']:>4} {m['spearman']:>9.3f} "
                f"{m['mae_log10']:>6.2f} {m['roc_auc_1e-4']:>6.3f}"
            )
        differences[judged] = learning.paired_bootstrap_difference(
            learned, physics[test], y[test], bound[test]
        )
        out_of_half[test] = learned
    pooled = np.isfinite(out_of_half)
    for label, predicted in (("learned (other half)", out_of_half), ("physics headline", physics)):
        m = learning.evaluate_predictions(predicted[pooled], y[pooled], bound[pooled])
        print(
            f"{'both':>10} {label:>26} {m['n']:>4} {m['spearman']:>9.3f} "
            f"{m['mae_log10']:>6.2f} {m['roc_auc_1e-4']:>6.3f}"
        )
    differences["both halves pooled"] = learning.paired_bootstrap_difference(
        out_of_half[pooled], physics[pooled], y[pooled], bound[pooled]
    )
    print("learned - physics, paired bootstrap over the judged half's structures (95 %):")
    for judged, difference in differences.items():
        parts = [
            f"{name} {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            for name, d in difference.items()
            if d["difference"] is not None
        ]
        print(f"  judged on {judged}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
