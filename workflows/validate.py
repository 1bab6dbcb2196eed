"""The ``iondrag validate`` command: predicted against measured conductivities.

:func:`run_validation` scores every CIF of a folder whose id is in a table of measured
room-temperature conductivities (read by :mod:`iondrag.adapters.table`), in the screen's
process pool, with the validation journal (:mod:`iondrag.adapters.journal`) so that a rerun
scores only what changed, compares the predicted with the measured log10 sigma with the
metrics of :mod:`iondrag.screening.metrics`, and returns a :class:`ValidationReport`
(summary table and JSON document; the parity plot is
:func:`iondrag.workflows.plots.plot_parity`).

Data attribution: the OBELiX training split, Therrien et al., arXiv:2502.14234, CC BY 4.0.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iondrag.adapters.journal import ValidationJournal, record_key
from iondrag.adapters.table import DATA_ATTRIBUTION, read_conductivity_table
from iondrag.screening import __version__
from iondrag.screening.metrics import (
    HALVES_SEED,
    MIN_FAMILY_SIZE,
    THRESHOLD_S_PER_CM,
    UPPER_BOUND_POLICY,
    evaluate_records,
    family_halves,
)
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.schemas import finite_or_none, record_fields

if TYPE_CHECKING:  # pragma: no cover - typing only
    from iondrag.screening.candidates import Candidate


# ---------------------------------------------------------------------------------------
# Scoring (serial or in worker processes)
# ---------------------------------------------------------------------------------------

#: CandidateResult fields copied into the per-structure records (record name -> field): the
#: fields marked ``record`` (iondrag.screening.schemas.record_fields).
_RESULT_FIELDS: dict[str, str] = record_fields()


def _score_file(
    cif_path: str,
    parameters: ScreeningParameters,
    prepare: Callable[[Candidate], Candidate] | None = None,
) -> dict[str, Any]:
    """Load (``prepare``) and score one CIF; return the compact per-structure fields.

    Never raises for a structure.
    """
    from iondrag.adapters.sources.cif import load_cif_candidate
    from iondrag.screening.pipeline import score_candidate

    started = time.perf_counter()
    ident = Path(cif_path).name[:-4]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate = load_cif_candidate(cif_path)
            if prepare is not None:
                candidate = prepare(candidate)
            result, _ = score_candidate(candidate, parameters)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # score_candidate never raises for a bad candidate
        return {
            "status": "error",
            "error": f"{ident}: {type(error).__name__}: {error}",
            "error_cause": "internal_error",
            "formula": None,
            "wall_seconds": time.perf_counter() - started,
        }
    record: dict[str, Any] = {
        "status": result.status,
        "error": result.error,
        "error_cause": result.error_cause,
        "formula": result.formula,
        "log10_sigma_pred": result.log10_sigma_S_per_cm,
        "seconds_total": result.seconds.get("total"),
        "wall_seconds": time.perf_counter() - started,
        "n_warnings": len(result.warnings),
    }
    record.update({name: getattr(result, attr) for name, attr in _RESULT_FIELDS.items()})
    for name, value in (result.log10_sigma_by_average_S_per_cm or {}).items():
        record[f"log10_sigma_average_{name}"] = value
    if result.status == "ok" and result.log10_sigma_S_per_cm is None:
        record.update(
            error=f"{ident}: scored, but the predicted conductivity is not a finite positive "
            f"number (sigma = {result.sigma_S_per_cm})",
            error_cause="no_finite_prediction",
        )
    elif result.status != "ok" and not result.error_cause:
        record["error_cause"] = "internal_error" if result.status == "error" else "failed"
    if record["error"] is not None:
        record["error"] = " ".join(str(record["error"]).split())
    return record


def _score_path(
    cif_path: str,
    parameters: ScreeningParameters,
    prepare: Callable[[Candidate], Candidate] | None,
) -> dict[str, Any]:
    """Pool task: :func:`_score_file` looked up when it runs (picklable, patchable)."""
    return _score_file(cif_path, parameters, prepare)


def _score_all(
    paths: list[Path],
    parameters: ScreeningParameters,
    workers: int,
    report: Callable[[int, str, dict[str, Any]], None],
    prepare: Callable[[Candidate], Candidate] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score every path in the shared worker pool (:mod:`iondrag.workflows.parallel`).

    Returns id -> record; a structure whose worker died gets an ``error`` record with the
    cause ``worker_crashed``.
    """
    from functools import partial

    from iondrag.workflows.parallel import run_each_in_pool

    out: dict[str, dict[str, Any]] = {}
    ids = [p.name[:-4] for p in paths]

    def done(index: int, record: Any, error: BaseException | None) -> None:
        ident = ids[index]
        if error is not None:
            record = {
                "status": "error",
                "formula": None,
                "error_cause": "worker_crashed",
                "error": f"{ident}: worker process failed: "
                f"{type(error).__name__}: {' '.join(str(error).split())}",
            }
        out[ident] = record
        report(len(out), ident, record)

    task = partial(_score_path, parameters=parameters, prepare=prepare)
    run_each_in_pool(task, [str(path) for path in paths], workers, done)
    return out


def _cif_files(cifs_dir: Path) -> dict[str, Path]:
    """Map id -> file for every ``*.cif`` (any case of the suffix) of the folder."""
    if not cifs_dir.is_dir():
        raise FileNotFoundError(f"CIF folder not found: {cifs_dir}")
    files: dict[str, Path] = {}
    for entry in sorted(cifs_dir.iterdir()):
        if entry.is_file() and entry.suffix.lower() == ".cif":
            files.setdefault(entry.name[:-4], entry)
    return files


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars into Python numbers and NaN/inf into None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return finite_or_none(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _quantile(values: Iterable[float | None], q: float) -> float | None:
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(np.percentile(data, q)) if len(data) else None


@dataclass
class ValidationReport:
    """Predicted vs measured conductivity: per-structure records and every metric.

    Attributes
    ----------
    per_structure
        One record per given structure (table ID with a CIF), in id order: ``id``,
        ``formula``, ``family``, ``log10_sigma_exp``, ``sigma_exp_text``, ``upper_bound``,
        ``status``, ``error`` (None when scored, else one line), ``error_cause``,
        ``log10_sigma_pred`` and the ablation predictors, ``seconds_total``.
    metrics
        :func:`evaluate_records` output.
    parameters
        The screening parameters.
    inputs
        Paths, limit, workers, counts of the table and the folder.
    wall_seconds
        Duration of the scoring.
    """

    per_structure: list[dict[str, Any]]
    metrics: dict[str, Any]
    parameters: ScreeningParameters
    inputs: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None

    @property
    def n_given(self) -> int:
        """Structures given: table IDs (with a parsed value) that have a CIF."""
        return len(self.per_structure)

    @property
    def n_scored(self) -> int:
        """Structures with a finite prediction."""
        return sum(1 for r in self.per_structure if r["error"] is None)

    @property
    def n_failed(self) -> int:
        """Given minus scored."""
        return self.n_given - self.n_scored

    def failures_by_cause(self) -> dict[str, dict[str, Any]]:
        """Group the structures that were not scored: cause -> {count, ids, example}."""
        groups: dict[str, dict[str, Any]] = {}
        for r in self.per_structure:
            if r["error"] is None:
                continue
            cause = r.get("error_cause") or "unknown"
            group = groups.setdefault(cause, {"count": 0, "ids": [], "example": r["error"]})
            group["count"] += 1
            group["ids"].append(r["id"])
        return dict(sorted(groups.items(), key=lambda item: (-item[1]["count"], item[0])))

    @property
    def data_attribution(self) -> str:
        """Where the measurements come from: the OBELiX attribution only for an OBELiX table.

        A table whose path names OBELiX gets :data:`DATA_ATTRIBUTION`; any other table is
        named by its file name.
        """
        table = str(self.inputs.get("table_csv") or "")
        if "obelix" in table.lower():
            return DATA_ATTRIBUTION
        return f"table {Path(table).name}" if table else "table given by the user"

    def to_json_dict(self) -> dict[str, Any]:
        """Return the JSON document (``iondrag validate --json``); NaN and inf become null."""
        head = self.metrics.get("headline", {})
        seconds = [r.get("seconds_total") for r in self.per_structure if r["error"] is None]
        document: dict[str, Any] = {
            "iondrag_version": __version__,
            "data_attribution": self.data_attribution,
            "n_given": self.n_given,
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "coverage": self.n_scored / self.n_given if self.n_given else None,
            "failures_by_cause": self.failures_by_cause(),
            "upper_bounds_count": sum(1 for r in self.per_structure if r["upper_bound"]),
            "upper_bounds_count_scored": head.get("n_upper_bounds", 0),
            "n_positive_1e-4": head.get("n_positive_1e-4", 0),
            "spearman": head.get("spearman"),
            "spearman_exact_only": head.get("spearman_exact_only"),
            "kendall": head.get("kendall"),
            "roc_auc_1e-4": head.get("roc_auc_1e-4"),
            "precision_at_10": head.get("precision_at_10"),
            "precision_at_10_k": head.get("precision_at_10_k"),
            "mae_log10": head.get("mae_log10"),
            "mae_log10_exact_only": head.get("mae_log10_exact_only"),
            "mae_log10_best_constant": self.metrics.get("baseline_constant", {}).get("mae_log10"),
            "mae_log10_best_monotone": head.get("mae_log10_best_monotone"),
            "seconds_per_structure_median": _quantile(seconds, 50.0),
            "seconds_per_structure_p90": _quantile(seconds, 90.0),
            "wall_seconds": self.wall_seconds,
            "headline": head,
            "baseline_constant": self.metrics.get("baseline_constant", {}),
            "per_family": self.metrics.get("per_family", {}),
            "halves": self.metrics.get("halves", {}),
            "ablations": self.metrics.get("ablations", {}),
            "upper_bound_policy": UPPER_BOUND_POLICY,
            "threshold_S_per_cm": THRESHOLD_S_PER_CM,
            "temperature_K": self.parameters.temperature_K,
            "parameters": self.parameters.model_dump(mode="json"),
            "inputs": self.inputs,
            "per_structure": self.per_structure,
        }
        return json_safe(document)

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json_dict` (strict JSON: no NaN) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def summary_text(self) -> str:
        """Return a readable summary: counts, failures, timing and the table of metrics."""
        doc = self.to_json_dict()

        def fmt(value: Any, spec: str = ".3f") -> str:
            return "-" if value is None else format(value, spec)

        lines = [
            "iondrag validate: predicted vs measured conductivity",
            f"  given {doc['n_given']}, scored {doc['n_scored']}, failed {doc['n_failed']} "
            f"(coverage {fmt(doc['coverage'], '.1%')}); T = {self.parameters.temperature_K:g} K",
        ]
        for cause, group in doc["failures_by_cause"].items():
            ids = ", ".join(group["ids"][:8]) + (" ..." if group["count"] > 8 else "")
            lines.append(f"  failed [{cause}] x{group['count']}: {ids}")
        lines.append(
            f"  measured: {doc['upper_bounds_count']} upper bounds (e.g. '<1E-10'), "
            f"{doc['n_positive_1e-4']} scored above 1e-4 S/cm"
        )
        lines.append(
            f"  seconds per structure: median {fmt(doc['seconds_per_structure_median'], '.2f')}"
            f", p90 {fmt(doc['seconds_per_structure_p90'], '.2f')}; wall "
            f"{fmt(doc['wall_seconds'], '.1f')} s"
        )
        if self.inputs.get("journal"):
            lines.append(
                f"  journal: {self.inputs.get('n_reused_from_journal', 0)} of {self.n_given} "
                f"records reused from {self.inputs['journal']}"
            )
        header = (
            f"  {'predictor':<20} {'n':>4} {'Spear.':>7} {'exact':>7} {'Kendall':>7} "
            f"{'AUC':>6} {'P@10':>5} {'MAE':>6} {'shift':>7} {'MAE|sh':>6} {'MAE|mo':>6}  "
            "dSpearman head-this [95% CI]"
        )
        lines += ["", header, "  " + "-" * (len(header) - 2)]
        rows = [("headline", doc["headline"]), *doc["ablations"].items()]
        for name, m in rows:
            diff = m.get("spearman_difference_vs_headline")
            ci = (
                f"{fmt(diff['difference'], '+.3f')} [{fmt(diff['ci_low'], '+.3f')}, "
                f"{fmt(diff['ci_high'], '+.3f')}]"
                if diff
                else ""
            )
            lines.append(
                f"  {name:<20} {m.get('n', 0):>4} {fmt(m.get('spearman')):>7} "
                f"{fmt(m.get('spearman_exact_only')):>7} {fmt(m.get('kendall')):>7} "
                f"{fmt(m.get('roc_auc_1e-4')):>6} {fmt(m.get('precision_at_10'), '.2f'):>5} "
                f"{fmt(m.get('mae_log10'), '.2f'):>6} "
                f"{fmt(m.get('fitted_shift_log10'), '+.2f'):>7} "
                f"{fmt(m.get('mae_log10_after_shift'), '.2f'):>6} "
                f"{fmt(m.get('mae_log10_best_monotone'), '.2f'):>6}  {ci}"
            )
        lines.append(
            "  (MAE: censored, log10 S/cm, as predicted; shift: the constant in log10 that "
            "minimises the censored MAE, MAE|sh: the MAE after it; MAE|mo: the smallest MAE "
            "of any order-preserving map of the predictor, fitted in-sample, a bound that "
            "only a better ranking lowers)"
        )
        base = doc["baseline_constant"]
        if base.get("mae_log10") is not None:
            lines.append(
                f"  baseline: one constant log10 sigma = {base['log10_sigma']:.2f} for all gives "
                f"MAE {base['mae_log10']:.2f}"
            )
        for name in ("barrier_3d", "barrier_1d"):
            m = doc["ablations"].get(name)
            if m and m.get("prefactor_S_per_cm") is not None:
                lines.append(
                    f"  {name}: sigma = A exp(-E/kT) needs A = {m['prefactor_S_per_cm']:.3g} "
                    "S/cm (censored-MAE fit; least squares "
                    f"{fmt(m['prefactor_lsq_S_per_cm'], '.3g')}"
                    f" S/cm), MAE {fmt(m['mae_log10_with_fitted_prefactor'], '.2f')}"
                    f"; {m['n_no_percolation']} without such percolation rank last"
                )
        m = doc["ablations"].get("path_constant_drag")
        if m:
            lines.append(
                f"  path_constant_drag: MAE as is {fmt(m['mae_log10'], '.2f')}, needs a shift of "
                f"{fmt(m['fitted_shift_log10'], '+.2f')} decades (then MAE "
                f"{fmt(m['mae_log10_after_shift'], '.2f')})"
            )
        if doc["halves"]:
            lines += [
                "",
                "  family-disjoint halves (docs/validation.md): n, Spearman, MAE, AUC; "
                "then Spearman of each ablation",
            ]
            for half, h in doc["halves"].items():
                head = h.get("headline", {})
                ablations = "  ".join(
                    f"{name} {fmt(m.get('spearman'), '.2f')}"
                    for name, m in h.get("ablations", {}).items()
                )
                lines.append(
                    f"  half {half}: {head.get('n', 0):>4} {fmt(head.get('spearman')):>7} "
                    f"{fmt(head.get('mae_log10'), '.2f'):>6} {fmt(head.get('roc_auc_1e-4')):>6}"
                )
                lines.append(f"    {ablations}")
        if doc["per_family"]:
            lines += ["", f"  per family (>= {MIN_FAMILY_SIZE} scored): n, Spearman, Kendall"]
            for family, f in doc["per_family"].items():
                lines.append(
                    f"  {family:<24} {f['n']:>4} {fmt(f['spearman']):>7} {fmt(f['kendall']):>7}"
                )
        lines += ["", f"  data: {self.data_attribution}"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def run_validation(
    cifs_dir: Path,
    table_csv: Path,
    *,
    parameters: ScreeningParameters,
    workers: int = 1,
    json_out: Path | None = None,
    png_out: Path | None = None,
    limit: int | None = None,
    progress: bool = False,
    prepare_candidate: Callable[[Candidate], Candidate] | None = None,
    journal: Path | None = None,
    reuse_journal: bool = True,
    fold: str | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> ValidationReport:
    """Score the CIFs of ``cifs_dir`` named in ``table_csv`` and compare with the measurements.

    Parameters
    ----------
    cifs_dir
        Folder of ``<ID>.cif`` files.
    table_csv
        CSV with ``ID``, ``Ionic conductivity (S cm-1)`` (``"<1E-10"``: an upper bound) and
        optionally ``Family``.
    parameters
        Screening parameters (the temperature is the temperature of the measurements).
    workers
        Processes to score in (results identical to serial scoring).
    json_out, png_out
        Where to write the JSON document and the parity plot (optional).
    limit
        Score only the first ``limit`` IDs in sorted order (quick runs).
    progress
        Print one line per structure to stderr.
    on_progress
        Called as ``on_progress(done, total, reused)`` once before scoring and after each
        structure (``done`` counts the records reused from the journal), e.g. to drive the
        same progress bar as ``iondrag screen``.
    prepare_candidate
        Applied to each loaded candidate before scoring (a module-level function when
        ``workers`` > 1), e.g. ``iondrag.workflows.ml.candidate_with_chgnet_elastic`` for
        ``parameters.elastic == "chgnet"``; without it such candidates keep the estimate
        (with a warning).
    journal
        JSON Lines file (:class:`~iondrag.adapters.journal.ValidationJournal`) that each
        scored structure is appended to as it finishes; a rerun reuses the records whose key
        (CIF bytes, parameters, code, preparation) matches, so an interrupted run resumes.
        None: no journal.
    reuse_journal
        False: score everything afresh (the new records are still appended).
    fold
        "A" or "B": score only that family-disjoint half (:func:`family_halves` of the
        table's structures that have a CIF); None: both, each record carrying its half.

    Returns
    -------
    ValidationReport

    Raises
    ------
    FileNotFoundError
        The folder or the table does not exist.
    ValueError
        The table lacks a required column, or ``limit``/``workers`` is not positive.
    """
    cifs_dir, table_csv = Path(cifs_dir), Path(table_csv)
    if not table_csv.is_file():
        raise FileNotFoundError(f"conductivity table not found: {table_csv}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    table, skipped = read_conductivity_table(table_csv)
    files = _cif_files(cifs_dir)
    ids = sorted(set(table.index) & set(files))
    if fold is not None and fold not in ("A", "B"):
        raise ValueError(f"fold must be A or B, got {fold!r}")
    halves = family_halves(table.loc[ids, "family"].value_counts().to_dict())
    if fold is not None:
        ids = [i for i in ids if halves[table.loc[i, "family"]] == fold]
    if limit is not None:
        ids = ids[:limit]
    inputs = {
        "cifs_dir": str(cifs_dir.resolve()),
        "table_csv": str(table_csv.resolve()),
        "limit": limit,
        "fold": fold,
        "halves_seed": HALVES_SEED,
        "workers": workers,
        "table_rows_parsed": len(table),
        "table_rows_skipped": skipped,
        "table_upper_bounds": int(table["upper_bound"].sum()) if len(table) else 0,
        "table_ids_without_cif": len(set(table.index) - set(files)),
        "cifs_not_in_table": len(set(files) - set(table.index)),
    }
    log = None if journal is None else ValidationJournal(journal)
    keys: dict[str, str] = {}
    scored: dict[str, dict[str, Any]] = {}
    if log is not None:
        keys = {i: record_key(files[i], parameters, prepare_candidate) for i in ids}
        earlier = log.read() if reuse_journal else {}
        scored = {i: earlier[key] for i, key in keys.items() if key in earlier}
    reused = len(scored)
    inputs["journal"] = None if log is None else str(log.path.resolve())
    inputs["n_reused_from_journal"] = reused
    if progress and reused:
        print(f"reusing {reused} of {len(ids)} records from {journal}", file=sys.stderr)

    if on_progress is not None:
        on_progress(reused, len(ids), reused)

    def report_line(done: int, ident: str, record: dict[str, Any]) -> None:
        if log is not None:
            log.append(keys[ident], ident, record)
        if on_progress is not None:
            on_progress(done + reused, len(ids), reused)
        if not progress:
            return
        status = "ok" if record.get("error") is None else record.get("error_cause")
        value = record.get("log10_sigma_pred")
        shown = "" if value is None or record.get("error") else f" log10 sigma {value:.2f}"
        print(
            f"[{done + reused:>{len(str(len(ids)))}}/{len(ids)}] {ident}: {status}{shown}",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    scored.update(
        _score_all(
            [files[i] for i in ids if i not in scored],
            parameters,
            workers,
            report_line,
            prepare_candidate,
        )
    )
    wall = time.perf_counter() - started
    if log is not None and log.error is not None:
        inputs["journal_error"] = log.error
    records = []
    for ident in ids:
        row = table.loc[ident]
        record: dict[str, Any] = {
            "id": ident,
            "formula": None,
            "family": row["family"],
            "half": halves[row["family"]],
            "log10_sigma_exp": float(row["log10_sigma_exp"]),
            "sigma_exp_text": row["sigma_exp_text"],
            "upper_bound": bool(row["upper_bound"]),
            "log10_sigma_pred": None,
            "error": None,
        }
        record.update(scored[ident])
        if record["error"] is not None:
            record["log10_sigma_pred"] = None
        records.append(record)
    metrics = evaluate_records(records, temperature_K=parameters.temperature_K)
    report = ValidationReport(records, metrics, parameters, inputs, wall_seconds=wall)
    if json_out is not None:
        report.write_json(json_out)
    if png_out is not None:
        from iondrag.workflows.plots import plot_parity

        plot_parity(report, png_out)
    return report
