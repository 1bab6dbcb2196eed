"""Tests of the validation against measured conductivities (screening/metrics.py).

The metric functions are checked against independent implementations written here (ranks and
the Pearson formula, brute-force pair counting) and hand-made examples with known answers,
including ties and upper bounds. End to end: a synthetic folder of simple CIFs (always runs)
and a small OBELiX subset (skipped when the data are absent; CC BY 4.0, Therrien et al.,
arXiv:2502.14234).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from iondrag.adapters.table import DATA_ATTRIBUTION, parse_conductivity, read_conductivity_table
from iondrag.screening.metrics import (
    ABLATIONS,
    auc_mann_whitney,
    censored_best_shift,
    censored_errors,
    censored_mae,
    censored_monotone_mae,
    censored_signed_errors,
    evaluate_records,
    kendall,
    paired_bootstrap_spearman_difference,
    precision_at_k,
    scored_records,
    spearman,
)
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.units import KB_EV_PER_K
from iondrag.workflows.validate import ValidationReport, json_safe, run_validation

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = ScreeningParameters(grid_spacing_A=0.3, arrhenius_temperatures_K=())
CONTRACT_KEYS = {
    "n_scored",
    "n_failed",
    "spearman",
    "kendall",
    "roc_auc_1e-4",
    "seconds_per_structure_median",
    "per_structure",
    "mae_log10",
    "precision_at_10",
    "coverage",
    "failures_by_cause",
    "per_family",
    "ablations",
    "upper_bounds_count",
    "seconds_per_structure_p90",
    "parameters",
    "iondrag_version",
    "data_attribution",
    "mae_log10_best_constant",
    "mae_log10_best_monotone",
    "baseline_constant",
}
ABLATION_NAMES = {
    "barrier_3d",
    "barrier_1d",
    "mobile_ion_density",
    "path_constant_drag",
    "global_lambda",
    "homogenised",
    "path_formula",
    "overdamped",
}


# ---------------------------------------------------------------------------------------
# Independent reference implementations
# ---------------------------------------------------------------------------------------


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties get the mean of their positions (plain Python)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def ref_spearman(x: list[float], y: list[float]) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def ref_kendall_tau_b(x: list[float], y: list[float]) -> float:
    concordant = discordant = tied_x = tied_y = 0
    pairs = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        pairs += 1
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0:
            tied_x += 1
        if dy == 0:
            tied_y += 1
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def ref_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def ref_censored_mae(pred: list[float], exp: list[float], bound: list[bool]) -> float:
    errors = []
    for p, e, b in zip(pred, exp, bound, strict=True):
        errors.append((p - e if p > e else 0.0) if b else abs(p - e))
    return sum(errors) / len(errors)


# ---------------------------------------------------------------------------------------
# Metric functions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_and_kendall_match_independent_code_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = [float(v) for v in rng.integers(0, 6, 25)]  # many ties
    y = [float(v) + 0.5 * float(w) for v, w in zip(x, rng.integers(-3, 4, 25), strict=True)]
    y[3] = y[4] = y[5]  # ties in the other variable too
    assert spearman(x, y) == pytest.approx(ref_spearman(x, y), abs=1e-12)
    assert kendall(x, y) == pytest.approx(ref_kendall_tau_b(x, y), abs=1e-12)


def test_rank_metrics_known_values_and_undefined_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 not
    assert spearman([-np.inf, 1.0, 2.0], [0.0, 1.0, 2.0]) == pytest.approx(1.0)  # -inf ranks low
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant predictor
    assert kendall([1, 2], [1, 2]) is None  # too few pairs
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_auc_hand_example_with_ties_counted_half() -> None:
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    labels = [True, True, False, True, False]
    # positive-negative pairs: (0.9,0.8) 1, (0.9,0.1) 1, (0.8,0.8) 1/2, (0.8,0.1) 1,
    # (0.3,0.8) 0, (0.3,0.1) 1 -> 4.5 / 6
    assert auc_mann_whitney(scores, labels) == pytest.approx(4.5 / 6)
    assert auc_mann_whitney([1, 1, 1, 1], [True, False, True, False]) == pytest.approx(0.5)
    assert auc_mann_whitney([1, 2], [True, True]) is None  # one class only


@pytest.mark.parametrize("seed", [3, 4])
def test_auc_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = [float(v) for v in rng.integers(0, 8, 40)]
    labels = [bool(v) for v in rng.integers(0, 2, 40)]
    assert auc_mann_whitney(scores, labels) == pytest.approx(ref_auc(scores, labels), abs=1e-12)


def test_precision_at_k_hand_examples() -> None:
    scores = [5, 4, 3, 2, 1]
    labels = [True, False, True, False, False]
    assert precision_at_k(scores, labels, 2) == pytest.approx(0.5)
    assert precision_at_k(scores, labels, 3) == pytest.approx(2 / 3)
    assert precision_at_k(scores, labels, 10) == pytest.approx(2 / 5)  # k = n when n < k
    # a tie at the cut: one place left for the group {2 (pos), 2 (neg), 2 (neg)} -> 1/3 expected
    assert precision_at_k([3, 2, 2, 2], [True, True, False, False], 2) == pytest.approx(
        (1 + 1 / 3) / 2
    )
    # order of the input does not matter
    assert precision_at_k([2, 2, 3, 2], [False, True, True, False], 2) == pytest.approx(
        (1 + 1 / 3) / 2
    )
    assert precision_at_k([], [], 10) is None


def test_censored_mae_and_errors() -> None:
    pred = [-3.0, -9.0, -11.0, -5.0]
    exp = [-4.0, -10.0, -10.0, -5.5]
    bound = [False, True, True, False]
    # exact: 1.0 and 0.5; bounds: -9 above -10 -> 1.0; -11 below -10 -> 0
    assert censored_errors(pred, exp, bound).tolist() == [1.0, 1.0, 0.0, 0.5]
    assert censored_mae(pred, exp, bound) == pytest.approx(2.5 / 4)
    assert censored_mae(pred, exp) == pytest.approx((1 + 1 + 1 + 0.5) / 4)  # no bounds: plain
    assert censored_mae(pred, exp, bound) == pytest.approx(ref_censored_mae(pred, exp, bound))


def test_signed_errors_keep_the_sign_of_exact_values_only() -> None:
    pred = [-3.0, -9.0, -11.0, -6.0]
    exp = [-4.0, -10.0, -10.0, -5.5]
    bound = [False, True, True, False]
    assert censored_signed_errors(pred, exp, bound).tolist() == [1.0, 1.0, 0.0, -0.5]


def test_scored_records_drop_failures_missing_values_and_optionally_zero_sigma() -> None:
    records = [
        {"id": "a", "error": None, "log10_sigma_pred": -3.0, "log10_sigma_exp": -4.0},
        {"id": "b", "error": "oxidation_states", "log10_sigma_pred": None},
        {"id": "c", "error": None, "log10_sigma_pred": None, "log10_sigma_exp": -4.0},
        {"id": "d", "error": None, "log10_sigma_pred": -2.0, "log10_sigma_exp": None},
        {"id": "e", "error": None, "log10_sigma_pred": float("-inf"), "log10_sigma_exp": -9.0},
    ]
    assert [r["id"] for r in scored_records(records)] == ["a", "e"]
    assert [r["id"] for r in scored_records(records, finite_prediction=True)] == ["a"]


def test_censored_best_shift_minimises_the_censored_mae() -> None:
    rng = np.random.default_rng(7)
    pred = rng.normal(-6, 2, 30)
    exp = rng.normal(-5, 2, 30)
    bound = rng.random(30) < 0.3
    shift, mae = censored_best_shift(pred, exp, bound)
    assert mae == pytest.approx(censored_mae(pred + shift, exp, bound))
    grid = np.linspace(-10, 10, 4001)
    brute = min(censored_mae(pred + c, exp, bound) for c in grid)
    assert mae <= brute + 1e-12
    # exact values only: the median of the differences (odd n: unique)
    shift, _ = censored_best_shift([0.0, 0.0, 0.0], [1.0, 2.0, 5.0])
    assert shift == pytest.approx(2.0)
    # even n: the middle of the flat interval
    shift, mae = censored_best_shift([0.0, 0.0], [1.0, 3.0])
    assert shift == pytest.approx(2.0)
    assert mae == pytest.approx(1.0)
    # bounds only: undefined
    assert censored_best_shift([0.0], [1.0], [True]) is None


def _brute_monotone_mae(scores: np.ndarray, exp: np.ndarray, bound: np.ndarray) -> float:
    """Every non-decreasing assignment of the measured values to the sorted distinct scores."""
    distinct = np.unique(scores)
    levels = np.unique(exp)
    best = np.inf
    for values in itertools.combinations_with_replacement(levels, len(distinct)):
        mapped = np.asarray(values)[np.searchsorted(distinct, scores)]
        best = min(best, ref_censored_mae(mapped, exp, bound))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_censored_monotone_mae_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 7).astype(float)  # ties: equal scores map to one value
    exp = rng.normal(-5, 2, 7).round(1)
    bound = rng.random(7) < 0.3
    assert censored_monotone_mae(scores, exp, bound) == pytest.approx(
        _brute_monotone_mae(scores, exp, bound), abs=1e-12
    )


def test_censored_monotone_mae_known_values_and_bounds() -> None:
    # any strictly increasing map of the truth: 0
    exp = np.array([-9.0, -7.5, -4.0, -2.0])
    assert censored_monotone_mae(np.exp(exp), exp) == 0.0
    # two exact values in reverse order: one common value between them, MAE 1/2
    assert censored_monotone_mae([0.0, 1.0], [1.0, 0.0]) == pytest.approx(0.5)
    # ... unless the high one is an upper bound, which a low value satisfies
    assert censored_monotone_mae([0.0, 1.0], [1.0, 0.0], [True, False]) == 0.0
    # -inf scores (no percolation) rank last, NaN is left out
    assert censored_monotone_mae([-np.inf, 0.0, np.nan], [-3.0, -1.0, 5.0]) == 0.0
    # never above the best constant shift (a shift is one order-preserving map)
    rng = np.random.default_rng(5)
    pred, truth, bound = rng.normal(-6, 3, 40), rng.normal(-5, 2, 40), rng.random(40) < 0.2
    _, shifted = censored_best_shift(pred, truth, bound)
    assert censored_monotone_mae(pred, truth, bound) <= shifted
    assert censored_monotone_mae([], []) is None


def test_paired_bootstrap_difference() -> None:
    rng = np.random.default_rng(11)
    truth = rng.normal(size=60)
    good = truth + 0.1 * rng.normal(size=60)
    noisy = truth + 3.0 * rng.normal(size=60)
    same = paired_bootstrap_spearman_difference(good, good, truth, n_resamples=200, seed=1)
    assert same["difference"] == 0.0
    assert same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    first = paired_bootstrap_spearman_difference(good, noisy, truth, n_resamples=300, seed=5)
    again = paired_bootstrap_spearman_difference(good, noisy, truth, n_resamples=300, seed=5)
    assert first == again  # fixed seed: reproducible
    assert first["difference"] == pytest.approx(
        ref_spearman(list(good), list(truth)) - ref_spearman(list(noisy), list(truth))
    )
    assert 0 < first["ci_low"] < first["difference"] < first["ci_high"]
    assert first["n"] == 60 and first["n_resamples"] == 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2e-5", (1.2e-5, False)),
        ("<1E-10", (1e-10, True)),
        (" < 1e-8 ", (1e-8, True)),
        ("0.000662", (0.000662, False)),
        ("<=3e-9", (3e-9, True)),
    ],
)
def test_parse_conductivity(text: str, expected: tuple[float, bool]) -> None:
    value, bound = parse_conductivity(text)
    assert value == pytest.approx(expected[0]) and bound is expected[1]


@pytest.mark.parametrize("text", ["", "n/a", "-1e-5", "0", ">1e-3", "1e-5 S/cm", "nan"])
def test_parse_conductivity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_conductivity(text)


def test_read_table_keeps_ids_as_text(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text(
        "ID,Ionic conductivity (S cm-1),Family\n1e9,1e-9,sulfides\nnan,<1E-10,oxides\n"
        "1e9,1e-3,dup\nx,,oxides\n"
    )
    frame, skipped = read_conductivity_table(table)
    assert list(frame.index) == ["1e9", "nan"]  # not 1000000000.0 and not NaN
    assert frame.loc["nan", "upper_bound"]
    assert frame.loc["1e9", "log10_sigma_exp"] == pytest.approx(-9.0)
    assert {s["reason"].split(" ")[0] for s in skipped} == {"duplicate", "no"}


def json_strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-finite number {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_safe_removes_nan_and_numpy_types() -> None:
    data = {"a": np.float64("nan"), "b": [np.inf, np.int64(3), np.bool_(True)], "c": 1.5}
    assert json_safe(data) == {"a": None, "b": [None, 3, True], "c": 1.5}


# ---------------------------------------------------------------------------------------
# evaluate_records: ablations on synthetic records
# ---------------------------------------------------------------------------------------


def synthetic_records(n: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    """Records whose measured values follow sigma = A exp(-E_3D / kT) exactly."""
    rng = np.random.default_rng(seed)
    kt = KB_EV_PER_K * 300.0
    records = []
    for i in range(n):
        barrier = float(rng.uniform(0.2, 0.8))
        exp = math.log10(50.0) - barrier / (kt * math.log(10))
        records.append(
            {
                "id": f"s{i:02d}",
                "family": "A" if i % 2 else "B",
                "error": None,
                "log10_sigma_exp": exp,
                "upper_bound": False,
                "log10_sigma_pred": exp + float(rng.normal(0, 1.0)),
                "barrier_3d_eV": barrier,
                "barrier_1d_eV": barrier - 0.1,
                "mobile_ion_density_per_m3": float(rng.uniform(1e27, 5e28)),
                "log10_sigma_path_constant_drag": exp + 2.0,
                "log10_sigma_global_lambda": exp + float(rng.normal(0, 0.5)),
                "log10_sigma_path": None if i == 0 else exp - 1.0,
                "log10_sigma_homogenised": exp + float(rng.normal(0, 2.0)),
                "log10_sigma_overdamped": exp + 3.0 + float(rng.normal(0, 0.1)),
            }
        )
    return records


def test_evaluate_records_ablations_and_prefactor_fit() -> None:
    records = synthetic_records()
    records.append(
        {  # a failed structure: not evaluated
            "id": "zz",
            "family": "A",
            "error": "zz: failed",
            "log10_sigma_exp": -3.0,
            "upper_bound": False,
            "log10_sigma_pred": None,
        }
    )
    out = evaluate_records(records, temperature_K=300.0, n_resamples=200)
    assert set(out["ablations"]) == ABLATION_NAMES == {p.name for p in ABLATIONS}
    head = out["headline"]
    assert head["n"] == 30
    b3 = out["ablations"]["barrier_3d"]
    assert b3["spearman"] == pytest.approx(1.0) and b3["kendall"] == pytest.approx(1.0)
    assert b3["prefactor_S_per_cm"] == pytest.approx(50.0, rel=1e-9)
    assert b3["prefactor_lsq_S_per_cm"] == pytest.approx(50.0, rel=1e-9)
    assert b3["mae_log10_with_fitted_prefactor"] == pytest.approx(0.0, abs=1e-9)
    assert b3["mae_log10"] is None  # no absolute value without a prefactor
    # the 1D barrier is 0.1 eV lower: A must be exp(-0.1 / kT) times smaller
    b1 = out["ablations"]["barrier_1d"]
    assert b1["prefactor_S_per_cm"] == pytest.approx(
        50.0 * math.exp(-0.1 / (KB_EV_PER_K * 300.0)), rel=1e-9
    )
    drag = out["ablations"]["path_constant_drag"]
    assert drag["mae_log10"] == pytest.approx(2.0)
    assert drag["fitted_shift_log10"] == pytest.approx(-2.0)
    assert drag["mae_log10_after_shift"] == pytest.approx(0.0, abs=1e-12)
    path = out["ablations"]["path_formula"]
    assert path["n"] == 29  # the missing value is left out, not guessed
    assert path["spearman_difference_vs_headline"]["n"] == 29
    diff = b3["spearman_difference_vs_headline"]
    assert diff["difference"] == pytest.approx(head["spearman"] - 1.0)
    assert diff["ci_high"] <= 1e-12  # the barrier is perfect: the headline cannot beat it
    base = out["baseline_constant"]
    exp_all = np.array([r["log10_sigma_exp"] for r in records[:30]])
    assert base["mae_log10"] == pytest.approx(
        censored_mae(np.full(30, base["log10_sigma"]), exp_all)
    )
    assert base["mae_log10"] <= censored_mae(np.full(30, np.median(exp_all)), exp_all) + 1e-12
    assert set(out["per_family"]) == {"A", "B"}
    ids_a = [r for r in records[:30] if r["family"] == "A"]
    assert out["per_family"]["A"]["spearman"] == pytest.approx(
        ref_spearman([r["log10_sigma_pred"] for r in ids_a], [r["log10_sigma_exp"] for r in ids_a])
    )


def test_universal_predictors_appear_only_when_present() -> None:
    """CHGNet rows (--potential chgnet): a log10 sigma and a barrier predictor.

    Structures where CHGNet failed are left out of them, not ranked as infinite barriers.
    """
    records = synthetic_records()
    plain = evaluate_records(records, temperature_K=300.0, n_resamples=50)
    assert not {"universal_sigma", "universal_barrier"} & set(plain["ablations"])
    kt_ln10 = KB_EV_PER_K * 300.0 * math.log(10)
    for i, r in enumerate(records):
        barrier = r["barrier_3d_eV"] + 0.05
        failed = i < 3  # CHGNet failed for these: no values
        r["barrier_universal_eV"] = None if failed else barrier
        r["log10_sigma_universal_S_per_cm"] = None if failed else 2.0 - barrier / kt_ln10
    out = evaluate_records(records, temperature_K=300.0, n_resamples=50)
    sigma, barrier = out["ablations"]["universal_sigma"], out["ablations"]["universal_barrier"]
    assert (sigma["kind"], barrier["kind"]) == ("log10_sigma", "barrier")
    assert sigma["field"] == "log10_sigma_universal_S_per_cm"
    assert barrier["field"] == "barrier_universal_eV"
    assert sigma["n"] == barrier["n"] == 27
    assert barrier["n_no_percolation"] == 0
    assert sigma["spearman"] == pytest.approx(1.0) and barrier["spearman"] == pytest.approx(1.0)
    # sigma_universal = 100 exp(-(E_3D + 0.05)/kT) against 50 exp(-E_3D/kT): a constant shift
    shift = math.log10(50.0) - 2.0 + 0.05 / kt_ln10
    assert sigma["mae_log10"] == pytest.approx(abs(shift), rel=1e-9)
    assert sigma["spearman_difference_vs_headline"]["n"] == 27
    # the other predictors are evaluated as before
    for name in plain["ablations"]:
        assert out["ablations"][name]["spearman"] == plain["ablations"][name]["spearman"]


def test_evaluate_records_missing_3d_barrier_ranks_last_and_bounds() -> None:
    records = synthetic_records(8, seed=3)
    lowest = min(records, key=lambda r: r["log10_sigma_exp"])
    lowest["barrier_3d_eV"] = None  # no 3D percolation: an infinite barrier
    lowest["upper_bound"] = True
    lowest["log10_sigma_exp"] = -10.0  # "<1E-10"
    out = evaluate_records(records, temperature_K=300.0, n_resamples=50)
    b3 = out["ablations"]["barrier_3d"]
    assert b3["n"] == 8 and b3["n_absolute"] == 7 and b3["n_no_percolation"] == 1
    assert b3["spearman"] == pytest.approx(1.0)
    assert out["headline"]["n_upper_bounds"] == 1
    exact = [r for r in records if not r["upper_bound"]]
    assert out["headline"]["spearman_exact_only"] == pytest.approx(
        ref_spearman([r["log10_sigma_pred"] for r in exact], [r["log10_sigma_exp"] for r in exact])
    )


# ---------------------------------------------------------------------------------------
# End to end: synthetic CIFs (no OBELiX needed)
# ---------------------------------------------------------------------------------------

FCC = [(0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)]


def _shifted(shift: tuple[float, float, float]) -> list[list[float]]:
    return [[(a + b) % 1.0 for a, b in zip(site, shift, strict=True)] for site in FCC]


def rocksalt(cation: str, anion: str, a: float) -> Structure:
    return Structure(
        Lattice.cubic(a),
        [cation] * 4 + [anion] * 4,
        _shifted((0, 0, 0)) + _shifted((0.5, 0.5, 0.5)),
    )


def antifluorite(cation: str, anion: str, a: float) -> Structure:
    coords = _shifted((0.25, 0.25, 0.25)) + _shifted((0.75, 0.75, 0.75)) + _shifted((0, 0, 0))
    return Structure(Lattice.cubic(a), [cation] * 8 + [anion] * 4, coords)


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """CIFs of LiF, LiCl, Li2O, Li2S, MgO (no Li), a garbage file and an extra CIF; a table."""
    root = tmp_path_factory.mktemp("validation")
    cifs = root / "cifs"
    cifs.mkdir()
    structures = {
        "LiF": rocksalt("Li", "F", 4.03),
        "LiCl": rocksalt("Li", "Cl", 5.13),
        "Li2O": antifluorite("Li", "O", 4.61),
        "Li2S": antifluorite("Li", "S", 5.71),
        "MgO": rocksalt("Mg", "O", 4.21),
        "extra": rocksalt("Li", "Br", 5.50),  # a CIF not in the table
    }
    for name, structure in structures.items():
        CifWriter(structure).write_file(str(cifs / f"{name}.cif"))
    (cifs / "garbage.cif").write_text("this is not a CIF\n_cell_length_a 3\nloop_\n_x\n")
    table = root / "table.csv"
    table.write_text(
        "ID,Ionic conductivity (S cm-1),Family\n"
        "LiF,<1E-10,halides\n"
        "LiCl,1e-9,halides\n"
        "Li2O,3e-4,oxides\n"
        "Li2S,1e-6,sulfides\n"
        "MgO,1e-12,oxides\n"
        "garbage,1e-7,oxides\n"
        "nocif,1e-5,oxides\n"
        "LiBr,n/a,halides\n"
    )
    return cifs, table


@pytest.fixture(scope="module")
def synthetic_report(
    synthetic_set: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Path, Path]:
    cifs, table = synthetic_set
    out = tmp_path_factory.mktemp("validation-out")
    json_out, png_out = out / "report.json", out / "parity.png"
    report = run_validation(cifs, table, parameters=FAST, json_out=json_out, png_out=png_out)
    return report, json_out, png_out


def synthetic_set_table_name(report: Any) -> str:
    return Path(report.inputs["table_csv"]).name


def test_data_attribution_names_obelix_only_for_obelix(tmp_path: Path) -> None:
    report = ValidationReport([], {}, FAST, {"table_csv": "/x/obelix-train/train.csv"}, 0.0)
    assert report.data_attribution == DATA_ATTRIBUTION
    other = ValidationReport([], {}, FAST, {"table_csv": str(tmp_path / "mine.csv")}, 0.0)
    assert other.data_attribution == "table mine.csv"


def test_synthetic_end_to_end(synthetic_report: tuple[Any, Path, Path]) -> None:
    report, json_out, png_out = synthetic_report
    doc = json_strict(json_out.read_text())
    assert set(doc) >= CONTRACT_KEYS
    # a table that is not OBELiX is not attributed to OBELiX
    assert doc["data_attribution"] == f"table {synthetic_set_table_name(report)}"
    assert "OBELiX" not in report.summary_text()
    assert [r["id"] for r in doc["per_structure"]] == sorted(
        ["LiF", "LiCl", "Li2O", "Li2S", "MgO", "garbage"]
    )
    assert doc["n_given"] == 6 and doc["n_scored"] == 4 and doc["n_failed"] == 2
    assert doc["coverage"] == pytest.approx(4 / 6)
    assert set(doc["failures_by_cause"]) == {"parse_error", "no_mobile_species"}
    assert doc["failures_by_cause"]["parse_error"]["ids"] == ["garbage"]
    assert doc["failures_by_cause"]["no_mobile_species"]["ids"] == ["MgO"]
    assert doc["upper_bounds_count"] == 1
    by_id = {r["id"]: r for r in doc["per_structure"]}
    assert by_id["LiF"]["upper_bound"] and by_id["LiF"]["log10_sigma_exp"] == pytest.approx(-10)
    for ident in ("LiF", "LiCl", "Li2O", "Li2S"):
        assert by_id[ident]["error"] is None and math.isfinite(by_id[ident]["log10_sigma_pred"])
    for ident in ("MgO", "garbage"):
        entry = by_id[ident]
        assert entry["log10_sigma_pred"] is None
        assert ident in entry["error"] and "\n" not in entry["error"]
    assert doc["inputs"]["table_ids_without_cif"] == 1  # nocif
    assert doc["inputs"]["cifs_not_in_table"] == 1  # extra
    assert [s["id"] for s in doc["inputs"]["table_rows_skipped"]] == ["LiBr"]
    assert doc["roc_auc_1e-4"] is not None  # Li2O is the one positive
    # real scoring also records the carrier and barrier-scale ablations (optional predictors)
    averages = {f"average_{name}" for name in ("harmonic", "geometric", "bruggeman", "arithmetic")}
    assert (
        set(doc["ablations"])
        == ABLATION_NAMES | {"all_ions", "meyer_neldel", "uncompensated"} | averages
    )
    assert set(doc["halves"]) <= {"A", "B"}
    assert doc["parameters"]["grid_spacing_A"] == 0.3
    assert doc["seconds_per_structure_median"] > 0
    assert report.to_json_dict() == doc
    text = report.summary_text()
    for word in ("headline", "barrier_3d", "coverage", "no_mobile_species", "S/cm"):
        assert word in text
    assert png_out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_takes_the_first_ids_in_sorted_order(synthetic_set: tuple[Path, Path]) -> None:
    cifs, table = synthetic_set
    report = run_validation(cifs, table, parameters=FAST, limit=2)
    assert [r["id"] for r in report.per_structure] == ["Li2O", "Li2S"]
    assert report.n_scored == 2 and report.to_json_dict()["spearman"] is None  # too few


def test_bad_inputs_raise(tmp_path: Path, synthetic_set: tuple[Path, Path]) -> None:
    cifs, table = synthetic_set
    with pytest.raises(FileNotFoundError, match="missing"):
        run_validation(tmp_path / "missing", table, parameters=FAST)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,sigma\nLiF,1e-5\n")
    with pytest.raises(ValueError, match=r"no column"):
        run_validation(cifs, bad, parameters=FAST)


def test_workers_give_the_serial_predictions(
    synthetic_set: tuple[Path, Path], synthetic_report: tuple[Any, Path, Path]
) -> None:
    cifs, table = synthetic_set
    serial = synthetic_report[0]
    parallel = run_validation(cifs, table, parameters=FAST, workers=2)
    keys = (
        "id",
        "status",
        "error_cause",
        "log10_sigma_pred",
        "log10_sigma_path",
        "barrier_3d_eV",
        "log10_sigma_global_lambda",
    )
    for a, b in zip(serial.per_structure, parallel.per_structure, strict=True):
        for key in keys:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-12), (a["id"], key)
            else:
                assert b[key] == a[key], (a["id"], key)
    assert parallel.metrics["headline"] == serial.metrics["headline"]


# ---------------------------------------------------------------------------------------
# End to end: an OBELiX subset (optional data)
# ---------------------------------------------------------------------------------------

#: Small ordered cells of the OBELiX training split, and b4c (its CIF holds no Li: fails).
OBELIX_IDS = ["0iv", "1e9", "47i", "4kt", "5bz", "3rx", "1xt", "b4c"]


def obelix_dir() -> Path:
    return Path(
        os.environ.get("IONDRAG_OBELIX_DIR", REPO_ROOT.parent / "shared" / "data" / "obelix-train")
    )


@pytest.fixture
def obelix_subset(tmp_path: Path) -> tuple[Path, Path]:
    """The CIF folder and a table with the OBELIX_IDS rows of train.csv (or a skip)."""
    root = obelix_dir()
    if not (root / "cifs").is_dir() or not (root / "train.csv").is_file():
        pytest.skip(
            f"OBELiX training data not found at {root} (cifs/ and train.csv); "
            "set IONDRAG_OBELIX_DIR"
        )
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    subset = tmp_path / "subset.csv"
    train[train["ID"].isin(OBELIX_IDS)].to_csv(subset, index=False)
    return root / "cifs", subset


@pytest.mark.slow
def test_obelix_subset_metrics_recomputed_independently(
    obelix_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    cifs, table = obelix_subset
    json_out = tmp_path / "obelix.json"
    run_validation(cifs, table, parameters=FAST, json_out=json_out)
    doc = json_strict(json_out.read_text())
    assert set(doc) >= CONTRACT_KEYS
    entries = doc["per_structure"]
    assert sorted(e["id"] for e in entries) == sorted(OBELIX_IDS)
    assert doc["n_scored"] + doc["n_failed"] == len(OBELIX_IDS)
    assert doc["failures_by_cause"]["no_mobile_species"]["ids"] == ["b4c"]
    scored = [e for e in entries if e["error"] is None]
    assert len(scored) == doc["n_scored"] >= 6
    pred = [e["log10_sigma_pred"] for e in scored]
    exp = [e["log10_sigma_exp"] for e in scored]
    bound = [e["upper_bound"] for e in scored]
    assert doc["upper_bounds_count"] == sum(e["upper_bound"] for e in entries) == 4
    assert doc["spearman"] == pytest.approx(ref_spearman(pred, exp), abs=1e-12)
    assert doc["kendall"] == pytest.approx(ref_kendall_tau_b(pred, exp), abs=1e-12)
    assert doc["mae_log10"] == pytest.approx(ref_censored_mae(pred, exp, bound), abs=1e-12)
    exact = [i for i, b in enumerate(bound) if not b]
    assert doc["mae_log10_exact_only"] == pytest.approx(
        sum(abs(pred[i] - exp[i]) for i in exact) / len(exact), abs=1e-12
    )
    labels = [10**e > 1e-4 and not b for e, b in zip(exp, bound, strict=True)]
    if any(labels) and not all(labels):
        assert doc["roc_auc_1e-4"] == pytest.approx(ref_auc(pred, labels), abs=1e-12)
    else:
        assert doc["roc_auc_1e-4"] is None
    assert len(set(pred)) == len(pred)  # no ties: precision at k is a plain count
    top = sorted(range(len(pred)), key=lambda i: -pred[i])[:10]
    assert doc["precision_at_10"] == pytest.approx(sum(labels[i] for i in top) / len(top))
    assert doc["seconds_per_structure_median"] == pytest.approx(
        float(np.median([e["seconds_total"] for e in scored]))
    )
    for name, field in (
        ("path_formula", "log10_sigma_path"),
        ("homogenised", "log10_sigma_homogenised"),
        ("overdamped", "log10_sigma_overdamped"),
    ):
        # a structure without this estimate (e.g. no 3D homogenised tensor) is left out
        pairs = [(e[field], x) for e, x in zip(scored, exp, strict=True) if e[field] is not None]
        assert doc["ablations"][name]["n"] == len(pairs) >= 6
        assert doc["ablations"][name]["spearman"] == pytest.approx(
            ref_spearman([v for v, _ in pairs], [x for _, x in pairs]), abs=1e-12
        )
    barrier = [e["barrier_3d_eV"] for e in scored]
    score = [-b if b is not None else -math.inf for b in barrier]
    assert doc["ablations"]["barrier_3d"]["spearman"] == pytest.approx(
        ref_spearman(score, exp), abs=1e-12
    )


# ---------------------------------------------------------------------------------------
# The journal: an interrupted run resumes, a changed input is scored again
# ---------------------------------------------------------------------------------------


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without their timings (which differ between two scorings)."""
    timing = {"wall_seconds", "seconds_total"}
    return [{k: v for k, v in r.items() if k not in timing} for r in records]


def test_journal_resumes_and_rescores_only_what_changed(
    synthetic_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from iondrag.adapters.journal import ValidationJournal
    from iondrag.workflows import validate as validation

    cifs = tmp_path / "cifs"
    shutil.copytree(synthetic_set[0], cifs)
    table = synthetic_set[1]
    scored_now: list[str] = []
    real_score_file = validation._score_file

    def counting(cif_path: str, *args: Any) -> dict[str, Any]:
        scored_now.append(Path(cif_path).stem)
        return real_score_file(cif_path, *args)

    monkeypatch.setattr(validation, "_score_file", counting)
    journal = tmp_path / "journal.jsonl"
    first = run_validation(cifs, table, parameters=FAST, journal=journal)
    assert sorted(scored_now) == sorted(r["id"] for r in first.per_structure)
    assert first.inputs["n_reused_from_journal"] == 0
    lines = journal.read_text().splitlines()
    assert len(lines) == 6  # failures are journalled too: they are properties of the file

    # an interruption: two complete lines and one cut in the middle
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    kept = {json.loads(line)["id"] for line in lines[:2]}
    scored_now.clear()
    resumed = run_validation(cifs, table, parameters=FAST, journal=journal)
    assert sorted(scored_now) == sorted({r["id"] for r in first.per_structure} - kept)
    assert resumed.inputs["n_reused_from_journal"] == 2
    assert _comparable(resumed.per_structure) == _comparable(first.per_structure)
    assert resumed.metrics == first.metrics
    assert len(ValidationJournal(journal).read()) == 6  # the cut line was skipped
    assert "journal: 2 of 6 records reused" in resumed.summary_text()

    # a finished run is reused whole
    scored_now.clear()
    again = run_validation(cifs, table, parameters=FAST, journal=journal)
    assert scored_now == [] and again.inputs["n_reused_from_journal"] == 6
    assert again.per_structure == resumed.per_structure

    # a changed CIF, changed parameters and --fresh are scored again
    li2s = cifs / "Li2S.cif"
    li2s.write_text(li2s.read_text() + "\n# edited\n")
    scored_now.clear()
    run_validation(cifs, table, parameters=FAST, journal=journal)
    assert scored_now == ["Li2S"]
    scored_now.clear()
    warmer = FAST.model_copy(update={"temperature_K": 350.0})
    run_validation(cifs, table, parameters=warmer, journal=journal, limit=2)
    assert sorted(scored_now) == ["Li2O", "Li2S"]
    scored_now.clear()
    run_validation(cifs, table, parameters=FAST, journal=journal, limit=2, reuse_journal=False)
    assert sorted(scored_now) == ["Li2O", "Li2S"]


def test_an_unwritable_journal_warns_and_the_run_goes_on(
    synthetic_set: tuple[Path, Path], tmp_path: Path
) -> None:
    cifs, table = synthetic_set
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the journal's folder should be\n")
    with pytest.warns(RuntimeWarning, match="will not resume"):
        report = run_validation(
            cifs, table, parameters=FAST, limit=2, journal=blocker / "journal.jsonl"
        )
    assert report.n_scored == 2 and "journal_error" in report.inputs


def _parity_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    records = []
    for i in range(24):
        measured = float(rng.uniform(-9.0, -2.0))
        records.append(
            {
                "id": f"s{i}",
                "formula": "LiX",
                "family": ["oxide", "sulfide", "halide"][i % 3],
                "log10_sigma_exp": measured,
                "sigma_exp_text": "",
                "upper_bound": i == 5,
                "log10_sigma_pred": measured + float(rng.normal(0.0, 1.0)),
                "error": None,
            }
        )
    records[0]["log10_sigma_pred"] = -41.0  # one wild prediction
    records[1]["log10_sigma_pred"] = 3.0
    return records


def test_parity_axes_follow_the_measurements_not_a_wild_prediction(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from iondrag.workflows.plots import parity_limits, plot_parity

    records = _parity_records()
    low, high = parity_limits(records)
    measured = [r["log10_sigma_exp"] for r in records]
    assert low == pytest.approx(min(measured) - 1.5) and high == pytest.approx(max(measured) + 1)
    report = ValidationReport(records, {}, FAST, {"table_csv": "t.csv"}, 1.0)
    out = plot_parity(report, tmp_path / "parity.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figure the function drew: axes limits are the measured range
    import matplotlib.image

    image = matplotlib.image.imread(out)
    assert image.shape[0] > 500 and image.shape[1] > 500
