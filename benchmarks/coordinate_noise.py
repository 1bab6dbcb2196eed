"""What the source's coordinate noise does to the barriers and the headline (issue 14).

About 90 % of the OBELiX training CIFs (those taken from ICSD, a non-empty ``ICSD ID`` in
the table) carry deliberate Gaussian noise of sigma = 0.01 on their fractional coordinates;
the others are as published. This benchmark takes the unnoised ones, scores each as
``iondrag validate`` does (iondrag.adapters.sources.cif.load_cif_candidate +
iondrag.screening.pipeline.score_candidate, default ScreeningParameters), then scores
``--replicas`` copies with independent Gaussian noise of ``--sigma`` on every site's
fractional coordinates (:func:`add_coordinate_noise`: lattice, species and occupancies
kept), and prints

* per structure: E_1D, E_3D (eV) and the headline log10 sigma (S/cm) of the original, and
  the mean and std over replicas of the changes dE_1D, dE_3D, dlog10 sigma;
* pooled over all structure-replicas: mean, std and mean |d| of dE_1D and dE_3D, the
  fraction of replicas that fail or lose percolation, the mean shift and std of the
  headline (decades), the Spearman of the noised with the original headline across
  structures, and whether the noise biases the barriers upward (mean dE with a 95 %
  bootstrap interval over structures, replicas of a structure resampled together).

By default the noise is independent on every site of the P1 cell, which breaks the
symmetry. The noised training CIFs keep their space groups and their special positions;
``--symmetric`` draws the noise that way instead (:func:`add_symmetric_coordinate_noise`:
one draw per orbit on its free coordinates, carried to the equivalent sites).

Usage::

    python benchmarks/coordinate_noise.py --cifs DIR --table CSV [--replicas 3]
        [--sigma 0.01] [--seed 14] [--limit N] [--symmetric] [--json OUT]

Without the data (default: ../shared/data/obelix-train beside the repository, or
IONDRAG_OBELIX_DIR) it says so and exits with code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure

REPO = Path(__file__).resolve().parents[1]
ICSD_COLUMN = "ICSD ID"
BOOTSTRAP_RESAMPLES = 2000


def obelix_dir() -> Path:
    return Path(os.environ.get("IONDRAG_OBELIX_DIR", REPO.parent / "shared/data/obelix-train"))


def add_coordinate_noise(structure: Structure, sigma: float, rng: np.random.Generator) -> Structure:
    """A copy of ``structure`` with N(0, sigma) added to every fractional coordinate.

    Each site (all of a disordered site's species together) moves by its own draw; the
    lattice, the species and their occupancies and the site properties are kept, the
    coordinates are wrapped into the cell. The input is not modified.
    """
    noisy = structure.copy()
    shifts = rng.normal(0.0, sigma, size=(len(noisy), 3))
    for index, shift in enumerate(shifts):
        noisy.translate_sites(index, shift, frac_coords=True, to_unit_cell=True)
    return noisy


def _same_position(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-3) -> bool:
    d = a - b
    return bool(np.all(np.abs(d - np.round(d)) < tolerance))


def add_symmetric_coordinate_noise(
    structure: Structure, sigma: float, rng: np.random.Generator, symprec: float = 0.01
) -> Structure:
    """Noise that keeps the space group: N(0, sigma) on the free coordinates of each orbit.

    For each set of symmetry-equivalent sites (spglib at ``symprec`` Å, disordered sites
    told apart by species and occupancy) one draw is made for the first site, projected on
    its site symmetry (the mean of R delta over the operations that fix it, so a special
    position keeps its constrained coordinates), and carried to the other sites of the
    orbit by the operation that maps the first onto each. This is how the noised training
    CIFs look: their space groups and special positions survive. Lattice, species and
    occupancies are kept, the input is not modified.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
    operations = analyzer.get_symmetry_operations(cartesian=False)
    orbits = analyzer.get_symmetrized_structure().equivalent_indices
    frac = structure.frac_coords
    shifts = np.zeros_like(frac)
    for orbit in orbits:
        first = frac[orbit[0]]
        images = [op.operate(first) for op in operations]
        delta = rng.normal(0.0, sigma, size=3)
        fixing = [
            op.rotation_matrix
            for op, image in zip(operations, images, strict=True)
            if _same_position(image, first)
        ]
        delta = np.mean([rotation @ delta for rotation in fixing], axis=0)
        for index in orbit:
            op = next(
                op
                for op, image in zip(operations, images, strict=True)
                if _same_position(image, frac[index])
            )
            shifts[index] = op.rotation_matrix @ delta
    noisy = structure.copy()
    for index, shift in enumerate(shifts):
        noisy.translate_sites(index, shift, frac_coords=True, to_unit_cell=True)
    return noisy


def unnoised_ids(table_csv: Path, cifs: Path) -> list[str]:
    """IDs with a CIF whose table row has no ICSD ID (the structures without source noise)."""
    raw = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    if ICSD_COLUMN not in raw.columns:
        raise ValueError(f"{table_csv}: no column {ICSD_COLUMN!r}")
    have = {p.stem for p in cifs.glob("*.cif")}
    ids = {
        str(r["ID"]).strip()
        for _, r in raw.iterrows()
        if not str(r[ICSD_COLUMN]).strip() and str(r["ID"]).strip() in have
    }
    return sorted(ids)


def score(candidate: Any, parameters: Any) -> dict[str, Any]:
    """Score one candidate as validate does; barriers (eV) and headline (log10 S/cm)."""
    from iondrag.screening.pipeline import score_candidate

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = score_candidate(candidate, parameters)
    ok = result.status == "ok" and result.log10_sigma_S_per_cm is not None
    return {
        "status": result.status,
        "ok": ok,
        "error": result.error,
        "error_cause": result.error_cause,
        "barrier_1d_eV": result.barrier_1d_eV,
        "barrier_3d_eV": result.barrier_3d_eV,
        "log10_sigma": result.log10_sigma_S_per_cm if ok else None,
        "seconds": time.perf_counter() - started,
    }


def _diff(replica: dict[str, Any], original: dict[str, Any], key: str) -> float:
    a, b = replica.get(key), original.get(key)
    return float(a - b) if replica["ok"] and a is not None and b is not None else float("nan")


def _nan_stats(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")


def bootstrap_mean(
    per_structure: list[np.ndarray], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """Pooled mean of the finite values and its 95 % interval, resampling structures.

    The replicas of one structure share its original, so they are resampled together.
    """
    groups = [g[np.isfinite(g)] for g in per_structure]
    groups = [g for g in groups if len(g)]
    if not groups:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(sums.sum() / counts.sum()),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_structures": len(groups),
    }


def _fmt(value: float | None, spec: str = "6.3f") -> str:
    if value is None or not np.isfinite(value):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return f"{'-':>{width or 1}}"
    return format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifs", type=Path, default=obelix_dir() / "cifs")
    parser.add_argument("--table", type=Path, default=obelix_dir() / "train.csv")
    parser.add_argument("--replicas", type=int, default=3, help="noised copies per structure")
    parser.add_argument("--sigma", type=float, default=0.01, help="noise, fractional coords")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--limit", type=int, help="only the first N unnoised structures")
    parser.add_argument(
        "--symmetric",
        action="store_true",
        help="keep the space group (add_symmetric_coordinate_noise), as in the noised CIFs",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not args.cifs.is_dir() or not args.table.is_file():
        print(
            f"OBELiX data not found ({args.cifs}, {args.table}); pass --cifs and --table or "
            "set IONDRAG_OBELIX_DIR. Nothing measured."
        )
        return 0
    if args.replicas < 1 or args.sigma < 0:
        parser.error("--replicas must be >= 1 and --sigma >= 0")

    from iondrag.adapters.sources.cif import load_cif_candidate
    from iondrag.adapters.table import read_conductivity_table
    from iondrag.screening.metrics import spearman
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.workflows.validate import json_safe

    table, _ = read_conductivity_table(args.table)
    ids = unnoised_ids(args.table, args.cifs)
    if args.limit:
        ids = ids[: args.limit]
    if not ids:
        print(f"no unnoised structures (empty {ICSD_COLUMN}) with a CIF in {args.cifs}")
        return 0
    parameters = ScreeningParameters()
    rng = np.random.default_rng(args.seed)
    noise = add_symmetric_coordinate_noise if args.symmetric else add_coordinate_noise
    where = "free coordinates of each orbit, space group kept" if args.symmetric else "every site"
    print(
        f"{len(ids)} unnoised structures (no {ICSD_COLUMN}), {args.replicas} replicas each, "
        f"sigma {args.sigma} (fractional, {where}), seed {args.seed}; default parameters, "
        f"{parameters.temperature_K:.0f} K"
    )
    print(
        f"  {'id':>4} {'family':22s} {'E_1D':>6} {'E_3D':>6} {'log10s':>7}   "
        f"{'dE_1D mean/std':>15} {'dE_3D mean/std':>15} {'dlog10s mean/std':>17}  fail/lost"
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for ident in ids:
        candidate = load_cif_candidate(args.cifs / f"{ident}.cif")
        original = score(candidate, parameters)
        replicas = []
        for _ in range(args.replicas):
            if candidate.structure is None:
                break
            noisy = noise(candidate.structure, args.sigma, rng)
            replicas.append(score(candidate.model_copy(update={"structure": noisy}), parameters))
        d1 = np.array([_diff(r, original, "barrier_1d_eV") for r in replicas])
        d3 = np.array([_diff(r, original, "barrier_3d_eV") for r in replicas])
        dlog = np.array([_diff(r, original, "log10_sigma") for r in replicas])
        failed = sum(not r["ok"] for r in replicas) if original["ok"] else 0
        lost = sum(
            r["ok"]
            and (
                (original["barrier_1d_eV"] is not None and r["barrier_1d_eV"] is None)
                or (original["barrier_3d_eV"] is not None and r["barrier_3d_eV"] is None)
            )
            for r in replicas
        )
        family = str(table.loc[ident, "family"]) if ident in table.index else "unknown"
        rows.append(
            {
                "id": ident,
                "family": family,
                "original": original,
                "replicas": replicas,
                "dE_1d_eV": d1.tolist(),
                "dE_3d_eV": d3.tolist(),
                "dlog10_sigma": dlog.tolist(),
                "n_failed": failed,
                "n_lost_percolation": lost,
            }
        )
        m1, s1 = _nan_stats(d1)
        m3, s3 = _nan_stats(d3)
        ml, sl = _nan_stats(dlog)
        status = "" if original["ok"] else f"  original {original['status']}: {original['error']}"
        print(
            f"  {ident:>4} {family[:22]:22s} {_fmt(original['barrier_1d_eV'])} "
            f"{_fmt(original['barrier_3d_eV'])} {_fmt(original['log10_sigma'], '7.2f')}   "
            f"{_fmt(m1, '+7.3f')}/{_fmt(s1, '6.3f')}  {_fmt(m3, '+7.3f')}/{_fmt(s3, '6.3f')}  "
            f"{_fmt(ml, '+8.2f')}/{_fmt(sl, '7.2f')}   {failed}/{lost}{status}",
            flush=True,
        )
    wall = time.perf_counter() - started

    scored = [r for r in rows if r["original"]["ok"]]
    pooled = {k: np.array([v for r in scored for v in r[k]]) for k in ("dE_1d_eV", "dE_3d_eV")}
    pooled["dlog10_sigma"] = np.array([v for r in scored for v in r["dlog10_sigma"]])
    n_replicas = sum(len(r["replicas"]) for r in scored)
    summary: dict[str, Any] = {
        "n_structures": len(rows),
        "n_scored_originals": len(scored),
        "n_replicas_of_scored": n_replicas,
        "fraction_failed": sum(r["n_failed"] for r in scored) / max(n_replicas, 1),
        "fraction_lost_percolation": sum(r["n_lost_percolation"] for r in scored)
        / max(n_replicas, 1),
        "failure_causes": dict(
            Counter(
                str(x.get("error_cause") or x["status"])
                for r in scored
                for x in r["replicas"]
                if not x["ok"]
            )
        ),
    }
    for key, values in pooled.items():
        finite = values[np.isfinite(values)]
        summary[key] = {
            "n": len(finite),
            "mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std(ddof=1)) if len(finite) > 1 else None,
            "mean_abs": float(np.abs(finite).mean()) if len(finite) else None,
            "bootstrap_mean": bootstrap_mean([np.array(r[key]) for r in scored], seed=args.seed),
        }
    # Spearman of the noised with the original headline across structures, per replica index
    rhos = []
    for k in range(args.replicas):
        pairs = [
            (r["original"]["log10_sigma"], r["replicas"][k]["log10_sigma"])
            for r in scored
            if len(r["replicas"]) > k and r["replicas"][k]["ok"]
        ]
        if len(pairs) >= 3:
            rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
            if rho is not None:
                rhos.append(rho)
    summary["spearman_original_vs_noised"] = {
        "per_replica": rhos,
        "mean": float(np.mean(rhos)) if rhos else None,
    }

    print(f"\n{len(scored)} of {len(rows)} originals scored, {n_replicas} replicas ({wall:.0f} s)")
    for key, label, unit in (
        ("dE_1d_eV", "dE_1D", "eV"),
        ("dE_3d_eV", "dE_3D", "eV"),
        ("dlog10_sigma", "dlog10 sigma", "decades"),
    ):
        s = summary[key]
        b = s["bootstrap_mean"]
        print(
            f"  {label:13s} n {s['n']:3d}  mean {_fmt(s['mean'], '+.3f')}  "
            f"std {_fmt(s['std'], '.3f')}  mean |d| {_fmt(s['mean_abs'], '.3f')} {unit}; "
            f"mean 95 % interval [{_fmt(b['ci_low'], '+.3f')}, {_fmt(b['ci_high'], '+.3f')}] "
            f"(bootstrap over structures)"
        )
    print(
        f"  replicas that fail: {summary['fraction_failed']:.1%}; "
        f"that lose 1D or 3D percolation: {summary['fraction_lost_percolation']:.1%}"
        + (f" (failures: {summary['failure_causes']})" if summary["failure_causes"] else "")
    )
    print(
        "  Spearman(original headline, noised headline) across structures: "
        + (", ".join(f"{r:.3f}" for r in rhos) + f" (mean {np.mean(rhos):.3f})" if rhos else "n/a")
    )
    for key, label in (("dE_1d_eV", "E_1D"), ("dE_3d_eV", "E_3D")):
        b = summary[key]["bootstrap_mean"]
        verdict = (
            "too few structures to tell"
            if b.get("n_structures", 0) < 3
            else "biased upward"
            if b["ci_low"] > 0
            else "biased downward"
            if b["ci_high"] < 0
            else "no bias resolved"
        )
        print(f"  does the noise raise {label}? {verdict} (95 % interval of the mean dE)")
    if args.json:
        document = {
            "inputs": {
                "cifs": str(args.cifs.resolve()),
                "table": str(args.table.resolve()),
                "replicas": args.replicas,
                "sigma_fractional": args.sigma,
                "noise": "symmetric" if args.symmetric else "every site (P1)",
                "seed": args.seed,
                "limit": args.limit,
                "temperature_K": parameters.temperature_K,
                "wall_seconds": wall,
            },
            "summary": summary,
            "per_structure": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_safe(document), indent=1, allow_nan=False))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
