"""Score the candidates of one chunk in parallel over processes (spawn-safe).

Workers are started with the ``spawn`` method (no fork of a process that holds threads,
database connections or a progress bar) and kept for the life of the process, so that a
local screen pays the start-up of its workers (importing pymatgen and scipy, about two
seconds) once, not once per chunk. Each worker runs with one BLAS/OpenMP thread: the
parallelism is over candidates.

Nothing heavy is imported here at module level: spawned workers import this module before
they set their thread limits.
"""

from __future__ import annotations

import atexit
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.schemas import CandidateGrids, CandidateResult

__all__ = ["ScoreCallback", "abort_pools", "prestart", "score_candidates", "shutdown_pools"]

ScoreCallback = Callable[["Candidate", "CandidateResult", "CandidateGrids | None"], None]

#: Environment variables that cap the threads of numerical libraries in each worker.
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_POOLS: dict[int, ProcessPoolExecutor] = {}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def available_memory_MB() -> float | None:
    """MemAvailable of /proc/meminfo in MB, None where it cannot be read (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def worker_cap(
    requested: int,
    *,
    n_candidates: int | None,
    memory_budget_MB: float,
    cpus: int | None = None,
    memory_MB: float | None = None,
) -> tuple[int, list[str]]:
    """Workers a screen can use: ``requested`` capped by candidates, CPUs and memory.

    Parameters
    ----------
    requested
        Workers asked for (>= 1).
    n_candidates
        Candidates to score, when known: more workers than candidates only cost memory.
    memory_budget_MB
        The memory budget, MB: the peak resident memory of a worker scoring a candidate,
        the worker's own included (the grids are planned to fit it, ``iondrag.screening.memory``);
        at least :data:`iondrag.screening.memory.BASE_MB`, a worker at rest.
    cpus, memory_MB
        Available CPUs and memory (MB); default: this machine's (:func:`available_cpus`,
        :func:`available_memory_MB`).

    Returns
    -------
    workers, reasons
        The capped count (>= 1) and, when it is below ``requested``, why (for one line on
        stderr).
    """
    cpus = available_cpus() if cpus is None else cpus
    memory_MB = available_memory_MB() if memory_MB is None else memory_MB
    limits = [(requested, "")]
    if n_candidates is not None:
        limits.append((max(1, n_candidates), f"{n_candidates} candidates"))
    # more processes than CPUs only share them (and each holds its own grids): 2x at most
    limits.append((2 * cpus, f"{cpus} CPUs"))
    if memory_MB is not None:
        from iondrag.screening.memory import BASE_MB

        per_worker = max(memory_budget_MB, BASE_MB)
        limits.append(
            (
                max(1, int(memory_MB // per_worker)),
                f"{memory_MB / 1024:.1f} GB available at {per_worker / 1024:.2f} GB per worker "
                "(the memory budget, IONDRAG_MEMORY_BUDGET_MB)",
            )
        )
    workers = min(limit for limit, _ in limits)
    reasons = [reason for limit, reason in limits[1:] if limit == workers and workers < requested]
    return workers, reasons


#: How often a worker checks that the process that started it is still alive (s).
PARENT_CHECK_S: float = 1.0


def _score(
    candidate: Candidate, parameters: ScreeningParameters, keep_grids: bool
) -> tuple[CandidateResult, CandidateGrids | None]:
    """Worker task: :func:`iondrag.screening.pipeline.score_candidate` (never raises for input)."""
    from iondrag.screening.pipeline import score_candidate

    return score_candidate(candidate, parameters, keep_grids=keep_grids)


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Set the thread caps in the environment the workers are spawned with."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit as soon as the process that started this worker is gone.

    A screen killed with SIGKILL (``kill -9``, the OOM killer) cannot stop its workers, and
    a worker waiting for its next task would otherwise wait forever (an orphan holding its
    memory). A daemon thread polls the parent pid and ends the worker when it changes.
    """
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="iondrag-parent-watch", daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    pool = _POOLS.get(workers)
    if pool is None:
        import multiprocessing

        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        _POOLS[workers] = pool
    return pool


def _warm_up() -> int:
    """Worker task: import the science modules (done once per worker process)."""
    import iondrag.screening.pipeline  # noqa: F401

    return os.getpid()


def prestart(workers: int) -> None:
    """Start ``workers`` worker processes now, importing the science in the background.

    For a local screen: the workers start while this process loads the candidates, instead
    of when the first chunk is submitted. A no-op for ``workers`` <= 1.
    """
    if workers <= 1:
        return
    with _single_threaded_children():
        pool = _pool(workers)
        for _ in range(workers):
            pool.submit(_warm_up)


def _discard_pool(workers: int) -> None:
    pool = _POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def shutdown_pools() -> None:
    """Stop the cached worker processes (also done at exit)."""
    for workers in list(_POOLS):
        pool = _POOLS.pop(workers)
        pool.shutdown(wait=True, cancel_futures=True)


def abort_pools() -> None:
    """Stop the cached worker processes now, cancelling queued work (e.g. unused warm-ups)."""
    for workers in list(_POOLS):
        _abort_pool(workers)


atexit.register(shutdown_pools)


def map_in_pool(function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """Return ``[function(item) for item in items]``, computed in the shared worker pool.

    The one process pool of iondrag (screen, validate and CIF parsing share it): ``workers``
    spawned processes that end with their parent. Serial for one worker or one item, and
    when no process can be started here (e.g. inside a daemonic process).
    """
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    workers = min(workers, len(items))
    try:
        with _single_threaded_children():
            pool = _pool(workers)
            chunksize = max(1, len(items) // (4 * workers))
            return list(pool.map(function, items, chunksize=chunksize))
    except BrokenProcessPool:
        _discard_pool(workers)
        raise
    except (OSError, AssertionError, RuntimeError) as error:
        warnings.warn(
            f"parallel work unavailable ({' '.join(str(error).split())[:120]}); serially",
            RuntimeWarning,
            stacklevel=2,
        )
        return [function(item) for item in items]


def run_each_in_pool(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    workers: int,
    on_done: Callable[[int, Any, BaseException | None], None],
) -> None:
    """Run ``function(item)`` for every item in the shared pool, reporting each as it ends.

    ``on_done(index, result, error)`` is called in this process as each item finishes (in
    completion order): ``error`` is the exception of a task that raised or whose worker
    died (the pool is then replaced for the tasks that follow). Serial for one worker.
    """
    if workers <= 1 or len(items) <= 1:
        for index, item in enumerate(items):
            on_done(index, function(item), None)
        return
    workers = min(workers, len(items))
    with _single_threaded_children():
        pool = _pool(workers)
        futures = {pool.submit(function, item): index for index, item in enumerate(items)}
    broken = False
    for future in as_completed(futures):
        try:
            result, error = future.result(), None
        except Exception as exc:  # a worker died (killed, out of memory) or the task raised
            result, error = None, exc
            broken = broken or isinstance(exc, BrokenProcessPool)
        on_done(futures[future], result, error)
    if broken:
        _discard_pool(workers)


def _cost(candidate: Candidate) -> float:
    """Estimate the work (grid points scale with the cell volume); failed loads cost nothing."""
    if not candidate.ok or candidate.structure is None:
        return 0.0
    return float(candidate.structure.volume)


def _failed(
    candidate: Candidate, parameters: ScreeningParameters, error: BaseException
) -> tuple[CandidateResult, None]:
    """Return an ``error`` result for a candidate whose worker died or whose result was lost."""
    from iondrag.screening.schemas import CandidateResult

    if isinstance(error, BrokenProcessPool):
        error = RuntimeError(
            f"a worker process died while scoring ({error or 'killed or out of memory'}); "
            "rerun the screen to retry"
        )
    result = CandidateResult.from_failure(
        candidate,
        error,
        temperature_K=parameters.temperature_K,
        parameters_fingerprint=parameters.fingerprint(),
        ion=parameters.ion or candidate.mobile_ion,
    )
    return result, None


def _abort_pool(workers: int) -> None:
    """Cancel what is queued and stop the workers now (results in flight are lost)."""
    pool = _POOLS.pop(workers, None)
    if pool is None:
        return
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def score_candidates(
    candidates: Sequence[Candidate],
    parameters: ScreeningParameters,
    *,
    workers: int = 1,
    keep_grids: bool = False,
    on_result: ScoreCallback | None = None,
) -> list[tuple[CandidateResult, CandidateGrids | None]]:
    """Score candidates, in parallel over ``workers`` processes when more than one.

    Parameters
    ----------
    candidates
        The candidates (failed loads included: they become failed results at once).
    parameters
        Physics and numerics.
    workers
        Processes; 1 scores in this process.
    keep_grids
        Return the grids of scored candidates (for the job store's data store).
    on_result
        Called in this process as each candidate finishes (largest cells are started
        first), e.g. to write its row to the ranking database at once.

    Returns
    -------
    list of (CandidateResult, CandidateGrids or None)
        In the order of ``candidates``. When a worker process dies (killed, out of memory)
        the candidates that were running or queued are scored again once in a fresh pool;
        if that pool breaks too they get status ``error`` (retried by the next run of the
        same screen).
    """
    from iondrag.screening.pipeline import score_candidate

    order = sorted(range(len(candidates)), key=lambda i: -_cost(candidates[i]))
    results: dict[int, tuple[CandidateResult, CandidateGrids | None]] = {}

    def finish(index: int, outcome: tuple[CandidateResult, CandidateGrids | None]) -> None:
        results[index] = outcome
        if on_result is not None:
            on_result(candidates[index], outcome[0], outcome[1])

    parallel = [i for i in order if _cost(candidates[i]) > 0]
    if workers <= 1 or len(parallel) <= 1:
        for index in order:
            finish(index, score_candidate(candidates[index], parameters, keep_grids=keep_grids))
        return [results[i] for i in range(len(candidates))]

    computed = set(parallel)
    for index in order:  # failed loads: nothing to compute
        if index not in computed:
            finish(index, score_candidate(candidates[index], parameters, keep_grids=keep_grids))
    pending = parallel
    broken_again = False
    for attempt in (1, 2):  # a second round, in a fresh pool, for a pool that broke
        futures: dict[Future, int] = {}
        with _single_threaded_children():
            pool = _pool(workers)
            for index in pending:
                futures[pool.submit(_score, candidates[index], parameters, keep_grids)] = index
        retry: list[int] = []
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool as error:
                    if attempt == 1:
                        retry.append(index)
                        continue
                    broken_again = True
                    outcome = _failed(candidates[index], parameters, error)
                except Exception as error:  # e.g. a result that cannot be sent back
                    outcome = _failed(candidates[index], parameters, error)
                finish(index, outcome)
        except BaseException:  # interrupted (Ctrl-C) or a failing callback: stop the workers
            _abort_pool(workers)
            raise
        if not retry:
            break
        _discard_pool(workers)
        pending = sorted(retry, key=lambda i: -_cost(candidates[i]))
    if broken_again:
        _discard_pool(workers)
    return [results[i] for i in range(len(candidates))]
