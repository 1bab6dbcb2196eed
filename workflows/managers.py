"""Cluster managers: the screen's flow under FireWorks and jobflow-remote.

The flow of :class:`~iondrag.workflows.makers.ScreenMaker` is submitted unchanged:

- FireWorks: :func:`to_fireworks` converts it with jobflow's ``flow_to_workflow``; add the
  workflow to a LaunchPad and run ``rlaunch`` on the workers. The dynamic fan-out
  (``fetch_candidates`` replacing itself with chunk jobs) becomes FireWorks detours.
- jobflow-remote: :func:`submit_remote` calls ``jobflow_remote.submit_flow`` (install the
  ``remote`` extra; configuration in docs/usage.md).
- in this process: :func:`run_in_process`, what ``iondrag screen`` uses; jobflow's
  ``run_locally`` semantics without keeping the jobs' outputs in memory.

The job store: ``store=None`` lets each worker use its own jobflow configuration
(``JOBFLOW_CONFIG_FILE`` / ``~/.jobflow.yaml``, e.g. a MongoStore). Passing a store embeds it
in every task (fine for a shared file system). The ranking database path must be reachable
from the workers: set ``db_path`` on the Maker or ``IONDRAG_DB_PATH`` on the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fireworks import Workflow
    from jobflow import Flow, JobStore

__all__ = ["run_in_process", "submit_remote", "to_fireworks"]


def to_fireworks(flow: Flow, store: JobStore | None = None, **kwargs: Any) -> Workflow:
    """Convert the flow to a FireWorks Workflow (``jobflow.managers.fireworks``).

    Parameters
    ----------
    flow
        The screen's flow.
    store
        Job store embedded in the tasks; None: each worker's jobflow ``JOB_STORE``.
    **kwargs
        Passed to ``flow_to_workflow`` (``name``, ``metadata``, ...).
    """
    from jobflow.managers.fireworks import flow_to_workflow

    return flow_to_workflow(flow, store=store, **kwargs)  # type: ignore[arg-type]


def submit_remote(flow: Flow, worker: str, project: str | None = None, **kwargs: Any) -> Any:
    """Submit the flow to jobflow-remote (``jobflow_remote.submit_flow``).

    Raises
    ------
    ImportError
        jobflow-remote is not installed (``pip install 'iondrag[remote]'``).
    """
    try:
        from jobflow_remote import submit_flow
    except ImportError as error:
        raise ImportError(
            "jobflow-remote is not installed: pip install 'iondrag[remote]'"
        ) from error
    return submit_flow(flow, worker=worker, project=project, **kwargs)


def run_in_process(flow: Flow, store: JobStore, log: bool = False) -> None:
    """Run the flow here, like ``run_locally(raise_immediately=True, ensure_success=True)``.

    jobflow's ``run_locally`` returns every job's :class:`~jobflow.Response`, so the outputs
    of all chunk jobs (the candidates' result documents) stay in memory until the flow ends:
    about 33 MB per 1,000 candidates (benchmarks/bench_reliability.py). Every output is in
    the job store as soon as its job finishes, and references between jobs resolve from the
    store, so this runner keeps none of them: memory stays flat however many candidates.
    It walks the flow with jobflow's own ``Flow.iterflow`` and ``Job.run``, runs
    replacements, detours and additions right after the job that made them (as
    ``run_locally`` does) and raises on the first failure.

    Parameters
    ----------
    flow
        The flow (or a job).
    store
        The job store every output goes to.
    log
        Show jobflow's log.

    Raises
    ------
    RuntimeError
        A job asked to stop the flow or its children, so part of the flow did not run.
    """
    from jobflow import initialize_logger
    from jobflow.core.flow import get_flow

    store.connect()
    if log:
        initialize_logger()
    stopped: set[str] = set()

    def run(root: Flow) -> None:
        for job, parents in root.iterflow():
            if stopped.intersection(parents):
                stopped.add(job.uuid)
                continue
            response = job.run(store=store)
            if response.stop_jobflow:
                raise RuntimeError(f"{job.name} stopped the flow; it did not finish")
            if response.stop_children:
                stopped.add(job.uuid)
            for diversion in (response.replace, response.detour, response.addition):
                if diversion is not None:
                    run(get_flow(diversion, allow_external_references=True))
            del response  # the output is in the store; keep nothing here

    run(get_flow(flow))
    if stopped:
        raise RuntimeError("a job stopped its children; the flow did not finish")
