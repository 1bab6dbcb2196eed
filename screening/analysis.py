"""One candidate's analysis, stage by stage, each a typed record built by a small function.

structure -> :class:`CrystalModel` (:func:`crystal_model`: the framework the ion moves
through, the force field, the elastic model and how sites shared with framework cations
are treated) -> :class:`Landscape` (:func:`landscape`: U on the grid and its percolation
energies) -> :class:`Channel` (:func:`channel`: the transport region with its drag, the
percolating path and the curvatures along it) -> :class:`~iondrag.screening.transport.
Transport` (:func:`iondrag.screening.transport.transport`) -> the document
(:meth:`iondrag.screening.schemas.CandidateResult.from_analysis`). :func:`analyse_candidate`
runs the stages and returns them together as an :class:`Analysis`.

Steps (theory.md sections 1-4):

1. framework: charges, mobile ion removed, occupancies as weights;
2. U on a grid twice as coarse as requested, percolation there, then U on the full grid
   only where the ion can go (below the coarse 3D percolation energy, and the transport
   window, plus a margin, dilated by one coarse voxel); elsewhere U = +inf;
3. percolation energies E_1, E_2, E_3 on the fine grid;
4. the transport region (U < E_1 + window k_B T, percolating components), the Hessian there
   and the drag gamma = H Lambda H; Lambda from the elastic data or the estimate;
5. the percolating path (Dijkstra on the grid, relaxed with the analytic gradient), U(s),
   gamma along it and its curvatures;
6. the transport stage (:mod:`iondrag.screening.transport`): mobilities, carriers,
   conductivities and the Arrhenius fit.

Units: A, eV, kg/s and s^3/kg as in the names (:mod:`iondrag.screening.units`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Element

from iondrag.screening.candidates import ElasticInput
from iondrag.screening.disorder import (
    SHARED_SITE_EXCLUSION_RADIUS_A,
    ArrangementFactor,
    arrangement_factor,
    has_shared_cation_sites,
    shared_site_network,
)
from iondrag.screening.drag import drag_tensor
from iondrag.screening.elastic import (
    ElasticModel,
    debye_thermal_rms_A,
    elastic_model,
    point_force_stiffness_eV_per_A2,
)
from iondrag.screening.elastic_estimate import estimate_moduli_GPa
from iondrag.screening.errors import NoPercolationError
from iondrag.screening.forcefield import PairField, build_pair_field
from iondrag.screening.memory import plan_grid
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.paths import (
    PercolatingPath,
    grid_percolating_path,
    relax_path,
    resample,
    smooth,
)
from iondrag.screening.percolation import (
    PercolationResult,
    percolation_energies,
    periodic_components,
)
from iondrag.screening.potential import (
    PeriodicGrid,
    evaluate_grid,
    evaluate_points,
    grid_shape_for_spacing,
)
from iondrag.screening.settings import get_settings
from iondrag.screening.structures import (
    Framework,
    ionic_radii_A,
    prepare_framework,
    reduced_primitive_cell,
)
from iondrag.screening.transport import Transport, transport
from iondrag.screening.units import thermal_energy_eV

__all__ = [
    "Analysis",
    "Channel",
    "CrystalModel",
    "Landscape",
    "SharedSites",
    "analyse_candidate",
    "channel",
    "crystal_model",
    "landscape",
    "transverse_curvatures",
]


@dataclass(frozen=True)
class SharedSites:
    """How mobile-ion sites shared with framework cations are treated.

    Attributes
    ----------
    treatment
        ``mean_field`` or ``random_network`` (``parameters.shared_sites``, falling back to
        the mean field when no drawn network conducts).
    exclusion_radius_A
        Site-exclusion radius of the landscape, A.
    arrangement
        The random network's arrangement factor (None in the mean field when not drawn).
    notes
        What a user should know about the treatment.
    """

    treatment: str
    exclusion_radius_A: float
    arrangement: ArrangementFactor | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class CrystalModel:
    """Stage 1, the crystal the ion moves through.

    Attributes
    ----------
    structure
        The cell analysed (the reduced primitive cell by default), a pymatgen Structure.
    framework
        Charges, the mobile ion removed, occupancies as weights.
    shared_sites
        The treatment of sites shared with framework cations.
    field
        The pair force field of U (with thermal smearing and relaxation when enabled).
    elastic
        Lambda and the moduli, from the candidate's elastic data or the estimate.
    notes
        Warnings of this stage (shared sites, estimated force-field parameters).
    """

    structure: Any
    framework: Framework
    shared_sites: SharedSites
    field: PairField
    elastic: ElasticModel
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Landscape:
    """Stage 2, U on the grid and its percolation energies.

    Attributes
    ----------
    grid
        The fine periodic grid.
    energy_grid_eV
        U on the grid (+inf where not evaluated), eV, shape ``grid.shape``.
    percolation
        E_1, E_2, E_3 (fine grid, coarse where the fine grid was not refined high enough).
    grid_notes
        Warnings of the grid set-up (a grid coarsened to the memory budget).
    percolation_notes
        Warnings of the percolation (energies taken from the coarse grid).
    """

    grid: PeriodicGrid
    energy_grid_eV: np.ndarray
    percolation: PercolationResult
    grid_notes: tuple[str, ...]
    percolation_notes: tuple[str, ...]


@dataclass(frozen=True)
class Channel:
    """Stage 3, where the ion conducts: the transport region and the percolating path.

    Attributes
    ----------
    dimensionality
        Highest d whose percolation energy is within the window of E_1.
    region_flat
        Flat grid indices of the transport region.
    gamma_region_kg_per_s
        Drag tensor at each region point, kg/s, shape (R, 3, 3).
    path
        The relaxed percolating path with U along it (eV).
    path_gamma_parallel_kg_per_s
        t.gamma.t along the path, kg/s.
    path_curvature_eV_per_A2
        t.H.t along the path, eV/A^2.
    path_hessian_eV_per_A2
        H along the path, eV/A^2, shape (P, 3, 3).
    path_transverse_eV_per_A2
        The two curvatures across the path, eV/A^2, shape (P, 2).
    """

    dimensionality: int
    region_flat: np.ndarray
    gamma_region_kg_per_s: np.ndarray
    path: PercolatingPath
    path_gamma_parallel_kg_per_s: np.ndarray
    path_curvature_eV_per_A2: np.ndarray
    path_hessian_eV_per_A2: np.ndarray
    path_transverse_eV_per_A2: np.ndarray


@dataclass(frozen=True)
class Analysis:
    """Every stage of one candidate (arrays included), before the document.

    Attributes
    ----------
    crystal, landscape, channel, transport
        The stages' records.
    seconds
        Wall time of each stage, s.
    """

    crystal: CrystalModel
    landscape: Landscape
    channel: Channel
    transport: Transport
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """Warnings of every stage, in the order they arose."""
        return [
            *self.landscape.grid_notes,
            *self.crystal.notes,
            *self.landscape.percolation_notes,
            *self.transport.notes,
        ]


def shared_sites(framework: Framework, parameters: ScreeningParameters) -> SharedSites:
    """Return the treatment of the sites the mobile ion shares with framework cations.

    With ``parameters.shared_sites == "random_network"`` and a framework cation sharing a
    site with the mobile ion, the landscape gets site exclusion on the shared sites
    (:data:`iondrag.screening.disorder.SHARED_SITE_EXCLUSION_RADIUS_A` or the parameter's larger
    radius) and the transport the arrangement factor of the random network
    (:func:`iondrag.screening.disorder.arrangement_factor`). When no drawn network of free sites
    conducts, the mean field is kept and a note says so.
    """
    radius = parameters.site_exclusion_radius_A
    if parameters.shared_sites == "mean_field" or not has_shared_cation_sites(framework):
        return SharedSites("mean_field", radius, None, ())
    network = shared_site_network(framework)
    factor = arrangement_factor(network, parameters.temperature_K)
    if not np.isfinite(factor.log10_factor):
        return SharedSites(
            "mean_field",
            radius,
            factor,
            (
                "shared sites: no random arrangement of the framework ions leaves a "
                f"conducting network of free sites ({factor.n_network_sites} sites, "
                f"supercell {factor.supercell}); the mean field is kept",
            ),
        )
    note = (
        f"shared sites: random network of {factor.n_network_sites} sites, arrangement "
        f"factor 10^{factor.log10_factor:.2f} (spread {factor.log10_spread:.2f} decades over "
        f"draws, {factor.conducting_fraction:.0%} conducting)"
    )
    return SharedSites(
        "random_network", max(radius, SHARED_SITE_EXCLUSION_RADIUS_A), factor, (note,)
    )


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

    # the grid whose estimated peak memory fits the budget (iondrag.screening.memory)
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


def transverse_curvatures(hessians_eV_per_A2: np.ndarray, tangents: np.ndarray) -> np.ndarray:
    """Return the two curvatures of U across the path (eV/A^2), shape (P, 2), ascending.

    Eigenvalues of P H P with P = 1 - t t^T, without the zero along t.
    """
    projector = np.eye(3)[None] - tangents[:, :, None] * tangents[:, None, :]
    values = np.linalg.eigvalsh(projector @ hessians_eV_per_A2 @ projector)
    # drop the eigenvalue whose eigenvector is t (the one closest to zero)
    order = np.argsort(np.abs(values), axis=1)
    return np.sort(np.take_along_axis(values, order[:, 1:], axis=1), axis=1)


def _dimensionality(percolation: PercolationResult, parameters: ScreeningParameters) -> int:
    """Highest d whose percolation energy is within the window of E_1 (at least 1)."""
    e1 = percolation.energies_eV[1]
    return max(
        d
        for d in (1, 2, 3)
        if np.isfinite(percolation.energies_eV[d])
        and percolation.energies_eV[d] - e1 <= parameters.dimensionality_window_eV + 1e-12
    )


def crystal_model(
    structure: Any,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    mobile_ion: str | None = None,
    elastic: ElasticInput | None = None,
    lap: Any = None,
) -> CrystalModel:
    """Stage 1: the framework, its shared sites, the force field and the elastic model.

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
    lap
        Called with a stage name after each step (timing); None: no timing.

    Raises
    ------
    IondragError
        Bad structure, missing force-field or elastic parameters.
    """
    lap = lap or (lambda name: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if parameters.reduce_to_primitive:
            structure = reduced_primitive_cell(structure)
        framework = prepare_framework(
            structure, mobile_ion or parameters.ion, candidate_id=candidate_id
        )
    lap("framework")
    shared = shared_sites(framework, parameters)
    lap("arrangement")
    # The force field first: a missing parameter is the cause to report, even though the
    # elastic estimate (which needs bond parameters too) would also fail.
    make_pair_field = functools.partial(
        build_pair_field,
        framework,
        cutoff_A=parameters.cutoff_A,
        switch_width_A=parameters.switch_width_A,
        site_exclusion_radius_A=shared.exclusion_radius_A,
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
    notes = list(shared.notes)
    if pair_field.estimated_pairs:
        notes.append(
            "softBV parameters estimated (not in the table) for "
            + ", ".join(pair_field.estimated_pairs)
            + ": iondrag.screening.forcefield.estimated_morse_parameters"
        )
    return CrystalModel(structure, framework, shared, pair_field, elastic_data, tuple(notes))


def landscape(
    crystal: CrystalModel,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    lap: Any = None,
) -> Landscape:
    """Stage 2: U on the grid (coarse to fine) and its percolation energies.

    ``lap`` is called with a stage name after each step (timing); None: no timing.

    Raises
    ------
    GridTooLargeError
        The grid does not fit the memory budget (and may not be coarsened).
    NoPercolationError
        No channel percolates within ``parameters.percolation_ceiling_eV``.
    """
    lap = lap or (lambda name: None)
    fine, coarse, grid_notes = _grids(crystal.framework, parameters, candidate_id)
    energy, coarse_percolation, complete_below = _potential_grid(
        crystal.field, fine, coarse, parameters
    )
    lap("potential")
    percolation_notes: list[str] = []
    percolation = _merge_percolation(
        percolation_energies(
            energy, parameters.percolation_ceiling_eV, parameters.percolation_tolerance_eV
        ),
        coarse_percolation,
        complete_below,
        percolation_notes,
    )
    if not np.isfinite(percolation.energies_eV[1]):
        raise NoPercolationError(
            f"no percolating channel within {parameters.percolation_ceiling_eV} eV of the "
            "potential minimum",
            candidate_id,
        )
    lap("percolation")
    return Landscape(fine, energy, percolation, tuple(grid_notes), tuple(percolation_notes))


def transport_region(
    crystal: CrystalModel, landscape: Landscape, parameters: ScreeningParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Return the transport region (flat indices) and the drag there (kg/s, (R, 3, 3))."""
    kt = thermal_energy_eV(parameters.temperature_K)
    e1 = landscape.percolation.energies_eV[1]
    region = _transport_region(landscape.energy_grid_eV, e1 + parameters.window_kT * kt)
    values = evaluate_grid(crystal.field, landscape.grid, region, derivatives=2, hessian_only=True)
    assert values.hessian_eV_per_A2 is not None
    return region, drag_tensor(values.hessian_eV_per_A2, crystal.elastic.lambda_s3_per_kg)


def channel(
    crystal: CrystalModel,
    landscape: Landscape,
    region_flat: np.ndarray,
    gamma_region_kg_per_s: np.ndarray,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
) -> Channel:
    """Stage 3: the percolating path through the channel of E_1, relaxed, and gamma along it.

    The loop runs through the channel that percolates at E_1, not through a deeper pocket
    beside it.
    """
    kt = thermal_energy_eV(parameters.temperature_K)
    percolation = landscape.percolation
    grid_path = grid_percolating_path(
        landscape.energy_grid_eV,
        landscape.grid,
        percolation.energies_eV[1] + parameters.window_kT * kt,
        parameters.temperature_K,
        candidate_id,
        channel_level_eV=percolation.channel_level_eV,
    )
    start = smooth(resample(grid_path, 0.1), 0.3)
    path = relax_path(crystal.field, start, iterations=parameters.path_relax_iterations)
    along = evaluate_points(crystal.field, path.points_A, derivatives=2)
    assert along.hessian_eV_per_A2 is not None
    tangents = path.tangents
    gamma_path = drag_tensor(along.hessian_eV_per_A2, crystal.elastic.lambda_s3_per_kg)
    return Channel(
        dimensionality=_dimensionality(percolation, parameters),
        region_flat=region_flat,
        gamma_region_kg_per_s=gamma_region_kg_per_s,
        path=PercolatingPath(
            path.points_A, path.translation_A, path.translation_cells, along.energy_eV
        ),
        path_gamma_parallel_kg_per_s=np.einsum("pi,pij,pj->p", tangents, gamma_path, tangents),
        path_curvature_eV_per_A2=np.einsum(
            "pi,pij,pj->p", tangents, along.hessian_eV_per_A2, tangents
        ),
        path_hessian_eV_per_A2=along.hessian_eV_per_A2,
        path_transverse_eV_per_A2=transverse_curvatures(along.hessian_eV_per_A2, tangents),
    )


def analyse_candidate(
    structure: Any,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    mobile_ion: str | None = None,
    elastic: ElasticInput | None = None,
) -> Analysis:
    """Run every stage for one structure (see the module docstring).

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

    crystal = crystal_model(
        structure,
        parameters,
        candidate_id=candidate_id,
        mobile_ion=mobile_ion,
        elastic=elastic,
        lap=lap,
    )
    land = landscape(crystal, parameters, candidate_id=candidate_id, lap=lap)
    region, gamma_region = transport_region(crystal, land, parameters)
    lap("drag")
    conducting = channel(crystal, land, region, gamma_region, parameters, candidate_id=candidate_id)
    lap("path")
    moving = transport(crystal, land, conducting, parameters)
    lap("transport")
    return Analysis(crystal, land, conducting, moving, seconds)
