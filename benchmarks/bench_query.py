"""Benchmark: top-10 query over a 100,000-row ranking table (target: under 50 ms).

Builds a synthetic ranking database with the real schema (iondrag.adapters.database), then times

- the top-10 query of design.md (``ORDER BY sigma_S_per_cm DESC LIMIT 10``) through
  :func:`iondrag.adapters.database.run_query` (what ``iondrag query`` runs: read-only open, checks,
  query) and on an open read-only connection;
- a peer query of the same shape on a column without an index (a full scan and sort),

and prints medians over repeats, in ms, and their ratio.

Usage::

    python benchmarks/bench_query.py [--rows 100000] [--repeats 30] [--db PATH]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path

from iondrag.adapters import database

TOP10 = "SELECT formula, sigma_S_per_cm FROM results ORDER BY sigma_S_per_cm DESC LIMIT 10"
PEER = (
    "SELECT formula, sigma_S_per_cm FROM results ORDER BY log10_sigma_path_S_per_cm DESC LIMIT 10"
)
FORMULAS = ("Li3PS4", "Li7La3Zr2O12", "Li6PS5Cl", "Na3PS4", "LiCoO2", "Li10GeP2S12", "LiF")


def build(path: Path, rows: int, runs: int = 20, seed: int = 7) -> None:
    """Write ``rows`` synthetic results (over ``runs`` runs) with the real schema."""
    rng = random.Random(seed)
    with closing(database.connect(path)) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
        now = database.utc_now()
        batch = []
        for i in range(rows):
            ok = rng.random() > 0.15
            log_sigma = rng.uniform(-25, -1) if ok else None
            row = dict.fromkeys(columns)
            row.update(
                candidate_id=f"cand-{i:06d}",
                formula=rng.choice(FORMULAS),
                source="structure",
                ion="Li",
                temperature_K=300.0,
                status="ok" if ok else "failed",
                error=None if ok else f"cand-{i:06d}: failed [no_percolation]",
                error_cause=None if ok else "no_percolation",
                barrier_eV=rng.uniform(0.1, 2.0) if ok else None,
                dimensionality=rng.choice((1, 2, 3)) if ok else None,
                sigma_S_per_cm=10.0**log_sigma if log_sigma is not None else None,
                log10_sigma_S_per_cm=log_sigma,
                log10_sigma_path_S_per_cm=(log_sigma + rng.gauss(0, 1)) if ok else None,
                parameters_fingerprint="bench",
                candidate_fingerprint=f"fp-{i}",
                run_id=f"run-{i % runs:02d}",
                written_utc=now,
                scored_utc=now,
            )
            batch.append(tuple(row[c] for c in columns))
        marks = ", ".join("?" for _ in columns)
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO results VALUES ({marks})", batch)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def median_ms(action, repeats: int) -> float:
    action()  # warm the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--db", type=Path, help="keep the database here (default: temporary)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.sqlite"
        if path.exists():
            path.unlink()
        start = time.perf_counter()
        build(path, args.rows)
        print(f"built {args.rows} rows in {time.perf_counter() - start:.1f} s ({path})")

        frame = database.run_query(path, TOP10)
        assert len(frame) == 10 and frame["sigma_S_per_cm"].is_monotonic_decreasing
        through_cli = median_ms(lambda: database.run_query(path, TOP10), args.repeats)
        uri = f"file:{path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            open_top10 = median_ms(lambda: conn.execute(TOP10).fetchall(), args.repeats)
            peer = median_ms(lambda: conn.execute(PEER).fetchall(), args.repeats)
            plan = conn.execute("EXPLAIN QUERY PLAN " + TOP10).fetchall()

    print(f"query plan: {[tuple(r)[-1] for r in plan]}")
    print(f"top-10 via run_query (open + checks + query): {through_cli:8.3f} ms  (target < 50)")
    print(f"top-10 on an open connection:                 {open_top10:8.3f} ms")
    print(f"peer query, unindexed column (full scan):      {peer:8.3f} ms")
    print(f"ratio full scan / indexed top-10:              {peer / open_top10:8.1f}")


if __name__ == "__main__":
    main()
