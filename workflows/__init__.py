"""iondrag's workflow layer: jobflow Makers, jobs, stores and the ``iondrag`` command.

Thin wrappers over :mod:`screening` (the science never imports this package). Importing
``workflows`` is cheap: the jobflow-based modules load on first use of their names.

Public API
----------
ScreenMaker
    Flat dataclass Maker whose ``make()`` returns the flow of a screen
    (:mod:`iondrag.workflows.makers`).
fetch_candidates, screen_chunk, rank_and_store
    The jobs (:mod:`iondrag.workflows.jobs`).
default_job_store, file_job_store, SQLiteStore
    Job stores (:mod:`iondrag.adapters.stores`).
to_fireworks
    The flow as a FireWorks workflow (:mod:`iondrag.workflows.managers`).
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

# jobflow's run_locally enters each job's folder with monty's deprecated ``cd``, which warns
# on every job; the warning is about jobflow's code, not the user's, so it is not shown.
warnings.filterwarnings(
    "ignore", message=r"cd is deprecated", category=FutureWarning, module=r"jobflow\."
)

__all__ = [
    "SQLiteStore",
    "ScreenMaker",
    "default_job_store",
    "fetch_candidates",
    "file_job_store",
    "rank_and_store",
    "screen_chunk",
    "to_fireworks",
]

_LOCATIONS = {
    "ScreenMaker": "iondrag.workflows.makers",
    "fetch_candidates": "iondrag.workflows.jobs",
    "screen_chunk": "iondrag.workflows.jobs",
    "rank_and_store": "iondrag.workflows.jobs",
    "SQLiteStore": "iondrag.adapters.stores",
    "default_job_store": "iondrag.adapters.stores",
    "file_job_store": "iondrag.adapters.stores",
    "to_fireworks": "iondrag.workflows.managers",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
