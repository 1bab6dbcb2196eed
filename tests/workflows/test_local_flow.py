"""The screen's flow under jobflow's run_locally: fan-out, database rows, grids, resume, reuse."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from jobflow import Flow, JobStore, run_locally
from wf_helpers import FAST_PHYSICS, SMALL_IDS

from iondrag.adapters import database
from iondrag.adapters.stores import SQLiteStore, default_job_store, file_job_store
from iondrag.screening.schemas import CandidateGrids
from iondrag.workflows.makers import ScreenMaker
from iondrag.workflows.schemas import ChunkDocument, FetchDocument, RankingDocument

pytestmark = pytest.mark.filterwarnings("ignore:cd is deprecated:FutureWarning")


def run(flow: Flow, store: JobStore) -> dict:
    return run_locally(flow, store=store, log=False, ensure_success=True, raise_immediately=True)


def outputs_by_name(store: JobStore) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for doc in store.query({}, properties=["name", "uuid", "index", "output"]):
        found.setdefault(doc["name"], []).append(doc)
    return found


def db_rows(path: Path, run_id: str) -> dict[str, dict]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return {
            r["candidate_id"]: dict(r)
            for r in conn.execute("SELECT * FROM results WHERE run_id = ?", (run_id,))
        }


@pytest.fixture(scope="module")
def screened(tmp_path_factory, small_candidates):
    """One screen of the four small candidates (chunks of 2, grids stored), from JSON."""
    tmp = tmp_path_factory.mktemp("local")
    maker = ScreenMaker.from_options(
        chunk_size=2, store_grids=True, db_path=str(tmp / "rank.sqlite"), **FAST_PHYSICS
    )
    flow = Flow.from_dict(json.loads(maker.make(candidates=small_candidates).to_json()))
    store = file_job_store(tmp / "jobstore")
    responses = run(flow, store)
    store.connect()
    return {
        "tmp": tmp,
        "maker": maker,
        "flow": flow,
        "store": store,
        "responses": responses,
        "run_id": maker.run_id(candidates=small_candidates),
        "db": tmp / "rank.sqlite",
    }


def test_flow_writes_rows_and_documents(screened) -> None:
    rows = db_rows(screened["db"], screened["run_id"])
    assert set(rows) == set(SMALL_IDS)
    assert {k: r["status"] for k, r in rows.items()} == {
        "lif-fm3m": "ok",
        "nacl-fm3m": "ok",
        "li2o-fm3m": "ok",
        "li3p-p63mmc": "failed",
    }
    assert rows["li3p-p63mmc"]["error_cause"] == "missing_parameters"
    assert "li3p-p63mmc" in rows["li3p-p63mmc"]["error"]
    assert rows["li2o-fm3m"]["sigma_S_per_cm"] > rows["nacl-fm3m"]["sigma_S_per_cm"] > 0
    assert rows["nacl-fm3m"]["ion"] == "Na"
    with closing(database.connect(screened["db"])) as conn:
        run_id, doc, candidate = database.load_document(conn, "li2o-fm3m")
        run = database.get_run(conn, screened["run_id"])
    assert run_id == screened["run_id"] and doc.path is not None
    assert candidate is not None and candidate.structure is not None
    assert run["status"] == "finished" and run["n_candidates"] == 4


def test_fetch_fans_out_over_chunks(screened) -> None:
    store, flow = screened["store"], screened["flow"]
    names = outputs_by_name(store)
    assert sorted(names) == sorted(
        [
            "fetch candidates",
            "screen chunk 1/2",
            "screen chunk 2/2",
            "rank and store",
            "store_inputs",
        ]
    )
    fetch = FetchDocument.model_validate(
        store.query_one({"uuid": flow.jobs[0].uuid, "index": 1})["output"]
    )
    assert (fetch.n_candidates, fetch.n_to_score, fetch.n_chunks) == (4, 4, 2)
    chunks = [
        ChunkDocument.model_validate({**doc["output"], "grids": None})  # grids: a blob reference
        for name in names
        if name.startswith("screen chunk")
        for doc in names[name]
    ]
    assert sorted(c.n_candidates for c in chunks) == [2, 2]
    assert sum(c.n_ok for c in chunks) == 3
    # the flow's output (fetch job, last index) is the ranking document
    ranking = store.get_output(flow.jobs[0].uuid)
    assert isinstance(ranking, RankingDocument)
    assert (ranking.status, ranking.n_ok, ranking.n_failed) == ("finished", 3, 1)
    assert ranking.failures_by_cause == {"missing_parameters": 1}
    assert ranking.top[0]["candidate_id"] == "li2o-fm3m"


def test_grids_go_to_the_data_store(screened) -> None:
    store = screened["store"]
    chunk = store.query_one({"name": "screen chunk 1/2"}, properties=["output"])
    reference = chunk["output"]["grids"]
    assert isinstance(reference, dict) and "blob_uuid" in reference  # not inline
    assert store.additional_stores["data"].count() == 2
    loaded = store.query_one({"name": "screen chunk 1/2"}, load=True)["output"]["grids"]
    grids = [CandidateGrids.model_validate(g) for g in loaded]
    arrays = grids[0].arrays()
    assert list(arrays["energy_eV"].shape) == grids[0].grid_shape


def test_rerun_skips_finished_candidates(screened, small_candidates) -> None:
    before = db_rows(screened["db"], screened["run_id"])
    flow = screened["maker"].make(candidates=small_candidates)
    store = screened["store"]
    run(flow, store)
    fetch = FetchDocument.model_validate(
        store.query_one({"uuid": flow.jobs[0].uuid, "index": 1})["output"]
    )
    assert (fetch.n_already_finished, fetch.n_to_score, fetch.n_chunks) == (4, 0, 0)
    after = db_rows(screened["db"], screened["run_id"])
    assert {k: r["written_utc"] for k, r in after.items()} == {
        k: r["written_utc"] for k, r in before.items()
    }
    ranking = store.get_output(flow.jobs[0].uuid)
    assert ranking.n_ok == 3 and ranking.n_candidates == 4
    with closing(database.connect(screened["db"])) as conn:
        assert database.get_run(conn, screened["run_id"])["n_starts"] == 2


def test_other_run_reuses_results_and_new_parameters_rescore(screened, small_candidates) -> None:
    store = screened["store"]
    flow = screened["maker"].make(candidates=small_candidates, run_id="explicit-run")
    run(flow, store)
    fetch = FetchDocument.model_validate(
        store.query_one({"uuid": flow.jobs[0].uuid, "index": 1})["output"]
    )
    assert (fetch.n_reused, fetch.n_to_score) == (4, 0)
    rows = db_rows(screened["db"], "explicit-run")
    assert {r["reused_from_run_id"] for r in rows.values()} == {screened["run_id"]}

    warmer = ScreenMaker.from_options(
        chunk_size=1, temperature_K=400.0, db_path=str(screened["db"]), **FAST_PHYSICS
    )
    flow = warmer.make(candidates=small_candidates[:2])
    run(flow, store)
    fetch = FetchDocument.model_validate(
        store.query_one({"uuid": flow.jobs[0].uuid, "index": 1})["output"]
    )
    assert (fetch.n_reused, fetch.n_to_score, fetch.n_chunks) == (0, 2, 2)
    rows = db_rows(screened["db"], warmer.run_id(candidates=small_candidates[:2]))
    assert {r["temperature_K"] for r in rows.values()} == {400.0}


@pytest.mark.slow
def test_two_workers_give_the_same_results(tmp_path, small_candidates, screened) -> None:
    maker = ScreenMaker.from_options(
        chunk_size=4, workers=2, db_path=str(tmp_path / "rank.sqlite"), **FAST_PHYSICS
    )
    run(maker.make(candidates=small_candidates), file_job_store(tmp_path / "js"))
    parallel = db_rows(tmp_path / "rank.sqlite", maker.run_id(candidates=small_candidates))
    serial = db_rows(screened["db"], screened["run_id"])
    for candidate_id, row in serial.items():
        assert parallel[candidate_id]["status"] == row["status"]
        if row["status"] == "ok":
            assert parallel[candidate_id]["sigma_S_per_cm"] == pytest.approx(row["sigma_S_per_cm"])


def test_default_job_store_is_file_backed_unless_jobflow_is_configured(
    iondrag_home: Path, tmp_path: Path, monkeypatch
) -> None:
    store = default_job_store()
    assert isinstance(store.docs_store, SQLiteStore)
    assert isinstance(store.additional_stores["data"], SQLiteStore)
    assert Path(store.docs_store.database_path).parent == (iondrag_home / "jobstore").resolve()

    import jobflow

    config = tmp_path / "jobflow.yaml"
    config.write_text("JOB_STORE:\n  docs_store:\n    type: MemoryStore\n")
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(config))
    assert default_job_store() is jobflow.SETTINGS.JOB_STORE
