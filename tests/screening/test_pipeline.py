"""End-to-end checks of the per-candidate pipeline and its invariants."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from iondrag.screening.analysis import analyse_candidate
from iondrag.screening.candidates import Candidate, ElasticInput
from iondrag.screening.mobility import CG_RTOL
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.pipeline import score_candidate
from iondrag.screening.units import KB_EV_PER_K
from tests.screening.conftest import antifluorite, rocksalt

FAST = {"grid_spacing_A": 0.3, "arrhenius_temperatures_K": ()}


def _li3n() -> Structure:
    """alpha-Li3N (P6/mmm): a fast 2D conductor with a small cell."""
    return Structure(
        Lattice.hexagonal(3.648, 3.875),
        ["N", "Li", "Li", "Li"],
        [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0]],
    )


def _all_floats_finite(document) -> bool:
    def walk(value):
        if isinstance(value, float):
            return np.isfinite(value)
        if isinstance(value, dict):
            return all(walk(v) for v in value.values())
        if isinstance(value, list | tuple):
            return all(walk(v) for v in value)
        return True

    return walk(document.model_dump())


def test_scored_candidate_has_finite_fields_and_units():
    candidate = Candidate(candidate_id="li3n", source="structure", structure=_li3n())
    result, grids = score_candidate(candidate, ScreeningParameters(**FAST), keep_grids=True)
    assert result.status == "ok", result.error
    assert _all_floats_finite(result)
    assert result.ion == "Li" and result.barrier_eV is not None and result.barrier_eV > 0
    assert result.sigma_S_per_cm == pytest.approx(10**result.log10_sigma_S_per_cm)
    assert result.elastic_source.startswith("estimate:")
    tensor = np.array(result.sigma_tensor_S_per_cm)
    np.testing.assert_allclose(tensor, tensor.T, rtol=1e-9, atol=1e-30)
    assert np.linalg.eigvalsh(tensor).min() >= -1e-12 * np.abs(tensor).max()
    arrays = grids.arrays()
    assert arrays["energy_eV"].shape == tuple(result.grid_shape)
    assert len(arrays["region_flat_indices"]) == len(arrays["drag_voigt_kg_per_s"])


def test_elastic_input_is_used_and_recorded():
    elastic = ElasticInput(bulk_modulus_GPa=40.0, shear_modulus_GPa=20.0, source="doi:10.1/x")
    candidate = Candidate(
        candidate_id="li3n", source="structure", structure=_li3n(), elastic=elastic
    )
    result, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    assert result.elastic_source == "doi:10.1/x"
    assert result.bulk_modulus_GPa == 40.0
    # a stiffer crystal drags less (gamma ~ Lambda ~ 1/c^3): higher overdamped conductivity
    stiff = Candidate(
        candidate_id="li3n",
        source="structure",
        structure=_li3n(),
        elastic=ElasticInput(bulk_modulus_GPa=160.0, shear_modulus_GPa=80.0, source="x"),
    )
    stiff_result, _ = score_candidate(stiff, ScreeningParameters(**FAST, inertia_correction=False))
    soft_result, _ = score_candidate(
        candidate, ScreeningParameters(**FAST, inertia_correction=False)
    )
    assert stiff_result.log10_sigma_S_per_cm > soft_result.log10_sigma_S_per_cm


@pytest.mark.parametrize(
    ("structure", "cause"),
    [
        (rocksalt("Mg", "O", 4.21), "no_mobile_species"),
        (
            Structure(
                Lattice.cubic(4.0),
                ["Li", "Li", "Li", "F"],
                [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.5, 0.5, 0.5]],
            ),
            "oxidation_states",
        ),
    ],
)
def test_bad_candidates_fail_with_cause(structure, cause):
    result, grids = score_candidate(
        Candidate(candidate_id="bad-1", source="structure", structure=structure),
        ScreeningParameters(**FAST),
    )
    assert result.status == "failed" and result.error_cause == cause
    assert result.error.startswith("bad-1:") and "\n" not in result.error
    assert grids is None


def test_unreadable_candidate_fails_without_structure():
    candidate = Candidate(
        candidate_id="x",
        source="cif",
        load_error="x.cif: empty file",
        load_error_cause="parse_error",
    )
    result, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    assert result.status == "failed" and result.error_cause == "parse_error"


def test_cubic_crystal_gives_isotropic_tensor():
    candidate = Candidate(candidate_id="li2o", source="structure", structure=antifluorite())
    result, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    assert result.status == "ok", result.error
    tensor = np.array(result.sigma_tensor_S_per_cm)
    np.testing.assert_allclose(np.diag(tensor), tensor[0, 0], rtol=1e-6)
    assert result.dimensionality == 3


# A rotation (here an axis permutation) changes the inputs by round-off only: the grid, U,
# the region and the drag are the same in fractional terms. The grid loop is chosen on
# quantised weights (iondrag.screening.paths.PATH_WEIGHT_QUANTUM), so round-off no longer picks
# another of the symmetry-equivalent loops (it did, by BLAS kernel and frame, and the string
# method then ended 1e-4 to 1e-3 apart). What remains is the conjugate-gradient stopping
# point of each homogenisation solve, within CG_RTOL relative residual, whose error enters D
# quadratically: 10 x CG_RTOL bounds the difference (measured: 2e-14).
@pytest.mark.parametrize(
    ("relaxation", "rtol", "decades"),
    [("frozen", 10 * CG_RTOL, 1e-6), ("elastic", 10 * CG_RTOL, 1e-6)],
)
def test_rotating_the_crystal_rotates_the_tensor(relaxation, rtol, decades):
    structure = _li3n()
    parameters = ScreeningParameters(**FAST, framework_relaxation=relaxation)
    base = analyse_candidate(structure, parameters)
    rotation = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # permutation
    rotated_structure = Structure(
        Lattice(structure.lattice.matrix @ rotation.T),
        structure.species,
        structure.frac_coords,
    )
    rotated = analyse_candidate(rotated_structure, parameters)
    assert rotated.landscape.percolation.barriers_eV == pytest.approx(
        base.landscape.percolation.barriers_eV
    )
    d0 = base.transport.homogenised.diffusion_m2_per_s
    d1 = rotated.transport.homogenised.diffusion_m2_per_s
    np.testing.assert_allclose(
        d1, rotation @ d0 @ rotation.T, rtol=rtol, atol=1e-9 * np.abs(d0).max()
    )
    assert rotated.transport.estimates.flat() == pytest.approx(
        base.transport.estimates.flat(), rel=0, abs=decades
    )


def test_same_inputs_give_identical_results():
    candidate = Candidate(candidate_id="li3n", source="structure", structure=_li3n())
    first, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    second, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    a, b = first.model_dump(), second.model_dump()
    a.pop("seconds"), b.pop("seconds")
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("cid", ["0iv", "47i", "1e9", "4kt"])
def test_coarse_to_fine_matches_full_evaluation(obelix, cid):
    """Refining only where the ion can go gives the same percolation energies as
    evaluating U everywhere on the same grid (up to the bisection tolerance)."""
    structure = Structure.from_file(obelix / "cifs" / f"{cid}.cif")
    parameters = ScreeningParameters(arrhenius_temperatures_K=())
    everywhere = ScreeningParameters(arrhenius_temperatures_K=(), coarse_margin_eV=1e3)
    refined = analyse_candidate(structure, parameters)
    full = analyse_candidate(structure, everywhere)
    assert np.isfinite(full.landscape.energy_grid_eV).all()
    assert refined.landscape.grid.shape == full.landscape.grid.shape
    for d in (1, 2, 3):
        if f"E_{d}D from the coarse grid" in " ".join(refined.notes):
            assert refined.landscape.percolation.energies_eV[d] == pytest.approx(
                full.landscape.percolation.energies_eV[d], abs=0.25
            )
        else:
            assert refined.landscape.percolation.energies_eV[d] == pytest.approx(
                full.landscape.percolation.energies_eV[d],
                abs=2 * parameters.percolation_tolerance_eV,
            )


def test_connected_site_carriers_count_every_ion_of_an_open_framework():
    """In Li2O every Li site lies on the 3D network: all ions carry (weight 1 each)."""
    candidate = Candidate(candidate_id="li2o", source="structure", structure=antifluorite())
    connected, _ = score_candidate(
        candidate, ScreeningParameters(**FAST, carrier_density="connected_sites")
    )
    every_site, _ = score_candidate(
        candidate, ScreeningParameters(**FAST, carrier_density="all_sites")
    )
    assert connected.carrier_convention == "connected_sites"
    # every ion connected: the carriers are the ions times the lattice-gas carrier fraction
    assert connected.carrier_density_per_m3 == pytest.approx(
        connected.mobile_ion_density_per_m3 * connected.carrier_fraction
    )
    # the single-ion Boltzmann fraction in the region is at most 1
    assert every_site.carrier_density_per_m3 <= every_site.mobile_ion_density_per_m3 * (1 + 1e-12)
    # with the same carriers the two conventions give the same conductivity
    ratio = connected.carrier_density_per_m3 / every_site.carrier_density_per_m3
    assert connected.sigma_S_per_cm == pytest.approx(every_site.sigma_S_per_cm * ratio, rel=1e-6)


def test_site_connection_weights_follow_the_temperature():
    from iondrag.screening.transport import SiteConnection
    from iondrag.screening.units import thermal_energy_eV

    connection = SiteConnection(np.array([0.30, 0.40, 0.30]), np.array([1.0, 1.0, 0.5]), 0.30)
    for t in (300.0, 600.0):
        pocket = np.exp(-0.10 / thermal_energy_eV(t))
        assert connection.fraction(t) == pytest.approx((1.0 + pocket + 0.5) / 2.5)
    assert connection.fraction(600.0) > connection.fraction(300.0)


def test_polycrystal_averages_of_the_principal_conductivities():
    """The averages differ only through the principal values' openings exp(-(E_d - E_1)/kT).

    The principal values are the channel's value times (1, exp(-(E_2 - E_1)/kT),
    exp(-(E_3 - E_1)/kT)), so the ratio of two averages is fixed by the reported
    percolation barriers alone, whatever the channel's value.
    """
    candidate = Candidate(candidate_id="li3n", source="structure", structure=_li3n())
    results = {}
    for average in ("harmonic", "geometric", "bruggeman", "arithmetic"):
        parameters = ScreeningParameters(**FAST, polycrystal_average=average)
        result, _ = score_candidate(candidate, parameters)
        assert result.status == "ok", result.error
        results[average] = result
    first = results["harmonic"]
    barriers = np.array([first.barrier_1d_eV, first.barrier_2d_eV, first.barrier_3d_eV])
    assert barriers[2] - barriers[0] > 0.02  # anisotropic: the averages differ
    kt = KB_EV_PER_K * first.temperature_K
    openings = np.exp(-(barriers - barriers[0]) / kt)
    harmonic = 3.0 / np.sum(1.0 / openings)
    expected_over_harmonic = {
        "geometric": np.exp(np.mean(np.log(openings))) / harmonic,
        "arithmetic": openings.mean() / harmonic,
    }
    for average, ratio in expected_over_harmonic.items():
        got = results[average].sigma_S_per_cm / first.sigma_S_per_cm
        assert got == pytest.approx(ratio, rel=1e-6), average
    log10 = {name: r.log10_sigma_S_per_cm for name, r in results.items()}
    assert log10["harmonic"] < log10["geometric"] < log10["arithmetic"]
    assert log10["harmonic"] < log10["bruggeman"] < log10["arithmetic"]
    assert len({r.barrier_eV for r in results.values()}) == 1  # the average touches sigma only


def test_electronic_conductor_flag_and_band_gap_reach_the_result():
    from iondrag.adapters.sources.embedded import load_embedded_candidates

    (spinel,) = load_embedded_candidates(ids=["liti2o4-fd3m"])
    result, _ = score_candidate(spinel, ScreeningParameters(**FAST))
    assert result.status == "ok", result.error
    assert result.likely_electronic_conductor is True
    assert "mixed valence Ti" in (result.electronic_conductor_reason or "")
    assert result.ranking_row()["likely_electronic_conductor"] is True
    gapped = Candidate(
        candidate_id="li3n",
        source="structure",
        structure=_li3n(),
        provenance={"band_gap_eV": 1.0},
    )
    result, _ = score_candidate(gapped, ScreeningParameters(**FAST))
    assert result.band_gap_eV == 1.0 and result.likely_electronic_conductor is False


def test_a_general_rotation_does_not_change_the_headline():
    """Embedded LiF, rotated by an arbitrary rotation: before the grid loop's ties were
    broken by grid order, round-off picked another loop and log10 sigma moved by 0.02
    (li2mgcl4-fd3m by 0.30 decades)."""
    from scipy.spatial.transform import Rotation

    from iondrag.adapters.sources.embedded import load_embedded_candidates

    [candidate] = [c for c in load_embedded_candidates() if c.candidate_id == "lif-fm3m"]
    structure = candidate.structure
    rotation = Rotation.from_euler("xyz", [0.3, 0.7, 1.1]).as_matrix()
    rotated = Structure(
        Lattice(structure.lattice.matrix @ rotation.T),
        [site.species for site in structure],
        structure.frac_coords,
    )
    parameters = ScreeningParameters(arrhenius_temperatures_K=())
    base, _ = score_candidate(candidate, parameters)
    turned, _ = score_candidate(candidate.model_copy(update={"structure": rotated}), parameters)
    assert base.status == turned.status == "ok"
    assert turned.log10_sigma_S_per_cm == pytest.approx(base.log10_sigma_S_per_cm, abs=1e-9)
    assert turned.barrier_eV == pytest.approx(base.barrier_eV, abs=1e-9)


@pytest.mark.parametrize("change", ["supercell", "origin", "setting"])
def test_the_cell_the_file_uses_does_not_change_any_column(change):
    """A supercell, an origin shift or another setting of alpha-Li3N: the same row.

    Every structure is analysed in its reduced primitive cell with the origin on an anchor
    site (iondrag.screening.structures.reduced_primitive_cell), so the grid is the same; before,
    1x, 2x and 3x LiF gave 2.2e-4, 3.4e-4 and 9.3e-5 S/cm. Tolerance: the float round-off
    of the cell transformation (1e-9 relative), far below the grid's own resolution.
    """
    structure = _li3n()
    other = structure.copy()
    if change == "supercell":
        other.make_supercell([2, 1, 3])
    elif change == "origin":
        other.translate_sites(list(range(len(other))), [0.13, 0.27, 0.41])
    else:  # lattice vectors a, a + b, a + b + c: the same crystal in an oblique setting
        other.make_supercell([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    parameters = ScreeningParameters(**FAST)
    base, _ = score_candidate(
        Candidate(candidate_id="a", source="structure", structure=structure), parameters
    )
    moved, _ = score_candidate(
        Candidate(candidate_id="a", source="structure", structure=other), parameters
    )
    assert base.status == moved.status == "ok", (base.error, moved.error)
    a, b = base.ranking_row(), moved.ranking_row()
    compared = 0
    for key, value in a.items():
        if isinstance(value, float) and key not in ("candidate_fingerprint",):
            assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
            compared += 1
    assert compared > 20
    # the tensor rotates with the setting's Cartesian frame only if the lattice rotated; it
    # did not here, so the tensor is the same too
    tensor = np.array(base.sigma_tensor_S_per_cm)
    np.testing.assert_allclose(
        moved.sigma_tensor_S_per_cm, tensor, rtol=1e-9, atol=1e-9 * np.abs(tensor).max()
    )


def test_an_unsolved_cell_problem_leaves_the_tensor_empty_not_the_candidate(monkeypatch):
    """The 3D tensor is the second estimate: when its solvers give up (here forced: one
    conjugate-gradient step and no sparse LU) the candidate keeps its headline and says why.
    A headline that is the tensor itself fails with a cause instead."""
    from iondrag.screening import mobility

    candidate = Candidate(candidate_id="li3n", source="structure", structure=_li3n())
    solved, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    assert solved.status == "ok" and solved.sigma_xx_S_per_cm is not None
    monkeypatch.setattr(mobility, "CG_MAX_ITERATIONS", 1)
    monkeypatch.setattr(mobility, "DIRECT_SOLVER_MAX_NODES", 0)
    unsolved, _ = score_candidate(candidate, ScreeningParameters(**FAST))
    assert unsolved.status == "ok"
    assert unsolved.log10_sigma_S_per_cm == solved.log10_sigma_S_per_cm
    assert unsolved.barrier_eV == solved.barrier_eV
    tensor = ("sigma_xx_S_per_cm", "sigma_yy_S_per_cm", "sigma_zz_S_per_cm", "anisotropy_ratio")
    assert all(getattr(unsolved, name) is None for name in tensor)
    assert unsolved.sigma_tensor_S_per_cm is None and unsolved.diffusion_tensor_m2_per_s is None
    assert unsolved.log10_sigma_homogenised_S_per_cm is None
    assert unsolved.sigma_tensor_method is None
    assert unsolved.diffusion_parallel_bound_m2_per_s is not None  # the bounds stay
    assert any("no tensor estimate" in w and "stalled" in w for w in unsolved.warnings)
    assert unsolved.model_dump_json()  # a valid document (no NaN in the JSON)
    failed, _ = score_candidate(candidate, ScreeningParameters(**FAST, headline="homogenised"))
    assert failed.status == "failed" and failed.error_cause == "homogenisation_not_solved"
    assert failed.error.startswith("li3n: the headline (homogenised) is unknown")
