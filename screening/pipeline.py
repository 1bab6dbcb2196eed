"""The whole per-candidate analysis: structure -> potential -> drag -> mobility -> conductivity.

:func:`analyse_candidate` runs the steps and raises :class:`~screening.errors.IondragError`
on bad input; :func:`score_candidate` wraps it so that every candidate gives a
:class:`~screening.schemas.CandidateResult` (failed ones with the cause), which is what a
screen calls. Workflow jobs call :func:`score_candidate` and nothing else.

Steps (theory.md sections 1-4):

1. framework: charges, mobile ion removed, occupancies as weights;
2. U on a grid twice as coarse as requested, percolation there, then U on the full grid
   only where the ion can go (below the coarse 3D percolation energy, and the transport
   window, plus a margin, dilated by one coarse voxel); elsewhere U = +inf;
3. percolation energies E_1, E_2, E_3 on the fine grid;
4. the transport region (U < E_1 + window k_B T, percolating components), the Hessian there
   and the drag gamma = H Lambda H; Lambda from the elastic data or the estimate;
5. the percolating path (Dijkstra on the grid, relaxed with the analytic gradient), U(s),
   gamma along it, the path mobility and Kramers' inertial factor at its saddle;
6. the homogenised 3D diffusion tensor, the conductivity tensor (Nernst-Einstein) and the
   Arrhenius fit over the requested temperatures;
7. with ``parameters.potential == "chgnet"`` (ml extra): CHGNet along the BVSE path
   (:mod:`screening.universal`), recorded in the ``*_universal_*`` fields next to the BVSE
   result, which stays the headline (docs/universal.md: along the BVSE path CHGNet ranks
   measured conductivities worse than BVSE). A CHGNet failure never fails the candidate:
   ``universal_error`` and ``universal_error_cause`` say why.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Element
from threadpoolctl import threadpool_limits

from screening.carriers import (
    SITE_MERGE_RADIUS_A,
    FrenkelPair,
    SublatticeOccupancy,
    carrier_fraction,
    carrier_mechanism,
    far_from_all,
    framework_sublattice,
    frenkel_pair,
    grid_local_minima,
    intrinsic_defect_fraction,
)
from screening.conductivity import (
    POLYCRYSTAL_AVERAGES,
    anisotropy_ratio,
    arrhenius_fit,
    nernst_einstein_S_per_m,
)
from screening.disorder import (
    SHARED_SITE_EXCLUSION_RADIUS_A,
    ArrangementFactor,
    arrangement_factor,
    has_shared_cation_sites,
    shared_site_network,
)
from screening.drag import drag_floor_kg_per_s, drag_tensor, regularised_drag
from screening.elastic import (
    ElasticModel,
    debye_thermal_rms_A,
    elastic_model,
    lambda_isotropic,
    point_force_stiffness_eV_per_A2,
)
from screening.elastic_estimate import estimate_moduli_GPa
from screening.electronic import electronic_conductor_flag
from screening.errors import IondragError, NoPercolationError
from screening.forcefield import PairField, build_pair_field, coulomb_pair_parameters
from screening.memory import plan_grid
from screening.mobility import (
    HomogenisedDiffusion,
    damping_regime,
    homogenised_diffusion,
    kramers_factor,
    meyer_neldel_temperature_K,
    occupied_site_level_eV,
    path_mobility,
    site_phonon_energy_eV,
)
from screening.parameters import ScreeningParameters
from screening.paths import PercolatingPath, grid_percolating_path, relax_path, resample, smooth
from screening.percolation import (
    PercolationResult,
    percolation_energies,
    periodic_components,
    site_connection_levels_eV,
    site_voxels,
)
from screening.potential import (
    PeriodicGrid,
    evaluate_grid,
    evaluate_points,
    grid_shape_for_spacing,
)
from screening.schemas import (
    CandidateGrids,
    CandidateResult,
    PathProfile,
    band_gap_of,
    finite_or_none,
    matrix_list,
)
from screening.settings import get_settings
from screening.sources.base import Candidate, ElasticInput
from screening.structures import (
    Framework,
    ionic_radii_A,
    prepare_framework,
    reduced_primitive_cell,
)
from screening.units import S_PER_M_TO_S_PER_CM, thermal_energy_eV

if TYPE_CHECKING:  # pragma: no cover - typing only
    from screening.universal import UniversalSettings

#: Ablation "path formula with a constant friction": one friction for every material, kg/s
#: (the size of H Lambda H at a typical saddle, theory.md section 5: 7.6e-14 kg/s). Rankings
#: do not depend on it; absolute values scale as 1/it.
CONSTANT_FRICTION_KG_PER_S: float = 1e-13

#: Smallest transverse curvature used in the channel entropy, eV/A^2 (k_B T / k = (0.5 A)^2
#: at 300 K): wider channels are not harmonic, and the floor keeps F(s) finite.
MIN_TRANSVERSE_CURVATURE_EV_PER_A2: float = 0.1

#: A headline below 10^this S/cm gets its cause written beside it (no sample shows it).
LOWEST_PLAUSIBLE_LOG10_SIGMA: float = -30.0

#: Ablation "one global Lambda": the isotropic lambda of K = 40 GPa, G = 20 GPa,
#: rho = 3000 kg/m^3 (a typical solid electrolyte), s^3/kg.
GLOBAL_LAMBDA_S3_PER_KG: float = lambda_isotropic(40.0, 20.0, 3000.0)


@dataclass
class Analysis:
    """Intermediate results of one candidate (arrays included), before the document."""

    framework: Framework
    field: PairField
    elastic: ElasticModel
    grid: PeriodicGrid
    energy_grid_eV: np.ndarray
    percolation: PercolationResult
    region_flat: np.ndarray
    gamma_region_kg_per_s: np.ndarray
    path: PercolatingPath
    path_gamma_parallel_kg_per_s: np.ndarray
    path_curvature_eV_per_A2: np.ndarray
    path_hessian_eV_per_A2: np.ndarray
    path_transverse_eV_per_A2: np.ndarray
    dimensionality: int
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    shared_sites: str = "mean_field"
    arrangement: ArrangementFactor | None = None
    structure: Any = None


def _elastic_for(
    framework: Framework,
    elastic: ElasticInput | None,
    candidate_id: str | None,
    estimate_missing: bool = False,
) -> ElasticModel:
    density = framework.density_kg_per_m3
    if elastic is not None:
        return elastic_model(
            density,
            voigt_GPa=elastic.voigt_GPa,
            bulk_GPa=elastic.bulk_modulus_GPa,
            shear_GPa=elastic.shear_modulus_GPa,
            source=elastic.source,
            candidate_id=candidate_id,
        )
    bulk, shear, source = estimate_moduli_GPa(framework, estimate_missing=estimate_missing)
    return elastic_model(
        density, bulk_GPa=bulk, shear_GPa=shear, source=source, candidate_id=candidate_id
    )


def _grids(
    framework: Framework, parameters: ScreeningParameters, candidate_id: str | None
) -> tuple[PeriodicGrid, PeriodicGrid | None, list[str]]:
    """Return the fine grid (even shape when coarse-to-fine) and its half-resolution sub-grid."""
    lattice = framework.lattice_matrix_A

    def shape_for(h: float) -> tuple[int, int, int]:
        if parameters.coarse_to_fine:
            coarse = grid_shape_for_spacing(lattice, 2.0 * h)
            return (2 * coarse[0], 2 * coarse[1], 2 * coarse[2])
        return grid_shape_for_spacing(lattice, h)

    # the grid whose estimated peak memory fits the budget (screening.memory)
    shape, notes = plan_grid(
        lattice,
        parameters.grid_spacing_A,
        shape_for,
        memory_budget_MB=parameters.memory_budget_MB or get_settings().memory_budget_MB,
        cutoff_A=parameters.cutoff_A,
        n_sites=len(framework.frac_coords) + len(framework.mobile_frac_coords),
        on_too_large=parameters.on_grid_too_large,
        candidate_id=candidate_id,
    )
    fine = PeriodicGrid(lattice, shape)
    coarse = None
    if parameters.coarse_to_fine:
        coarse = PeriodicGrid(lattice, (shape[0] // 2, shape[1] // 2, shape[2] // 2))
    return fine, coarse, notes


def _refinement_points(
    coarse_energy: np.ndarray, level_eV: float, fine_shape: tuple[int, int, int]
) -> np.ndarray:
    """Fine-grid flat indices in every coarse voxel that has a corner below ``level_eV``.

    Coarse point c is fine point 2c; the fine points 2c..2c+1 along each axis fill the
    coarse voxel spanned by c and c+1, so a voxel is refined when any of its 8 corners is
    below the level (a 2x2x2 maximum filter looking forward, periodic).
    """
    below = coarse_energy < level_eV
    voxel = below.copy()
    for shift in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)):
        voxel |= np.roll(below, shift=tuple(-s for s in shift), axis=(0, 1, 2))
    fine = voxel.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    assert fine.shape == fine_shape
    return np.flatnonzero(fine)


def _potential_grid(
    field_: PairField,
    fine: PeriodicGrid,
    coarse: PeriodicGrid | None,
    parameters: ScreeningParameters,
) -> tuple[np.ndarray, PercolationResult | None, float]:
    """U on the fine grid: everywhere, or only where the coarse grid says the ion can go.

    Returns the fine grid of U (+inf where not evaluated), the coarse percolation result
    (None without refinement) and the level below which the fine grid is complete (eV).
    """
    if coarse is None:
        return evaluate_grid(field_, fine).energy_eV.reshape(fine.shape), None, np.inf
    coarse_energy = evaluate_grid(field_, coarse).energy_eV.reshape(coarse.shape)
    coarse_perc = percolation_energies(
        coarse_energy, parameters.percolation_ceiling_eV, tolerance_eV=0.01
    )
    top = coarse_perc.minimum_energy_eV + parameters.percolation_ceiling_eV
    e1, e3 = coarse_perc.energies_eV[1], coarse_perc.energies_eV[3]
    if np.isfinite(e1):
        kt = thermal_energy_eV(parameters.temperature_K)
        level = max(e1 + parameters.window_kT * kt, min(e3, e1 + parameters.refine_above_1d_eV))
    else:
        level = top
    level = min(level, top) + parameters.coarse_margin_eV
    points = _refinement_points(coarse_energy, level, fine.shape)
    notes_fraction = len(points) / fine.n_points
    energy = np.full(fine.n_points, np.inf)
    energy[points] = evaluate_grid(field_, fine, points).energy_eV
    del notes_fraction
    return energy.reshape(fine.shape), coarse_perc, level


def _merge_percolation(
    fine: PercolationResult,
    coarse: PercolationResult | None,
    complete_below_eV: float,
    notes: list[str],
) -> PercolationResult:
    """Use coarse-grid percolation energies where the fine grid was not refined high enough."""
    if coarse is None:
        return fine
    energies = dict(fine.energies_eV)
    shift = fine.minimum_energy_eV - coarse.minimum_energy_eV
    for d in (2, 3):
        resolved = np.isfinite(energies[d]) and energies[d] < complete_below_eV - 0.05
        if not resolved and np.isfinite(coarse.energies_eV[d]):
            energies[d] = max(coarse.energies_eV[d] + shift, energies[d - 1])
            notes.append(f"E_{d}D from the coarse grid (above the refined window)")
    return PercolationResult(
        fine.minimum_energy_eV, energies, fine.tolerance_eV, fine.ceiling_eV, fine.evaluations
    )


def _transport_region(energy_grid_eV: np.ndarray, level_eV: float) -> np.ndarray:
    """Flat indices of the percolating components of {U < level}."""
    components = periodic_components(energy_grid_eV < level_eV)
    percolating = np.flatnonzero(components.dimensionality >= 1)
    return np.flatnonzero(np.isin(components.labels.ravel(), percolating))


def analyse_candidate(
    structure: Any,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    mobile_ion: str | None = None,
    elastic: ElasticInput | None = None,
) -> Analysis:
    """Run every step for one structure (see the module docstring).

    Parameters
    ----------
    structure
        pymatgen Structure (ordered or disordered).
    parameters
        Physics and numerics.
    candidate_id
        Named in errors.
    mobile_ion
        Overrides ``parameters.ion`` and the default choice.
    elastic
        Elastic data with their source; None: estimated.

    Raises
    ------
    IondragError
        For every documented bad-input case.
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 4)
        clock = now

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if parameters.reduce_to_primitive:
            structure = reduced_primitive_cell(structure)
        framework = prepare_framework(
            structure, mobile_ion or parameters.ion, candidate_id=candidate_id
        )
    lap("framework")
    exclusion_radius, shared_sites, arrangement, shared_notes = _shared_site_treatment(
        framework, parameters
    )
    lap("arrangement")
    # The force field first: a missing parameter is the cause to report, even though the
    # elastic estimate (which needs bond parameters too) would also fail.
    make_pair_field = functools.partial(
        build_pair_field,
        framework,
        cutoff_A=parameters.cutoff_A,
        switch_width_A=parameters.switch_width_A,
        site_exclusion_radius_A=exclusion_radius,
        estimate_missing_parameters=parameters.estimate_missing_parameters,
        candidate_id=candidate_id,
    )
    pair_field = make_pair_field()
    elastic_data = _elastic_for(
        framework, elastic, candidate_id, parameters.estimate_missing_parameters
    )
    thermal_rms = stiffness = None
    if parameters.thermal_smearing:
        masses = np.array([Element(el).atomic_mass for el in framework.elements], dtype=float)
        atoms = framework.occupancies.sum() + framework.mobile_occupancies.sum()
        thermal_rms = debye_thermal_rms_A(
            masses, parameters.temperature_K, elastic_data, atoms / framework.volume_A3
        )
    if parameters.framework_relaxation == "elastic":
        stiffness = np.asarray(
            point_force_stiffness_eV_per_A2(
                elastic_data.bulk_modulus_GPa,
                elastic_data.shear_modulus_GPa,
                ionic_radii_A(framework.elements, framework.charges_e),
            )
        )
    if thermal_rms is not None or stiffness is not None:
        pair_field = make_pair_field(
            thermal_rms_A=thermal_rms, relaxation_stiffness_eV_per_A2=stiffness
        )
    lap("elastic")

    fine, coarse, notes = _grids(framework, parameters, candidate_id)
    notes.extend(shared_notes)
    if pair_field.estimated_pairs:
        notes.append(
            "softBV parameters estimated (not in the table) for "
            + ", ".join(pair_field.estimated_pairs)
            + ": screening.forcefield.estimated_morse_parameters"
        )
    energy, coarse_percolation, complete_below = _potential_grid(
        pair_field, fine, coarse, parameters
    )
    lap("potential")
    percolation = _merge_percolation(
        percolation_energies(
            energy, parameters.percolation_ceiling_eV, parameters.percolation_tolerance_eV
        ),
        coarse_percolation,
        complete_below,
        notes,
    )
    e1 = percolation.energies_eV[1]
    if not np.isfinite(e1):
        raise NoPercolationError(
            f"no percolating channel within {parameters.percolation_ceiling_eV} eV of the "
            "potential minimum",
            candidate_id,
        )
    lap("percolation")

    kt = thermal_energy_eV(parameters.temperature_K)
    region = _transport_region(energy, e1 + parameters.window_kT * kt)
    values = evaluate_grid(pair_field, fine, region, derivatives=2, hessian_only=True)
    assert values.hessian_eV_per_A2 is not None
    gamma_region = drag_tensor(values.hessian_eV_per_A2, elastic_data.lambda_s3_per_kg)
    lap("drag")

    # the loop runs through the channel that percolates at E_1, not through a deeper
    # pocket beside it
    grid_path = grid_percolating_path(
        energy,
        fine,
        e1 + parameters.window_kT * kt,
        parameters.temperature_K,
        candidate_id,
        channel_level_eV=percolation.channel_level_eV,
    )
    start = smooth(resample(grid_path, 0.1), 0.3)
    path = relax_path(pair_field, start, iterations=parameters.path_relax_iterations)
    along = evaluate_points(pair_field, path.points_A, derivatives=2)
    assert along.hessian_eV_per_A2 is not None
    tangents = path.tangents
    gamma_path = drag_tensor(along.hessian_eV_per_A2, elastic_data.lambda_s3_per_kg)
    gamma_parallel = np.einsum("pi,pij,pj->p", tangents, gamma_path, tangents)
    curvature = np.einsum("pi,pij,pj->p", tangents, along.hessian_eV_per_A2, tangents)
    path = PercolatingPath(
        path.points_A, path.translation_A, path.translation_cells, along.energy_eV
    )
    lap("path")

    analysis = Analysis(
        framework=framework,
        field=pair_field,
        elastic=elastic_data,
        grid=fine,
        energy_grid_eV=energy,
        percolation=percolation,
        region_flat=region,
        gamma_region_kg_per_s=gamma_region,
        path=path,
        path_gamma_parallel_kg_per_s=gamma_parallel,
        path_curvature_eV_per_A2=curvature,
        path_hessian_eV_per_A2=along.hessian_eV_per_A2,
        path_transverse_eV_per_A2=transverse_curvatures(along.hessian_eV_per_A2, tangents),
        dimensionality=_dimensionality(percolation, parameters),
        notes=notes,
        seconds=seconds,
        shared_sites=shared_sites,
        arrangement=arrangement,
        structure=structure,
    )
    _transport(analysis, parameters)
    lap("transport")
    return analysis


def _shared_site_treatment(
    framework: Framework, parameters: ScreeningParameters
) -> tuple[float, str, ArrangementFactor | None, list[str]]:
    """Site-exclusion radius, treatment name, arrangement factor and notes of shared sites.

    With ``parameters.shared_sites == "random_network"`` and a framework cation sharing a
    site with the mobile ion, the landscape gets site exclusion on the shared sites
    (:data:`screening.disorder.SHARED_SITE_EXCLUSION_RADIUS_A` or the parameter's larger
    radius) and the transport the arrangement factor of the random network
    (:func:`screening.disorder.arrangement_factor`). When no drawn network of free sites
    conducts, the mean field is kept and a note says so.
    """
    radius = parameters.site_exclusion_radius_A
    if parameters.shared_sites == "mean_field" or not has_shared_cation_sites(framework):
        return radius, "mean_field", None, []
    network = shared_site_network(framework)
    factor = arrangement_factor(network, parameters.temperature_K)
    if not np.isfinite(factor.log10_factor):
        return (
            radius,
            "mean_field",
            factor,
            [
                "shared sites: no random arrangement of the framework ions leaves a "
                f"conducting network of free sites ({factor.n_network_sites} sites, "
                f"supercell {factor.supercell}); the mean field is kept"
            ],
        )
    note = (
        f"shared sites: random network of {factor.n_network_sites} sites, arrangement "
        f"factor 10^{factor.log10_factor:.2f} (spread {factor.log10_spread:.2f} decades over "
        f"draws, {factor.conducting_fraction:.0%} conducting)"
    )
    return max(radius, SHARED_SITE_EXCLUSION_RADIUS_A), "random_network", factor, [note]


def transverse_curvatures(hessians_eV_per_A2: np.ndarray, tangents: np.ndarray) -> np.ndarray:
    """Return the two curvatures of U across the path (eV/A^2), shape (P, 2), ascending.

    Eigenvalues of P H P with P = 1 - t t^T, without the zero along t.
    """
    projector = np.eye(3)[None] - tangents[:, :, None] * tangents[:, None, :]
    values = np.linalg.eigvalsh(projector @ hessians_eV_per_A2 @ projector)
    # drop the eigenvalue whose eigenvector is t (the one closest to zero)
    order = np.argsort(np.abs(values), axis=1)
    return np.sort(np.take_along_axis(values, order[:, 1:], axis=1), axis=1)


def entropic_profile_eV(
    energy_eV: np.ndarray, curvatures_eV_per_A2: np.ndarray, temperature_K: float
) -> np.ndarray:
    """Free energy along the path with the transverse (harmonic) entropy, eV.

    Fick-Jacobs reduction: the channel's cross-section partition function is
    A(s) = 2 pi k_B T / sqrt(k_1 k_2), so F(s) = U(s) + (k_B T / 2) ln(k_1 k_2) up to a
    constant, which cancels in the path formula. Curvatures are floored at
    :data:`MIN_TRANSVERSE_CURVATURE_EV_PER_A2`: where the channel is wide or the path leaves
    the valley floor the harmonic picture fails, and the floor caps the width at ~0.5 A.
    """
    kt = thermal_energy_eV(temperature_K)
    k = np.maximum(curvatures_eV_per_A2, MIN_TRANSVERSE_CURVATURE_EV_PER_A2)
    return energy_eV + 0.5 * kt * np.log(k[:, 0] * k[:, 1])


def _transport(analysis: Analysis, parameters: ScreeningParameters) -> None:
    """Mobility, diffusion and conductivity estimates (fills ``analysis.results``).

    Every estimate gives three principal conductivities and their polycrystal average
    (``parameters.polycrystal_average``), all in log10 S/cm:

    ``path``: the path formula along the channel of E_1; the second and third directions
    open at E_2 and E_3, with the channel's prefactor and exp(-(E_d - E_1)/k_B T);
    ``path_entropic``: the same with the channel's transverse entropy (Fick-Jacobs);
    ``homogenised``: the eigenvalues of the 3D tensor on the grid (grid-limited where the
    channel is narrower than the grid spacing; see docs/theory.md).
    The headline is ``parameters.headline``; the reported tensor is the homogenised one
    scaled so that its largest principal value is the headline's channel value. All carry
    the inertial (Kramers) factor when enabled; ``overdamped``, ``constant_drag`` and
    ``global_lambda`` are ablations of the headline.
    """
    framework = analysis.framework
    path = analysis.path
    temperature = parameters.temperature_K
    saddle = int(np.argmax(path.energy_eV))
    saddle_gamma = drag_tensor(
        analysis.path_hessian_eV_per_A2[saddle], analysis.elastic.lambda_s3_per_kg
    )
    floor = drag_floor_kg_per_s(saddle_gamma, parameters.drag_floor_fraction)
    gamma_par_saddle = float(analysis.path_gamma_parallel_kg_per_s[saddle])
    curvature_saddle = float(analysis.path_curvature_eV_per_A2[saddle])
    factor, g, omega_b = kramers_factor(
        gamma_par_saddle + floor, curvature_saddle, framework.mobile_mass_amu
    )
    inertia = factor if parameters.inertia_correction else 1.0
    log_inertia = float(np.log10(inertia))
    gamma_path = analysis.path_gamma_parallel_kg_per_s + floor
    translation = float(np.linalg.norm(path.translation_A))
    charge = framework.mobile_charge_e
    energies = analysis.percolation.energies_eV

    homog = homogenised_diffusion(
        analysis.energy_grid_eV,
        analysis.grid.step_matrix_A,
        analysis.region_flat,
        regularised_drag(analysis.gamma_region_kg_per_s, floor),
        temperature,
    )
    connection = None
    if parameters.carrier_density == "connected_sites":
        connection = _site_connection(analysis, parameters)
    defects = _defect_model(analysis, parameters)
    # the share of the open network's conductance that a random arrangement of the
    # framework ions on shared sites leaves (1 in the mean field)
    arranged = 1.0
    if analysis.shared_sites == "random_network" and analysis.arrangement is not None:
        arranged = 10.0**analysis.arrangement.log10_factor

    # the temperature-independent conventions are evaluated once
    fixed_fraction = homog.region_weight_fraction
    if parameters.carrier_density == "percolating_sites":
        fixed_fraction = _site_fraction(analysis, analysis.region_flat)

    def carriers_at(t: float) -> float:
        """Carrier density at temperature t, 1/m^3 (connected-site weights depend on t)."""
        fraction = fixed_fraction if connection is None else connection.fraction(t)
        return framework.carrier_density_per_m3 * fraction * defects.fraction(t) * arranged

    carriers = carriers_at(temperature)

    def log10_conversion(t: float) -> float:
        """log10 of n q^2 / (k_B T) in S/cm per m^2/s."""
        unit = nernst_einstein_S_per_m(1.0, max(carriers_at(t), 1e-300), charge, t)
        return float(np.log10(unit * S_PER_M_TO_S_PER_CM))

    average = POLYCRYSTAL_AVERAGES[parameters.polycrystal_average]

    def polycrystal(relative: np.ndarray) -> float:
        """log10 of the polycrystal average of principal values given relative to a scale."""
        return _log10(average(relative))

    # a dimension that does not percolate below the ceiling opens at least there: its
    # conductivity is bounded by the ceiling's (the estimate is then an upper bound)
    ceiling = analysis.percolation.minimum_energy_eV + analysis.percolation.ceiling_eV
    openings = {d: energies[d] if np.isfinite(energies[d]) else ceiling for d in (1, 2, 3)}
    if not all(np.isfinite(energies[d]) for d in (2, 3)):
        analysis.notes.append(
            "no 3D percolation below the ceiling: conductivities use the ceiling as E_3D "
            "and are upper bounds"
        )

    def opening_ratios(t: float) -> np.ndarray:
        """Principal values relative to the channel: exp(-(E_d - E_1)/k_B T)."""
        kt_t = thermal_energy_eV(t)
        return np.array([np.exp(-(openings[d] - openings[1]) / kt_t) for d in (1, 2, 3)])

    site_energies = None
    if parameters.barrier_reference == "occupied_sites":
        site_energies = evaluate_points(
            analysis.field, framework.mobile_frac_coords @ framework.lattice_matrix_A
        ).energy_eV

    def channel_log10(t: float, entropic: bool, gamma: np.ndarray) -> float:
        """log10 sigma (S/cm) along the channel of E_1, path formula, overdamped."""
        profile = (
            entropic_profile_eV(path.energy_eV, analysis.path_transverse_eV_per_A2, t)
            if entropic
            else path.energy_eV
        )
        if site_energies is not None:
            # the ions start from their own sites: the profile below their level is filled
            level = occupied_site_level_eV(
                site_energies, framework.mobile_occupancies, t, float(np.max(profile))
            )
            if level is not None:
                profile = np.maximum(profile, level)
        pm = path_mobility(path.segment_lengths_A, profile, gamma, translation, t)
        return pm.log10_diffusion_m2_per_s + log10_conversion(t)

    def path_estimate(t: float, entropic: bool, gamma: np.ndarray) -> float:
        """log10 sigma (S/cm), polycrystal, with every Boltzmann factor at t.

        D = k_B t mu and n q^2 / (k_B t) cancel their k_B t, so at a Boltzmann temperature
        t other than the true one this is sigma with the compensated Boltzmann factors.
        """
        return channel_log10(t, entropic, gamma) + polycrystal(opening_ratios(t))

    # Meyer-Neldel compensation (screening.mobility.meyer_neldel_temperature_K): the
    # phonon scale is the ion's own vibration in the channel's lowest site
    lowest = int(np.argmin(path.energy_eV))
    phonon_energy = site_phonon_energy_eV(
        analysis.path_hessian_eV_per_A2[lowest], framework.mobile_mass_amu
    )

    def boltzmann_t(t: float) -> float:
        """Temperature of the Boltzmann factors of the path estimates at t, K."""
        if parameters.barrier_compensation == "meyer_neldel":
            return meyer_neldel_temperature_K(t, phonon_energy)
        return t

    sigma_homog = (
        nernst_einstein_S_per_m(homog.diffusion_m2_per_s, carriers, charge, temperature)
        * S_PER_M_TO_S_PER_CM
    )
    homog_principal = np.linalg.eigvalsh(0.5 * (sigma_homog + sigma_homog.T))
    top = float(np.max(homog_principal))
    homog_estimate = _log10(top) + polycrystal(homog_principal / top) if top > 0 else float("-inf")
    estimates: dict[str, float] = {
        "homogenised": homog_estimate + log_inertia,
        "path": path_estimate(boltzmann_t(temperature), False, gamma_path) + log_inertia,
        "path_entropic": path_estimate(boltzmann_t(temperature), True, gamma_path) + log_inertia,
    }
    headline = estimates[parameters.headline]
    entropic = parameters.headline != "path"
    # ablation: every ion a carrier (sigma is linear in the carrier density)
    estimates["all_ions"] = headline - _log10(defects.fraction(boltzmann_t(temperature)))
    # the barrier scale: the path headline with and without Meyer-Neldel compensation
    compensated = meyer_neldel_temperature_K(temperature, phonon_energy)
    estimates["meyer_neldel"] = path_estimate(compensated, entropic, gamma_path) + log_inertia
    estimates["uncompensated"] = path_estimate(temperature, entropic, gamma_path) + log_inertia
    # the headline's channel under every polycrystal average (an ablation of that choice)
    channel_now = channel_log10(boltzmann_t(temperature), entropic, gamma_path) + log_inertia
    for name, combine in POLYCRYSTAL_AVERAGES.items():
        estimates[f"average_{name}"] = channel_now + _log10(
            combine(opening_ratios(boltzmann_t(temperature)))
        )
    estimates["overdamped"] = headline - log_inertia
    estimates["constant_drag"] = path_estimate(
        boltzmann_t(temperature), entropic, np.full(len(gamma_path), CONSTANT_FRICTION_KG_PER_S)
    )
    # one global Lambda: gamma and its floor scale with Lambda; the inertial factor changes
    ratio = GLOBAL_LAMBDA_S3_PER_KG / float(np.trace(analysis.elastic.lambda_s3_per_kg) / 3.0)
    global_factor = 1.0
    if parameters.inertia_correction:
        global_factor = kramers_factor(
            (gamma_par_saddle + floor) * ratio, curvature_saddle, framework.mobile_mass_amu
        )[0]
    estimates["global_lambda"] = (
        headline - log_inertia - float(np.log10(ratio)) + float(np.log10(global_factor))
    )

    # the tensor: shape from the 3D solution on the grid, scaled so that its largest
    # principal value is the headline's channel value
    if parameters.headline == "homogenised" or top <= 0:
        tensor = sigma_homog * inertia
    else:
        channel = channel_log10(boltzmann_t(temperature), entropic, gamma_path) + log_inertia
        tensor = sigma_homog * (10.0**channel / top)

    if headline < LOWEST_PLAUSIBLE_LOG10_SIGMA:
        channel = channel_log10(boltzmann_t(temperature), entropic, gamma_path) + log_inertia
        analysis.notes.append(
            f"sigma below 1e{LOWEST_PLAUSIBLE_LOG10_SIGMA:.0f} S/cm: the "
            f"{parameters.polycrystal_average} polycrystal average is set by the slowest "
            f"direction, which opens {openings[3] - openings[1]:.2f} eV above the channel "
            f"(E_3D - E_1D); along the channel alone log10 sigma = {channel:.1f} (S/cm)"
        )
    arrhenius = None
    if parameters.arrhenius_temperatures_K:
        ts = np.array(parameters.arrhenius_temperatures_K)
        if parameters.headline == "homogenised":
            logs = np.array(
                [
                    _log10_homogenised(analysis, floor, carriers_at(t), charge, t, polycrystal)
                    for t in ts
                ]
            )
        else:
            logs = np.array([path_estimate(boltzmann_t(t), entropic, gamma_path) for t in ts])
        logs = logs + log_inertia
        if np.all(np.isfinite(logs)):
            arrhenius = (ts, logs, arrhenius_fit(ts, logs))
    analysis.results = {
        "floor": floor,
        "gamma_par_saddle": gamma_par_saddle,
        "kramers": (factor, g, omega_b),
        "inertia": inertia,
        "homogenised": homog,
        "carriers": carriers,
        "defects": defects,
        "phonon_energy_eV": phonon_energy,
        "estimates": estimates,
        "sigma_tensor": tensor,
        "arrhenius": arrhenius,
    }


def _log10_homogenised(
    analysis: Analysis,
    floor: float,
    carriers: float,
    charge: float,
    temperature: float,
    polycrystal: Any,
) -> float:
    """Polycrystal log10 sigma (S/cm, overdamped) of the 3D tensor at another temperature."""
    homog = homogenised_diffusion(
        analysis.energy_grid_eV,
        analysis.grid.step_matrix_A,
        analysis.region_flat,
        regularised_drag(analysis.gamma_region_kg_per_s, floor),
        temperature,
    )
    sigma = (
        nernst_einstein_S_per_m(homog.diffusion_m2_per_s, carriers, charge, temperature)
        * S_PER_M_TO_S_PER_CM
    )
    principal = np.linalg.eigvalsh(0.5 * (sigma + sigma.T))
    top = float(np.max(principal))
    return _log10(top) + polycrystal(principal / top) if top > 0 else float("-inf")


def _dimensionality(percolation: PercolationResult, parameters: ScreeningParameters) -> int:
    """Highest d whose percolation energy is within the window of E_1 (at least 1)."""
    e1 = percolation.energies_eV[1]
    return max(
        d
        for d in (1, 2, 3)
        if np.isfinite(percolation.energies_eV[d])
        and percolation.energies_eV[d] - e1 <= parameters.dimensionality_window_eV + 1e-12
    )


def _log10(value: float) -> float:
    return float(np.log10(value)) if value > 0 else float("-inf")


@dataclasses.dataclass(frozen=True)
class SiteConnection:
    """Where each mobile-ion site joins the conducting network (``connected_sites``).

    Attributes
    ----------
    levels_eV
        L_i, the level at which site i's basin joins a percolating channel, eV (sites not
        connected below the percolation ceiling carry the ceiling: an upper bound).
    occupancies
        The sites' occupancies.
    start_eV
        The channel's own level (just above E_1), eV; sites at or below it count fully.
    """

    levels_eV: np.ndarray
    occupancies: np.ndarray
    start_eV: float

    def fraction(self, temperature_K: float) -> float:
        """Occupancy-weighted mean of exp(-(L_i - start) / k_B T) (dimensionless)."""
        kt = thermal_energy_eV(temperature_K)
        boltzmann = np.exp(-np.clip(self.levels_eV - self.start_eV, 0.0, None) / kt)
        return float(np.sum(self.occupancies * boltzmann) / self.occupancies.sum())


def _site_connection(analysis: Analysis, parameters: ScreeningParameters) -> SiteConnection | None:
    """Return the connection levels of the mobile-ion sites, or None (all-sites carriers).

    L_i is the level at which site i's basin joins a percolating channel
    (:func:`screening.percolation.site_connection_levels_eV`): ions on sites in the channel
    count fully, ions in pockets behind a higher bottleneck by the Boltzmann factor of the
    extra climb (:meth:`SiteConnection.fraction`). A site not connected below the
    percolation ceiling gets the ceiling (an upper bound, as for E_3D). Sites where the
    mean-field U is above the ceiling or was not evaluated (a framework ion shares them)
    are left out; when no site is left, None is returned and a note says so.
    """
    framework = analysis.framework
    percolation = analysis.percolation
    ceiling = percolation.minimum_energy_eV + percolation.ceiling_eV
    voxels = site_voxels(analysis.energy_grid_eV.shape, framework.mobile_frac_coords)
    site_energy = analysis.energy_grid_eV.ravel()[voxels]
    valid = np.isfinite(site_energy) & (site_energy < ceiling) & (framework.mobile_occupancies > 0)
    if not np.any(valid):
        analysis.notes.append(
            "connected_sites: no mobile-ion site with a meaningful U; all-sites carriers used"
        )
        return None
    start = percolation.channel_level_eV
    levels = site_connection_levels_eV(
        analysis.energy_grid_eV,
        framework.mobile_frac_coords[valid],
        start,
        ceiling,
        tolerance_eV=0.5 * thermal_energy_eV(parameters.temperature_K),
    )
    if not np.all(np.isfinite(levels)):
        analysis.notes.append(
            "connected_sites: some mobile-ion sites join no channel below the ceiling; "
            "their carriers are bounded with the ceiling"
        )
    return SiteConnection(np.minimum(levels, ceiling), framework.mobile_occupancies[valid], start)


@dataclasses.dataclass(frozen=True)
class DefectModel:
    """Which ions carry current: lattice-gas vacancies, Frenkel pairs, extrinsic defects.

    Attributes
    ----------
    statistics
        ``parameters.carrier_statistics``: ``lattice_gas`` or ``all_ions`` (every ion a
        carrier, the single-ion picture).
    sublattice
        The mobile-ion sublattice as a lattice gas
        (:func:`screening.carriers.sublattice_occupancy`).
    frenkel
        The cheapest Frenkel pair (:func:`screening.carriers.frenkel_pair`).
    extrinsic_fraction
        ``parameters.extrinsic_defect_fraction``.
    """

    statistics: str
    sublattice: SublatticeOccupancy
    frenkel: FrenkelPair
    extrinsic_fraction: float

    def intrinsic_fraction(self, temperature_K: float) -> float:
        """Frenkel vacancy fraction exp(-E_F / 2 k_B T) at a temperature in K."""
        return intrinsic_defect_fraction(self.frenkel.formation_energy_eV, temperature_K)

    def fraction(self, temperature_K: float) -> float:
        """Fraction of the ions that are carriers at a temperature in K (1 for all_ions)."""
        if self.statistics == "all_ions":
            return 1.0
        return carrier_fraction(
            self.sublattice.vacancy_fraction,
            self.intrinsic_fraction(temperature_K),
            self.extrinsic_fraction,
        )

    def mechanism(self, temperature_K: float) -> str:
        """Return the dominant carrier mechanism at a temperature in K."""
        if self.statistics == "all_ions":
            return "all_ions"
        return carrier_mechanism(
            self.sublattice.vacancy_fraction,
            self.intrinsic_fraction(temperature_K),
            self.extrinsic_fraction,
        )


#: Empty minima of the grid tried as the interstitial of a Frenkel pair.
FRENKEL_INTERSTITIALS: int = 8

#: Newton refinement of a grid minimum: largest step (A) and most steps.
REFINE_STEP_A: float = 0.1
REFINE_ITERATIONS: int = 20


def _refine_minima(
    field_: PairField, frac_coords: np.ndarray, lattice_matrix_A: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Polish grid minima of U with Newton steps on the analytic gradient and Hessian.

    Each step is x <- x - H^-1 g where H is positive definite (else a gradient step),
    capped at :data:`REFINE_STEP_A`; at most :data:`REFINE_ITERATIONS` steps, stopping when
    the gradient is below 1e-4 eV/A. A step that raises U is halved (up to 10 times).

    Returns the refined fractional positions and U there (eV).
    """
    points = np.atleast_2d(frac_coords) @ lattice_matrix_A
    values = evaluate_points(field_, points, derivatives=2)
    energy = values.energy_eV.copy()
    for _ in range(REFINE_ITERATIONS):
        gradient, hessian = values.gradient_eV_per_A, values.hessian_eV_per_A2
        assert gradient is not None and hessian is not None
        if np.all(np.linalg.norm(gradient, axis=1) < 1e-4):
            break
        step = np.empty_like(points)
        for k in range(len(points)):
            eigen = np.linalg.eigvalsh(hessian[k])
            if eigen[0] > 1e-3:
                step[k] = -np.linalg.solve(hessian[k], gradient[k])
            else:
                step[k] = -gradient[k] / max(float(np.abs(eigen).max()), 1.0)
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, REFINE_STEP_A / np.maximum(length, 1e-300))
        for _ in range(10):
            trial = evaluate_points(field_, points + step, derivatives=2)
            worse = trial.energy_eV > energy
            if not np.any(worse):
                break
            step[worse] *= 0.5
        better = trial.energy_eV <= energy
        points[better] = (points + step)[better]
        values = evaluate_points(field_, points, derivatives=2)
        energy = values.energy_eV.copy()
    return points @ np.linalg.inv(lattice_matrix_A), energy


def _defect_model(analysis: Analysis, parameters: ScreeningParameters) -> DefectModel:
    """Lattice-gas occupancy and the Frenkel pair of the candidate's landscape.

    The Frenkel pair starts from mobile-ion sites that no framework ion shares (U there is
    finite and meaningful) and ends in the empty minima of the fine grid (+inf where the
    grid was not refined: minima higher than the refinement level are not candidates).
    """
    framework = analysis.framework
    lattice = framework.lattice_matrix_A
    sublattice = framework_sublattice(framework)
    site_energy = evaluate_points(analysis.field, framework.mobile_frac_coords @ lattice).energy_eV
    site_energy = np.where(framework.mobile_site_framework_occupancies > 0, np.inf, site_energy)
    minima = grid_local_minima(analysis.energy_grid_eV)
    minima_frac = analysis.grid.frac_coords(minima)
    # the empty minima (farther than the merge radius from every mobile-ion position),
    # the lowest few refined off the grid so that E_F does not depend on the grid's offset
    empty = far_from_all(minima_frac, framework.mobile_frac_coords, lattice, SITE_MERGE_RADIUS_A)
    order = np.argsort(analysis.energy_grid_eV.ravel()[minima[empty]])
    minima_frac = minima_frac[empty][order[:FRENKEL_INTERSTITIALS]]
    minima_frac, minima_energy = _refine_minima(analysis.field, minima_frac, lattice)
    charge = round(framework.mobile_charge_e)
    prefactor, screening = coulomb_pair_parameters(
        framework.mobile_element, charge, framework.mobile_element, charge
    )
    frenkel = frenkel_pair(
        framework.mobile_frac_coords,
        framework.mobile_occupancies,
        site_energy,
        minima_frac,
        minima_energy,
        lattice,
        prefactor,
        screening,
    )
    return DefectModel(
        parameters.carrier_statistics, sublattice, frenkel, parameters.extrinsic_defect_fraction
    )


def _site_fraction(analysis: Analysis, region_flat: np.ndarray) -> float:
    """Occupancy-weighted fraction of mobile-ion sites whose grid voxel is in the region."""
    framework = analysis.framework
    if framework.mobile_occupancies.sum() == 0:
        return 0.0
    inside = np.isin(site_voxels(analysis.grid.shape, framework.mobile_frac_coords), region_flat)
    return float(framework.mobile_occupancies[inside].sum() / framework.mobile_occupancies.sum())


def result_document(
    candidate: Candidate, analysis: Analysis, parameters: ScreeningParameters
) -> CandidateResult:
    """Build the output document of a scored candidate."""
    res = analysis.results
    homog: HomogenisedDiffusion = res["homogenised"]
    defects: DefectModel = res["defects"]
    estimates = res["estimates"]
    sigma = res["sigma_tensor"]
    headline = estimates[parameters.headline]
    percolation = analysis.percolation
    barriers = percolation.barriers_eV
    dimensionality = analysis.dimensionality
    factor, g, omega_b = res["kramers"]
    u_min = percolation.minimum_energy_eV
    path = analysis.path
    arrhenius = res["arrhenius"]
    lam = analysis.elastic.lambda_s3_per_kg
    framework_summary = analysis.framework.summary()
    framework_summary["n_transport_region_points"] = len(analysis.region_flat)
    band_gap = band_gap_of(candidate)
    framework = analysis.framework
    electronic, electronic_reason = electronic_conductor_flag(
        framework.elements,
        framework.charges_e,
        band_gap,
        occupancies=framework.occupancies,
        other_charge_e=framework.mobile_charge_e * float(np.sum(framework.mobile_occupancies)),
    )
    return CandidateResult(
        candidate_id=candidate.candidate_id,
        formula=candidate.formula or analysis.framework.formula,
        source=candidate.source,
        ion=analysis.framework.mobile_element,
        status="ok",
        temperature_K=parameters.temperature_K,
        parameters_fingerprint=parameters.fingerprint(),
        candidate_fingerprint=candidate.fingerprint(),
        provenance=candidate.provenance,
        experimental_sigma_S_per_cm=candidate.experimental_sigma_S_per_cm,
        band_gap_eV=band_gap,
        likely_electronic_conductor=electronic,
        electronic_conductor_reason=electronic_reason,
        barrier_eV=finite_or_none(barriers[1]),
        barrier_1d_eV=finite_or_none(barriers[1]),
        barrier_2d_eV=finite_or_none(barriers[2]),
        barrier_3d_eV=finite_or_none(barriers[3]),
        dimensionality=dimensionality,
        path_barrier_eV=finite_or_none(float(path.energy_eV.max() - path.energy_eV.min())),
        sigma_S_per_cm=finite_or_none(10.0**headline),
        log10_sigma_S_per_cm=finite_or_none(headline),
        headline_method=parameters.headline,
        sigma_xx_S_per_cm=finite_or_none(sigma[0, 0]),
        sigma_yy_S_per_cm=finite_or_none(sigma[1, 1]),
        sigma_zz_S_per_cm=finite_or_none(sigma[2, 2]),
        sigma_tensor_S_per_cm=matrix_list(sigma),
        anisotropy_ratio=finite_or_none(anisotropy_ratio(sigma)),
        log10_sigma_path_S_per_cm=finite_or_none(estimates["path"]),
        log10_sigma_path_entropic_S_per_cm=finite_or_none(estimates["path_entropic"]),
        log10_sigma_homogenised_S_per_cm=finite_or_none(estimates["homogenised"]),
        log10_sigma_overdamped_S_per_cm=finite_or_none(estimates["overdamped"]),
        log10_sigma_path_constant_drag_S_per_cm=finite_or_none(estimates["constant_drag"]),
        log10_sigma_global_lambda_S_per_cm=finite_or_none(estimates["global_lambda"]),
        diffusion_tensor_m2_per_s=matrix_list(homog.diffusion_m2_per_s),
        diffusion_parallel_bound_m2_per_s=matrix_list(homog.parallel_bound_m2_per_s),
        diffusion_series_bound_m2_per_s=matrix_list(homog.series_bound_m2_per_s),
        mobile_ion_density_per_m3=finite_or_none(analysis.framework.carrier_density_per_m3),
        carrier_density_per_m3=finite_or_none(res["carriers"]),
        carrier_convention=parameters.carrier_density,
        carrier_mechanism=defects.mechanism(parameters.temperature_K),
        carrier_fraction=finite_or_none(defects.fraction(parameters.temperature_K)),
        sublattice_vacancy_fraction=finite_or_none(defects.sublattice.vacancy_fraction),
        frenkel_energy_eV=finite_or_none(defects.frenkel.formation_energy_eV),
        log10_sigma_all_ions_S_per_cm=finite_or_none(estimates["all_ions"]),
        shared_site_treatment=analysis.shared_sites,
        log10_arrangement_factor=finite_or_none(
            analysis.arrangement.log10_factor if analysis.arrangement else None
        ),
        arrangement_spread_log10=finite_or_none(
            analysis.arrangement.log10_spread if analysis.arrangement else None
        ),
        barrier_compensation=parameters.barrier_compensation,
        meyer_neldel_energy_eV=finite_or_none(res["phonon_energy_eV"]),
        log10_sigma_meyer_neldel_S_per_cm=finite_or_none(estimates["meyer_neldel"]),
        log10_sigma_by_average_S_per_cm={
            name: finite_or_none(estimates[f"average_{name}"]) for name in POLYCRYSTAL_AVERAGES
        },
        log10_sigma_uncompensated_S_per_cm=finite_or_none(estimates["uncompensated"]),
        region_weight_fraction=finite_or_none(homog.region_weight_fraction),
        drag_saddle_kg_per_s=finite_or_none(res["gamma_par_saddle"]),
        drag_floor_kg_per_s=finite_or_none(res["floor"]),
        lambda_s3_per_kg=matrix_list(lam),
        bulk_modulus_GPa=analysis.elastic.bulk_modulus_GPa,
        shear_modulus_GPa=analysis.elastic.shear_modulus_GPa,
        elastic_source=analysis.elastic.elastic_source,
        density_kg_per_m3=analysis.framework.density_kg_per_m3,
        barrier_frequency_rad_per_s=finite_or_none(omega_b),
        reduced_friction=finite_or_none(g),
        kramers_factor=finite_or_none(factor),
        damping_regime=damping_regime(g),
        inertia_flag=bool(g < 1.0),
        activation_energy_eV=finite_or_none(arrhenius[2].activation_energy_eV)
        if arrhenius
        else None,
        arrhenius_prefactor_S_K_per_cm=(
            finite_or_none(arrhenius[2].prefactor_S_K_per_cm) if arrhenius else None
        ),
        arrhenius_temperatures_K=[float(t) for t in arrhenius[0]] if arrhenius else None,
        arrhenius_log10_sigma_S_per_cm=[float(v) for v in arrhenius[1]] if arrhenius else None,
        path=PathProfile(
            arc_length_A=[float(x) for x in path.arc_length_A],
            energy_eV=[float(x) for x in path.energy_eV - u_min],
            gamma_parallel_kg_per_s=[float(x) for x in analysis.path_gamma_parallel_kg_per_s],
            translation_cells=[int(x) for x in path.translation_cells],
            translation_A=[float(x) for x in path.translation_A],
            length_A=path.length_A,
        ),
        framework=framework_summary,
        grid_shape=list(analysis.grid.shape),
        grid_spacing_A=float(np.max(np.linalg.norm(analysis.grid.step_matrix_A, axis=1))),
        warnings=list(analysis.notes),
        seconds=dict(analysis.seconds),
    )


#: CandidateResult fields taken from :func:`screening.universal.universal_fields`.
UNIVERSAL_RESULT_FIELDS: tuple[str, ...] = (
    "potential_backend",
    "barrier_universal_eV",
    "log10_sigma_universal_S_per_cm",
    "drag_saddle_universal_kg_per_s",
    "kramers_factor_universal",
    "universal_path",
    "universal_details",
    "universal_error",
    "universal_error_cause",
)


def universal_result_fields(
    structure: Any,
    analysis: Analysis,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    settings: UniversalSettings | None = None,
) -> tuple[dict[str, Any], list[str], float]:
    """CHGNet along the BVSE path of ``analysis``; never raises for a candidate.

    Returns
    -------
    fields
        The :data:`UNIVERSAL_RESULT_FIELDS` of the document (None numbers and the error
        with its cause when CHGNet failed: ml extra missing, ordering, supercell above
        ``settings.max_atoms``, a model failure, or an unexpected exception).
    notes
        Warnings of the CHGNet evaluation (e.g. the path runs through an atom of the
        ordered realisation of a disordered framework).
    seconds
        Wall time of the CHGNet evaluation, s.
    """
    from screening.universal import chgnet_path_profile, universal_fields, universal_transport

    started = time.perf_counter()
    notes: list[str] = []
    try:
        result = chgnet_path_profile(
            structure, analysis, settings=settings, candidate_id=candidate_id
        )
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # IondragError with its cause; anything else: internal_error
        fields = universal_fields(None, None, error=_named(error, candidate_id))
    else:
        notes = [f"universal potential (CHGNet): {note}" for note in result.notes]
        try:
            with np.errstate(over="ignore", under="ignore"):
                transport = universal_transport(result, analysis, parameters)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as error:  # the profile is kept, the conductivity is not
            fields = universal_fields(result, None)
            failed = universal_fields(None, None, error=_named(error, candidate_id))
            fields["universal_error"] = failed["universal_error"]
            fields["universal_error_cause"] = failed["universal_error_cause"]
        else:
            fields = universal_fields(result, transport)
    fields = {name: fields.get(name) for name in UNIVERSAL_RESULT_FIELDS}
    return fields, notes, time.perf_counter() - started


def _named(error: BaseException, candidate_id: str | None) -> BaseException:
    """Return the error naming the candidate (IondragError) or with its type (others)."""
    if isinstance(error, IondragError):
        return error.with_candidate(candidate_id) if candidate_id else error
    prefix = f"{candidate_id}: " if candidate_id else ""
    return RuntimeError(f"{prefix}{type(error).__name__}: {error}")  # cause: internal_error


def _failure(
    candidate: Candidate,
    error: BaseException | str,
    parameters: ScreeningParameters,
    **kwargs: Any,
) -> CandidateResult:
    """Return a failed document of this screen (its potential backend recorded)."""
    document = CandidateResult.from_failure(
        candidate,
        error,
        temperature_K=parameters.temperature_K,
        parameters_fingerprint=parameters.fingerprint(),
        **kwargs,
    )
    document.potential_backend = parameters.potential
    return document


def score_candidate(
    candidate: Candidate,
    parameters: ScreeningParameters,
    *,
    keep_grids: bool = False,
    universal_settings: UniversalSettings | None = None,
) -> tuple[CandidateResult, CandidateGrids | None]:
    """Score one candidate; never raises for a bad candidate.

    Returns the result document (status ``failed`` with a one-line error naming the
    candidate for documented bad input, ``error`` for an unexpected exception) and, when
    asked and scored, the grids for the data store.

    With ``parameters.potential == "chgnet"`` a scored candidate also gets CHGNet along its
    BVSE path (:func:`universal_result_fields`, numerics ``universal_settings``, default
    :class:`screening.universal.UniversalSettings`); the BVSE fields are unchanged and stay
    the headline, and a CHGNet failure is recorded in ``universal_error`` /
    ``universal_error_cause`` without failing the candidate.
    """
    if not candidate.ok:
        return (
            _failure(
                candidate,
                candidate.load_error or "no structure",
                parameters,
                cause=candidate.load_error_cause or "parse_error",
            ),
            None,
        )
    started = time.perf_counter()
    try:
        # one BLAS thread: screens parallelise over candidates (processes), and threaded
        # BLAS on small matrix-vector products oversubscribes the cores (8x slower, measured)
        with threadpool_limits(limits=1), np.errstate(over="ignore", under="ignore"):
            analysis = analyse_candidate(
                candidate.structure,
                parameters,
                candidate_id=candidate.candidate_id,
                mobile_ion=parameters.ion or candidate.mobile_ion,
                elastic=candidate.elastic,
            )
            document = result_document(candidate, analysis, parameters)
    except IondragError as error:
        return _failure(
            candidate, error, parameters, ion=parameters.ion or candidate.mobile_ion
        ), None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a bug must not stop the screen; it is recorded as "error"
        return _failure(
            candidate, error, parameters, ion=parameters.ion or candidate.mobile_ion
        ), None
    if parameters.elastic == "chgnet" and candidate.elastic is None:
        reason = candidate.provenance.get("elastic_chgnet_error") or (
            "no CHGNet elastic tensor reached this candidate (the jobflow screen computes "
            "them before scoring)"
        )
        document.warnings.append(
            f"elastic='chgnet' but {reason}: Lambda from {document.elastic_source}"
        )
    if parameters.potential == "chgnet":
        # the cell the BVSE path was found in (the reduced primitive cell by default)
        fields, notes, seconds = universal_result_fields(
            analysis.structure if analysis.structure is not None else candidate.structure,
            analysis,
            parameters,
            candidate_id=candidate.candidate_id,
            settings=universal_settings,
        )
        document = document.model_copy(update=fields)
        document.warnings.extend(notes)
        document.seconds["universal"] = round(seconds, 4)
    document.seconds["total"] = round(time.perf_counter() - started, 4)
    grids = None
    if keep_grids:
        grids = CandidateGrids.from_arrays(
            candidate.candidate_id,
            analysis.grid.lattice_matrix_A,
            analysis.energy_grid_eV,
            analysis.region_flat,
            analysis.gamma_region_kg_per_s,
        )
    return document, grids
