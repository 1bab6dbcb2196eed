"""``iondrag learn`` and the learned column of ``screen`` and ``validate``: files and I/O.

The science (features, grouped CV, conformal intervals, domain check) is in
:mod:`iondrag.screening.learning`; this adapter reads the table and the CIFs, runs the physics
through :func:`iondrag.workflows.validate.run_validation` (so it shares validate's journal: a
second run reuses every record), writes and reads the model file, and adds the learned
columns to a screen's database rows.

The model file is a joblib pickle (load only files you trust, like any pickle) with a JSON
sidecar ``<MODEL>.json`` holding everything but the fitted trees: data (table SHA-256, rows,
attribution), iondrag's version and parameters, features, CV figures.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from iondrag.screening.candidates import Candidate
    from iondrag.screening.learning import LearnedModel
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.schemas import CandidateResult

__all__ = [
    "FORMAT",
    "LEARNED_COLUMNS",
    "ModelFileError",
    "add_learned_to_records",
    "annotate_run",
    "default_model_path",
    "load_model",
    "resolve_model",
    "run_learn",
    "save_model",
]

FORMAT = "iondrag-learned-model/1"
DEFAULT_MODEL_NAME = "iondrag-learned.joblib"

#: Columns the learned model adds to a screen's rows.
LEARNED_COLUMNS = (
    "log10_sigma_learned_S_per_cm",
    "log10_sigma_learned_lo_S_per_cm",
    "log10_sigma_learned_hi_S_per_cm",
    "learned_domain_distance",
    "learned_out_of_domain",
)

RETRAIN_COMMAND = (
    "iondrag learn --cifs ../shared/data/obelix-train/cifs "
    "--table ../shared/data/obelix-train/train.csv --out data/model/iondrag-learned.joblib"
)


class ModelFileError(ValueError):
    """A model file that cannot be used (not a model, or needs physics this iondrag lacks)."""


def default_model_path() -> Path:
    """Return the shipped default model (``data/model/iondrag-learned.joblib``)."""
    from iondrag.screening.data_files import data_dir

    return data_dir() / "model" / DEFAULT_MODEL_NAME


def resolve_model(value: str | None) -> Path | None:
    """``--model`` value -> path: None -> the default (if shipped), ``none`` -> None."""
    if value is not None and value.strip().lower() == "none":
        return None
    if value is None:
        path = default_model_path()
        return path if path.is_file() else None
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


# ---------------------------------------------------------------------------------------
# Rows: features of table rows, CIFs and screen results
# ---------------------------------------------------------------------------------------


def _record_of_result(result: CandidateResult) -> dict[str, Any]:
    """Return the per-structure physics record of a screen result (validate's record fields)."""
    from iondrag.workflows.validate import _RESULT_FIELDS

    record: dict[str, Any] = {
        name: getattr(result, attr, None) for name, attr in _RESULT_FIELDS.items()
    }
    record["log10_sigma_pred"] = result.log10_sigma_S_per_cm
    record["error"] = result.error if result.status != "ok" else None
    if result.status == "ok" and result.log10_sigma_S_per_cm is None:
        record["error"] = "no finite prediction"
    return record


@functools.cache
def _symbol_number(symbol: str) -> int | None:
    from pymatgen.symmetry.groups import SpaceGroup

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Full symbol not available, falling back ..."
            return int(SpaceGroup(symbol).int_number)
    except Exception:  # an unknown setting: spglib decides
        return None


def _space_group_number(value: Any) -> int | None:
    """Space-group number from a candidate's provenance (a dict with ``number``, or a symbol)."""
    if isinstance(value, dict):
        number = value.get("number")
        if number is None and value.get("symbol"):
            return _symbol_number(str(value["symbol"]))
        return None if number is None else int(number)
    if isinstance(value, str) and value.strip():
        return _symbol_number(value.strip())
    return None


def candidate_features(
    candidate: Candidate | None,
    record: Mapping[str, Any] | None,
    ion: str = "Li",
    formula: str | None = None,
) -> dict[str, float]:
    """Composition, structure and physics features of one candidate (any may be absent)."""
    from pymatgen.core import Composition

    from iondrag.screening import learning

    features: dict[str, float] = {}
    structure = None if candidate is None else candidate.structure
    if structure is not None and candidate is not None:
        number = _space_group_number(candidate.provenance.get("space_group"))
        features.update(learning.composition_features(structure.composition, ion))
        features.update(learning.structure_features(structure, ion, number))
    elif formula:
        with contextlib.suppress(Exception):  # unparsable: composition features missing
            features.update(learning.composition_features(Composition(formula), ion))
    features.update(learning.physics_features(record))
    return features


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def training_rows(
    cifs_dir: Path,
    table_csv: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    ion: str = "Li",
) -> list[dict[str, Any]]:
    """One row per table entry: id, family, target, bound, has_cif, features.

    Rows with a CIF take composition and structure features from the CIF and physics from
    its validate record; rows without a CIF take the table's ``True Composition`` (else
    ``Reduced Composition``), lattice constants and space group, with physics missing.
    """
    import pandas as pd
    from pymatgen.core import Composition

    from iondrag.adapters.sources.cif import load_cif_candidate
    from iondrag.adapters.table import read_conductivity_table
    from iondrag.screening import learning

    table, _ = read_conductivity_table(table_csv)
    raw = pd.read_csv(table_csv, dtype=str, keep_default_na=False).drop_duplicates("ID")
    raw = raw.set_index(raw["ID"].str.strip())
    by_id = {str(r["id"]): r for r in records}
    rows: list[dict[str, Any]] = []
    for ident, entry in table.iterrows():
        ident = str(ident)
        extra = raw.loc[ident] if ident in raw.index else None
        record = by_id.get(ident)
        features: dict[str, float] = {}
        cif = cifs_dir / f"{ident}.cif"
        has_cif = record is not None and cif.is_file()
        if has_cif:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                candidate = load_cif_candidate(cif)
            if candidate.structure is not None:
                features = candidate_features(candidate, record, ion)
            else:
                has_cif = False
        if not features and extra is not None:
            text = str(extra.get("True Composition") or extra.get("Reduced Composition") or "")
            try:
                composition = Composition(text)
            except Exception:
                continue
            features.update(learning.composition_features(composition, ion))
            abc = [_number(extra.get(k)) for k in ("a", "b", "c")]
            angles = [_number(extra.get(k)) for k in ("alpha", "beta", "gamma")]
            number = _number(extra.get("Space group #"))
            if all(v is not None and v > 0 for v in (*abc, *angles)):
                features.update(
                    learning.table_lattice_features(
                        composition,
                        [float(v) for v in abc if v is not None],
                        [float(v) for v in angles if v is not None],
                        None if number is None else int(number),
                        ion,
                    )
                )
            features.update(learning.physics_features(record if has_cif else None))
        rows.append(
            {
                "id": ident,
                "family": str(entry["family"]),
                "log10_sigma_exp": float(entry["log10_sigma_exp"]),
                "upper_bound": bool(entry["upper_bound"]),
                "has_cif": has_cif,
                "physics_scored": has_cif and record is not None and record.get("error") is None,
                "features": features,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------
# learn
# ---------------------------------------------------------------------------------------


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v, digits) for v in value]
    if isinstance(value, float | np.floating):
        return round(float(value), digits) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_learn(
    cifs_dir: Path,
    table_csv: Path,
    out: Path,
    *,
    parameters: ScreeningParameters,
    workers: int = 1,
    journal: Path | None = None,
    reuse_journal: bool = True,
    kind: str = "forest",
    rows_used: str = "cif",
    n_splits: int = 5,
    coverage: float = 0.9,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Score the CIFs (validate's machinery and journal), cross-validate, fit, save.

    ``rows_used``: ``all`` trains on every table row (physics missing where there is no
    CIF); ``cif`` on the rows with a CIF only. The CV figures are reported on the structures
    whose physics scored (the comparison of the three feature sets is paired there) and on
    all training rows.

    Returns
    -------
    dict
        The sidecar document (also written to ``<out>.json``).
    """
    import sklearn

    from iondrag.adapters.journal import BVSE_LIBRARIES, code_fingerprint
    from iondrag.adapters.table import DATA_ATTRIBUTION
    from iondrag.screening import __version__, learning
    from iondrag.workflows.validate import run_validation

    if rows_used not in ("all", "cif"):
        raise ValueError(f"rows must be 'all' or 'cif', got {rows_used!r}")
    report = run_validation(
        cifs_dir,
        table_csv,
        parameters=parameters,
        workers=workers,
        limit=limit,
        progress=progress,
        journal=journal,
        reuse_journal=reuse_journal,
    )
    rows = training_rows(cifs_dir, table_csv, report.per_structure, ion=parameters.ion or "Li")
    if limit is not None:
        rows = [r for r in rows if r["has_cif"]]
    if rows_used == "cif":
        rows = [r for r in rows if r["has_cif"]]
    y = np.array([r["log10_sigma_exp"] for r in rows])
    bound = np.array([r["upper_bound"] for r in rows])
    groups = [r["family"] for r in rows]
    scored = np.array([r["physics_scored"] for r in rows])
    n_splits = min(n_splits, len(set(groups)))
    cv: dict[str, Any] = {}
    models: dict[str, LearnedModel] = {}
    predictions: dict[str, np.ndarray] = {}
    for name in learning.FEATURE_SETS:
        names = learning.feature_names(name)
        x = learning.design_matrix([r["features"] for r in rows], names)
        model, result = learning.fit_model(
            x, y, bound, groups, names, kind=kind, n_splits=n_splits, coverage=coverage, seed=seed
        )
        models[name] = model
        predictions[name] = result["predicted"]
        cv[name] = {
            "all_rows": result["metrics"],
            "physics_scored_structures": learning.evaluate_predictions(
                result["predicted"][scored], y[scored], bound[scored]
            ),
            "interval": result["interval"],
            "interval_halfwidth_log10": model.halfwidth_log10,
            "n_features": len(names),
        }
        if progress:
            m = cv[name]["physics_scored_structures"]
            print(f"grouped CV [{name}]: {m}", file=sys.stderr)
    difference = learning.paired_bootstrap_difference(
        predictions["both"][scored],
        predictions["composition"][scored],
        y[scored],
        bound[scored],
        n_resamples=n_resamples,
    )
    difference_physics = learning.paired_bootstrap_difference(
        predictions["both"][scored],
        predictions["physics"][scored],
        y[scored],
        bound[scored],
        n_resamples=n_resamples,
    )
    folds = learning.grouped_folds(groups, n_splits)
    model = models["both"]
    model.meta = {
        "format": FORMAT,
        "iondrag_version": __version__,
        "code_fingerprint": code_fingerprint(BVSE_LIBRARIES),
        # the physics source alone, without library versions: tells which of the two changed
        "source_fingerprint": code_fingerprint(()),
        "parameters": parameters.model_dump(mode="json"),
        "sklearn_version": sklearn.__version__,
        "data": {
            "table": str(Path(table_csv).name),
            "table_sha256": _sha256(Path(table_csv)),
            "table_rows": len(rows),
            "rows_used": rows_used,
            "rows_with_cif": int(sum(r["has_cif"] for r in rows)),
            "physics_scored_structures": int(scored.sum()),
            "upper_bounds": int(bound.sum()),
            "families": len(set(groups)),
            "attribution": DATA_ATTRIBUTION,
            "split": "training split only",
        },
        "estimator": {
            "kind": kind,
            "hyperparameters": learning.ESTIMATOR_DEFAULTS[kind],
            "seed": seed,
            "target": "log10 measured sigma (S/cm) at room temperature; upper bounds at "
            "the bound value",
        },
        "feature_set": "both",
        "feature_names": list(model.feature_names),
        "physics_fields": list(model.physics_fields),
        "interval": {
            "method": "split-conformal on the family-grouped CV residuals (exact values)",
            "coverage_nominal": coverage,
            "halfwidth_log10": model.halfwidth_log10,
        },
        "domain": {
            "method": "nearest-neighbour distance in median/IQR-scaled feature space",
            "percentile": model.domain.percentile,
            "threshold": model.domain.threshold,
        },
        "cv": {
            "folds": n_splits,
            "grouping": "Family column (a family never on both sides)",
            "fold_sizes": [int((folds == k).sum()) for k in range(n_splits)],
            "feature_sets": cv,
            "both_minus_composition": difference,
            "both_minus_physics": difference_physics,
            "bootstrap": f"paired over the physics-scored structures, {n_resamples} resamples",
        },
        "retrain_command": RETRAIN_COMMAND,
        "limits": "Li conductors at room temperature (OBELiX); the learned value is a "
        "statistical estimate beside the physics, not a replacement",
    }
    save_model(model, out)
    return _round(model.meta)


def save_model(model: LearnedModel, path: Path) -> tuple[Path, Path]:
    """Write the model (joblib, compressed) and its JSON sidecar; return both paths."""
    import joblib

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    joblib.dump({"format": FORMAT, "model": model}, partial, compress=3)
    partial.replace(path)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(_round(model.meta), indent=1, allow_nan=False) + "\n")
    return path, sidecar


def load_model(path: Path, parameters: ScreeningParameters | None = None) -> LearnedModel:
    """Load a model file and check it against this iondrag.

    Raises :class:`ModelFileError` when the file is not a model or the model needs a
    physics descriptor this iondrag does not compute (retrain with the command in the
    message). Differences that still allow a prediction (scikit-learn version, physics
    code, screening parameters) are listed in ``model.meta['load_notes']``.
    """
    import joblib
    import sklearn

    from iondrag.adapters.journal import BVSE_LIBRARIES, code_fingerprint
    from iondrag.screening import learning
    from iondrag.workflows.validate import _RESULT_FIELDS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's version-mismatch warning
            content = joblib.load(Path(path))
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable model file ({error})") from error
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an iondrag model file (format {FORMAT})")
    model = content["model"]
    if not isinstance(model, learning.LearnedModel):
        raise ModelFileError(f"{path}: not an iondrag model file")
    known = {d.name for d in learning.PHYSICS_DESCRIPTORS} | set(learning.COMPOSITION_FEATURES)
    known |= set(learning.STRUCTURE_FEATURES)
    fields = set(_RESULT_FIELDS) | {"log10_sigma_pred"}
    missing = [n for n in model.feature_names if n not in known]
    missing += [f for f in model.physics_fields if f not in fields]
    if missing:
        raise ModelFileError(
            f"{path}: the model needs descriptors this iondrag does not compute "
            f"({', '.join(missing)}); retrain it: {RETRAIN_COMMAND}"
        )
    meta = model.meta
    notes: list[str] = []
    if meta.get("sklearn_version") != sklearn.__version__:
        notes.append(
            f"trained with scikit-learn {meta.get('sklearn_version')}, "
            f"running {sklearn.__version__}"
        )
    if meta.get("code_fingerprint") != code_fingerprint(BVSE_LIBRARIES):
        changed = "the physics code or its libraries"
        if "source_fingerprint" in meta:
            changed = (
                "the physics code"
                if meta["source_fingerprint"] != code_fingerprint(())
                else f"the libraries ({', '.join(BVSE_LIBRARIES)})"
            )
        notes.append(f"{changed} changed since training (retrain: docs/learning.md)")
    if parameters is not None:
        trained = meta.get("parameters") or {}
        now = parameters.model_dump(mode="json")
        differing = sorted(k for k in set(trained) | set(now) if trained.get(k) != now.get(k))
        if differing:
            notes.append(f"screening parameters differ from training: {', '.join(differing)}")
    meta["load_notes"] = notes
    meta["path"] = str(path)
    return model


def describe(model: LearnedModel, *, default: bool) -> str:
    """One line saying which model is used and what to check."""
    cv = model.meta.get("cv", {}).get("feature_sets", {}).get("both", {})
    m = cv.get("physics_scored_structures", {})
    notes = model.meta.get("load_notes") or []
    which = "default learned model" if default else "learned model"
    spear, mae = m.get("spearman"), m.get("mae_log10")
    text = (
        f"{which} {model.meta.get('path')} (family-grouped CV: Spearman "
        f"{'-' if spear is None else f'{spear:.2f}'}, censored MAE "
        f"{'-' if mae is None else f'{mae:.2f}'} decades; {model.coverage:.0%} intervals "
        f"+-{model.halfwidth_log10:.1f}"
        f"{'; --model none turns it off' if default else ''})"
    )
    if notes:
        text += "; warning: " + "; ".join(notes)
    return text


# ---------------------------------------------------------------------------------------
# screen and validate
# ---------------------------------------------------------------------------------------


def _learned_row(prediction: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    return {
        "log10_sigma_learned_S_per_cm": float(prediction["log10_sigma"][i]),
        "log10_sigma_learned_lo_S_per_cm": float(prediction["lo"][i]),
        "log10_sigma_learned_hi_S_per_cm": float(prediction["hi"][i]),
        "learned_domain_distance": float(prediction["distance"][i]),
        "learned_out_of_domain": int(bool(prediction["out_of_domain"][i])),
    }


def annotate_run(db_path: Path, run_id: str, model: LearnedModel) -> int:
    """Add the learned columns to every row of a run in the ranking database.

    Features come from each row's stored document (result and candidate). Failed loads
    (no structure, no formula) get no learned value. Returns the rows annotated.
    """
    from contextlib import closing

    from iondrag.adapters import database
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.schemas import CandidateResult

    with closing(database.connect(db_path)) as conn:
        stored = conn.execute(
            "SELECT candidate_id, json, candidate_json FROM documents WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        ids, feature_rows = [], []
        for candidate_id, result_json, candidate_json in stored:
            result = database._validate_lenient(CandidateResult, result_json)
            candidate = (
                None
                if candidate_json is None
                else database._validate_lenient(Candidate, candidate_json)
            )
            features = candidate_features(
                candidate, _record_of_result(result), result.ion or "Li", result.formula
            )
            if not any(math.isfinite(v) for v in features.values()):
                continue
            ids.append(candidate_id)
            feature_rows.append(features)
        if not ids:
            return 0
        prediction = model.predict_rows(feature_rows)
        with conn:
            known = [row[1] for row in conn.execute("PRAGMA table_info(results)")]
            for column in LEARNED_COLUMNS:
                if column not in known:
                    kind = "INTEGER" if column == "learned_out_of_domain" else "REAL"
                    conn.execute(f'ALTER TABLE results ADD COLUMN "{column}" {kind}')
            for i, candidate_id in enumerate(ids):
                values = _learned_row(prediction, i)
                assignments = ", ".join(f'"{c}" = ?' for c in values)
                conn.execute(
                    f"UPDATE results SET {assignments} WHERE run_id = ? AND candidate_id = ?",
                    (*values.values(), run_id, candidate_id),
                )
    return len(ids)


def rank_by_learned(frame: pd.DataFrame) -> pd.DataFrame:
    """Re-rank a ranking frame by the learned log10 sigma (scored rows first)."""
    column = "log10_sigma_learned_S_per_cm"
    if column not in frame:
        return frame
    ordered = frame.assign(_ok=frame["status"] == "ok").sort_values(
        ["_ok", column], ascending=[False, False], na_position="last", kind="stable"
    )
    ordered = ordered.drop(columns="_ok").reset_index(drop=True)
    ordered["rank"] = range(1, len(ordered) + 1)
    return ordered


def format_ranking_learned(frame: pd.DataFrame, top: int = 20) -> str:
    """Format the screen's table with the learned value, its interval and the domain flag."""
    from iondrag.workflows import ranking

    scored = frame[frame["status"] == "ok"].head(top)
    if scored.empty or "log10_sigma_learned_S_per_cm" not in frame:
        return ranking.format_ranking(frame, top)
    base = ranking.format_ranking(frame, top).splitlines()
    extra = ["learned log10 sigma [interval]"]
    for _, row in scored.iterrows():
        value = row.get("log10_sigma_learned_S_per_cm")
        if value is None or not math.isfinite(float(value)):
            extra.append("-")
            continue
        text = (
            f"{value:.2f} [{row['log10_sigma_learned_lo_S_per_cm']:.2f}, "
            f"{row['log10_sigma_learned_hi_S_per_cm']:.2f}]"
        )
        if row.get("learned_out_of_domain"):
            text += " out-of-domain"
        extra.append(text)
    width = max(len(line) for line in base)
    return "\n".join(f"{line:<{width}}  {e}" for line, e in zip(base, extra, strict=True))


def in_sample_note(model: LearnedModel, table_csv: Path) -> str | None:
    """Return a warning when the model was trained on this very table (in-sample figures)."""
    if model.meta.get("data", {}).get("table_sha256") != _sha256(Path(table_csv)):
        return None
    return (
        "the learned model was trained on this table: its row in the table below is "
        "in-sample; its family-grouped CV figures are in the model's .json sidecar"
    )


def add_learned_to_records(
    records: list[dict[str, Any]], cifs_dir: Path, model: LearnedModel
) -> None:
    """Set ``log10_sigma_learned`` (and its interval, domain flag) on validate's records."""
    from iondrag.adapters.sources.cif import load_cif_candidate

    feature_rows = []
    for record in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate = load_cif_candidate(Path(cifs_dir) / f"{record['id']}.cif")
        feature_rows.append(candidate_features(candidate, record, "Li", record.get("formula")))
    prediction = model.predict_rows(feature_rows)
    for i, record in enumerate(records):
        if record.get("error") is not None:
            record["log10_sigma_learned"] = None
            continue
        row = _learned_row(prediction, i)
        record["log10_sigma_learned"] = row["log10_sigma_learned_S_per_cm"]
        record["log10_sigma_learned_lo"] = row["log10_sigma_learned_lo_S_per_cm"]
        record["log10_sigma_learned_hi"] = row["log10_sigma_learned_hi_S_per_cm"]
        record["learned_out_of_domain"] = bool(row["learned_out_of_domain"])


def summary_text(meta: Mapping[str, Any], out: Path) -> str:
    """Format the CV table of ``iondrag learn``: three feature sets side by side, with intervals."""

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    cv = meta["cv"]
    data = meta["data"]
    lines = [
        "iondrag learn: physics descriptors + composition -> measured log10 sigma",
        f"  rows {data['table_rows']} ({data['rows_used']}; {data['rows_with_cif']} with a CIF, "
        f"{data['physics_scored_structures']} scored by the physics), {data['upper_bounds']} "
        f"upper bounds, {data['families']} families in {cv['folds']} grouped folds",
        "",
        f"  {'feature set':<12} {'on':<10} {'n':>4} {'Spear.':>7} {'MAE':>6} {'AUC':>6} "
        f"{'cover':>6} {'+-':>5}",
    ]
    for name, figures in cv["feature_sets"].items():
        for where, key in (("scored", "physics_scored_structures"), ("all rows", "all_rows")):
            m = figures[key]
            interval = figures["interval"]
            lines.append(
                f"  {name:<12} {where:<10} {m['n']:>4} {fmt(m['spearman']):>7} "
                f"{fmt(m['mae_log10'], '.2f'):>6} {fmt(m['roc_auc_1e-4']):>6} "
                + (
                    f"{fmt(interval['held_out_fraction_inside'], '.2f'):>6} "
                    f"{fmt(figures['interval_halfwidth_log10'], '.2f'):>5}"
                    if where == "all rows"
                    else ""
                )
            )
    for label, key in (
        ("both - composition", "both_minus_composition"),
        ("both - physics", "both_minus_physics"),
    ):
        d = cv[key]
        parts = [
            f"{metric} {fmt(v['difference'], '+.3f')} [{fmt(v['ci_low'], '+.3f')}, "
            f"{fmt(v['ci_high'], '+.3f')}]"
            for metric, v in d.items()
        ]
        lines.append(f"  {label} (paired, 95 %): " + "; ".join(parts))
    lines += [
        "  (MAE: censored, log10 decades; AUC at 1e-4 S/cm; cover: held-out fraction inside "
        f"the {meta['interval']['coverage_nominal']:.0%} conformal interval, +-: its half-width)",
        f"  model: {out} (+ {out.with_suffix('.json').name}); features: both",
        f"  data: {data['attribution']}",
    ]
    return "\n".join(lines)
