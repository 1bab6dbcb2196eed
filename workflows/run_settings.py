"""How a screen runs, apart from its physics: :class:`ScreenRun` (pydantic, light to import).

The CLI derives its run options (``--chunk-size``, ``--store-grids``, ``--top``) from these
fields, and :class:`~iondrag.workflows.makers.ScreenMaker` holds one next to its
:class:`~iondrag.screening.parameters.ScreeningParameters`. Nothing here enters the
parameters' fingerprint: how a screen is cut into jobs never changes its numbers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_TOP_N", "ScreenRun"]

#: Rows of the ranking carried in the final RankingDocument (and printed) by default.
DEFAULT_TOP_N = 20


class ScreenRun(BaseModel):
    """How a screen runs: jobs, processes, grids and the ranking database.

    Attributes
    ----------
    chunk_size
        Candidates per ``screen_chunk`` job (the unit of work a cluster manager schedules).
    workers
        Processes over which one chunk's candidates run in parallel.
    store_grids
        Save each scored candidate's potential and drag grids in the job store's ``data``
        store (large; off by default).
    db_path
        The SQLite ranking database; None: ``IONDRAG_DB_PATH`` or ``<IONDRAG_HOME>/
        results.sqlite``, read when the jobs run.
    top_n
        Rows of the ranking carried in the final RankingDocument.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_size: int = Field(
        50, ge=1, description="Candidates per job (the unit a cluster manager schedules)."
    )
    workers: int = Field(
        1, ge=1, description="Processes over which one chunk's candidates run in parallel."
    )
    store_grids: bool = Field(
        False, description="Save the potential and drag grids in the job store's data store."
    )
    db_path: str | None = Field(
        None, description="SQLite ranking database; None: IONDRAG_DB_PATH or IONDRAG_HOME."
    )
    top_n: int = Field(DEFAULT_TOP_N, ge=1, description="Rows of the ranking shown and kept.")
