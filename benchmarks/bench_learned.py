"""Cost of the learned column per candidate: features and prediction with the default model.

For the embedded candidates (structures from data/embedded, physics records with a typical
headline, barriers and densities), it times on one core:

* features: composition statistics, structure features (space group from spglib when the
  candidate's provenance lacks it) and the physics descriptors of one candidate;
* prediction: the model's forest, interval and nearest-neighbour domain distance, for the
  whole batch (as ``iondrag screen`` calls it) and for one candidate at a time;

and prints milliseconds per candidate (median of --repeat runs) and the model's load time.

    python benchmarks/bench_learned.py [--model data/model/iondrag-learned.joblib] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

from threadpoolctl import threadpool_limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: shipped)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from iondrag.adapters.sources import load_candidates
    from iondrag.workflows.learn import candidate_features, default_model_path, load_model

    path = args.model or default_model_path()
    started = time.perf_counter()
    model = load_model(path)
    load_seconds = time.perf_counter() - started
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = [c for c in load_candidates("embedded") if c.structure is not None]
    record = {
        "error": None,
        "log10_sigma_pred": -4.0,
        "barrier_1d_eV": 0.3,
        "barrier_3d_eV": 0.45,
        "dimensionality": 3,
        "mobile_ion_density_per_m3": 3e28,
    }
    feature_ms, batch_ms, single_ms = [], [], []
    with threadpool_limits(1):
        started = time.perf_counter()  # first pass: pymatgen's space-group tables load once
        model.predict_rows(
            [candidate_features(c, record, c.mobile_ion or "Li") for c in candidates]
        )
        warm_up_seconds = time.perf_counter() - started
        for _ in range(args.repeat):
            started = time.perf_counter()
            rows = [candidate_features(c, record, c.mobile_ion or "Li") for c in candidates]
            feature_ms.append(1e3 * (time.perf_counter() - started) / len(candidates))
            started = time.perf_counter()
            model.predict_rows(rows)
            batch_ms.append(1e3 * (time.perf_counter() - started) / len(candidates))
            started = time.perf_counter()
            for row in rows:
                model.predict_rows([row])
            single_ms.append(1e3 * (time.perf_counter() - started) / len(candidates))
    print(f"model {path} ({path.stat().st_size / 1e6:.2f} MB), loaded in {load_seconds:.2f} s")
    print(
        f"first pass (loads pymatgen's space-group tables, once per process): "
        f"{warm_up_seconds:.2f} s"
    )
    print(f"{len(candidates)} embedded candidates, {args.repeat} repeats, one core (medians)")
    print(f"  features per candidate:             {statistics.median(feature_ms):7.2f} ms")
    print(f"  prediction per candidate, batch:    {statistics.median(batch_ms):7.2f} ms")
    print(f"  prediction per candidate, one call: {statistics.median(single_ms):7.2f} ms")
    total = statistics.median(feature_ms) + statistics.median(batch_ms)
    print(f"  added by the learned column (features + batch prediction): {total:.2f} ms")


if __name__ == "__main__":
    main()
