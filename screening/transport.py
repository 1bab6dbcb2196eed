"""Stage 4 of one candidate, transport: mobility, carriers and conductivity.

:func:`transport` turns the crystal, the landscape and the channel of
:mod:`iondrag.screening.analysis` into a :class:`Transport` record: Kramers' inertial
correction at the saddle, the homogenised 3D diffusion tensor, the carriers
(:class:`DefectModel`, :class:`SiteConnection`), every conductivity estimate
(:class:`Estimates`), the reported tensor and the Arrhenius series (theory.md sections 3-4,
docs/theory.md 7).

Units: SI for transport numbers (m^2/s, 1/m^3, S/m inside, S/cm in the names), eV and A for
the landscape (:mod:`iondrag.screening.units`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from iondrag.screening.carriers import (
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
from iondrag.screening.conductivity import (
    POLYCRYSTAL_AVERAGES,
    ArrheniusFit,
    arrhenius_fit,
    nernst_einstein_S_per_m,
)
from iondrag.screening.drag import drag_floor_kg_per_s, drag_tensor, regularised_drag
from iondrag.screening.elastic import lambda_isotropic
from iondrag.screening.errors import HomogenisationError
from iondrag.screening.forcefield import PairField, coulomb_pair_parameters
from iondrag.screening.mobility import (
    HomogenisedDiffusion,
    homogenised_diffusion,
    kramers_factor,
    meyer_neldel_temperature_K,
    occupied_site_level_eV,
    path_mobility,
    site_phonon_energy_eV,
)
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.percolation import site_connection_levels_eV, site_voxels
from iondrag.screening.potential import evaluate_points
from iondrag.screening.units import S_PER_M_TO_S_PER_CM, thermal_energy_eV

if TYPE_CHECKING:  # pragma: no cover - typing only
    from iondrag.screening.analysis import Channel, CrystalModel, Landscape

__all__ = [
    "ArrheniusSeries",
    "DefectModel",
    "Estimates",
    "KramersCorrection",
    "SiteConnection",
    "Transport",
    "entropic_profile_eV",
    "transport",
]

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


def _site_connection(
    crystal: CrystalModel,
    landscape: Landscape,
    parameters: ScreeningParameters,
    notes: list[str],
) -> SiteConnection | None:
    """Return the connection levels of the mobile-ion sites, or None (all-sites carriers).

    L_i is the level at which site i's basin joins a percolating channel
    (:func:`iondrag.screening.percolation.site_connection_levels_eV`): ions on sites in the channel
    count fully, ions in pockets behind a higher bottleneck by the Boltzmann factor of the
    extra climb (:meth:`SiteConnection.fraction`). A site not connected below the
    percolation ceiling gets the ceiling (an upper bound, as for E_3D). Sites where the
    mean-field U is above the ceiling or was not evaluated (a framework ion shares them)
    are left out; when no site is left, None is returned and a note says so.
    """
    framework = crystal.framework
    percolation = landscape.percolation
    ceiling = percolation.minimum_energy_eV + percolation.ceiling_eV
    voxels = site_voxels(landscape.energy_grid_eV.shape, framework.mobile_frac_coords)
    site_energy = landscape.energy_grid_eV.ravel()[voxels]
    valid = np.isfinite(site_energy) & (site_energy < ceiling) & (framework.mobile_occupancies > 0)
    if not np.any(valid):
        notes.append(
            "connected_sites: no mobile-ion site with a meaningful U; all-sites carriers used"
        )
        return None
    start = percolation.channel_level_eV
    levels = site_connection_levels_eV(
        landscape.energy_grid_eV,
        framework.mobile_frac_coords[valid],
        start,
        ceiling,
        tolerance_eV=0.5 * thermal_energy_eV(parameters.temperature_K),
    )
    if not np.all(np.isfinite(levels)):
        notes.append(
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
        (:func:`iondrag.screening.carriers.sublattice_occupancy`).
    frenkel
        The cheapest Frenkel pair (:func:`iondrag.screening.carriers.frenkel_pair`).
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


def _defect_model(
    crystal: CrystalModel, landscape: Landscape, parameters: ScreeningParameters
) -> DefectModel:
    """Lattice-gas occupancy and the Frenkel pair of the candidate's landscape.

    The Frenkel pair starts from mobile-ion sites that no framework ion shares (U there is
    finite and meaningful) and ends in the empty minima of the fine grid (+inf where the
    grid was not refined: minima higher than the refinement level are not candidates).
    """
    framework = crystal.framework
    lattice = framework.lattice_matrix_A
    sublattice = framework_sublattice(framework)
    site_energy = evaluate_points(crystal.field, framework.mobile_frac_coords @ lattice).energy_eV
    site_energy = np.where(framework.mobile_site_framework_occupancies > 0, np.inf, site_energy)
    minima = grid_local_minima(landscape.energy_grid_eV)
    minima_frac = landscape.grid.frac_coords(minima)
    # the empty minima (farther than the merge radius from every mobile-ion position),
    # the lowest few refined off the grid so that E_F does not depend on the grid's offset
    empty = far_from_all(minima_frac, framework.mobile_frac_coords, lattice, SITE_MERGE_RADIUS_A)
    order = np.argsort(landscape.energy_grid_eV.ravel()[minima[empty]])
    minima_frac = minima_frac[empty][order[:FRENKEL_INTERSTITIALS]]
    minima_frac, minima_energy = _refine_minima(crystal.field, minima_frac, lattice)
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


def _site_fraction(crystal: CrystalModel, landscape: Landscape, region_flat: np.ndarray) -> float:
    """Occupancy-weighted fraction of mobile-ion sites whose grid voxel is in the region."""
    framework = crystal.framework
    if framework.mobile_occupancies.sum() == 0:
        return 0.0
    inside = np.isin(site_voxels(landscape.grid.shape, framework.mobile_frac_coords), region_flat)
    return float(framework.mobile_occupancies[inside].sum() / framework.mobile_occupancies.sum())


def _log10_homogenised(
    landscape: Landscape,
    channel: Channel,
    floor: float,
    carriers: float,
    charge: float,
    temperature: float,
    polycrystal: Any,
) -> float:
    """Polycrystal log10 sigma (S/cm, overdamped) of the 3D tensor at another temperature."""
    homog = homogenised_diffusion(
        landscape.energy_grid_eV,
        landscape.grid.step_matrix_A,
        channel.region_flat,
        regularised_drag(channel.gamma_region_kg_per_s, floor),
        temperature,
    )
    if not homog.solved:
        return float("nan")
    sigma = (
        nernst_einstein_S_per_m(homog.diffusion_m2_per_s, carriers, charge, temperature)
        * S_PER_M_TO_S_PER_CM
    )
    principal = np.linalg.eigvalsh(0.5 * (sigma + sigma.T))
    top = float(np.max(principal))
    return _log10(top) + polycrystal(principal / top) if top > 0 else float("-inf")


@dataclass(frozen=True)
class Estimates:
    """Every conductivity estimate of one candidate, log10 S/cm (polycrystal averages).

    Attributes
    ----------
    homogenised
        Eigenvalues of the 3D tensor on the grid (grid-limited where the channel is
        narrower than the grid spacing; docs/theory.md).
    path
        The path formula along the channel of E_1; the second and third directions open at
        E_2 and E_3, with the channel's prefactor and exp(-(E_d - E_1)/k_B T).
    path_entropic
        The same with the channel's transverse entropy (Fick-Jacobs).
    all_ions
        Ablation: the headline with every mobile ion a carrier.
    meyer_neldel, uncompensated
        The path headline with and without Meyer-Neldel compensation.
    overdamped, constant_drag, global_lambda
        Ablations of the headline: no inertial factor; one friction for every material;
        one Lambda for every material.
    by_average
        The headline's channel under every polycrystal average (average name -> value).
    """

    homogenised: float
    path: float
    path_entropic: float
    all_ions: float
    meyer_neldel: float
    uncompensated: float
    overdamped: float
    constant_drag: float
    global_lambda: float
    by_average: dict[str, float]

    def of(self, method: str) -> float:
        """Return the estimate named by a headline method (``parameters.headline``)."""
        return float(getattr(self, method))

    def flat(self) -> dict[str, float]:
        """Return every estimate by name, the averages as ``average_<name>``, log10 S/cm."""
        named = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "by_average"
        }
        return named | {f"average_{name}": value for name, value in self.by_average.items()}


@dataclass(frozen=True)
class KramersCorrection:
    """Kramers' inertial correction at the saddle of the path.

    Attributes
    ----------
    factor
        Kramers' factor (<= 1).
    reduced_friction
        g = gamma / (2 M omega_b) at the saddle (dimensionless).
    barrier_frequency_rad_per_s
        omega_b of the saddle, rad/s.
    applied
        The factor applied to the estimates (1 when ``inertia_correction`` is off).
    """

    factor: float
    reduced_friction: float
    barrier_frequency_rad_per_s: float
    applied: float


@dataclass(frozen=True)
class ArrheniusSeries:
    """The headline over the Arrhenius temperatures and its fit.

    Attributes
    ----------
    temperatures_K
        Temperatures, K.
    log10_sigma_S_per_cm
        The headline at each, log10 S/cm.
    fit
        The Arrhenius fit (activation energy, eV; prefactor, S K/cm).
    """

    temperatures_K: np.ndarray
    log10_sigma_S_per_cm: np.ndarray
    fit: ArrheniusFit


@dataclass(frozen=True)
class Transport:
    """Stage 4, mobility, carriers and conductivity of one candidate.

    Attributes
    ----------
    drag_floor_kg_per_s
        The floor added to gamma (a fraction of the saddle's drag), kg/s.
    drag_saddle_kg_per_s
        t.gamma.t at the saddle of the path, kg/s.
    kramers
        The inertial correction at the saddle.
    homogenised
        The homogenised 3D diffusion tensor with its bounds.
    carrier_density_per_m3
        Carriers at the temperature, 1/m^3.
    defects
        Which ions carry current (lattice gas, Frenkel pairs, extrinsic defects).
    phonon_energy_eV
        The ion's own vibration quantum in the channel's lowest site (Meyer-Neldel), eV.
    estimates
        Every conductivity estimate.
    sigma_tensor_S_per_cm
        The reported tensor: the homogenised tensor's shape scaled so that its largest
        principal value is the headline's channel value, S/cm.
    arrhenius
        The headline over the Arrhenius temperatures (None when not asked or not finite).
    notes
        Warnings of this stage.
    """

    drag_floor_kg_per_s: float
    drag_saddle_kg_per_s: float
    kramers: KramersCorrection
    homogenised: HomogenisedDiffusion
    carrier_density_per_m3: float
    defects: DefectModel
    phonon_energy_eV: float
    estimates: Estimates
    sigma_tensor_S_per_cm: np.ndarray
    arrhenius: ArrheniusSeries | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Conductance:
    """What the path estimates share, and the estimates as functions of temperature.

    D = k_B t mu and n q^2 / (k_B t) cancel their k_B t, so at a Boltzmann temperature t
    other than the true one the path estimate is sigma with the compensated Boltzmann
    factors.
    """

    crystal: CrystalModel
    channel: Channel
    parameters: ScreeningParameters
    openings_eV: dict[int, float]
    site_energies_eV: np.ndarray | None
    carrier_fraction: float
    connection: SiteConnection | None
    defects: DefectModel
    arranged: float
    phonon_energy_eV: float

    def carriers_at(self, t: float) -> float:
        """Carrier density at temperature t, 1/m^3 (connected-site weights depend on t)."""
        fraction = self.carrier_fraction if self.connection is None else self.connection.fraction(t)
        return (
            self.crystal.framework.carrier_density_per_m3
            * fraction
            * self.defects.fraction(t)
            * self.arranged
        )

    def log10_conversion(self, t: float) -> float:
        """log10 of n q^2 / (k_B T) in S/cm per m^2/s."""
        unit = nernst_einstein_S_per_m(
            1.0, max(self.carriers_at(t), 1e-300), self.crystal.framework.mobile_charge_e, t
        )
        return float(np.log10(unit * S_PER_M_TO_S_PER_CM))

    def polycrystal(self, relative: np.ndarray) -> float:
        """log10 of the polycrystal average of principal values given relative to a scale."""
        return _log10(POLYCRYSTAL_AVERAGES[self.parameters.polycrystal_average](relative))

    def opening_ratios(self, t: float) -> np.ndarray:
        """Principal values relative to the channel: exp(-(E_d - E_1)/k_B T)."""
        kt_t = thermal_energy_eV(t)
        openings = self.openings_eV
        return np.array([np.exp(-(openings[d] - openings[1]) / kt_t) for d in (1, 2, 3)])

    def channel_log10(self, t: float, entropic: bool, gamma: np.ndarray) -> float:
        """log10 sigma (S/cm) along the channel of E_1, path formula, overdamped."""
        path = self.channel.path
        profile = (
            entropic_profile_eV(path.energy_eV, self.channel.path_transverse_eV_per_A2, t)
            if entropic
            else path.energy_eV
        )
        if self.site_energies_eV is not None:
            # the ions start from their own sites: the profile below their level is filled
            level = occupied_site_level_eV(
                self.site_energies_eV,
                self.crystal.framework.mobile_occupancies,
                t,
                float(np.max(profile)),
            )
            if level is not None:
                profile = np.maximum(profile, level)
        translation = float(np.linalg.norm(path.translation_A))
        pm = path_mobility(path.segment_lengths_A, profile, gamma, translation, t)
        return pm.log10_diffusion_m2_per_s + self.log10_conversion(t)

    def path_estimate(self, t: float, entropic: bool, gamma: np.ndarray) -> float:
        """log10 sigma (S/cm), polycrystal, with every Boltzmann factor at t."""
        return self.channel_log10(t, entropic, gamma) + self.polycrystal(self.opening_ratios(t))

    def boltzmann_t(self, t: float) -> float:
        """Temperature of the Boltzmann factors of the path estimates at t, K."""
        if self.parameters.barrier_compensation == "meyer_neldel":
            return meyer_neldel_temperature_K(t, self.phonon_energy_eV)
        return t


def _kramers(
    crystal: CrystalModel, channel: Channel, parameters: ScreeningParameters
) -> tuple[KramersCorrection, float, float, float]:
    """Kramers' correction at the saddle, the drag floor, t.gamma.t and t.H.t there."""
    saddle = int(np.argmax(channel.path.energy_eV))
    saddle_gamma = drag_tensor(
        channel.path_hessian_eV_per_A2[saddle], crystal.elastic.lambda_s3_per_kg
    )
    floor = drag_floor_kg_per_s(saddle_gamma, parameters.drag_floor_fraction)
    gamma_par_saddle = float(channel.path_gamma_parallel_kg_per_s[saddle])
    curvature_saddle = float(channel.path_curvature_eV_per_A2[saddle])
    factor, g, omega_b = kramers_factor(
        gamma_par_saddle + floor, curvature_saddle, crystal.framework.mobile_mass_amu
    )
    inertia = factor if parameters.inertia_correction else 1.0
    return KramersCorrection(factor, g, omega_b, inertia), floor, gamma_par_saddle, curvature_saddle


def _openings_eV(landscape: Landscape, notes: list[str]) -> dict[int, float]:
    """E_1, E_2, E_3 with a dimension that does not percolate below the ceiling at the ceiling.

    Its conductivity is then bounded by the ceiling's (the estimate is an upper bound).
    """
    percolation = landscape.percolation
    energies = percolation.energies_eV
    ceiling = percolation.minimum_energy_eV + percolation.ceiling_eV
    openings = {d: energies[d] if np.isfinite(energies[d]) else ceiling for d in (1, 2, 3)}
    if not all(np.isfinite(energies[d]) for d in (2, 3)):
        notes.append(
            "no 3D percolation below the ceiling: conductivities use the ceiling as E_3D "
            "and are upper bounds"
        )
    return openings


def transport(
    crystal: CrystalModel,
    landscape: Landscape,
    channel: Channel,
    parameters: ScreeningParameters,
) -> Transport:
    """Stage 4: mobility, diffusion and conductivity estimates of one candidate.

    Every estimate gives three principal conductivities and their polycrystal average
    (``parameters.polycrystal_average``), all in log10 S/cm (:class:`Estimates`). The
    headline is ``parameters.headline``; the reported tensor is the homogenised one scaled
    so that its largest principal value is the headline's channel value. All carry the
    inertial (Kramers) factor when enabled.
    """
    framework = crystal.framework
    temperature = parameters.temperature_K
    notes: list[str] = []
    kramers, floor, gamma_par_saddle, curvature_saddle = _kramers(crystal, channel, parameters)
    log_inertia = float(np.log10(kramers.applied))
    gamma_path = channel.path_gamma_parallel_kg_per_s + floor
    charge = framework.mobile_charge_e

    homog = homogenised_diffusion(
        landscape.energy_grid_eV,
        landscape.grid.step_matrix_A,
        channel.region_flat,
        regularised_drag(channel.gamma_region_kg_per_s, floor),
        temperature,
    )
    connection = None
    if parameters.carrier_density == "connected_sites":
        connection = _site_connection(crystal, landscape, parameters, notes)
    defects = _defect_model(crystal, landscape, parameters)
    # the share of the open network's conductance that a random arrangement of the
    # framework ions on shared sites leaves (1 in the mean field)
    arranged = 1.0
    shared = crystal.shared_sites
    if shared.treatment == "random_network" and shared.arrangement is not None:
        arranged = 10.0**shared.arrangement.log10_factor

    # the temperature-independent conventions are evaluated once
    fixed_fraction = homog.region_weight_fraction
    if parameters.carrier_density == "percolating_sites":
        fixed_fraction = _site_fraction(crystal, landscape, channel.region_flat)
    openings = _openings_eV(landscape, notes)
    site_energies = None
    if parameters.barrier_reference == "occupied_sites":
        site_energies = evaluate_points(
            crystal.field, framework.mobile_frac_coords @ framework.lattice_matrix_A
        ).energy_eV
    # Meyer-Neldel compensation (iondrag.screening.mobility.meyer_neldel_temperature_K): the
    # phonon scale is the ion's own vibration in the channel's lowest site
    lowest = int(np.argmin(channel.path.energy_eV))
    phonon_energy = site_phonon_energy_eV(
        channel.path_hessian_eV_per_A2[lowest], framework.mobile_mass_amu
    )
    model = _Conductance(
        crystal,
        channel,
        parameters,
        openings,
        site_energies,
        fixed_fraction,
        connection,
        defects,
        arranged,
        phonon_energy,
    )
    carriers = model.carriers_at(temperature)
    boltzmann = model.boltzmann_t(temperature)

    sigma_homog = (
        nernst_einstein_S_per_m(homog.diffusion_m2_per_s, carriers, charge, temperature)
        * S_PER_M_TO_S_PER_CM
    )
    if homog.solved:
        homog_principal = np.linalg.eigvalsh(0.5 * (sigma_homog + sigma_homog.T))
        top = float(np.max(homog_principal))
        homog_estimate = (
            _log10(top) + model.polycrystal(homog_principal / top) if top > 0 else float("-inf")
        )
    else:
        if parameters.headline == "homogenised":
            raise HomogenisationError(
                f"the headline (homogenised) is unknown: {homog.unsolved_reason}"
            )
        top, homog_estimate = float("nan"), float("nan")
        notes.append(
            f"no tensor estimate (sigma_xx/yy/zz): {homog.unsolved_reason}; the headline, "
            "the path formula, does not need it"
        )
    path_plain = model.path_estimate(boltzmann, False, gamma_path) + log_inertia
    path_entropic = model.path_estimate(boltzmann, True, gamma_path) + log_inertia
    headline = {"homogenised": homog_estimate + log_inertia, "path": path_plain}.get(
        parameters.headline, path_entropic
    )
    entropic = parameters.headline != "path"
    channel_now = model.channel_log10(boltzmann, entropic, gamma_path) + log_inertia
    # one global Lambda: gamma and its floor scale with Lambda; the inertial factor changes
    ratio = GLOBAL_LAMBDA_S3_PER_KG / float(np.trace(crystal.elastic.lambda_s3_per_kg) / 3.0)
    global_factor = 1.0
    if parameters.inertia_correction:
        global_factor = kramers_factor(
            (gamma_par_saddle + floor) * ratio, curvature_saddle, framework.mobile_mass_amu
        )[0]
    compensated = meyer_neldel_temperature_K(temperature, phonon_energy)
    estimates = Estimates(
        homogenised=homog_estimate + log_inertia,
        path=path_plain,
        path_entropic=path_entropic,
        # every ion a carrier (sigma is linear in the carrier density)
        all_ions=headline - _log10(defects.fraction(boltzmann)),
        meyer_neldel=model.path_estimate(compensated, entropic, gamma_path) + log_inertia,
        uncompensated=model.path_estimate(temperature, entropic, gamma_path) + log_inertia,
        overdamped=headline - log_inertia,
        constant_drag=model.path_estimate(
            boltzmann, entropic, np.full(len(gamma_path), CONSTANT_FRICTION_KG_PER_S)
        ),
        global_lambda=(
            headline - log_inertia - float(np.log10(ratio)) + float(np.log10(global_factor))
        ),
        by_average={
            name: channel_now + _log10(combine(model.opening_ratios(boltzmann)))
            for name, combine in POLYCRYSTAL_AVERAGES.items()
        },
    )

    # the tensor: shape from the 3D solution on the grid, scaled so that its largest
    # principal value is the headline's channel value
    if parameters.headline == "homogenised" or not top > 0:  # NaN when not solved
        tensor = sigma_homog * kramers.applied
    else:
        tensor = sigma_homog * (10.0**channel_now / top)

    if headline < LOWEST_PLAUSIBLE_LOG10_SIGMA:
        notes.append(
            f"sigma below 1e{LOWEST_PLAUSIBLE_LOG10_SIGMA:.0f} S/cm: the "
            f"{parameters.polycrystal_average} polycrystal average is set by the slowest "
            f"direction, which opens {openings[3] - openings[1]:.2f} eV above the channel "
            f"(E_3D - E_1D); along the channel alone log10 sigma = {channel_now:.1f} (S/cm)"
        )
    return Transport(
        drag_floor_kg_per_s=floor,
        drag_saddle_kg_per_s=gamma_par_saddle,
        kramers=kramers,
        homogenised=homog,
        carrier_density_per_m3=carriers,
        defects=defects,
        phonon_energy_eV=phonon_energy,
        estimates=estimates,
        sigma_tensor_S_per_cm=tensor,
        arrhenius=_arrhenius(model, landscape, channel, floor, gamma_path, log_inertia),
        notes=tuple(notes),
    )


def _arrhenius(
    model: _Conductance,
    landscape: Landscape,
    channel: Channel,
    floor: float,
    gamma_path: np.ndarray,
    log_inertia: float,
) -> ArrheniusSeries | None:
    """Return the headline over ``parameters.arrhenius_temperatures_K`` and its fit."""
    parameters = model.parameters
    if not parameters.arrhenius_temperatures_K:
        return None
    ts = np.array(parameters.arrhenius_temperatures_K)
    if parameters.headline == "homogenised":
        charge = model.crystal.framework.mobile_charge_e
        logs = np.array(
            [
                _log10_homogenised(
                    landscape, channel, floor, model.carriers_at(t), charge, t, model.polycrystal
                )
                for t in ts
            ]
        )
    else:
        entropic = parameters.headline != "path"
        logs = np.array(
            [model.path_estimate(model.boltzmann_t(t), entropic, gamma_path) for t in ts]
        )
    logs = logs + log_inertia
    if not np.all(np.isfinite(logs)):
        return None
    return ArrheniusSeries(ts, logs, arrhenius_fit(ts, logs))
