"""Reliability campaign: load, injected faults and concurrent writers, with nothing lost.

Three phases, each through the real ``iondrag screen`` command in subprocesses:

``load``
    A screen of N candidates (default 2,000: CIF files of seeded perturbed variants of small
    binary conductors, every twentieth one a copy of a bad-input file) on ``--workers``
    processes. The RSS of the process tree (screen + workers), of the screen process alone
    and of the largest worker is sampled every 0.5 s against progress (rows in the
    database); printed at 25/50/75/100 % of the candidates, with the growth between 25 % and
    100 %. Then the database is checked: one row and one document per candidate, no NaN/inf.
``faults``
    A new run (another temperature, so nothing is reused) of the first M candidates
    (``--fault-n``), SIGKILLed ``--kills`` times at seeded random moments (by time, or after
    a random number of rows; the whole process group, or only the screen's own process, after
    which its workers must exit by themselves), with ``--worker-kills`` pool workers
    SIGKILLed during the runs, and rerun until finished. Counts rows lost, duplicated,
    and finished rows computed again (``scored_utc`` changed): all must be 0.
``writers``
    ``--writers`` screens at once into one database: disjoint parts of the first M
    candidates, plus the first part a second time (the same run id, concurrently).

Usage::

    python benchmarks/bench_reliability.py                 # N = 2000
    python benchmarks/bench_reliability.py --n 300 --fault-n 60 --json campaign.json

Times and RSS depend on the machine's load; RSS is reported in MB (1e6 bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "reliability"))

from rel_helpers import (  # noqa: E402  (the test helpers: bad-input files, checks)
    antifluorite,
    clean_env,
    nonfinite_cells,
    rocksalt,
    start_cli,
    write_bad_cases,
)

#: Small bases of the load screen: (builder, name); ~0.3-1 s each at 0.3 Å.
BASES: list[tuple[Any, str]] = [
    (lambda: rocksalt("Li", "F", 4.03), "lif"),
    (lambda: rocksalt("Li", "Cl", 5.13), "licl"),
    (lambda: rocksalt("Na", "F", 4.63), "naf"),
    (lambda: rocksalt("Na", "Cl", 5.64), "nacl"),
    (lambda: antifluorite("Li", "O", 4.61), "li2o"),
    (lambda: antifluorite("Li", "S", 5.71), "li2s"),
    (lambda: antifluorite("Na", "O", 5.55), "na2o"),
]

#: Every BAD_EVERY-th candidate is a copy of a bad-input file.
BAD_EVERY = 20


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------


def build_files(folder: Path, n: int, seed: int) -> dict[str, str | None]:
    """Write ``n`` CIFs into ``folder``; return id -> expected failure cause (None: scores)."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    folder.mkdir(parents=True, exist_ok=True)
    bad_folder = folder.parent / "bad-cases"
    expected_bad = write_bad_cases(bad_folder)
    # the screen runs at the default parameters, which estimate the missing Li-P3- softBV
    # pair (estimate_missing_parameters): that case scores, with a warning
    expected_bad["no-params-li3p"] = None
    bad_ids = sorted(expected_bad)
    rng = np.random.default_rng(seed)
    made: dict[str, str | None] = {}
    bases = [(build(), name) for build, name in BASES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            if i % BAD_EVERY == BAD_EVERY - 1:
                bad = bad_ids[(i // BAD_EVERY) % len(bad_ids)]
                candidate_id = f"c{i:05d}-bad-{bad}"
                shutil.copyfile(bad_folder / f"{bad}.cif", folder / f"{candidate_id}.cif")
                made[candidate_id] = expected_bad[bad]
                continue
            structure, name = bases[i % len(bases)]
            strain = np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
            cart = structure.cart_coords + rng.normal(scale=0.03, size=(len(structure), 3))
            variant = Structure(
                Lattice(structure.lattice.matrix @ strain),
                structure.species,
                cart @ strain,
                coords_are_cartesian=True,
            )
            candidate_id = f"c{i:05d}-{name}"
            CifWriter(variant).write_file(folder / f"{candidate_id}.cif")
            made[candidate_id] = None
    return made


def link_subset(source: Path, target: Path, ids: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for candidate_id in ids:
        os.symlink(source / f"{candidate_id}.cif", target / f"{candidate_id}.cif")


# --------------------------------------------------------------------------------------------
# processes, sampling, database
# --------------------------------------------------------------------------------------------


def screen_args(folder: Path, db: Path, args: argparse.Namespace, temperature: float) -> list:
    return [
        "screen",
        folder,
        "--grid",
        str(args.grid),
        "--arrhenius",
        "none",
        "--temperature",
        str(temperature),
        "--workers",
        str(args.workers),
        "--chunk-size",
        str(args.chunk_size),
        "--db",
        db,
        "--quiet",
    ]


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def pool_workers(pid: int) -> list[psutil.Process]:
    found = []
    for process in tree(pid)[1:]:
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            if "spawn_main" in command and "resource_tracker" not in command:
                found.append(process)
    return found


def count_rows(db: Path, run_id: str | None = None) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            if run_id is None:
                return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return int(
                conn.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[
                    0
                ]
            )
    except sqlite3.Error:
        return 0


class Sampler:
    """Sample RSS (tree, screen process, largest worker) and progress every ``interval_s``."""

    def __init__(self, pid: int, db: Path, interval_s: float = 0.5) -> None:
        self.pid, self.db, self.interval_s = pid, db, interval_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.start = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.is_set():
            processes = tree(self.pid)
            rss = []
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    rss.append((process.pid, process.memory_info().rss / 1e6))
            if rss:
                main = next((r for p, r in rss if p == self.pid), 0.0)
                workers = [r for p, r in rss if p != self.pid]
                self.samples.append(
                    {
                        "t_s": time.perf_counter() - self.start,
                        "rows": count_rows(self.db),
                        "tree_MB": sum(r for _, r in rss),
                        "main_MB": main,
                        "worker_max_MB": max(workers, default=0.0),
                        "n_processes": len(rss),
                    }
                )
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def finished_stamps(db: Path, run_id: str | None) -> dict[str, str]:
    if not db.exists() or run_id is None:
        return {}
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        return dict(
            conn.execute(
                "SELECT candidate_id, scored_utc FROM results WHERE run_id = ? "
                "AND status IN ('ok', 'failed')",
                (run_id,),
            ).fetchall()
        )


def run_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(db, timeout=60)) as conn:
            return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY started_utc")]
    except sqlite3.Error:
        return []


def check_run(db: Path, run_id: str, expected: dict[str, str | None]) -> dict[str, Any]:
    """Rows lost, duplicated or unexpected; statuses and causes against what was expected."""
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        table = conn.execute(
            "SELECT candidate_id, status, error_cause FROM results WHERE run_id = ?", (run_id,)
        ).fetchall()
        documents = {
            r[0]
            for r in conn.execute("SELECT candidate_id FROM documents WHERE run_id = ?", (run_id,))
        }
        run = conn.execute(
            "SELECT status, n_starts, n_missing FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    ids = [r[0] for r in table]
    causes = Counter(r[2] for r in table if r[1] != "ok")
    wrong = [
        (cid, status, cause, expected.get(cid))
        for cid, status, cause in table
        if (status == "ok") != (expected.get(cid) is None)
        or (status != "ok" and cause != expected.get(cid))
    ]
    return {
        "n_expected": len(expected),
        "n_rows": len(ids),
        "rows_lost": len(set(expected) - set(ids)),
        "rows_duplicated": len(ids) - len(set(ids)),
        "rows_unexpected": len(set(ids) - set(expected)),
        "rows_without_document": len(set(ids) - documents),
        "n_ok": sum(1 for r in table if r[1] == "ok"),
        "n_error": sum(1 for r in table if r[1] == "error"),
        "failures_by_cause": dict(causes.most_common()),
        "unexpected_outcomes": wrong[:10],
        "n_unexpected_outcomes": len(wrong),
        "run_status": run[0] if run else None,
        "n_starts": run[1] if run else None,
    }


# --------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------


def phase_load(folder: Path, expected: dict, work: Path, args: argparse.Namespace) -> dict:
    db = work / "load.sqlite"
    env = clean_env(work / "load-env")
    start = time.perf_counter()
    process = start_cli(screen_args(folder, db, args, 300.0), env)
    with Sampler(process.pid, db) as sampler:
        _, stderr = process.communicate()
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"load screen failed ({process.returncode}): {stderr[-800:]}")
    (run_id,) = run_ids(db)
    check = check_run(db, run_id, expected)
    check["nonfinite_cells"] = len(nonfinite_cells(db))
    n = len(expected)
    samples = sampler.samples
    quarters = {}
    for fraction in (0.25, 0.5, 0.75, 1.0):
        upto = [s for s in samples if s["rows"] <= fraction * n]
        at = next((s for s in samples if s["rows"] >= fraction * n), samples[-1])
        quarters[f"{int(fraction * 100)}%"] = {
            "rows": at["rows"],
            "t_s": round(at["t_s"], 1),
            "tree_MB": round(at["tree_MB"], 1),
            "main_MB": round(at["main_MB"], 1),
            "worker_max_MB": round(at["worker_max_MB"], 1),
            "peak_tree_MB_so_far": round(max((s["tree_MB"] for s in upto), default=0.0), 1),
        }
    scoring = [s for s in samples if s["rows"] > 0]
    slope = None
    if len(scoring) > 10:
        rows_ = np.array([s["rows"] for s in scoring], float)
        main = np.array([s["main_MB"] for s in scoring])
        if np.ptp(rows_) > 0:
            slope = float(np.polyfit(rows_, main, 1)[0]) * 1000.0
    return {
        "n": n,
        "wall_s": round(elapsed, 1),
        "candidates_per_s": round(n / elapsed, 2),
        "peak_tree_MB": round(max(s["tree_MB"] for s in samples), 1),
        "peak_main_MB": round(max(s["main_MB"] for s in samples), 1),
        "peak_worker_MB": round(max(s["worker_max_MB"] for s in samples), 1),
        "rss_by_progress": quarters,
        "main_rss_slope_MB_per_1000_candidates": None if slope is None else round(slope, 2),
        "check": check,
        "n_samples": len(samples),
        "samples": samples[:: max(1, len(samples) // 200)],
    }


def _wait(process: subprocess.Popen, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if predicate():
            return True
        time.sleep(0.05)
    return False


def phase_faults(folder: Path, expected: dict, work: Path, args: argparse.Namespace) -> dict:
    """Kill the screen (and workers) at random moments, rerun until finished."""
    rng = random.Random(args.seed)
    db = work / "faults.sqlite"
    env = clean_env(work / "faults-env")
    arguments = screen_args(folder, db, args, 350.0)
    n = len(expected)
    kills: list[dict[str, Any]] = []
    worker_kills: list[dict[str, Any]] = []
    orphans_left = 0
    rewritten = 0
    kept: dict[str, str] = {}
    launches = 0
    worker_kills_left = args.worker_kills
    for index in range(args.kills + 1):
        final = index == args.kills
        process = start_cli(arguments, env)
        launches += 1
        run_id = None
        # a worker kill in this launch, at a random number of rows
        if worker_kills_left and rng.random() < 0.7:
            at_rows = count_rows(db) + rng.randint(1, max(1, n // (2 * (args.kills + 1))))
            if _wait(process, lambda at=at_rows: count_rows(db) >= at, 3600):
                workers = pool_workers(process.pid)
                if workers:
                    victim = rng.choice(workers)
                    with contextlib.suppress(psutil.Error):
                        victim.send_signal(signal.SIGKILL)
                        worker_kills.append({"launch": launches, "rows": count_rows(db)})
                        worker_kills_left -= 1
        if final:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"final faults run failed: {stderr[-800:]}")
            break
        mode = rng.choice(["group", "group", "main-only"])
        if rng.random() < 0.3:
            trigger = ("time", rng.uniform(0.5, 6.0))
            time.sleep(trigger[1])
            running = process.poll() is None
        else:
            trigger = ("rows", count_rows(db) + rng.randint(1, max(1, n // (args.kills + 1))))
            running = _wait(process, lambda at=trigger[1]: count_rows(db) >= at, 3600)
            time.sleep(rng.uniform(0.0, 1.0))
            running = running and process.poll() is None
        if not running:
            process.communicate()
            kills.append({"mode": mode, "trigger": trigger, "injected": False})
            continue
        children = tree(process.pid)[1:]
        if mode == "main-only":
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(_alive(c) for c in children):
                time.sleep(0.2)
            left = [c for c in children if _alive(c)]
            orphans_left += len(left)
            for child in left:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            process.communicate()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        ids = run_ids(db)
        run_id = ids[0] if ids else None
        stamps = finished_stamps(db, run_id)
        rewritten += sum(1 for k, v in kept.items() if stamps.get(k) != v)
        kept = stamps
        kills.append(
            {
                "mode": mode,
                "trigger": [trigger[0], round(trigger[1], 2)],
                "injected": True,
                "rows_at_kill": count_rows(db),
            }
        )
    (run_id,) = run_ids(db)
    final_stamps = finished_stamps(db, run_id)
    rewritten += sum(1 for k, v in kept.items() if final_stamps.get(k) != v)
    check = check_run(db, run_id, expected)
    check["nonfinite_cells"] = len(nonfinite_cells(db))
    return {
        "n": n,
        "launches": launches,
        "process_kills": [k for k in kills if k["injected"]],
        "kills_missed": sum(1 for k in kills if not k["injected"]),
        "worker_kills": worker_kills,
        "orphans_after_main_only_kills": orphans_left,
        "finished_rows_rescored": rewritten,
        "check": check,
    }


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def phase_writers(files: Path, expected: dict, work: Path, args: argparse.Namespace) -> dict:
    """``writers`` screens at once into one database (disjoint parts + one duplicate)."""
    db = work / "writers.sqlite"
    env = clean_env(work / "writers-env")
    ids = sorted(expected)
    parts = max(1, args.writers - 1)
    folders = []
    for index in range(parts):
        folder = work / f"writer-{index}"
        link_subset(files, folder, ids[index::parts])
        folders.append(folder)
    commands = [screen_args(f, db, args, 400.0) for f in folders]
    commands.append(commands[0])  # the first part again, same run, at the same time
    start = time.perf_counter()
    processes = [start_cli(c, env) for c in commands]
    failures = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            failures.append(stderr[-400:])
    elapsed = time.perf_counter() - start
    checks = {}
    with closing(sqlite3.connect(db, timeout=60)) as conn:
        runs = {r[0]: r[1] for r in conn.execute("SELECT run_id, source_json FROM runs")}
    for run_id, source in runs.items():
        path = json.loads(source)["path"]
        index = [str(f.resolve()) for f in folders].index(path)
        part = {k: expected[k] for k in ids[index::parts]}
        checks[Path(path).name] = check_run(db, run_id, part)
    return {
        "writers": len(commands),
        "distinct_runs": len(runs),
        "wall_s": round(elapsed, 1),
        "failed_writers": failures,
        "checks": checks,
        "nonfinite_cells": len(nonfinite_cells(db)),
    }


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="candidates of the load screen")
    parser.add_argument("--fault-n", type=int, default=120, help="candidates of the fault runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--grid", type=float, default=0.3, help="grid spacing, Å")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the screen")
    parser.add_argument("--worker-kills", type=int, default=2, help="SIGKILLs of a pool worker")
    parser.add_argument("--writers", type=int, default=3, help="concurrent screens, >= 2")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phases", default="load,faults,writers")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iondrag-rel-")))
        start = time.perf_counter()
        files = work / "cifs"
        expected = build_files(files, args.n, args.seed)
        print(
            f"built {len(expected)} CIFs ({sum(v is not None for v in expected.values())} bad) "
            f"in {time.perf_counter() - start:.1f} s; load {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        subset_ids = sorted(expected)[: min(args.fault_n, len(expected))]
        subset = {k: expected[k] for k in subset_ids}
        report: dict[str, Any] = {"arguments": {k: str(v) for k, v in vars(args).items()}}
        if "load" in phases:
            report["load"] = phase_load(files, expected, work, args)
            _print_load(report["load"])
        if "faults" in phases:
            link_subset(files, work / "fault-cifs", subset_ids)
            report["faults"] = phase_faults(work / "fault-cifs", subset, work, args)
            _print_faults(report["faults"])
        if "writers" in phases:
            report["writers"] = phase_writers(files, subset, work, args)
            _print_writers(report["writers"])
        _print_summary(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


def _print_load(load: dict) -> None:
    check = load["check"]
    print(
        f"\nLOAD: {load['n']} candidates in {load['wall_s']} s ({load['candidates_per_s']}/s); "
        f"peak RSS tree {load['peak_tree_MB']} MB, screen process {load['peak_main_MB']} MB, "
        f"largest worker {load['peak_worker_MB']} MB"
    )
    print("  progress   rows     t(s)   tree MB   screen MB   worker MB   peak tree so far")
    for label, q in load["rss_by_progress"].items():
        print(
            f"  {label:>7} {q['rows']:6d} {q['t_s']:8.1f} {q['tree_MB']:9.1f} {q['main_MB']:11.1f} "
            f"{q['worker_max_MB']:11.1f} {q['peak_tree_MB_so_far']:14.1f}"
        )
    print(
        f"  screen-process RSS slope: {load['main_rss_slope_MB_per_1000_candidates']} MB per "
        "1000 candidates (linear fit over the scoring)"
    )
    print(f"  database: {_check_line(check)}; non-finite cells {check['nonfinite_cells']}")


def _check_line(check: dict) -> str:
    return (
        f"{check['n_rows']} rows for {check['n_expected']} candidates, lost "
        f"{check['rows_lost']}, duplicated {check['rows_duplicated']}, unexpected "
        f"{check['rows_unexpected']}, without document {check['rows_without_document']}, "
        f"ok {check['n_ok']}, error {check['n_error']}, failures {check['failures_by_cause']}, "
        f"outcomes not as expected {check['n_unexpected_outcomes']}, run {check['run_status']} "
        f"after {check['n_starts']} start(s)"
    )


def _print_faults(faults: dict) -> None:
    print(
        f"\nFAULTS: {faults['n']} candidates, {faults['launches']} launches; process kills "
        f"{len(faults['process_kills'])} ({faults['kills_missed']} planned kills found the "
        f"screen finished), worker kills {len(faults['worker_kills'])}"
    )
    for kill in faults["process_kills"]:
        print(
            f"  kill {kill['mode']:9s} trigger {kill['trigger']} -> rows at kill "
            f"{kill['rows_at_kill']}"
        )
    for kill in faults["worker_kills"]:
        print(f"  worker kill during launch {kill['launch']} at {kill['rows']} rows")
    print(
        f"  orphans after main-only kills: {faults['orphans_after_main_only_kills']}; finished "
        f"rows scored again: {faults['finished_rows_rescored']}"
    )
    print(f"  database: {_check_line(faults['check'])}")


def _print_writers(writers: dict) -> None:
    print(
        f"\nWRITERS: {writers['writers']} concurrent screens ({writers['distinct_runs']} runs) in "
        f"{writers['wall_s']} s; failed writers {len(writers['failed_writers'])}"
    )
    for name, check in writers["checks"].items():
        print(f"  {name}: {_check_line(check)}")


def _print_summary(report: dict) -> None:
    tried = 0
    lost = duplicated = errors = wrong = 0
    causes: Counter = Counter()
    checks = []
    if "load" in report:
        checks.append(report["load"]["check"])
    if "faults" in report:
        checks.append(report["faults"]["check"])
    if "writers" in report:
        checks += list(report["writers"]["checks"].values())
    for check in checks:
        tried += check["n_expected"]
        lost += check["rows_lost"]
        duplicated += check["rows_duplicated"]
        errors += check["n_error"]
        wrong += check["n_unexpected_outcomes"]
        causes.update(check["failures_by_cause"])
    faults = report.get("faults", {})
    writers = report.get("writers", {})
    print("\nSUMMARY")
    print(f"  candidates tried: {tried} (over {len(checks)} runs)")
    print(f"  failures by cause: {dict(causes.most_common())}")
    print(
        f"  faults injected: {len(faults.get('process_kills', []))} screen kills, "
        f"{len(faults.get('worker_kills', []))} worker kills, "
        f"{writers.get('writers', 0)} concurrent writers"
    )
    print(
        f"  rows lost: {lost}; duplicated: {duplicated}; error rows: {errors}; outcomes not as "
        f"expected: {wrong}; finished rows scored again: "
        f"{faults.get('finished_rows_rescored', 0)}; orphan processes: "
        f"{faults.get('orphans_after_main_only_kills', 0)}"
    )
    if "load" in report:
        load = report["load"]
        q = load["rss_by_progress"]
        print(
            "  peak RSS (tree) vs progress: "
            + ", ".join(f"{k} {v['peak_tree_MB_so_far']} MB" for k, v in q.items())
            + f"; screen process {q['25%']['main_MB']} -> {q['100%']['main_MB']} MB"
        )


if __name__ == "__main__":
    main()
