"""Scoring over worker processes: a killed worker's candidates are scored again."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from iondrag.screening.parameters import ScreeningParameters
from iondrag.workflows.parallel import abort_pools, score_candidates


def _is_busy_worker(process: psutil.Process) -> bool:
    """A pool worker (not the resource tracker), started over 4 s ago (past its imports)."""
    try:
        command = " ".join(process.cmdline())
        return "spawn_main" in command and time.time() - process.create_time() > 4
    except psutil.Error:
        return False


@pytest.mark.slow
def test_a_killed_worker_does_not_lose_candidates(small_candidates) -> None:
    parameters = ScreeningParameters(grid_spacing_A=0.15, arrhenius_temperatures_K=())
    candidates = small_candidates[:3] * 2  # six scorings of three structures
    outcome: dict = {}

    def run() -> None:
        outcome["results"] = score_candidates(candidates, parameters, workers=2)

    try:
        thread = threading.Thread(target=run)
        thread.start()
        me = psutil.Process()
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            workers = [p for p in me.children() if _is_busy_worker(p)]
            if len(workers) == 2:
                victim = workers[0]
            time.sleep(0.1)
        assert victim is not None, "the workers did not start"
        os.kill(victim.pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        results = [result for result, _ in outcome["results"]]
        assert len(results) == 6
        # the killed worker's candidates (and the queued ones) ran again in a fresh pool
        assert [r.status for r in results] == ["ok"] * 6
        assert [r.candidate_id for r in results] == [c.candidate_id for c in candidates]
        for first, second in zip(results[:3], results[3:], strict=True):
            assert first.sigma_S_per_cm == pytest.approx(second.sigma_S_per_cm)
    finally:
        abort_pools()
