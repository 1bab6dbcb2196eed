"""Thin jobflow jobs over :mod:`screening`: fetch candidates, screen a chunk, rank and store.

Each job validates its inputs, calls the science or database functions, and returns one
pydantic document. ``fetch_candidates`` fans out dynamically: it replaces itself with a flow
of ``screen_chunk`` jobs (``chunk_size`` candidates each) and one ``rank_and_store`` job.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from jobflow import Flow, Job, Response, job
from jobflow.core.job import JobConfig
from jobflow.core.reference import OnMissing

from iondrag.adapters import database
from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.schemas import CandidateGrids, CandidateResult
from iondrag.workflows.parallel import score_candidates
from iondrag.workflows.run_settings import DEFAULT_TOP_N
from iondrag.workflows.schemas import ChunkDocument, FetchDocument, RankingDocument, SourceSpec

__all__ = [
    "fetch_candidates",
    "rank_and_store",
    "resolve_db_path",
    "screen_chunk",
    "screen_chunks",
]


def resolve_db_path(db_path: str | Path | None) -> Path:
    """Return the ranking database: ``db_path``, else the settings' one (read now)."""
    if db_path:
        return Path(db_path).expanduser().resolve()
    from iondrag.screening.settings import get_settings

    return get_settings().resolved_db_path().expanduser().resolve()


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


@job
def fetch_candidates(
    source: SourceSpec,
    parameters: ScreeningParameters,
    run_id: str,
    chunk_size: int = 50,
    workers: int = 1,
    store_grids: bool = False,
    db_path: str | None = None,
    top_n: int = DEFAULT_TOP_N,
    candidates: list[Candidate] | None = None,
) -> Response:
    """Load the candidates, skip or reuse finished ones, fan out over chunks.

    With ``parameters.elastic == "chgnet"`` the candidates left to score first go through
    :func:`iondrag.workflows.ml.attach_chgnet_elastic` (CHGNet elastic tensors for those without
    elastic data), and :func:`screen_chunks` fans out over the chunks afterwards.

    Returns
    -------
    Response
        Output: a :class:`FetchDocument`; ``replace``: a flow of ``screen_chunk`` jobs and
        one ``rank_and_store`` job whose output becomes this job's final output.
    """
    _check_positive(chunk_size=chunk_size, workers=workers)
    if candidates is None:
        candidates = source.load(workers=workers)
    ids = [c.candidate_id for c in candidates]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"candidate ids must be unique in a screen; repeated: {duplicates[:5]}")

    path = resolve_db_path(db_path)
    fingerprints = {c.candidate_id: c.fingerprint() for c in candidates}
    with closing(database.connect(path)) as conn:
        database.start_run(
            conn, run_id, parameters, source.canonical(), n_candidates=len(candidates)
        )
        database.prune_run(conn, run_id, ids)
        finished = database.finished_candidates(conn, run_id)
        pending = [
            c for c in candidates if finished.get(c.candidate_id) != fingerprints[c.candidate_id]
        ]
        reusable = database.find_reusable(
            conn,
            [fingerprints[c.candidate_id] for c in pending],
            parameters.fingerprint(),
            exclude_run_id=run_id,
        )
        n_reused = database.copy_results(conn, run_id, reusable.values())
    todo = [c for c in pending if fingerprints[c.candidate_id] not in reusable]

    common: dict[str, Any] = {
        "chunk_size": chunk_size,
        "workers": workers,
        "store_grids": store_grids,
        "db_path": str(path),
        "expected_candidate_ids": ids,
        "top_n": top_n,
    }
    if parameters.elastic == "chgnet" and todo:
        # CHGNet elastic tensors for candidates without elastic data, then the chunks. The
        # rows keep the fingerprints of the candidates as loaded (reuse and resume key; the
        # parameters' fingerprint says elastic="chgnet")
        from iondrag.workflows.ml import attach_chgnet_elastic

        attach = attach_chgnet_elastic(todo)
        attach.name = "chgnet elastic"
        fan_out = screen_chunks(
            attach.output,
            parameters,
            run_id,
            candidate_fingerprints={c.candidate_id: fingerprints[c.candidate_id] for c in todo},
            **common,
        )
        fan_out.name = "screen chunks"
        replace = Flow([attach, fan_out], output=fan_out.output)
        n_chunks = -(-len(todo) // chunk_size)
    else:
        replace = _chunk_flow(todo, parameters, run_id, **common)
        n_chunks = len(replace.jobs) - 1
    document = FetchDocument(
        run_id=run_id,
        db_path=str(path),
        source=source.canonical(),
        parameters_fingerprint=parameters.fingerprint(),
        n_candidates=len(candidates),
        n_already_finished=len(candidates) - len(pending),
        n_reused=n_reused,
        n_to_score=len(todo),
        n_chunks=n_chunks,
        chunk_size=chunk_size,
        candidate_ids=ids,
    )
    return Response(output=document, replace=replace)


def _chunk_flow(
    candidates: list[Candidate],
    parameters: ScreeningParameters,
    run_id: str,
    *,
    chunk_size: int,
    workers: int,
    store_grids: bool,
    db_path: str,
    expected_candidate_ids: list[str],
    top_n: int,
    candidate_fingerprints: dict[str, str] | None = None,
) -> Flow:
    """Return the ``screen_chunk`` jobs of ``candidates`` and the ``rank_and_store`` job."""
    chunks = [candidates[i : i + chunk_size] for i in range(0, len(candidates), chunk_size)]
    chunk_jobs: list[Job] = []
    for index, chunk in enumerate(chunks):
        chunk_job = screen_chunk(
            chunk,
            parameters,
            run_id,
            chunk_index=index,
            n_chunks=len(chunks),
            workers=workers,
            store_grids=store_grids,
            db_path=db_path,
            candidate_fingerprints=(
                None
                if candidate_fingerprints is None
                else {c.candidate_id: candidate_fingerprints[c.candidate_id] for c in chunk}
            ),
        )
        chunk_job.name = f"screen chunk {index + 1}/{len(chunks)}"
        chunk_jobs.append(chunk_job)
    rank = rank_and_store(
        run_id,
        db_path,
        expected_candidate_ids=expected_candidate_ids,
        chunk_counts=[j.output.n_candidates for j in chunk_jobs],
        top_n=top_n,
    )
    rank.name = "rank and store"
    return Flow([*chunk_jobs, rank], output=rank.output)


@job
def screen_chunks(
    candidates: list[Candidate],
    parameters: ScreeningParameters,
    run_id: str,
    chunk_size: int,
    workers: int,
    store_grids: bool,
    db_path: str,
    expected_candidate_ids: list[str],
    top_n: int = DEFAULT_TOP_N,
    candidate_fingerprints: dict[str, str] | None = None,
) -> Response:
    """Fan out over chunks of candidates known only at run time (e.g. after the elastic flows).

    Returns
    -------
    Response
        ``replace``: the ``screen_chunk`` jobs and the ``rank_and_store`` job, whose output
        becomes this job's output.
    """
    _check_positive(chunk_size=chunk_size, workers=workers)
    flow = _chunk_flow(
        [c if isinstance(c, Candidate) else Candidate.model_validate(c) for c in candidates],
        parameters,
        run_id,
        chunk_size=chunk_size,
        workers=workers,
        store_grids=store_grids,
        db_path=db_path,
        expected_candidate_ids=expected_candidate_ids,
        top_n=top_n,
        candidate_fingerprints=candidate_fingerprints,
    )
    return Response(replace=flow)


@job(data="grids")
def screen_chunk(
    candidates: list[Candidate],
    parameters: ScreeningParameters,
    run_id: str,
    chunk_index: int = 0,
    n_chunks: int = 1,
    workers: int = 1,
    store_grids: bool = False,
    db_path: str | None = None,
    candidate_fingerprints: dict[str, str] | None = None,
) -> ChunkDocument:
    """Score a chunk (over ``workers`` processes), writing each row as it finishes.

    A killed screen loses at most the candidates in flight. With ``store_grids`` the grids
    of scored candidates go to the job store's ``data`` store. ``candidate_fingerprints``
    (candidate_id -> fingerprint) replaces the rows' candidate fingerprints: the candidates
    as loaded, before a workflow step (the CHGNet elastic flows) added elastic data.
    """
    _check_positive(workers=workers)
    started = time.perf_counter()
    path = resolve_db_path(db_path)
    grids: list[CandidateGrids] = []
    with closing(database.connect(path)) as conn:

        def write(
            candidate: Candidate, result: CandidateResult, grid: CandidateGrids | None
        ) -> None:
            if candidate_fingerprints and candidate.candidate_id in candidate_fingerprints:
                result.candidate_fingerprint = candidate_fingerprints[candidate.candidate_id]
            database.insert_results(conn, run_id, [result], {candidate.candidate_id: candidate})
            if grid is not None:
                grids.append(grid)

        outcomes = score_candidates(
            candidates, parameters, workers=workers, keep_grids=store_grids, on_result=write
        )
    return ChunkDocument.from_results(
        [result for result, _ in outcomes],
        grids if store_grids else None,
        run_id=run_id,
        chunk_index=chunk_index,
        n_chunks=n_chunks,
        workers=workers,
        wall_seconds=time.perf_counter() - started,
    )


@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def rank_and_store(
    run_id: str,
    db_path: str,
    expected_candidate_ids: list[str],
    chunk_counts: list[int | None] | None = None,
    top_n: int = DEFAULT_TOP_N,
) -> RankingDocument:
    """Rank the run's rows in the database, mark the run finished, summarise.

    Runs even when a chunk job failed (its rows are then missing: status ``incomplete``;
    rerunning the screen scores them).
    """
    from iondrag.workflows.ranking import contract_records

    with closing(database.connect(db_path)) as conn:
        run = database.finish_run(conn, run_id, expected_candidate_ids=expected_candidate_ids)
        failures = database.failure_counts(conn, run_id)
        ranking = database.read_ranking(conn, run_id)
    return RankingDocument(
        run_id=run_id,
        db_path=str(db_path),
        status=run["status"],
        n_candidates=len(expected_candidate_ids),
        n_ok=run["n_ok"] or 0,
        n_failed=run["n_failed"] or 0,
        n_error=run["n_error"] or 0,
        n_reused=run["n_reused"] or 0,
        n_missing=run["n_missing"] or 0,
        missing_candidate_ids=run["missing_candidate_ids"],
        failures_by_cause=failures,
        top=contract_records(ranking.head(top_n), extra=("rank", "log10_sigma_S_per_cm")),
        started_utc=run["started_utc"],
        finished_utc=run["finished_utc"],
    )
