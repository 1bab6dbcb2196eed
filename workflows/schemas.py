"""Pydantic documents of the workflow: the source of a screen and one output per job.

Units are in the field names. Candidate results are
:class:`iondrag.screening.schemas.CandidateResult`
documents; the potential and drag grids are not in these documents but in the job store's
``data`` store (:class:`iondrag.screening.schemas.CandidateGrids`, under the key ``grids``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iondrag.screening.candidates import Candidate
from iondrag.screening.schemas import CandidateGrids, CandidateResult

__all__ = [
    "ChunkDocument",
    "FetchDocument",
    "RankingDocument",
    "SourceSpec",
]

SourceKind = Literal["embedded", "mp", "cif", "candidates"]

#: Options that change how candidates are fetched, not which: left out of the run id
#: (``refresh``: ask the Materials Project again instead of the local cache;
#: ``cache_max_age_days``: how old a cached Materials Project answer may be).
LOAD_ONLY_OPTIONS: frozenset[str] = frozenset({"refresh", "cache_max_age_days"})


class SourceSpec(BaseModel):
    """Where the candidates of a screen come from; its canonical form names the run.

    ``candidates`` is a list given in Python (e.g. generated variants): the flow carries the
    candidates and the spec only their digest.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: SourceKind = "embedded"
    path: str | None = Field(None, description="CIF file or folder (absolute), for 'cif'.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Source options: 'ion' (embedded, cif), MPQuery fields (mp).",
    )
    candidates_digest: str | None = Field(
        None, description="Hash of the candidates' fingerprints, for 'candidates'."
    )

    @classmethod
    def build(
        cls,
        source: str = "embedded",
        path: str | Path | None = None,
        options: dict[str, Any] | None = None,
        candidates: Sequence[Candidate] | None = None,
    ) -> SourceSpec:
        """Normalise a user's choice: absolute CIF path, unset options dropped, digest."""
        clean = {k: v for k, v in (options or {}).items() if v is not None}
        if candidates is not None:
            digest = hashlib.sha256(
                "\n".join(c.fingerprint() for c in candidates).encode()
            ).hexdigest()[:16]
            return cls(source="candidates", options=clean, candidates_digest=digest)
        if source == "cif":
            if path is None:
                raise ValueError("source 'cif' needs a path to a CIF file or folder")
            path = str(Path(path).expanduser().resolve())
        elif path is not None:
            raise ValueError(f"a path is only used with source 'cif', not {source!r}")
        return cls(source=source, path=None if path is None else str(path), options=clean)

    def canonical(self) -> dict[str, Any]:
        """JSON-able canonical form (sorted options): the run id is derived from it."""
        options = {
            key: sorted(value) if isinstance(value, list | tuple | set) else value
            for key, value in sorted(self.options.items())
            if key not in LOAD_ONLY_OPTIONS
        }
        return {
            "source": self.source,
            "path": self.path,
            "options": options,
            "candidates_digest": self.candidates_digest,
        }

    def load(self, *, workers: int = 1) -> list[Candidate]:
        """Load the candidates of a file-backed or remote source (not for 'candidates')."""
        from iondrag.adapters.sources import load_candidates

        if self.source == "candidates":
            raise ValueError("a 'candidates' source carries its candidates in the flow")
        options = dict(self.options)
        if self.source == "cif" and workers > 1:
            from iondrag.workflows.parallel import map_in_pool

            options.update(workers=workers, parallel_map=map_in_pool)
        return load_candidates(self.source, self.path, **options)


class FetchDocument(BaseModel):
    """What the fetch job found: candidates of the source, and what is left to score."""

    run_id: str
    db_path: str
    source: dict[str, Any] = Field(description="The canonical source spec.")
    parameters_fingerprint: str
    n_candidates: int = Field(description="Candidates the source gave (failed loads included).")
    n_already_finished: int = Field(description="Finished in this run before (skipped).")
    n_reused: int = Field(description="Copied from other runs with equal fingerprints.")
    n_to_score: int
    n_chunks: int
    chunk_size: int
    candidate_ids: list[str]


class ChunkDocument(BaseModel):
    """Results of one chunk of candidates (written to the ranking database as they finished)."""

    run_id: str
    chunk_index: int
    n_chunks: int
    workers: int
    n_candidates: int
    n_ok: int
    n_failed: int
    n_error: int
    wall_seconds: float
    results: list[CandidateResult]
    grids: list[CandidateGrids] | None = Field(
        None, description="Potential and drag grids: saved to the job store's data store."
    )

    @classmethod
    def from_results(
        cls,
        results: Sequence[CandidateResult],
        grids: Sequence[CandidateGrids] | None,
        *,
        run_id: str,
        chunk_index: int,
        n_chunks: int,
        workers: int,
        wall_seconds: float,
    ) -> ChunkDocument:
        """Count the statuses and wrap the results."""
        statuses = [r.status for r in results]
        return cls(
            run_id=run_id,
            chunk_index=chunk_index,
            n_chunks=n_chunks,
            workers=workers,
            n_candidates=len(results),
            n_ok=statuses.count("ok"),
            n_failed=statuses.count("failed"),
            n_error=statuses.count("error"),
            wall_seconds=round(wall_seconds, 3),
            results=list(results),
            grids=None if grids is None else list(grids),
        )


class RankingDocument(BaseModel):
    """The outcome of a screen: counts, failures by cause, the top of the ranking."""

    run_id: str
    db_path: str
    status: Literal["finished", "incomplete"]
    n_candidates: int
    n_ok: int
    n_failed: int
    n_error: int
    n_reused: int
    n_missing: int
    missing_candidate_ids: list[str] = Field(default_factory=list)
    failures_by_cause: dict[str, int] = Field(default_factory=dict)
    top: list[dict[str, Any]] = Field(
        default_factory=list, description="Top rows of the ranking (contract columns)."
    )
    started_utc: str | None = None
    finished_utc: str | None = None
