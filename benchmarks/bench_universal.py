"""Cost and validation of the universal-potential backend and the CHGNet elastic workflow.

Needs the ml extra (``pip install torch==2.13.0 && pip install -e '.[ml]'``).

    python benchmarks/bench_universal.py profile  [--ids lif-fm3m,li2o-fm3m,...] [--obelix 4]
    python benchmarks/bench_universal.py elastic  [--ids lif-fm3m,nacl-fm3m,...]
    python benchmarks/bench_universal.py validate [--n 30] [--max-atoms 200] [--out FILE]
    python benchmarks/bench_universal.py elastic-ablation --only ID1,ID2,...

``profile``: seconds per structure of :func:`iondrag.screening.universal.chgnet_path_profile`
(median, p90) with the time split into model load, framework (ordering), coarse scan,
relaxation, refinement and Hessian, and the number of CHGNet calls.
``elastic``: the atomate2 force-field elastic flow on the embedded entries with measured
moduli; errors of K, G (Hill) and of the isotropic Lambda against the measured tensor.
``validate``: on an OBELiX subset (sorted IDs whose frozen-framework supercell has at most
``--max-atoms`` atoms, first ``--n`` that the BVSE screen scores), the same metrics of
iondrag.screening.metrics for BVSE and CHGNet on the SAME structures: barrier ranking (Spearman of
-E_b), the path-formula log10 sigma (Spearman, censored MAE as is and after the best
constant shift), and the paired bootstrap of the Spearman difference. Partial: a subset.

Data: OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0 (read from
``IONDRAG_OBELIX_DIR``, default <repo>/../shared/data/obelix-train).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OBELIX = Path(os.environ.get("IONDRAG_OBELIX_DIR", REPO.parent / "shared/data/obelix-train"))
MEASURED = ("lif-fm3m", "nacl-fm3m", "li7la3zr2o12-cubic-ia3d")


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "n": 0}
    return {
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "n": len(values),
    }


def _embedded(cid: str):
    from iondrag.adapters.sources.embedded import build_structure, embedded_entry

    entry = embedded_entry(cid)
    return build_structure(entry), entry


def _obelix_ids(max_atoms: int) -> list[str]:
    """Sorted OBELiX IDs whose frozen-framework supercell is at most ``max_atoms`` atoms."""
    from pymatgen.core import Structure

    from iondrag.screening.universal import UniversalSettings, supercell_for

    settings = UniversalSettings()
    chosen = []
    for path in sorted((OBELIX / "cifs").glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                s = Structure.from_file(path)
            except Exception:  # unreadable CIFs are the screen's business, not this subset's
                continue
        framework_atoms = sum(
            occ for site in s for sp, occ in site.species.items() if sp.symbol != "Li"
        )
        cells = np.prod(supercell_for(s.lattice.matrix, settings.min_image_distance_A))
        if framework_atoms * cells + 1 <= max_atoms:
            chosen.append(path.stem)
    return chosen


def bench_profile(args: argparse.Namespace) -> dict:
    from iondrag.screening.analysis import analyse_candidate
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.universal import UniversalSettings, chgnet_path_profile, load_chgnet

    parameters = ScreeningParameters(grid_spacing_A=args.grid)
    settings = UniversalSettings(batch_size=args.batch_size, torch_threads=args.threads)
    started = time.perf_counter()
    import torch  # noqa: F401  (import time measured separately from the weights)

    t_import = time.perf_counter() - started
    model = load_chgnet(settings.torch_threads)
    t_load = time.perf_counter() - started - t_import
    structures = [(cid, _embedded(cid)[0]) for cid in args.ids.split(",") if cid]
    if args.obelix:
        from pymatgen.core import Structure

        for ident in _obelix_ids(args.max_atoms)[: args.obelix]:
            structures.append((ident, Structure.from_file(OBELIX / "cifs" / f"{ident}.cif")))
    rows = []
    for cid, structure in structures:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                analysis = analyse_candidate(structure, parameters, candidate_id=cid)
        except ValueError as error:
            print(f"{cid}: BVSE failed: {error}", file=sys.stderr)
            continue
        t_bvse = time.perf_counter() - t0
        try:
            result = chgnet_path_profile(
                structure, analysis, settings=settings, model=model, candidate_id=cid
            )
        except ValueError as error:
            print(f"{cid}: universal failed: {error}", file=sys.stderr)
            continue
        row = {
            "id": cid,
            "n_atoms": result.n_atoms,
            "bvse_seconds": round(t_bvse, 2),
            "chgnet_seconds": result.seconds["total"],
            "seconds": result.seconds,
            "n_energy_calls": result.n_energy_calls,
            "n_force_calls": result.n_force_calls,
            "barrier_bvse_eV": float(
                analysis.channel.path.energy_eV.max() - analysis.channel.path.energy_eV.min()
            ),
            "barrier_chgnet_eV": result.barrier_eV,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    steps = ("framework", "coarse", "relax", "refine", "hessian")
    share = {
        step: float(np.sum([r["seconds"].get(step, 0.0) for r in rows]))
        / max(float(np.sum([r["chgnet_seconds"] for r in rows])), 1e-9)
        for step in steps
    }
    per_call = [
        r["chgnet_seconds"] / (r["n_energy_calls"] + 2 * r["n_force_calls"]) / r["n_atoms"]
        for r in rows
    ]
    return {
        "torch_import_seconds": round(t_import, 2),
        "model_load_seconds": round(t_load, 2),
        "chgnet_seconds_per_structure": _quantiles([r["chgnet_seconds"] for r in rows]),
        "bvse_seconds_per_structure": _quantiles([r["bvse_seconds"] for r in rows]),
        "share_of_chgnet_time": share,
        "seconds_per_energy_equivalent_per_atom": _quantiles(per_call),
        "settings": settings.as_dict(),
        "rows": rows,
    }


def bench_elastic(args: argparse.Namespace) -> dict:
    from iondrag.screening.candidates import ElasticInput
    from iondrag.screening.elastic import elastic_model, hill_moduli_GPa
    from iondrag.screening.structures import prepare_framework
    from iondrag.workflows.ml import ForceFieldElasticMaker, run_elastic_locally

    maker = ForceFieldElasticMaker(
        relax_fmax_eV_per_A=args.fmax,
        relax_steps=args.steps,
        max_atoms=args.max_atoms,
        strain_magnitudes=tuple(float(x) for x in args.strains.split(","))
        if args.strains
        else None,
    )
    rows = []
    for cid in args.ids.split(","):
        structure, entry = _embedded(cid)
        measured = ElasticInput(**entry["elastic"]) if entry.get("elastic") else None
        t0 = time.perf_counter()
        try:
            computed, _ = run_elastic_locally(structure, maker)
        except Exception as error:  # report and go on: a benchmark, not a screen
            rows.append({"id": cid, "error": f"{type(error).__name__}: {error}"[:300]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            continue
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            density = prepare_framework(structure, entry.get("mobile_ion")).density_kg_per_m3
        k_c, g_c = hill_moduli_GPa(np.array(computed.voigt_GPa))
        lam_c = elastic_model(density, voigt_GPa=computed.voigt_GPa, source="chgnet")
        row = {
            "id": cid,
            "seconds": round(seconds, 1),
            "voigt_GPa": np.round(computed.voigt_GPa, 2).tolist(),
            "K_chgnet_GPa": k_c,
            "G_chgnet_GPa": g_c,
        }
        if measured is not None:
            lam_m = elastic_model(
                density,
                voigt_GPa=measured.voigt_GPa,
                bulk_GPa=measured.bulk_modulus_GPa,
                shear_GPa=measured.shear_modulus_GPa,
                source=measured.source,
            )
            lc = float(np.trace(lam_c.lambda_s3_per_kg) / 3)
            lm = float(np.trace(lam_m.lambda_s3_per_kg) / 3)
            row.update(
                K_measured_GPa=lam_m.bulk_modulus_GPa,
                G_measured_GPa=lam_m.shear_modulus_GPa,
                K_error_percent=100 * (k_c / lam_m.bulk_modulus_GPa - 1),
                G_error_percent=100 * (g_c / lam_m.shear_modulus_GPa - 1),
                lambda_chgnet_s3_per_kg=lc,
                lambda_measured_s3_per_kg=lm,
                lambda_error_percent=100 * (lc / lm - 1),
                measured_source=measured.source,
            )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "maker": {"fmax": args.fmax, "steps": args.steps, "strains": args.strains},
        "rows": rows,
    }


def bench_validate(args: argparse.Namespace) -> dict:
    from pymatgen.core import Structure

    from iondrag.adapters.table import read_conductivity_table
    from iondrag.screening.analysis import analyse_candidate
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.universal import (
        UniversalSettings,
        chgnet_path_profile,
        load_chgnet,
        universal_transport,
    )

    table, _ = read_conductivity_table(OBELIX / "train.csv")
    parameters = ScreeningParameters(grid_spacing_A=args.grid)
    settings = UniversalSettings(
        batch_size=args.batch_size,
        torch_threads=args.threads,
        max_atoms=args.max_atoms,
        mobile_mode=args.mobile_mode,
    )
    model = load_chgnet(settings.torch_threads)
    out_path = Path(args.out)
    done = {}
    if out_path.exists() and args.resume:
        for line in out_path.read_text().splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    ids = [i for i in _obelix_ids(args.max_atoms) if i in table.index]
    if args.only:
        ids = [i for i in ids if i in set(args.only.split(","))]
    rows = list(done.values())
    n_ok = sum(1 for r in rows if r.get("error") is None)
    with out_path.open("a") as sink:
        for ident in ids:
            if n_ok >= args.n:
                break
            if ident in done:
                continue
            row = {
                "id": ident,
                "log10_sigma_exp": float(table.loc[ident, "log10_sigma_exp"]),
                "upper_bound": bool(table.loc[ident, "upper_bound"]),
                "family": table.loc[ident, "family"],
                "error": None,
            }
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structure = Structure.from_file(OBELIX / "cifs" / f"{ident}.cif")
                    analysis = analyse_candidate(structure, parameters, candidate_id=ident)
            except Exception as error:  # BVSE failures are out of this comparison
                row["error"] = f"bvse: {type(error).__name__}: {error}"[:300]
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                continue
            row["bvse_seconds"] = round(time.perf_counter() - t0, 2)
            row["barrier_bvse_eV"] = float(analysis.landscape.percolation.barriers_eV[1])
            row["path_barrier_bvse_eV"] = float(
                analysis.channel.path.energy_eV.max() - analysis.channel.path.energy_eV.min()
            )
            row["log10_sigma_bvse_path"] = float(analysis.transport.estimates.path)
            row["log10_sigma_bvse_headline"] = float(
                analysis.transport.estimates.of(parameters.headline)
            )
            try:
                result = chgnet_path_profile(
                    structure, analysis, settings=settings, model=model, candidate_id=ident
                )
                transport = universal_transport(result, analysis, parameters)
            except Exception as error:  # recorded with its cause, as a screen would
                row["error"] = f"chgnet: {type(error).__name__}: {error}"[:300]
                row["error_cause"] = getattr(error, "cause", "internal_error")
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                continue
            row.update(
                chgnet_seconds=result.seconds["total"],
                seconds=result.seconds,
                n_atoms=result.n_atoms,
                n_energy_calls=result.n_energy_calls,
                n_force_calls=result.n_force_calls,
                ordered=not result.ordering["n_disordered_classes"],
                closure_eV=result.closure_eV,
                barrier_chgnet_eV=result.barrier_eV,
                log10_sigma_chgnet_path=transport.log10_sigma_S_per_cm,
                kramers_chgnet=transport.kramers_factor,
                min_distance_to_framework_A=result.min_distance_to_framework_A,
                notes=result.notes,
            )
            n_ok += 1
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(
                f"[{n_ok}/{args.n}] {ident}: E_b bvse {row['path_barrier_bvse_eV']:.3f} chgnet "
                f"{row['barrier_chgnet_eV']:.3f} eV, {row['chgnet_seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return summarise_validation([json.loads(x) for x in out_path.read_text().splitlines()])


def bench_elastic_ablation(args: argparse.Namespace) -> dict:
    """BVSE screen with the estimated vs the CHGNet elastic tensor, same OBELiX structures."""
    from pymatgen.core import Structure

    from iondrag.adapters.table import read_conductivity_table
    from iondrag.screening.analysis import analyse_candidate
    from iondrag.screening.metrics import censored_mae, spearman
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.workflows.ml import ForceFieldElasticMaker, run_elastic_locally

    table, _ = read_conductivity_table(OBELIX / "train.csv")
    parameters = ScreeningParameters(grid_spacing_A=args.grid)
    maker = ForceFieldElasticMaker(
        relax_fmax_eV_per_A=args.fmax, relax_steps=args.steps, max_atoms=args.max_atoms
    )
    rows = []
    for ident in args.only.split(","):
        row: dict = {"id": ident, "error": None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = Structure.from_file(OBELIX / "cifs" / f"{ident}.cif")
                estimated = analyse_candidate(structure, parameters, candidate_id=ident)
            t0 = time.perf_counter()
            computed_input, _ = run_elastic_locally(structure, maker)
            row["elastic_seconds"] = round(time.perf_counter() - t0, 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                computed = analyse_candidate(
                    structure, parameters, candidate_id=ident, elastic=computed_input
                )
        except Exception as error:  # recorded, as a screen would
            row["error"] = f"{type(error).__name__}: {error}"[:300]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            continue
        row.update(
            log10_sigma_exp=float(table.loc[ident, "log10_sigma_exp"]),
            upper_bound=bool(table.loc[ident, "upper_bound"]),
            K_estimate_GPa=estimated.elastic.bulk_modulus_GPa,
            G_estimate_GPa=estimated.elastic.shear_modulus_GPa,
            K_chgnet_GPa=computed.elastic.bulk_modulus_GPa,
            G_chgnet_GPa=computed.elastic.shear_modulus_GPa,
            log10_sigma_estimate=float(estimated.transport.estimates.of(parameters.headline)),
            log10_sigma_chgnet_elastic=float(computed.transport.estimates.of(parameters.headline)),
        )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    ok = [r for r in rows if r["error"] is None]
    m = np.array([r["log10_sigma_exp"] for r in ok])
    b = np.array([r["upper_bound"] for r in ok])
    metrics = {}
    for name in ("log10_sigma_estimate", "log10_sigma_chgnet_elastic"):
        p = np.array([r[name] for r in ok])
        metrics[name] = {"spearman": spearman(p, m), "mae_log10": censored_mae(p, m, b)}
    return {
        "label": "PARTIAL: small ordered OBELiX structures only",
        "n_compared": len(ok),
        "metrics": metrics,
        "elastic_seconds": _quantiles([r["elastic_seconds"] for r in ok]),
        "rows": rows,
    }


def _clash(row: dict) -> bool:
    """The BVSE path runs through an atom of the ordered framework (CHGNet barrier invalid).

    Rows from before the distance was recorded: a CHGNet barrier above 2 eV is the proxy.
    """
    distance = row.get("min_distance_to_framework_A")
    if distance is not None:
        return distance < 1.0
    return row.get("barrier_chgnet_eV", 0.0) > 2.0


def summarise_validation(rows: list[dict]) -> dict:
    """The metrics for both backends on the same structures (all, and without clashes)."""
    ok = [r for r in rows if r.get("error") is None]
    summary = _summarise(rows)
    clean = [r for r in ok if not _clash(r)]
    summary["without_path_clashes"] = {
        "excluded": [r["id"] for r in ok if _clash(r)],
        **{k: v for k, v in _summarise(clean).items() if k in ("n_compared", "metrics")},
    }
    return summary


def _summarise(rows: list[dict]) -> dict:
    from iondrag.screening.metrics import (
        censored_best_shift,
        censored_mae,
        paired_bootstrap_spearman_difference,
        spearman,
    )

    ok = [r for r in rows if r.get("error") is None]
    m = np.array([r["log10_sigma_exp"] for r in ok])
    bound = np.array([r["upper_bound"] for r in ok])
    predictors = {
        "barrier_bvse_1d": -np.array([r["barrier_bvse_eV"] for r in ok]),
        "barrier_bvse_path": -np.array([r["path_barrier_bvse_eV"] for r in ok]),
        "barrier_chgnet_path": -np.array([r["barrier_chgnet_eV"] for r in ok]),
        "log10_sigma_bvse_path": np.array([r["log10_sigma_bvse_path"] for r in ok]),
        "log10_sigma_bvse_headline": np.array([r["log10_sigma_bvse_headline"] for r in ok]),
        "log10_sigma_chgnet_path": np.array([r["log10_sigma_chgnet_path"] for r in ok]),
    }
    metrics = {}
    for name, values in predictors.items():
        entry = {"spearman": spearman(values, m)}
        if name.startswith("log10"):
            finite = np.isfinite(values)
            entry["mae_log10"] = censored_mae(values[finite], m[finite], bound[finite])
            best = censored_best_shift(values[finite], m[finite], bound[finite])
            entry["fitted_shift_log10"], entry["mae_log10_after_shift"] = best or (None, None)
        metrics[name] = entry
    metrics["spearman_difference_chgnet_minus_bvse_path_sigma"] = (
        paired_bootstrap_spearman_difference(
            predictors["log10_sigma_chgnet_path"], predictors["log10_sigma_bvse_path"], m
        )
    )
    metrics["spearman_difference_chgnet_minus_bvse_path_barrier"] = (
        paired_bootstrap_spearman_difference(
            predictors["barrier_chgnet_path"], predictors["barrier_bvse_path"], m
        )
    )
    barriers = np.array([[r["path_barrier_bvse_eV"], r["barrier_chgnet_eV"]] for r in ok])
    return {
        "label": "PARTIAL: OBELiX subset, not the full validation",
        "n_tried": len(rows),
        "n_compared": len(ok),
        "failures": [{"id": r["id"], "error": r["error"]} for r in rows if r.get("error")],
        "n_ordered_framework": int(sum(1 for r in ok if r.get("ordered"))),
        "metrics": metrics,
        "barrier_spearman_bvse_vs_chgnet": spearman(barriers[:, 0], barriers[:, 1])
        if len(ok) > 2
        else None,
        "chgnet_seconds_per_structure": _quantiles([r["chgnet_seconds"] for r in ok]),
        "bvse_seconds_per_structure": _quantiles([r["bvse_seconds"] for r in ok]),
        "n_atoms": _quantiles([r["n_atoms"] for r in ok]),
        "data": "OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", choices=("profile", "elastic", "validate", "summary", "elastic-ablation")
    )
    parser.add_argument("--ids", default="")
    parser.add_argument("--obelix", type=int, default=0, help="also N OBELiX structures")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--max-atoms", type=int, default=200)
    parser.add_argument("--grid", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fmax", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--strains", default="", help="elastic: strain magnitudes, e.g. -0.01,0.01")
    parser.add_argument("--out", default="universal_validation.jsonl")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--mobile-mode", choices=("removed", "vacancy"), default="removed")
    parser.add_argument("--only", default="", help="validate: only these IDs (comma list)")
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args(argv)
    if args.mode == "profile":
        args.ids = args.ids or "lif-fm3m,li2o-fm3m,li3n-p6mmm,li3ocl-pm3m"
        summary = bench_profile(args)
    elif args.mode == "elastic":
        args.ids = args.ids or ",".join(MEASURED)
        summary = bench_elastic(args)
    elif args.mode == "elastic-ablation":
        summary = bench_elastic_ablation(args)
    elif args.mode == "validate":
        summary = bench_validate(args)
    else:
        rows = [json.loads(x) for x in Path(args.out).read_text().splitlines()]
        summary = summarise_validation(rows)
    text = json.dumps(summary, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
