"""Cluster managers: the screen's flow under FireWorks and jobflow-remote.

The flow of :class:`~workflows.makers.ScreenMaker` is submitted unchanged:

- FireWorks: :func:`to_fireworks` converts it with jobflow's ``flow_to_workflow``; add the
  workflow to a LaunchPad and run ``rlaunch`` on the workers. The dynamic fan-out
  (``fetch_candidates`` replacing itself with chunk jobs) becomes FireWorks detours.
- jobflow-remote: :func:`submit_remote` calls ``jobflow_remote.submit_flow`` (install the
  ``remote`` extra; configuration in docs/usage.md).

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

__all__ = ["submit_remote", "to_fireworks"]


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
