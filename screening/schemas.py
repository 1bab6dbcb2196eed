"""Output documents (pydantic): one per job output, units in every field name.

Built by ``from_*`` constructors, never field by field in jobs. Large arrays (the potential
and drag grids) are not here: they travel as :class:`CandidateGrids` to the job store's
data store.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from iondrag.screening import __version__
from iondrag.screening.candidates import Candidate
from iondrag.screening.errors import IondragError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from iondrag.screening.analysis import Analysis
    from iondrag.screening.parameters import ScreeningParameters

Status = Literal["ok", "failed", "error"]


def finite_or_none(value: float | np.floating[Any] | None) -> float | None:
    """Documents never carry NaN or inf: non-finite numbers become None."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def matrix_list(array: np.ndarray | None) -> list[list[float]] | None:
    """Convert a 3x3 array to nested lists for JSON (None, or any non-finite entry: None)."""
    if array is None or not np.all(np.isfinite(array)):
        return None
    return [[float(x) for x in row] for row in np.asarray(array)]


def band_gap_of(candidate: Candidate) -> float | None:
    """Return the band gap the source gave (provenance ``band_gap_eV``), eV, or None."""
    value = candidate.provenance.get("band_gap_eV")
    try:
        return finite_or_none(None if value is None else float(value))
    except (TypeError, ValueError):
        return None


class PathProfile(BaseModel):
    """U(s) and the drag along the percolating path (one period)."""

    arc_length_A: list[float]
    energy_eV: list[float] = Field(description="U(s) relative to the grid minimum of U.")
    gamma_parallel_kg_per_s: list[float] = Field(description="t . gamma . t (no floor).")
    translation_cells: list[int]
    translation_A: list[float]
    length_A: float


class CandidateResult(BaseModel):
    """Everything the screen computed for one candidate (or why it could not).

    Rows of the ranking table are projections of this document
    (:meth:`ranking_row`). Status ``ok``: scored; ``failed``: a documented input problem
    (``error_cause`` from :mod:`iondrag.screening.errors`); ``error``: an unexpected exception.
    """

    model_config = ConfigDict(extra="forbid")

    candidate_id: str = Field(
        json_schema_extra={"column": True, "contract": True, "not_null": True}
    )
    formula: str | None = Field(None, json_schema_extra={"column": True, "contract": True})
    source: str = Field(json_schema_extra={"column": True, "contract": True})
    ion: str | None = Field(None, json_schema_extra={"column": True, "contract": True})
    status: Status = Field(json_schema_extra={"column": True, "contract": True, "not_null": True})
    error: str | None = Field(None, json_schema_extra={"column": True, "contract": True})
    error_cause: str | None = Field(None, json_schema_extra={"column": True})
    temperature_K: float = Field(json_schema_extra={"column": True, "contract": True})
    parameters_fingerprint: str = Field(json_schema_extra={"column": True})
    candidate_fingerprint: str | None = Field(
        None,
        description="Hash of the candidate's structure and inputs (reuse key).",
        json_schema_extra={"column": True},
    )
    provenance: dict[str, Any] = Field(default_factory=dict)
    experimental_sigma_S_per_cm: float | None = Field(None, json_schema_extra={"column": True})
    band_gap_eV: float | None = Field(
        None,
        description="Band gap from the source (Materials Project summary), eV.",
        json_schema_extra={"column": True},
    )
    likely_electronic_conductor: bool | None = Field(
        None,
        description="The framework holds a transition metal in mixed valence or with an open "
        "d shell (not d0/d10), or the source's band gap is below 0.5 eV "
        "(iondrag.screening.electronic): likely an electronic or mixed conductor, not an "
        "electrolyte.",
        json_schema_extra={"column": True},
    )
    electronic_conductor_reason: str | None = Field(
        None,
        description="Which rule flagged likely_electronic_conductor.",
        json_schema_extra={"column": True},
    )

    # potential and percolation
    barrier_eV: float | None = Field(
        None,
        description="E_1D, the 1D percolation barrier: lowest energy above min U at which the "
        "ion's accessible region spans the crystal in one direction (= barrier_1d_eV). Not "
        "the ranking key: the table is ranked by sigma_S_per_cm.",
        json_schema_extra={"column": True, "contract": True},
    )
    barrier_1d_eV: float | None = Field(
        None,
        description="E_1D percolation barrier.",
        json_schema_extra={"column": True, "record": "barrier_1d_eV"},
    )
    barrier_2d_eV: float | None = Field(
        None,
        description="E_2D: percolation barrier in two directions (None: not below the ceiling).",
        json_schema_extra={"column": True, "record": "barrier_2d_eV"},
    )
    barrier_3d_eV: float | None = Field(
        None,
        description="E_3D: percolation barrier in three directions.",
        json_schema_extra={"column": True, "record": "barrier_3d_eV"},
    )
    dimensionality: int | None = Field(
        None,
        description="Highest d with E_d within dimensionality_window_eV of E_1.",
        json_schema_extra={"column": True, "contract": True, "record": "dimensionality"},
    )
    path_barrier_eV: float | None = Field(
        None,
        description="Path-profile barrier: max - min of U along the relaxed minimum-energy "
        "path of the E_1D channel (what the path formula integrates over).",
        json_schema_extra={"column": True, "record": "path_barrier_eV"},
    )

    # conductivity: two estimates, the headline (ranks the table) and the tensor
    sigma_S_per_cm: float | None = Field(
        None,
        description="Headline isotropic conductivity at T, ranks the table. Estimate "
        "headline_method (default path_entropic: the path formula along the E_1D channel, "
        "with the directions that open at E_2D and E_3D), combined over the three directions "
        "by the polycrystal average (parameters.polycrystal_average, default harmonic).",
        json_schema_extra={"column": True, "contract": True},
    )
    log10_sigma_S_per_cm: float | None = Field(
        None, description="log10 of sigma_S_per_cm.", json_schema_extra={"column": True}
    )
    sigma_xx_S_per_cm: float | None = Field(
        None,
        description="Second estimate, the single-crystal tensor (xx along Cartesian x of the "
        "cell): shape from the 3D homogenised solution on the grid, scaled so that its "
        "largest principal value equals the path formula's channel value "
        "(sigma_tensor_method). Its components can all exceed the headline, which averages "
        "over directions opening at the percolation barriers.",
        json_schema_extra={"column": True, "contract": True},
    )
    sigma_yy_S_per_cm: float | None = Field(
        None,
        description="Tensor estimate, yy component (see sigma_xx_S_per_cm).",
        json_schema_extra={"column": True, "contract": True},
    )
    sigma_zz_S_per_cm: float | None = Field(
        None,
        description="Tensor estimate, zz component (see sigma_xx_S_per_cm).",
        json_schema_extra={"column": True, "contract": True},
    )
    sigma_tensor_S_per_cm: list[list[float]] | None = None
    anisotropy_ratio: float | None = Field(
        None,
        description="Largest / smallest principal value of the tensor estimate.",
        json_schema_extra={"column": True, "record": "anisotropy_ratio"},
    )
    headline_method: str | None = Field(
        None,
        description="Which estimate the headline sigma is (parameters.headline).",
        json_schema_extra={"column": True},
    )
    log10_sigma_path_S_per_cm: float | None = Field(
        None,
        description="Path formula along the channel, as a rank-1 tensor's tr/3.",
        json_schema_extra={"column": True, "record": "log10_sigma_path"},
    )
    log10_sigma_path_entropic_S_per_cm: float | None = Field(
        None,
        description="Path formula with the channel's transverse entropy (Fick-Jacobs), "
        "times d/3 for d equivalent percolating directions.",
        json_schema_extra={"column": True},
    )
    log10_sigma_homogenised_S_per_cm: float | None = Field(
        None,
        description="Isotropic sigma of the 3D homogenised tensor on the grid.",
        json_schema_extra={"column": True, "record": "log10_sigma_homogenised"},
    )
    log10_sigma_overdamped_S_per_cm: float | None = Field(
        None,
        description="The headline without the inertial (Kramers) factor.",
        json_schema_extra={"column": True, "record": "log10_sigma_overdamped"},
    )
    diffusion_tensor_m2_per_s: list[list[float]] | None = None
    diffusion_parallel_bound_m2_per_s: list[list[float]] | None = None
    diffusion_series_bound_m2_per_s: list[list[float]] | None = None
    log10_sigma_path_constant_drag_S_per_cm: float | None = Field(
        None,
        description="Ablation: the entropic path formula with one constant friction for every "
        "material (overdamped; the constant is CONSTANT_FRICTION_KG_PER_S).",
        json_schema_extra={"column": True, "record": "log10_sigma_path_constant_drag"},
    )
    log10_sigma_global_lambda_S_per_cm: float | None = Field(
        None,
        description="Ablation: the headline sigma with one global Lambda (GLOBAL_LAMBDA) "
        "instead of the material's own.",
        json_schema_extra={"column": True, "record": "log10_sigma_global_lambda"},
    )
    mobile_ion_density_per_m3: float | None = Field(
        None,
        description="All mobile-ion sites (occupancy-weighted) per volume.",
        json_schema_extra={"column": True, "record": "mobile_ion_density_per_m3"},
    )
    carrier_density_per_m3: float | None = Field(
        None, json_schema_extra={"record": "carrier_density_per_m3"}
    )
    carrier_convention: str | None = None
    carrier_mechanism: str | None = Field(
        None,
        description="Dominant source of carriers at T: sublattice_vacancies (a partly "
        "occupied mobile-ion sublattice), intrinsic_frenkel (thermal Frenkel pairs), "
        "extrinsic_defects (the global extrinsic level) or all_ions (carrier statistics off).",
        json_schema_extra={"column": True, "record": "carrier_mechanism"},
    )
    carrier_fraction: float | None = Field(
        None,
        description="Fraction of the mobile ions that find an empty neighbouring site at T: "
        "vacancy fraction of the sublattice + exp(-E_F/2kT) + extrinsic level, capped at 1.",
        json_schema_extra={"column": True, "record": "carrier_fraction"},
    )
    sublattice_vacancy_fraction: float | None = Field(
        None,
        description="Mean empty fraction of the mobile-ion sublattice's sites (0..1).",
        json_schema_extra={"column": True, "record": "sublattice_vacancy_fraction"},
    )
    frenkel_energy_eV: float | None = Field(
        None,
        description="Formation energy of the cheapest Frenkel pair in the force field (ion "
        "from its site to the lowest empty minimum, other mobile ions as screened Coulomb "
        "repulsion); None: no empty minimum below the refined level.",
        json_schema_extra={"column": True, "record": "frenkel_energy_eV"},
    )
    log10_sigma_all_ions_S_per_cm: float | None = Field(
        None,
        description="Ablation: the headline with every mobile ion a carrier.",
        json_schema_extra={"record": "log10_sigma_all_ions"},
    )
    shared_site_treatment: str | None = Field(
        None,
        description="Sites shared with framework cations: mean_field (fractional framework "
        "ions on every such site) or random_network (site exclusion in U and the "
        "arrangement factor of random draws in a >= 1e4-site supercell; "
        "iondrag.screening.disorder).",
        json_schema_extra={"record": "shared_site_treatment"},
    )
    log10_arrangement_factor: float | None = Field(
        None,
        description="log10 of the conductance share (tr/3) that random arrangements of the "
        "framework ions on shared sites leave of the open network (mean over draws).",
        json_schema_extra={"record": "log10_arrangement_factor"},
    )
    arrangement_spread_log10: float | None = Field(
        None, description="Standard deviation of log10 sigma over the arrangement draws."
    )
    barrier_compensation: str | None = Field(
        None, description="parameters.barrier_compensation: none or meyer_neldel."
    )
    meyer_neldel_energy_eV: float | None = Field(
        None,
        description="E_MN = hbar omega of the mobile ion in the channel's lowest site "
        "(omega = sqrt(k/M), k the mean curvature of U there): the Meyer-Neldel energy.",
        json_schema_extra={"record": "meyer_neldel_energy_eV"},
    )
    log10_sigma_meyer_neldel_S_per_cm: float | None = Field(
        None,
        description="The path headline with Meyer-Neldel compensation: every Boltzmann "
        "factor exp(-E/kT) times exp(E/E_MN).",
        json_schema_extra={"record": "log10_sigma_meyer_neldel"},
    )
    log10_sigma_by_average_S_per_cm: dict[str, float | None] | None = Field(
        None,
        description="The headline under each polycrystal average (harmonic, geometric, "
        "bruggeman, arithmetic) of the principal values, log10 S/cm.",
    )
    log10_sigma_uncompensated_S_per_cm: float | None = Field(
        None,
        description="The path headline without Meyer-Neldel compensation.",
        json_schema_extra={"record": "log10_sigma_uncompensated"},
    )
    region_weight_fraction: float | None = Field(
        None, json_schema_extra={"record": "region_weight_fraction"}
    )

    # drag and dynamics
    drag_saddle_kg_per_s: float | None = Field(
        None,
        description="Friction on the ion along its path at the saddle, t.gamma.t (t the "
        "path's unit tangent, gamma the drag tensor H Lambda H).",
        json_schema_extra={"column": True, "contract": True, "record": "drag_saddle_kg_per_s"},
    )
    drag_floor_kg_per_s: float | None = None
    lambda_s3_per_kg: list[list[float]] | None = Field(
        None,
        description="Lambda, the framework's elastic response (from the elastic tensor via "
        "the Christoffel equation) that turns the potential's curvature H into drag "
        "gamma = H Lambda H.",
    )
    bulk_modulus_GPa: float | None = Field(None, json_schema_extra={"record": "bulk_modulus_GPa"})
    shear_modulus_GPa: float | None = Field(None, json_schema_extra={"record": "shear_modulus_GPa"})
    elastic_source: str | None = Field(
        None, json_schema_extra={"column": True, "record": "elastic_source"}
    )
    density_kg_per_m3: float | None = None
    barrier_frequency_rad_per_s: float | None = None
    reduced_friction: float | None = Field(
        None,
        description="g = gamma_par/(M omega_b).",
        json_schema_extra={"record": "reduced_friction"},
    )
    kramers_factor: float | None = Field(
        None, json_schema_extra={"column": True, "record": "kramers_factor"}
    )
    damping_regime: str | None = Field(
        None, json_schema_extra={"column": True, "record": "damping_regime"}
    )
    inertia_flag: bool | None = Field(None, description="gamma/M below omega_b at the saddle.")

    # Arrhenius
    activation_energy_eV: float | None = Field(
        None,
        description="Arrhenius activation energy: slope of the headline's log(sigma T) "
        "against 1/T over arrhenius_temperatures_K (the carriers' climb and the path, "
        "together).",
        json_schema_extra={"column": True, "record": "activation_energy_eV"},
    )
    arrhenius_prefactor_S_K_per_cm: float | None = None
    arrhenius_temperatures_K: list[float] | None = None
    arrhenius_log10_sigma_S_per_cm: list[float] | None = None

    # universal potential (parameters.potential == "chgnet"; docs/universal.md)
    potential_backend: Literal["bvse", "chgnet"] = Field(
        "bvse",
        description="parameters.potential of the screen: bvse, or chgnet (the BVSE result "
        "plus CHGNet along the BVSE path in the *_universal_* fields). The headline is BVSE "
        "either way: CHGNet along the BVSE path ranked measured conductivities worse.",
        json_schema_extra={"column": True, "universal": True},
    )
    barrier_universal_eV: float | None = Field(
        None,
        description="CHGNet: max - min of U along the (relaxed) BVSE path.",
        json_schema_extra={"column": True, "universal": True, "record": "barrier_universal_eV"},
    )
    log10_sigma_universal_S_per_cm: float | None = Field(
        None,
        description="CHGNet: path formula with the CHGNet profile and saddle friction "
        "(isotropic tr/3 of the channel, Kramers factor as parameters.inertia_correction).",
        json_schema_extra={
            "column": True,
            "universal": True,
            "record": "log10_sigma_universal_S_per_cm",
        },
    )
    drag_saddle_universal_kg_per_s: float | None = Field(
        None,
        description="CHGNet: t (H Lambda H) t at the CHGNet saddle.",
        json_schema_extra={"universal": True},
    )
    kramers_factor_universal: float | None = Field(
        None,
        description="CHGNet: Kramers' factor at the CHGNet saddle.",
        json_schema_extra={"universal": True},
    )
    universal_path: dict[str, list[float]] | None = Field(
        None,
        description="CHGNet profile: arc_length_A and energy_eV (relative to its minimum).",
        json_schema_extra={"universal": True},
    )
    universal_details: dict[str, Any] | None = Field(
        None,
        description="CHGNet run summary: saddle Hessian (eV/A^2), calls, seconds, supercell, "
        "ordering of disorder, notes (iondrag.screening.universal.UniversalPathResult.summary).",
        json_schema_extra={"universal": True},
    )
    universal_error: str | None = Field(
        None,
        description="Why CHGNet failed for this candidate (the BVSE result is kept).",
        json_schema_extra={"universal": True},
    )
    universal_error_cause: str | None = Field(
        None,
        description="Machine-readable cause: ml_extra_missing, ordering, universal_too_large, "
        "universal_potential or internal_error.",
        json_schema_extra={"column": True, "universal": True, "record": "universal_error_cause"},
    )

    # bookkeeping
    path: PathProfile | None = None
    framework: dict[str, Any] = Field(default_factory=dict)
    grid_shape: list[int] | None = None
    grid_spacing_A: float | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What to keep in mind about this row: estimated softBV parameters, a "
        "coarsened grid, estimated elastic moduli, upper bounds, ...",
    )
    seconds: dict[str, float] = Field(default_factory=dict)
    iondrag_version: str = __version__

    @classmethod
    def from_analysis(
        cls, candidate: Candidate, analysis: Analysis, parameters: ScreeningParameters
    ) -> CandidateResult:
        """Build the document of a scored candidate from its stages.

        Parameters
        ----------
        candidate
            The candidate as its source gave it (id, formula, provenance, band gap).
        analysis
            Every stage of its analysis (:func:`iondrag.screening.analysis.analyse_candidate`).
        parameters
            The parameters it was scored with.
        """
        from iondrag.screening.conductivity import POLYCRYSTAL_AVERAGES, anisotropy_ratio
        from iondrag.screening.electronic import electronic_conductor_flag
        from iondrag.screening.mobility import damping_regime

        moved = analysis.transport
        homog = moved.homogenised
        defects = moved.defects
        estimates = moved.estimates
        sigma = moved.sigma_tensor_S_per_cm
        headline = estimates.of(parameters.headline)
        percolation = analysis.landscape.percolation
        barriers = percolation.barriers_eV
        dimensionality = analysis.channel.dimensionality
        factor = moved.kramers.factor
        g = moved.kramers.reduced_friction
        omega_b = moved.kramers.barrier_frequency_rad_per_s
        u_min = percolation.minimum_energy_eV
        path = analysis.channel.path
        arrhenius = moved.arrhenius
        lam = analysis.crystal.elastic.lambda_s3_per_kg
        framework_summary = analysis.crystal.framework.summary()
        framework_summary["n_transport_region_points"] = len(analysis.channel.region_flat)
        band_gap = band_gap_of(candidate)
        framework = analysis.crystal.framework
        arrangement = analysis.crystal.shared_sites.arrangement
        electronic, electronic_reason = electronic_conductor_flag(
            framework.elements,
            framework.charges_e,
            band_gap,
            occupancies=framework.occupancies,
            other_charge_e=framework.mobile_charge_e * float(np.sum(framework.mobile_occupancies)),
        )
        return cls(
            candidate_id=candidate.candidate_id,
            formula=candidate.formula or analysis.crystal.framework.formula,
            source=candidate.source,
            ion=analysis.crystal.framework.mobile_element,
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
            log10_sigma_path_S_per_cm=finite_or_none(estimates.path),
            log10_sigma_path_entropic_S_per_cm=finite_or_none(estimates.path_entropic),
            log10_sigma_homogenised_S_per_cm=finite_or_none(estimates.homogenised),
            log10_sigma_overdamped_S_per_cm=finite_or_none(estimates.overdamped),
            log10_sigma_path_constant_drag_S_per_cm=finite_or_none(estimates.constant_drag),
            log10_sigma_global_lambda_S_per_cm=finite_or_none(estimates.global_lambda),
            diffusion_tensor_m2_per_s=matrix_list(homog.diffusion_m2_per_s),
            diffusion_parallel_bound_m2_per_s=matrix_list(homog.parallel_bound_m2_per_s),
            diffusion_series_bound_m2_per_s=matrix_list(homog.series_bound_m2_per_s),
            mobile_ion_density_per_m3=finite_or_none(
                analysis.crystal.framework.carrier_density_per_m3
            ),
            carrier_density_per_m3=finite_or_none(moved.carrier_density_per_m3),
            carrier_convention=parameters.carrier_density,
            carrier_mechanism=defects.mechanism(parameters.temperature_K),
            carrier_fraction=finite_or_none(defects.fraction(parameters.temperature_K)),
            sublattice_vacancy_fraction=finite_or_none(defects.sublattice.vacancy_fraction),
            frenkel_energy_eV=finite_or_none(defects.frenkel.formation_energy_eV),
            log10_sigma_all_ions_S_per_cm=finite_or_none(estimates.all_ions),
            shared_site_treatment=analysis.crystal.shared_sites.treatment,
            log10_arrangement_factor=finite_or_none(
                arrangement.log10_factor if arrangement else None
            ),
            arrangement_spread_log10=finite_or_none(
                arrangement.log10_spread if arrangement else None
            ),
            barrier_compensation=parameters.barrier_compensation,
            meyer_neldel_energy_eV=finite_or_none(moved.phonon_energy_eV),
            log10_sigma_meyer_neldel_S_per_cm=finite_or_none(estimates.meyer_neldel),
            log10_sigma_by_average_S_per_cm={
                name: finite_or_none(estimates.by_average[name]) for name in POLYCRYSTAL_AVERAGES
            },
            log10_sigma_uncompensated_S_per_cm=finite_or_none(estimates.uncompensated),
            region_weight_fraction=finite_or_none(homog.region_weight_fraction),
            drag_saddle_kg_per_s=finite_or_none(moved.drag_saddle_kg_per_s),
            drag_floor_kg_per_s=finite_or_none(moved.drag_floor_kg_per_s),
            lambda_s3_per_kg=matrix_list(lam),
            bulk_modulus_GPa=analysis.crystal.elastic.bulk_modulus_GPa,
            shear_modulus_GPa=analysis.crystal.elastic.shear_modulus_GPa,
            elastic_source=analysis.crystal.elastic.elastic_source,
            density_kg_per_m3=analysis.crystal.framework.density_kg_per_m3,
            barrier_frequency_rad_per_s=finite_or_none(omega_b),
            reduced_friction=finite_or_none(g),
            kramers_factor=finite_or_none(factor),
            damping_regime=damping_regime(g),
            inertia_flag=bool(g < 1.0),
            activation_energy_eV=finite_or_none(arrhenius.fit.activation_energy_eV)
            if arrhenius
            else None,
            arrhenius_prefactor_S_K_per_cm=(
                finite_or_none(arrhenius.fit.prefactor_S_K_per_cm) if arrhenius else None
            ),
            arrhenius_temperatures_K=[float(t) for t in arrhenius.temperatures_K]
            if arrhenius
            else None,
            arrhenius_log10_sigma_S_per_cm=[float(v) for v in arrhenius.log10_sigma_S_per_cm]
            if arrhenius
            else None,
            path=PathProfile(
                arc_length_A=[float(x) for x in path.arc_length_A],
                energy_eV=[float(x) for x in path.energy_eV - u_min],
                gamma_parallel_kg_per_s=[
                    float(x) for x in analysis.channel.path_gamma_parallel_kg_per_s
                ],
                translation_cells=[int(x) for x in path.translation_cells],
                translation_A=[float(x) for x in path.translation_A],
                length_A=path.length_A,
            ),
            framework=framework_summary,
            grid_shape=list(analysis.landscape.grid.shape),
            grid_spacing_A=float(
                np.max(np.linalg.norm(analysis.landscape.grid.step_matrix_A, axis=1))
            ),
            warnings=list(analysis.notes),
            seconds=dict(analysis.seconds),
        )

    @classmethod
    def from_failure(
        cls,
        candidate: Candidate,
        error: BaseException | str,
        *,
        temperature_K: float,
        parameters_fingerprint: str,
        cause: str | None = None,
        ion: str | None = None,
    ) -> CandidateResult:
        """Build a failed row: the candidate, a one-line error naming it, and the cause."""
        if isinstance(error, IondragError):
            status: Status = "failed"
            cause = cause or error.cause
            message = str(error.with_candidate(candidate.candidate_id))
        elif isinstance(error, BaseException):
            status = "error" if cause is None else "failed"
            cause = cause or "internal_error"
            message = f"{candidate.candidate_id}: {type(error).__name__}: {error}"
        else:
            status = "failed"
            message = (
                error if candidate.candidate_id in error else f"{candidate.candidate_id}: {error}"
            )
        return cls(
            candidate_id=candidate.candidate_id,
            formula=candidate.formula,
            source=candidate.source,
            ion=ion or candidate.mobile_ion,
            status=status,
            error=" ".join(message.split())[:500],
            error_cause=cause,
            temperature_K=temperature_K,
            parameters_fingerprint=parameters_fingerprint,
            candidate_fingerprint=candidate.fingerprint(),
            provenance=candidate.provenance,
            experimental_sigma_S_per_cm=candidate.experimental_sigma_S_per_cm,
        )

    @property
    def sigma_tensor_method(self) -> str | None:
        """How the tensor estimate (sigma_xx/yy/zz) was made, next to ``headline_method``."""
        if self.headline_method is None:
            return None
        if self.headline_method == "homogenised":
            return "homogenised"
        if self.sigma_tensor_S_per_cm is None:
            return None  # the cell problem was not solved (see the warnings)
        return "homogenised_shape_scaled_to_path_channel"

    def ranking_row(self) -> dict[str, Any]:
        """Return the flat row of the ranking table (columns of the design contract and more).

        The fields marked ``column`` (:func:`result_fields`), then the derived
        ``sigma_tensor_method``, ``n_warnings`` and ``warnings_summary``.
        """
        row = {name: getattr(self, name) for name in result_fields("column")}
        derived = {
            "sigma_tensor_method": self.sigma_tensor_method,
            "n_warnings": len(self.warnings),
            "warnings_summary": "; ".join(self.warnings) or None,
        }
        assert derived.keys() == DERIVED_COLUMNS.keys()
        return row | derived


#: Columns of :meth:`CandidateResult.ranking_row` computed from fields, with their types.
DERIVED_COLUMNS: dict[str, type] = {
    "sigma_tensor_method": str,
    "n_warnings": int,
    "warnings_summary": str,
}


def result_fields(mark: str) -> tuple[str, ...]:
    """Fields of :class:`CandidateResult` whose metadata carry ``mark``, in field order.

    The marks (``json_schema_extra`` of each field) are the one place that says what a field
    is for: ``column`` (a column of the ranking table), ``contract`` (a column outside
    checks rely on), ``not_null``, ``universal`` (filled by the universal-potential
    backend) and ``record`` (copied into validate's per-structure records, under the name
    given: :func:`record_fields`).
    """
    return tuple(
        name
        for name, info in CandidateResult.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(mark)
    )


def record_fields() -> dict[str, str]:
    """Return validate's record name -> CandidateResult field (the ``record`` mark)."""
    out: dict[str, str] = {}
    for name in result_fields("record"):
        extra = CandidateResult.model_fields[name].json_schema_extra
        assert isinstance(extra, dict)
        out[str(extra["record"])] = name
    return out


class CandidateGrids(BaseModel):
    """Large per-candidate arrays for the job store's data store (not for documents).

    The arrays travel as one compressed ``.npz`` payload (base64 text, so that any store
    takes it): ``energy_eV`` on the grid (float32, +inf where U was not refined because the
    ion cannot get there), ``region_flat_indices`` of the transport region and
    ``drag_voigt_kg_per_s`` there (gamma as xx, yy, zz, yz, xz, xy; float32).
    """

    candidate_id: str
    lattice_matrix_A: list[list[float]]
    grid_shape: list[int]
    npz_base64: str

    @classmethod
    def from_arrays(
        cls,
        candidate_id: str,
        lattice_matrix_A: np.ndarray,
        energy_grid_eV: np.ndarray,
        region_flat: np.ndarray,
        gamma_region_kg_per_s: np.ndarray,
    ) -> CandidateGrids:
        """Pack and compress the arrays."""
        voigt = gamma_region_kg_per_s[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            energy_eV=energy_grid_eV.astype(np.float32),
            region_flat_indices=np.asarray(region_flat, dtype=np.int64),
            drag_voigt_kg_per_s=voigt.astype(np.float32),
        )
        return cls(
            candidate_id=candidate_id,
            lattice_matrix_A=matrix_list(lattice_matrix_A) or [],
            grid_shape=list(energy_grid_eV.shape),
            npz_base64=base64.b64encode(buffer.getvalue()).decode("ascii"),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Unpack: energy_eV (grid shape), region_flat_indices, drag_voigt_kg_per_s."""
        with np.load(io.BytesIO(base64.b64decode(self.npz_base64))) as data:
            return {name: data[name] for name in data.files}


__all__ = [
    "CandidateGrids",
    "CandidateResult",
    "PathProfile",
    "band_gap_of",
    "finite_or_none",
    "matrix_list",
]
