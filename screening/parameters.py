"""Every physics knob of a screen, in one validated, serialisable object.

The workflow Makers carry the same knobs as flat fields and build this object at run time;
the ranking database records it with each run so that results are only reused for the same
parameters (:meth:`ScreeningParameters.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Bumped with every change of the science code that changes its numbers (see fingerprint).
SCIENCE_REVISION: int = 5

#: Temperatures a screen accepts, K (temperature_K and the Arrhenius temperatures).
MIN_TEMPERATURE_K: float = 50.0
MAX_TEMPERATURE_K: float = 5000.0

#: Most temperatures of an Arrhenius fit.
MAX_ARRHENIUS_TEMPERATURES: int = 20

#: Fields added after SCIENCE_REVISION 2 with the value that reproduces the earlier behaviour.
#: At that value they are left out of :meth:`ScreeningParameters.fingerprint`, so results
#: stored before the field existed (computed exactly that way) stay reusable; any other
#: value enters the hash and never shares results with the default.
_FINGERPRINT_NEUTRAL_DEFAULTS: dict[str, object] = {
    "potential": "bvse",
    "elastic": "given_or_estimate",
    "framework_relaxation": "frozen",
}


class UniversalSettings(BaseModel):
    """Numerics of the universal-potential backend, CHGNet (all have tested defaults).

    Part of :class:`ScreeningParameters` (``universal``), so fingerprinted with them; at
    their defaults they are left out of the fingerprint (a BVSE screen's hash is unchanged).

    Attributes
    ----------
    min_image_distance_A
        Smallest perpendicular width of the supercell (distance between the moving ion and
        its periodic images), A.
    max_atoms
        Refuse supercells with more atoms than this (cost grows linearly with atoms).
    mobile_mode
        ``"removed"``: all mobile ions removed, one moved (default; the BVSE framework);
        ``"vacancy"``: mobile ions farther than ``vacancy_clearance_A`` from the path kept.
    vacancy_clearance_A
        With ``mobile_mode="vacancy"``: mobile ions within this of a path point are removed.
    coarse_spacing_A
        Arc-length spacing of the coarse scan, A (at least 8 points per period).
    refine_points
        Extra points between the saddle's coarse neighbours.
    relax_steps
        Force-based relaxation steps of the saddle (across the path) and of the minimum (3D);
        0 evaluates the BVSE path as it is.
    relax_max_step_A
        Largest displacement of one relaxation step, A.
    relax_stiffness_eV_per_A2
        Step = force / this (damped steepest descent), eV/A^2.
    hessian_step_A
        Central-difference step of the saddle Hessian, A.
    batch_size
        Structures per CHGNet forward pass.
    ordering_seed
        Seed of the deterministic ordering of disordered sites.
    min_distance_A
        Ordered atoms closer than this are thinned (split positions), A.
    torch_threads
        Threads torch may use (1 on a shared machine; screens parallelise over processes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_image_distance_A: float = 8.0
    max_atoms: int = 400
    mobile_mode: Literal["removed", "vacancy"] = "removed"
    vacancy_clearance_A: float = 1.5
    coarse_spacing_A: float = 0.4
    refine_points: int = 6
    relax_steps: int = 2
    relax_max_step_A: float = 0.2
    relax_stiffness_eV_per_A2: float = 8.0
    hessian_step_A: float = 0.05
    batch_size: int = 8
    ordering_seed: int = 20250214
    min_distance_A: float = 0.75
    torch_threads: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-friendly dict (recorded with results)."""
        return self.model_dump(mode="json")


# the universal potential's numerics matter only to CHGNet screens: at their defaults they
# leave the hash of every screen as it was before they joined the parameters
_FINGERPRINT_NEUTRAL_DEFAULTS["universal"] = UniversalSettings().model_dump(mode="json")


class ScreeningParameters(BaseModel):
    """Physics and numerics of one screen. Units are in the field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature_K: float = Field(
        300.0,
        ge=MIN_TEMPERATURE_K,
        le=MAX_TEMPERATURE_K,
        description="Temperature of the screen, K. Bounded to where the numerics hold: below "
        "50 K the Boltzmann factors of eV barriers underflow (sigma then has no float value) and "
        "the bisections in units of k_B T cannot resolve it; above 5000 K no crystal exists.",
    )
    ion: str | None = Field(
        None, description="Mobile species; None: each candidate's own (Li, Na, K, ...)."
    )
    grid_spacing_A: float = Field(0.2, gt=0.02, le=1.0, description="Potential grid spacing.")
    cutoff_A: float = Field(6.0, ge=3.0, le=15.0, description="Pair-term cutoff radius.")
    thermal_smearing: bool = Field(
        False,
        description="Average the pair terms over the framework ions' thermal displacements "
        "(Debye model from the elastic data): the second-order, Debye-Waller term of U.",
    )
    framework_relaxation: Literal["frozen", "elastic"] = Field(
        "elastic",
        description="'elastic': each framework ion gives way to the mobile ion along the "
        "bond, held by the static stiffness of an ion in the candidate's elastic continuum "
        "(iondrag.screening.elastic.point_force_stiffness_eV_per_A2); 'frozen': the rigid "
        "framework (the bare BVSE potential).",
    )
    site_exclusion_radius_A: float = Field(
        0.0,
        ge=0.0,
        le=4.0,
        description="A like-charged ion on a partly empty site is absent while the mobile ion "
        "is within this distance of the site (conditional occupancy); 0: plain mean field.",
    )
    estimate_missing_parameters: bool = Field(
        True,
        description="Pairs missing from the softBV table (e.g. Li-P3-, Li-H-) get Morse terms "
        "estimated from the table's trend in the anions' O'Keeffe-Brese size and softness "
        "(iondrag.screening.forcefield.estimated_morse_parameters), named in the warnings; False: "
        "such candidates fail with missing_parameters.",
    )
    barrier_reference: Literal["minimum", "occupied_sites"] = Field(
        "minimum",
        description="Where the ions start their hops along the channel: 'minimum', the "
        "Boltzmann-distributed single ion (the channel profile as it is); 'occupied_sites', "
        "the ions on the structure's own mobile-ion sites (the profile is floored at their "
        "occupancy-weighted soft maximum, iondrag.screening.mobility.occupied_site_level_eV).",
    )
    switch_width_A: float = Field(
        1.0,
        gt=0,
        le=5.0,
        description="Smooth switching width before the cutoff, A; less than cutoff_A (the "
        "switch runs from cutoff_A - switch_width_A to cutoff_A).",
    )
    coarse_to_fine: bool = Field(
        True,
        description="Evaluate U on a grid twice as coarse first and refine only where the "
        "ion can go (results identical within the bisection tolerance; much faster).",
    )
    coarse_margin_eV: float = Field(
        0.15, ge=0.0, description="Energy margin above the coarse-grid levels kept for refinement."
    )
    percolation_ceiling_eV: float = Field(
        5.0,
        gt=0,
        le=50.0,
        description="Percolation searched up to min U + this, eV; above: trapped (50 eV is "
        "far above any site energy of the force field).",
    )
    percolation_tolerance_eV: float = Field(
        0.002,
        ge=1e-6,
        le=0.1,
        description="Bisection tolerance, eV. At least 1e-6 eV: the bisection halves an "
        "interval of a few eV (~22 probes to 1e-6), and U carries round-off of ~1e-12 eV; "
        "a tolerance near the float spacing of U (1e-15 eV) could never be reached.",
    )
    dimensionality_window_eV: float = Field(
        0.1,
        ge=0,
        le=10.0,
        description="A dimension counts if its percolation energy is within this "
        "of the 1D percolation energy.",
    )
    window_kT: float = Field(
        10.0,
        ge=3.0,
        le=100.0,
        description="Transport region: U below E_1D + window_kT k_B T. Up to 100: weights "
        "exp(-U/k_B T) beyond 100 k_B T are below 1e-43 of the channel's and add nothing "
        "but grid points.",
    )
    drag_floor_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Isotropic friction floor as a fraction of the drag at the saddle.",
    )
    headline: Literal["path_entropic", "homogenised", "path"] = Field(
        "path_entropic",
        description="Which estimate is the headline sigma (see "
        "iondrag.screening.pipeline._transport).",
    )
    polycrystal_average: Literal["harmonic", "geometric", "bruggeman", "arithmetic"] = Field(
        "harmonic",
        description="Isotropic sigma of a polycrystal from the principal values: harmonic "
        "(grains in series: the slowest direction limits), geometric (the log average), "
        "Bruggeman's effective medium (spherical grains), or the arithmetic mean tr/3 "
        "(grains in parallel).",
    )
    inertia_correction: bool = Field(
        True, description="Multiply the overdamped result by Kramers' factor g k (theory 3)."
    )
    carrier_density: Literal["all_sites", "percolating_sites", "connected_sites"] = Field(
        "connected_sites",
        description="connected_sites: the ions on their crystallographic sites, each "
        "weighted by exp(-(L - E_1)/kT), L the level at which its site joins a percolating "
        "channel (docs/theory.md 6); all_sites: every mobile ion, Boltzmann-weighted into the "
        "percolating region; percolating_sites: only ions on sites inside that region.",
    )
    carrier_statistics: Literal["lattice_gas", "all_ions"] = Field(
        "lattice_gas",
        description="lattice_gas: an ion carries current only into an empty site; the "
        "carriers are the ions times (the vacancy fraction of their sublattice + thermal "
        "Frenkel vacancies exp(-E_F/2kT) + extrinsic_defect_fraction), capped at one "
        "(iondrag.screening.carriers); all_ions: every mobile ion a carrier (the single-ion "
        "picture).",
    )
    extrinsic_defect_fraction: float = Field(
        1e-4,
        ge=0.0,
        le=1.0,
        description="Vacancies per mobile-ion site from aliovalent impurities (dimensionless). "
        "A physical default, not fitted: 100 ppm, the impurity level of reagent-grade "
        "(99.99 %) ceramics; it sets the floor of a stoichiometric crystal's carriers.",
    )
    reduce_to_primitive: bool = Field(
        True,
        description="Analyse the Niggli-reduced primitive cell of each structure "
        "(iondrag.screening.structures.reduced_primitive_cell), so that a supercell, setting or "
        "origin of the same crystal gives the same result; False: the cell as given.",
    )
    shared_sites: Literal["mean_field", "random_network"] = Field(
        "mean_field",
        description="Sites the mobile ion shares with framework cations (Li/La in "
        "perovskites): mean_field puts the framework ion's occupancy on every such site; "
        "random_network gives U site exclusion there and multiplies the transport by the "
        "conductance share left by random arrangements (free sites, energy shifts from the "
        "ions present) in a >= 1e4-site supercell (iondrag.screening.disorder).",
    )
    barrier_compensation: Literal["none", "meyer_neldel"] = Field(
        "none",
        description="meyer_neldel: every Boltzmann factor exp(-E/kT) of the path estimate "
        "times exp(E/E_MN) with E_MN = hbar omega of the ion in its site (its own phonon "
        "scale, no fitted constant; iondrag.screening.mobility.meyer_neldel_temperature_K); none: "
        "the bare barriers.",
    )
    path_relax_iterations: int = Field(30, ge=0, le=500, description="String-method steps.")
    arrhenius_temperatures_K: tuple[float, ...] = Field(
        (300.0, 400.0, 500.0, 600.0),
        description="Temperatures of the Arrhenius fit (empty: no fit).",
    )
    refine_above_1d_eV: float = Field(
        1.0,
        ge=0.0,
        description="With coarse_to_fine, E_2D and E_3D are resolved on the fine grid up to "
        "E_1D + this; higher ones come from the coarse grid (noted in the warnings).",
    )
    memory_budget_MB: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="Peak memory of the process scoring a candidate, MB "
        "(iondrag.screening.memory); None: IONDRAG_MEMORY_BUDGET_MB.",
    )
    on_grid_too_large: Literal["coarsen", "refuse"] = Field(
        "coarsen", description="Coarsen the grid (with a warning) or refuse the candidate."
    )
    potential: Literal["bvse", "chgnet"] = Field(
        "bvse",
        description="Crystal potential U(r) (eV) behind the result. bvse: bond-valence site "
        "energies only. chgnet: in addition, the universal potential CHGNet re-evaluates U "
        "along the BVSE percolating path (frozen framework, saddle Hessian) and its barrier "
        "(eV) and path-formula log10 sigma (S/cm) are recorded as *_universal_* fields; the "
        "headline stays BVSE (docs/universal.md: CHGNet along the BVSE path ranks measured "
        "conductivities worse). Needs the ml extra.",
    )
    elastic: Literal["given_or_estimate", "chgnet"] = Field(
        "given_or_estimate",
        description="Elastic data behind Lambda (s^3/kg) for candidates without their own: "
        "given_or_estimate: the bond-stiffness estimate; chgnet: a CHGNet elastic tensor "
        "(GPa) from atomate2's force-field elastic workflow, run in the jobflow screen before "
        "scoring (recorded as elastic_source; the estimate where that workflow fails). "
        "Candidates with elastic data always use theirs. Needs the ml extra.",
    )
    universal: UniversalSettings = Field(
        default_factory=UniversalSettings,
        description="Numerics of the universal potential (potential='chgnet'): supercell, "
        "ordering of disordered sites, path scan and saddle Hessian "
        "(iondrag.screening.parameters.UniversalSettings); --param "
        "universal='{\"max_atoms\": 200}'.",
    )

    @field_validator("ion")
    @classmethod
    def _normalise_ion(cls, value: str | None) -> str | None:
        if value is None:
            return None
        symbol = value.strip().capitalize()
        if not symbol.isalpha() or len(symbol) > 2:
            raise ValueError(f"ion must be an element symbol such as Li or Na, got {value!r}")
        return symbol

    @field_validator("arrhenius_temperatures_K")
    @classmethod
    def _check_temperatures(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(MIN_TEMPERATURE_K <= t <= MAX_TEMPERATURE_K for t in value):
            raise ValueError(
                f"Arrhenius temperatures must lie in [{MIN_TEMPERATURE_K:g}, "
                f"{MAX_TEMPERATURE_K:g}] K (as temperature_K), got {list(value)}"
            )
        if 0 < len(value) < 2:
            raise ValueError("an Arrhenius fit needs at least two temperatures")
        if len(value) > MAX_ARRHENIUS_TEMPERATURES:
            raise ValueError(
                f"at most {MAX_ARRHENIUS_TEMPERATURES} Arrhenius temperatures (each costs a "
                f"transport evaluation), got {len(value)}"
            )
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _check_switch_inside_cutoff(self) -> ScreeningParameters:
        if self.switch_width_A >= self.cutoff_A:
            raise ValueError(
                f"switch_width_A ({self.switch_width_A} A) must be below cutoff_A "
                f"({self.cutoff_A} A): the pair terms are switched off between the two"
            )
        return self

    def fingerprint(self) -> str:
        """Short stable hash of the parameters and the science revision.

        Results are reused only for equal hashes; :data:`SCIENCE_REVISION` changes whenever
        the science code changes what it computes, so stored results of older code are not
        mistaken for current ones. Fields of :data:`_FINGERPRINT_NEUTRAL_DEFAULTS` at their
        neutral value are left out (the hash of a BVSE screen is what it was before they
        existed); at any other value they are part of it (a CHGNet screen never reuses BVSE
        results, nor the reverse).
        """
        values = self.model_dump(mode="json")
        for name, neutral in _FINGERPRINT_NEUTRAL_DEFAULTS.items():
            if values.get(name) == neutral:
                del values[name]
        payload = json.dumps(
            {"parameters": values, "science_revision": SCIENCE_REVISION},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: Unit of a parameter from the suffix of its name (units are carried in the names).
_UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_eV", "eV"),
    ("_K", "K"),
    ("_A", "Å"),
    ("_MB", "MB"),
    ("_kT", "k_B T"),
)


def _unit(name: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def _kind(annotation: Any) -> str:
    """Short type of a field: the choices of a Literal, or the type's name."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "/".join(str(a) for a in args)
    if args:  # X | None, tuple[float, ...]
        names = [_kind(a) for a in args if a is not type(None) and a is not Ellipsis]
        text = " or ".join(names) if typing.get_origin(annotation) is not tuple else "list"
        if type(None) in args:
            text += " or none"
        return text if typing.get_origin(annotation) is not tuple else f"list of {names[0]}"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(
                    f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}"
                )
    return ", ".join(parts)


def parameter_table() -> list[dict[str, Any]]:
    """Every field of :class:`ScreeningParameters`: name, type, unit, default, bounds, meaning.

    Derived from the model itself (``iondrag params`` prints it), so it never drifts.
    """
    rows = []
    for name, info in ScreeningParameters.model_fields.items():
        default = info.default
        if isinstance(default, tuple):
            default = ",".join(f"{v:g}" for v in default) or "(none)"
        elif isinstance(default, bool):
            default = "true" if default else "false"
        rows.append(
            {
                "key": name,
                "type": _kind(info.annotation),
                "unit": _unit(name),
                "default": "none" if default is None else default,
                "bounds": _bounds(list(info.metadata)),
                "description": " ".join((info.description or "").split()),
            }
        )
    return rows


def field_summary(model: type[BaseModel], name: str) -> str:
    """One line of help for a field of a pydantic model: meaning, unit and default.

    The first sentence of the field's description, then its unit (from the name's suffix)
    and its default, so that a command-line option says what the model defines.
    """
    info = model.model_fields[name]
    description = " ".join((info.description or "").split())
    sentence = description.split(". ")[0].rstrip(".") if description else name
    default = info.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        shown = ",".join(f"{v:g}" for v in default) or "none"
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    else:
        shown = "none" if default is None else f"{default}"
    unit = _unit(name)
    return f"{sentence} ({unit + ', ' if unit else ''}default {shown})"
