"""The same flow under cluster managers: FireWorks (mongomock mode, rlaunch in a separate
process) and jobflow-remote (needs MongoDB: IONDRAG_TEST_MONGODB_URI)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from jobflow import Flow, Response, job, run_locally
from wf_helpers import FAST_PHYSICS, clean_env

from iondrag.adapters.stores import file_job_store
from iondrag.workflows.makers import ScreenMaker
from iondrag.workflows.managers import run_in_process
from iondrag.workflows.schemas import RankingDocument

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LAUNCHPAD_SETUP = textwrap.dedent(
    """
    import json, sys
    from fireworks import LaunchPad, Workflow
    launchpad = LaunchPad.from_file(sys.argv[1])
    launchpad.reset("", require_password=False)
    # from_dict, not Workflow.from_file / `lpad add`: FireWorks' file reader turns ISO time
    # strings anywhere in the inputs (candidate provenance) into datetime objects
    with open(sys.argv[2]) as handle:
        launchpad.add_wf(Workflow.from_dict(json.load(handle)))
    """
)

LAUNCHPAD_STATES = textwrap.dedent(
    """
    import json, sys
    from fireworks import LaunchPad
    launchpad = LaunchPad.from_file(sys.argv[1])
    states = {
        fw["name"]: fw["state"]
        for fw in launchpad.fireworks.find({}, {"name": 1, "state": 1, "_id": 0})
    }
    print(json.dumps(states))
    """
)


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


@pytest.mark.slow
def test_flow_runs_through_a_fireworks_launchpad_and_rlaunch(tmp_path: Path, small_candidates):
    pytest.importorskip("fireworks")
    pytest.importorskip(
        "mongomock_persistence",
        reason="FireWorks' mongomock mode needs mongomock-persistence "
        "(pip install 'iondrag[fireworks]')",
    )
    from iondrag.workflows.managers import to_fireworks

    db = tmp_path / "rank.sqlite"
    maker = ScreenMaker.from_options(chunk_size=1, workers=1, db_path=str(db), **FAST_PHYSICS)
    candidates = small_candidates[:2]  # LiF and NaCl rock salt
    flow = maker.make(candidates=candidates)
    store = file_job_store(tmp_path / "jobstore")
    workflow = to_fireworks(flow, store=store)
    workflow.to_file(str(tmp_path / "workflow.json"))

    # FireWorks' mongomock mode: the "server" is a JSON file that every process loads on
    # start and writes back at exit (package mongomock-persistence), so separate processes
    # (lpad setup, rlaunch, the check) share one LaunchPad database in sequence.
    server = tmp_path / "mongomock_server.json"
    server.write_text("{}")
    launchpad = tmp_path / "my_launchpad.yaml"
    launchpad.write_text("host: localhost\nport: 27017\nname: iondrag_fw_test\n")
    env = clean_env(tmp_path, MONGOMOCK_SERVERSTORE_FILE=str(server))
    env["FW_CONFIG_FILE"] = str(tmp_path / "FW_config.yaml")  # none: defaults
    _run([sys.executable, "-c", LAUNCHPAD_SETUP, str(launchpad), "workflow.json"], env, tmp_path)
    rlaunch = Path(sys.executable).with_name("rlaunch")
    command = (
        [str(rlaunch)]
        if rlaunch.exists()
        else [sys.executable, "-m", "fireworks.scripts.rlaunch_run"]
    )
    _run([*command, "-l", str(launchpad), "rapidfire"], env, tmp_path)
    states = json.loads(
        _run([sys.executable, "-c", LAUNCHPAD_STATES, str(launchpad)], env, tmp_path)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert set(states.values()) == {"COMPLETED"}, states
    assert {"fetch candidates", "screen chunk 1/2", "screen chunk 2/2", "rank and store"} <= set(
        states
    )

    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT candidate_id, status FROM results").fetchall()
    assert sorted(rows) == [("lif-fm3m", "ok"), ("nacl-fm3m", "ok")]
    store.connect()
    ranking = store.get_output(flow.jobs[0].uuid)
    assert isinstance(ranking, RankingDocument)
    assert (ranking.status, ranking.n_ok) == ("finished", 2)


@pytest.mark.mongodb
def test_flow_runs_through_jobflow_remote(tmp_path: Path, small_candidates, monkeypatch):
    uri = os.environ.get("IONDRAG_TEST_MONGODB_URI")
    if not uri:
        pytest.skip("set IONDRAG_TEST_MONGODB_URI to a MongoDB server to run jobflow-remote")
    pytest.importorskip("jobflow_remote", reason="pip install 'iondrag[remote]'")
    import uuid

    database = f"iondrag_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JFREMOTE_PROJECTS_FOLDER", str(tmp_path / "projects"))
    monkeypatch.setenv("JFREMOTE_PROJECT", "iondrag_test")
    (tmp_path / "projects").mkdir()
    (tmp_path / "work").mkdir()
    stores = {"type": "MongoStore", "uri": uri, "database": database}
    project = {
        "name": "iondrag_test",
        "jobstore": {
            "docs_store": {**stores, "collection_name": "outputs"},
            "additional_stores": {"data": {**stores, "collection_name": "outputs_data"}},
        },
        "queue": {"store": {**stores, "collection_name": "jobs"}},
        "workers": {
            "local": {
                "type": "local",
                "scheduler_type": "shell",
                "work_dir": str(tmp_path / "work"),
                "resources": {},
                "pre_run": f"export IONDRAG_HOME={tmp_path / 'iondrag_home'}",
            }
        },
        "runner": {"delay_checkout": 1, "delay_check_run_status": 1, "delay_advance_status": 1},
    }
    (tmp_path / "projects" / "iondrag_test.json").write_text(json.dumps(project))

    import jobflow_remote
    from jobflow_remote.config.settings import JobflowRemoteSettings
    from jobflow_remote.jobs.jobcontroller import JobController
    from jobflow_remote.jobs.runner import Runner

    jobflow_remote.SETTINGS = JobflowRemoteSettings()
    controller = JobController.from_project_name("iondrag_test")
    controller.reset()
    from iondrag.workflows.managers import submit_remote

    db = tmp_path / "rank.sqlite"
    maker = ScreenMaker.from_options(chunk_size=1, db_path=str(db), **FAST_PHYSICS)
    flow = maker.make(candidates=small_candidates[:2])
    submit_remote(flow, worker="local", project="iondrag_test")
    Runner(project_name="iondrag_test").run_all_jobs(max_seconds=300)
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT candidate_id, status FROM results").fetchall()
    assert sorted(rows) == [("lif-fm3m", "ok"), ("nacl-fm3m", "ok")]
    controller.jobstore.connect()
    ranking = controller.jobstore.get_output(flow.jobs[0].uuid)
    status = ranking["status"] if isinstance(ranking, dict) else ranking.status
    assert status == "finished"


@pytest.mark.mongodb
def test_cli_uses_a_mongodb_job_store_from_jobflow_configuration(tmp_path: Path, small_cifs):
    uri = os.environ.get("IONDRAG_TEST_MONGODB_URI")
    if not uri:
        pytest.skip("set IONDRAG_TEST_MONGODB_URI to a MongoDB server to test a MongoStore")
    import uuid

    import pymongo
    from wf_helpers import FAST_CLI, run_cli

    database = f"iondrag_test_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "jobflow.yaml"
    config.write_text(
        "JOB_STORE:\n"
        "  docs_store:\n"
        f"    type: MongoStore\n    uri: {uri}\n    database: {database}\n"
        "    collection_name: outputs\n"
        "  additional_stores:\n"
        "    data:\n"
        f"      type: MongoStore\n      uri: {uri}\n      database: {database}\n"
        "      collection_name: outputs_data\n"
    )
    env = clean_env(tmp_path, JOBFLOW_CONFIG_FILE=str(config))
    completed = run_cli(
        ["screen", small_cifs, *FAST_CLI, "--workers", "1", "--db", tmp_path / "r.sqlite",
         "--store-grids", "--quiet"],
        env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    client = pymongo.MongoClient(uri)
    try:
        names = set(client[database]["outputs"].distinct("name"))
        assert {"fetch candidates", "rank and store"} <= names
        assert client[database]["outputs_data"].count_documents({}) >= 1
        assert not (tmp_path / "iondrag_home" / "jobstore").exists()  # not the file store
    finally:
        client.drop_database(database)
        client.close()


# --- run_in_process: jobflow's local semantics, outputs only in the store -------------------


@job
def _add(a: int, b: int) -> int:
    return a + b


@job
def _fan_out(n: int) -> Response:
    """Replace itself with n jobs and a sum of their outputs (like the screen's fan-out)."""
    parts = [_add(i, 100) for i in range(n)]
    total = _sum([p.output for p in parts])
    return Response(replace=Flow([*parts, total], output=total.output))


@job
def _sum(values: list[int]) -> int:
    return sum(values)


@job
def _stop() -> Response:
    return Response(output=1, stop_children=True)


def test_run_in_process_matches_run_locally(tmp_path: Path) -> None:
    def build() -> Flow:
        first = _add(1, 2)
        fan = _fan_out(first.output)
        return Flow([first, fan, _add(fan.output, 1)])

    flow = build()
    store = file_job_store(tmp_path / "ours")
    assert run_in_process(flow, store) is None
    reference_flow = build()
    reference = file_job_store(tmp_path / "reference")
    run_locally(reference_flow, store=reference, ensure_success=True, raise_immediately=True)
    # 1 + 2 = 3 parts: (100 + 101 + 102) + 1, the replaced job's output read from the store
    ours = store.get_output(flow.jobs[2].uuid)
    assert ours == reference.get_output(reference_flow.jobs[2].uuid) == 304
    assert store.count() == reference.count() >= 7  # every job's output stored


def test_run_in_process_raises_when_part_of_the_flow_did_not_run(tmp_path: Path) -> None:
    stop = _stop()
    child = _add(stop.output, 1)
    with pytest.raises(RuntimeError, match="did not finish"):
        run_in_process(Flow([stop, child]), file_job_store(tmp_path / "store"))


def test_run_in_process_raises_the_job_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        run_in_process(Flow([_add(1, "x")]), file_job_store(tmp_path / "store"))
