"""The opt-in CHGNet backends in a screen: parameters, pipeline, flow, CLI (docs/universal.md).

``potential="chgnet"`` adds CHGNet along the BVSE path to each scored candidate (BVSE result
unchanged, CHGNet failures recorded); ``elastic="chgnet"`` runs the force-field elastic flow
before the chunk jobs. Tests marked ``ml`` need the ml extra (torch, chgnet) and skip,
saying so, without it; the others run everywhere (a missing extra is simulated by hiding
torch from the import system).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import sys
import warnings
from contextlib import closing
from pathlib import Path

import pytest
from jobflow import Flow, job, run_locally
from wf_helpers import FAST_CLI, FAST_PHYSICS, clean_env, one_line_error, run_cli

from iondrag.adapters.sources import load_candidates
from iondrag.adapters.stores import file_job_store
from iondrag.screening.candidates import ElasticInput
from iondrag.screening.parameters import SCIENCE_REVISION, ScreeningParameters
from iondrag.screening.pipeline import UNIVERSAL_RESULT_FIELDS, score_candidate
from iondrag.workflows.cli import main
from iondrag.workflows.makers import ScreenMaker
from iondrag.workflows.ml import ELASTIC_SOURCE

pytestmark = pytest.mark.filterwarnings("ignore:cd is deprecated:FutureWarning")

#: Two small embedded candidates: LiF (with measured elastic data), Li2O (without).
IDS: tuple[str, str] = ("lif-fm3m", "li2o-fm3m")


def _fingerprint_without_backends(parameters: ScreeningParameters) -> str:
    """The fingerprint as computed before the neutral-default fields existed."""
    values = parameters.model_dump(mode="json")
    del values["potential"], values["elastic"], values["framework_relaxation"]
    del values["universal"]  # the universal potential's numerics, neutral at their defaults
    payload = json.dumps(
        {"parameters": values, "science_revision": SCIENCE_REVISION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: Document fields that differ between a BVSE and a CHGNet screen of the same candidate.
_NOT_BVSE = {
    *UNIVERSAL_RESULT_FIELDS,
    "parameters_fingerprint",
    "seconds",
    "warnings",
}

#: Ranking-table columns that differ between the two screens (besides the bookkeeping).
_NOT_BVSE_COLUMNS = {
    "potential_backend",
    "barrier_universal_eV",
    "log10_sigma_universal_S_per_cm",
    "universal_error_cause",
    "parameters_fingerprint",
    "run_id",
    "written_utc",
    "scored_utc",
    "reused_from_run_id",
    "seconds_total",
}


def _candidates() -> dict:
    return {c.candidate_id: c for c in load_candidates("embedded", ids=list(IDS))}


def _bvse_part(document) -> dict:
    return {k: v for k, v in document.model_dump().items() if k not in _NOT_BVSE}


def _hide_ml_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import torch`` / ``import chgnet`` fail and find_spec report them absent."""
    for name in ("torch", "chgnet"):
        monkeypatch.setitem(sys.modules, name, None)


def _rows(db: Path) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM results")]


# ---------------------------------------------------------------------------------------
# Parameters and the Maker
# ---------------------------------------------------------------------------------------


def test_backend_parameters_and_fingerprints() -> None:
    default = ScreeningParameters()
    assert (default.potential, default.elastic) == ("bvse", "given_or_estimate")
    # frozen-framework BVSE screens hash as they did before these fields existed
    frozen = ScreeningParameters(framework_relaxation="frozen")
    assert frozen.fingerprint() == _fingerprint_without_backends(frozen)
    warm = ScreeningParameters(temperature_K=400.0, framework_relaxation="frozen")
    assert warm.fingerprint() == _fingerprint_without_backends(warm)
    # the default (relaxed framework) is not the frozen one
    assert default.framework_relaxation == "elastic"
    assert default.fingerprint() != frozen.fingerprint()
    assert ScreeningParameters(potential="bvse").fingerprint() == default.fingerprint()
    prints = {
        ScreeningParameters(potential="chgnet").fingerprint(),
        ScreeningParameters(elastic="chgnet").fingerprint(),
        ScreeningParameters(potential="chgnet", elastic="chgnet").fingerprint(),
        default.fingerprint(),
    }
    assert len(prints) == 4
    with pytest.raises(ValueError):
        ScreeningParameters(potential="mace")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScreeningParameters(elastic="dft")  # type: ignore[arg-type]


def test_maker_carries_the_backends_into_the_run_id() -> None:
    maker = ScreenMaker.from_options(potential="chgnet", elastic="chgnet")
    assert maker.parameters.potential == "chgnet"
    assert maker.parameters.elastic == "chgnet"
    assert ScreenMaker().run_id() != ScreenMaker.from_options(potential="chgnet").run_id()
    assert ScreenMaker().run_id() != ScreenMaker.from_options(elastic="chgnet").run_id()


def test_embedded_ids_select_candidates() -> None:
    assert [c.candidate_id for c in load_candidates("embedded", ids=["li2o-fm3m"])] == ["li2o-fm3m"]
    with pytest.raises(ValueError, match="unknown embedded candidate ids: nope"):
        load_candidates("embedded", ids=["lif-fm3m", "nope"])


# ---------------------------------------------------------------------------------------
# Without the ml extra
# ---------------------------------------------------------------------------------------


def test_chgnet_without_the_extra_keeps_the_bvse_result(monkeypatch) -> None:
    _hide_ml_extra(monkeypatch)
    lif = _candidates()["lif-fm3m"]
    bvse, _ = score_candidate(lif, ScreeningParameters(**FAST_PHYSICS))
    chgnet, _ = score_candidate(lif, ScreeningParameters(potential="chgnet", **FAST_PHYSICS))
    assert bvse.status == chgnet.status == "ok"
    assert (bvse.potential_backend, chgnet.potential_backend) == ("bvse", "chgnet")
    assert chgnet.universal_error_cause == "ml_extra_missing"
    assert "lif-fm3m" in (chgnet.universal_error or "")
    assert "pip install" in (chgnet.universal_error or "")
    assert chgnet.barrier_universal_eV is None
    assert chgnet.log10_sigma_universal_S_per_cm is None
    assert bvse.universal_error_cause is None
    assert _bvse_part(chgnet) == _bvse_part(bvse)
    row = chgnet.ranking_row()
    assert row["potential_backend"] == "chgnet"
    assert row["universal_error_cause"] == "ml_extra_missing"


@pytest.mark.parametrize("option", ["--potential", "--elastic"])
@pytest.mark.parametrize("command", ["screen", "validate"])
def test_cli_refuses_chgnet_without_the_extra(
    monkeypatch, capsys, tmp_path: Path, iondrag_home: Path, command: str, option: str
) -> None:
    _hide_ml_extra(monkeypatch)
    db = tmp_path / "rank.sqlite"
    argv = (
        ["screen", "--ids", "lif-fm3m", "--db", str(db), "--quiet"]
        if command == "screen"
        else ["validate", "--cifs", str(tmp_path), "--table", str(tmp_path / "t.csv")]
    )
    assert main([*argv, option, "chgnet"]) == 1
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert line.startswith(f"iondrag {command}: error: {option} chgnet needs the ml extra")
    assert "ml_extra_missing" in line and "pip install torch==2.13.0" in line
    assert not db.exists()  # refused before any work


def test_cli_backend_usage_errors(capsys, iondrag_home: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["screen", "--potential", "mace"])
    assert stop.value.code == 2
    assert "invalid choice: 'mace'" in capsys.readouterr().err
    assert main(["screen", "--source", "cif", str(tmp_path), "--ids", "x"]) == 2
    assert "--ids selects embedded candidates" in one_line_error(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------
# elastic="chgnet" in the jobflow screen
# ---------------------------------------------------------------------------------------


@job
def _stand_in_elastic() -> ElasticInput:
    """What the CHGNet elastic flow returns (Li2O-like cubic constants, GPa)."""
    c11, c12, c44 = 202.0, 22.0, 59.0
    voigt = [[c12] * 3 + [0.0] * 3 for _ in range(3)] + [[0.0] * 6 for _ in range(3)]
    for i in range(3):
        voigt[i][i] = c11
        voigt[3 + i][3 + i] = c44
    return ElasticInput(voigt_GPa=voigt, source=f"{ELASTIC_SOURCE}; test stand-in")


def test_elastic_chgnet_runs_between_fetch_and_chunks(monkeypatch, tmp_path: Path) -> None:
    """The flow runs the elastic workflow for candidates without data only, before scoring.

    The workflow itself (CHGNet, about a minute per small cell; tests/workflows/test_ml.py
    runs it) is replaced by a stand-in job for Li2O and a failure for a copy of Li2O: the
    first gets the tensor (recorded as elastic_source), the second keeps the estimate and
    says why; LiF keeps its measured data.
    """
    import iondrag.workflows.ml

    calls: list[str | None] = []

    def stand_in_make(self, structure, candidate_id=None):
        calls.append(candidate_id)
        if candidate_id == "li2o-copy":
            raise ValueError(f"{candidate_id}: simulated elastic workflow failure")
        stand_in = _stand_in_elastic()
        return Flow([stand_in], output=stand_in.output)

    monkeypatch.setattr(iondrag.workflows.ml.ForceFieldElasticMaker, "make", stand_in_make)
    loaded = _candidates()
    candidates = [
        *loaded.values(),
        loaded["li2o-fm3m"].model_copy(update={"candidate_id": "li2o-copy"}),
    ]
    db = tmp_path / "rank.sqlite"
    maker = ScreenMaker.from_options(
        elastic="chgnet", chunk_size=2, workers=1, db_path=str(db), **FAST_PHYSICS
    )
    store = file_job_store(tmp_path / "js")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_locally(maker.make(candidates=candidates), store=store, log=False, ensure_success=True)
    assert calls == ["li2o-fm3m", "li2o-copy"]
    names = {doc["name"] for doc in store.query({}, properties=["name"])}
    assert {"chgnet elastic", "merge elastic", "screen chunks", "rank and store"} <= names
    assert {"screen chunk 1/2", "screen chunk 2/2"} <= names
    run_id = maker.run_id(candidates=candidates)
    rows = {r["candidate_id"]: r for r in _rows(db) if r["run_id"] == run_id}
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert rows["lif-fm3m"]["elastic_source"].startswith("Briscoe & Squire")
    assert rows["li2o-fm3m"]["elastic_source"] == f"{ELASTIC_SOURCE}; test stand-in"
    assert "estimate" in rows["li2o-copy"]["elastic_source"]
    # Lambda from the tensor: a different drag than with the estimate
    with_tensor = rows["li2o-fm3m"]["drag_saddle_kg_per_s"]
    with_estimate = rows["li2o-copy"]["drag_saddle_kg_per_s"]
    assert abs(with_tensor - with_estimate) > 1e-3 * with_estimate
    for row in rows.values():  # the reuse key is the candidate as loaded
        assert row["candidate_fingerprint"] == next(
            c.fingerprint() for c in candidates if c.candidate_id == row["candidate_id"]
        )
    with closing(sqlite3.connect(db)) as conn:
        doc = json.loads(
            conn.execute(
                "SELECT json FROM documents WHERE run_id = ? AND candidate_id = 'li2o-copy'",
                (run_id,),
            ).fetchone()[0]
        )
    assert any("simulated elastic workflow failure" in w for w in doc["warnings"])
    # a rerun finds every candidate finished: no elastic workflow, nothing scored again
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        responses = run_locally(
            maker.make(candidates=candidates), store=store, log=False, ensure_success=True
        )
    assert calls == []
    fetch = [
        r.output
        for by_index in responses.values()
        for r in by_index.values()
        if getattr(r.output, "n_already_finished", None) is not None
    ]
    assert fetch and fetch[0].n_already_finished == 3 and fetch[0].n_to_score == 0


def test_validate_prepares_candidates_with_chgnet_elastic(monkeypatch) -> None:
    """``iondrag validate --elastic chgnet``: the workflow runs for candidates without data."""
    import iondrag.workflows.ml
    from iondrag.workflows.cli import _elastic_preparation

    assert _elastic_preparation(ScreeningParameters()) is None
    prepare = _elastic_preparation(ScreeningParameters(elastic="chgnet"))
    assert prepare is iondrag.workflows.ml.candidate_with_chgnet_elastic
    ran: list[str] = []
    tensor = _stand_in_elastic.original()

    def fake_run(structure, maker=None):
        ran.append(structure.composition.reduced_formula)
        if structure.composition.reduced_formula == "LiF":
            raise RuntimeError("simulated relaxation failure")
        return tensor, {}

    monkeypatch.setattr(iondrag.workflows.ml, "run_elastic_locally", fake_run)
    loaded = _candidates()
    li2o = prepare(loaded["li2o-fm3m"])
    assert li2o.elastic == tensor
    lif_without = loaded["lif-fm3m"].model_copy(update={"elastic": None})
    failed = prepare(lif_without)
    assert failed.elastic is None
    assert "simulated relaxation failure" in failed.provenance["elastic_chgnet_error"]
    assert prepare(loaded["lif-fm3m"]) == loaded["lif-fm3m"]  # has data: not run
    assert ran == ["Li2O", "LiF"]


# ---------------------------------------------------------------------------------------
# With CHGNet (ml extra)
# ---------------------------------------------------------------------------------------


def _require_ml() -> None:
    pytest.importorskip("torch", reason="the ml extra (torch) is not installed")
    pytest.importorskip("chgnet", reason="the ml extra (chgnet) is not installed")


@pytest.mark.ml
def test_cli_screen_with_chgnet_records_both_backends(tmp_path: Path) -> None:
    """``iondrag screen --potential chgnet`` next to a BVSE screen, in one real database."""
    _require_ml()
    env = clean_env(tmp_path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    db = tmp_path / "rank.sqlite"
    common = ["screen", "--source", "embedded", "--ids", ",".join(IDS), *FAST_CLI]
    common += ["--workers", "1", "--db", db, "--quiet"]
    bvse = run_cli([*common, "--json", tmp_path / "bvse.json"], env)
    assert bvse.returncode == 0, bvse.stderr
    chgnet = run_cli([*common, "--potential", "chgnet", "--json", tmp_path / "c.json"], env)
    assert chgnet.returncode == 0, chgnet.stderr

    rows = _rows(db)
    by_backend: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_backend.setdefault(row["potential_backend"], {})[row["candidate_id"]] = row
    assert set(by_backend) == {"bvse", "chgnet"}
    assert set(by_backend["bvse"]) == set(by_backend["chgnet"]) == set(IDS)
    with closing(sqlite3.connect(db)) as conn:
        runs = conn.execute("SELECT run_id, n_reused FROM runs").fetchall()
    assert len(runs) == 2 and all(n_reused == 0 for _, n_reused in runs)  # no cross-reuse
    for ident in IDS:
        plain, universal = by_backend["bvse"][ident], by_backend["chgnet"][ident]
        assert plain["status"] == universal["status"] == "ok"
        assert plain["parameters_fingerprint"] != universal["parameters_fingerprint"]
        assert plain["barrier_universal_eV"] is None
        assert plain["log10_sigma_universal_S_per_cm"] is None
        barrier = universal["barrier_universal_eV"]
        log_sigma = universal["log10_sigma_universal_S_per_cm"]
        assert universal["universal_error_cause"] is None
        assert math.isfinite(barrier) and 0.0 < barrier < 5.0
        assert math.isfinite(log_sigma) and -30.0 < log_sigma < 5.0
        for name in set(plain) - _NOT_BVSE_COLUMNS:  # the BVSE result is unchanged
            if isinstance(plain[name], float):
                assert universal[name] == pytest.approx(plain[name], rel=1e-9), name
            else:
                assert universal[name] == plain[name], name
    # the document keeps the CHGNet profile and its bookkeeping
    with closing(sqlite3.connect(db)) as conn:
        (text,) = conn.execute(
            "SELECT d.json FROM documents d JOIN results r USING (run_id, candidate_id) "
            "WHERE r.potential_backend = 'chgnet' AND d.candidate_id = 'li2o-fm3m'"
        ).fetchone()
    doc = json.loads(text)
    assert doc["headline_method"] == "path_entropic"
    details = doc["universal_details"]
    assert details["n_force_calls"] > 0 and details["n_energy_calls"] > 0
    assert max(doc["universal_path"]["energy_eV"]) == pytest.approx(
        doc["barrier_universal_eV"], abs=1e-9
    )
    assert doc["seconds"]["universal"] > 0
    records = json.loads((tmp_path / "c.json").read_text())
    assert {r["potential_backend"] for r in records} == {"chgnet"}
    run_id = next(r["run_id"] for r in records)
    shown = run_cli(["show", "li2o-fm3m", "--db", db, "--run-id", run_id], env)
    assert shown.returncode == 0, shown.stderr
    assert f"barrier {doc['barrier_universal_eV']:.3g} eV" in shown.stdout


@pytest.mark.ml
def test_chgnet_failure_keeps_the_bvse_result() -> None:
    """A supercell above max_atoms is refused by CHGNet; the candidate keeps its BVSE result."""
    _require_ml()
    from iondrag.screening.universal import UniversalSettings

    lif = _candidates()["lif-fm3m"]
    bvse, _ = score_candidate(lif, ScreeningParameters(**FAST_PHYSICS))
    chgnet, _ = score_candidate(
        lif,
        ScreeningParameters(
            potential="chgnet", universal=UniversalSettings(max_atoms=20), **FAST_PHYSICS
        ),
    )
    assert chgnet.status == "ok"
    assert chgnet.universal_error_cause == "universal_too_large"
    assert "cap 20" in (chgnet.universal_error or "")
    assert chgnet.barrier_universal_eV is None and chgnet.log10_sigma_universal_S_per_cm is None
    assert chgnet.log10_sigma_S_per_cm is not None
    assert _bvse_part(chgnet) == _bvse_part(bvse)
