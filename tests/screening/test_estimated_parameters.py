"""Estimated softBV parameters for pairs the table lacks (iondrag.screening.forcefield)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from iondrag.screening.analysis import analyse_candidate
from iondrag.screening.errors import MissingParametersError
from iondrag.screening.forcefield import (
    build_pair_field,
    estimated_morse_parameters,
    fit_softbv_extension,
    held_out_anion_errors,
    morse_parameters,
    okeeffe_brese_r0_A,
)
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.structures import prepare_framework


def _rocksalt(cation: str, anion: str, a_A: float) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a_A), [cation, anion], [[0] * 3, [0.5] * 3]
    )


def test_okeeffe_brese_r0_gives_unit_valence_in_lih():
    # LiH is rock salt with a = 4.083 A: six Li-H bonds of a/2. With R0 from the elements'
    # sizes and softnesses and b = 0.37 A, the bond-valence sum of Li must be close to 1.
    r0 = okeeffe_brese_r0_A("Li", "H")
    valence_sum = 6 * np.exp((r0 - 4.083 / 2) / 0.37)
    assert valence_sum == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("anion", ["O", "S", "Cl", "N", "Br"])
def test_an_anion_left_out_of_the_fit_is_predicted(anion):
    """Fit without one anion, predict all of its table entries (the situation of P3-, H-)."""
    errors = held_out_anion_errors(anion)
    assert len(errors["b"]) >= 8
    rms = {name: float(np.sqrt(np.mean(np.square(e)))) for name, e in errors.items()}
    # measured by benchmarks/estimated_parameters.py: b <= 14 %, D0 <= 28 %, R_min <= 0.09 A
    assert rms["b"] < 0.16 and rms["d0"] < 0.35 and rms["r_min_A"] < 0.11, rms
    # and the held-out predictions are not biased to one side
    assert abs(float(np.mean(errors["r_min_A"]))) < 0.08


def test_the_fit_reproduces_the_table_it_was_fitted_to():
    model = fit_softbv_extension()
    d0, r_min, alpha = model.predict("Li", 1, "S", -2)
    table_d0, table_rmin, table_alpha = morse_parameters("Li", 1, "S", -2)
    assert r_min == pytest.approx(table_rmin, abs=0.1)
    assert alpha == pytest.approx(table_alpha, rel=0.15)
    assert d0 == pytest.approx(table_d0, rel=0.3)


def test_estimates_only_where_the_table_is_silent():
    assert morse_parameters("Li", 1, "O", -2, estimate_missing=True) == morse_parameters(
        "Li", 1, "O", -2
    )
    d0, r_min, alpha = morse_parameters("Li", 1, "P", -3, estimate_missing=True)
    assert 0.1 < d0 < 5 and 2.0 < r_min < 3.2 and 1.0 < alpha < 2.5
    # P-1 is not a common state of P (a mis-assigned thiophosphate): no estimate
    with pytest.raises(MissingParametersError, match=r"Li\+1-P-1.*neither a common anion state"):
        estimated_morse_parameters("Li", 1, "P", -1)
    with pytest.raises(MissingParametersError, match=r"Li\+1-P-3"):
        morse_parameters("Li", 1, "P", -3)


def test_lih_scores_with_estimated_parameters_and_says_so():
    lih = _rocksalt("Li", "H", 4.083)
    framework = prepare_framework(lih)
    field = build_pair_field(framework, estimate_missing_parameters=True)
    assert field.estimated_pairs == ("Li+1-H-1",)
    with pytest.raises(MissingParametersError, match=r"Li\+1-H-1"):
        build_pair_field(framework)
    parameters = ScreeningParameters(grid_spacing_A=0.25, arrhenius_temperatures_K=())
    analysis = analyse_candidate(lih, parameters, candidate_id="lih")
    assert any("estimated" in note and "Li+1-H-1" in note for note in analysis.notes)
    # the Li site is the minimum of U and the barrier is finite and positive
    barrier = analysis.landscape.percolation.barriers_eV[3]
    assert 0.05 < barrier < 3.0
    strict = parameters.model_copy(update={"estimate_missing_parameters": False})
    with pytest.raises(MissingParametersError, match=r"lih.*Li\+1-H-1"):
        analyse_candidate(lih, strict, candidate_id="lih")


def test_li3bi_scores_with_its_zintl_anion_estimated():
    # Li3Bi (BiF3 type, a = 6.72 A): Bi on 4a, Li on 4b and 8c. Bi3- is not a "common"
    # state of Bi in pymatgen, so the closed-shell rule gives both the state and the
    # estimate; before it, the embedded Li3Bi and Na3Bi failed with oxidation_states.
    li3bi = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(6.72), ["Bi", "Li", "Li"], [[0] * 3, [0.5] * 3, [0.25] * 3]
    )
    framework = prepare_framework(li3bi, candidate_id="li3bi")
    assert framework.oxidation_states == {"Li": 1.0, "Bi": -3.0}
    field = build_pair_field(framework, estimate_missing_parameters=True)
    assert field.estimated_pairs == ("Li+1-Bi-3",)
    parameters = ScreeningParameters(grid_spacing_A=0.25, arrhenius_temperatures_K=())
    analysis = analyse_candidate(li3bi, parameters, candidate_id="li3bi")
    assert 0.05 < analysis.landscape.percolation.barriers_eV[3] < 3.0
