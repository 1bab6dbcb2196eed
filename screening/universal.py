"""Universal-potential backend for U: CHGNet energies on the frozen framework (issue 7).

The fast force field (BVSE) finds where the ion can go and the percolating path; this module
re-evaluates the crystal potential U along that path with a universal machine-learned
potential (CHGNet, pretrained weights shipped inside its wheel), refines it around the
saddle and returns the barrier, the profile and the Hessian at the saddle, from which the
same transport formulas as the BVSE path give a conductivity (:func:`universal_transport`).

torch and chgnet are imported lazily inside the functions that need them: importing this
module costs nothing without the ``ml`` extra, and the default screen never imports torch.

Construction (documented in docs/universal.md)
----------------------------------------------
* **Frozen framework, mobile ions removed.** The structure the ion moves through is the
  same as the BVSE framework (theory.md section 1: "the mobile species is removed from the
  framework it moves through"): every mobile-ion site is emptied and ONE mobile ion is
  moved along the BVSE path; all other atoms stay at their crystallographic positions. This
  is the frozen-framework scan of Maevskiy et al. (arXiv:2411.06804), it measures the same
  U(r) that the BVSE backend approximates (so the two backends are compared like for like
  in validation), and its profile is exactly periodic along the path for an ordered
  framework. The alternative, a vacancy-mediated hop with the other mobile ions kept, needs
  a choice of which ions to remove near the path (the BVSE path runs through mobile-ion
  sites) and a nudged elastic band to be meaningful; it is available as
  ``mobile_mode="vacancy"`` (mobile ions farther than ``vacancy_clearance_A`` from every
  path point are kept) for comparison, not as the default.
* **Supercell.** The smallest diagonal supercell n1 x n2 x n3 of the cell whose three
  perpendicular widths are at least ``min_image_distance_A`` (default 8 A): the moving ion
  and its periodic images are then at least that far apart (CHGNet's atom-graph cutoff is
  5 A, so the ion and its images share no edge). Supercells above ``max_atoms`` are refused
  (:class:`UniversalTooLargeError`), never silently shrunk.
* **Ordering of disordered frameworks.** CHGNet needs an ordered structure. Cheap and
  deterministic: the sites of the (super)cell are grouped into classes of identical
  occupancy (same species, same occupancies; in a CIF expanded to P1 a class is a
  crystallographic orbit or a union of orbits); in each class the number of atoms of each
  species is the occupancy times the number of sites, rounded by largest remainders (so the
  composition is kept to within one atom per class), and which sites get them is a
  permutation drawn from a fixed seed (``ordering_seed``). Atoms of split positions that end
  up closer than ``min_distance_A`` are thinned (the later one dropped). No energy ranking of
  orderings is attempted (that would cost many model calls per structure); the framework's
  local disorder enters as one fixed random realisation, recorded in ``ordering``.

Path evaluation
---------------
1. coarse scan: points every ``coarse_spacing_A`` along one period of the path (plus the
   period's end, whose energy minus the start's, ``closure_eV``, checks periodicity);
2. relaxation (optional, ``relax_steps``): the highest point is relaxed across the path
   (in the plane perpendicular to the tangent) and the lowest point in 3D, by damped
   steepest descent on CHGNet forces with a step cap; the path is deformed through the
   relaxed points with a displacement that tapers linearly to zero at the neighbouring
   coarse points;
3. refinement: ``refine_points`` extra points between the saddle's neighbouring coarse
   points;
4. Hessian of the moving ion's energy at the final saddle by central differences of CHGNet
   forces (6 force calls, step ``hessian_step_A``), symmetrised; the same 6 calls give the
   diagonal second differences of the energy (a consistency check).

Every batch of structures goes through ``CHGNet.predict_structure(list, batch_size=...)``.
Energies are CHGNet's per-atom energies times the number of atoms (eV), forces eV/A.

Units: A, eV, eV/A^2, seconds; SI for the transport numbers (as iondrag.screening.mobility).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from iondrag.screening.drag import drag_floor_kg_per_s, drag_tensor
from iondrag.screening.errors import IondragError
from iondrag.screening.mobility import damping_regime, kramers_factor, path_mobility
from iondrag.screening.parameters import UniversalSettings
from iondrag.screening.schemas import result_fields
from iondrag.screening.units import S_PER_M_TO_S_PER_CM

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pymatgen.core import Structure

    from iondrag.screening.analysis import Analysis
    from iondrag.screening.parameters import ScreeningParameters
    from iondrag.screening.structures import Framework

__all__ = [
    "BACKEND_NAME",
    "CLASH_DISTANCE_A",
    "UNIVERSAL_RESULT_FIELDS",
    "FrozenFramework",
    "MissingMLExtraError",
    "OrderingError",
    "UniversalPathResult",
    "UniversalPotentialError",
    "UniversalSettings",
    "UniversalTooLargeError",
    "UniversalTransport",
    "chgnet_available",
    "chgnet_path_profile",
    "frozen_framework",
    "load_chgnet",
    "order_structure",
    "supercell_for",
    "universal_fields",
    "universal_transport",
]

#: CandidateResult fields taken from :func:`universal_fields` (those marked ``universal``).
UNIVERSAL_RESULT_FIELDS: tuple[str, ...] = result_fields("universal")

#: Name recorded as ``potential_backend`` for this backend.
BACKEND_NAME = "chgnet"

#: A profile point closer than this to a frozen atom is flagged (path through an atom), A.
CLASH_DISTANCE_A = 1.0

#: CHGNet weights used (shipped inside the chgnet wheel; nothing is downloaded).
CHGNET_MODEL_NAME = "0.3.0"


# ---------------------------------------------------------------------------------------
# Errors (recorded by a screen as failures with their cause, never raised past it)
# ---------------------------------------------------------------------------------------


class UniversalPotentialError(IondragError):
    """The universal-potential evaluation failed for this candidate."""

    cause = "universal_potential"


class MissingMLExtraError(UniversalPotentialError):
    """torch/chgnet are not installed (``pip install torch==2.13.0 && pip install -e .[ml]``)."""

    cause = "ml_extra_missing"


class OrderingError(UniversalPotentialError):
    """The disordered structure could not be turned into an ordered one."""

    cause = "ordering"


class UniversalTooLargeError(UniversalPotentialError):
    """The supercell needed for the frozen-framework scan exceeds ``max_atoms``."""

    cause = "universal_too_large"


# ---------------------------------------------------------------------------------------
# Settings and results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenFramework:
    """The ordered supercell the ion moves through (mobile ions removed or kept).

    Attributes
    ----------
    lattice_matrix_A
        Supercell lattice vectors as rows, A.
    species
        Element symbols of the frozen atoms.
    cart_coords_A
        Their Cartesian coordinates, A, shape (N, 3).
    supercell
        (n1, n2, n3) of the cell.
    mobile_element
        The moving species (appended last to every image).
    image_distance_A
        Smallest perpendicular width of the supercell, A.
    ordering
        How disorder was resolved (method, seed, classes, atoms dropped, composition).
    """

    lattice_matrix_A: np.ndarray
    species: tuple[str, ...]
    cart_coords_A: np.ndarray
    supercell: tuple[int, int, int]
    mobile_element: str
    image_distance_A: float
    ordering: dict[str, Any]

    @property
    def n_atoms(self) -> int:
        """Atoms in one image, the moving ion included."""
        return len(self.species) + 1

    def image(self, ion_cart_A: np.ndarray) -> Structure:
        """Return the pymatgen Structure with the moving ion at ``ion_cart_A`` (last site)."""
        from pymatgen.core import Lattice, Structure

        coords = np.vstack([self.cart_coords_A, np.asarray(ion_cart_A, float)[None, :]])
        return Structure(
            Lattice(self.lattice_matrix_A),
            [*self.species, self.mobile_element],
            coords,
            coords_are_cartesian=True,
        )


@dataclass
class UniversalPathResult:
    """CHGNet along the BVSE path: barrier, profile and saddle Hessian.

    Attributes
    ----------
    barrier_eV
        max - min of the (refined, relaxed) profile, eV.
    s_A, energy_eV
        Arc length along the (deformed) path and U relative to its minimum, sorted by s,
        one period (the period's end is not repeated).
    points_A
        Cartesian positions of the profile points (unit-cell frame, unwrapped), (P, 3).
    translation_A
        Lattice translation of one period, A.
    closure_eV
        U(end of period) - U(start): 0 for an exactly periodic profile (ordered framework).
    saddle_index
        Index of the saddle in the profile.
    saddle_point_A, saddle_tangent
        Saddle position (A) and the unit tangent of the path there.
    hessian_eV_per_A2
        Hessian of the moving ion's energy at the saddle (symmetrised), eV/A^2.
    hessian_asymmetry_eV_per_A2
        max |H - H^T| / 2 before symmetrisation (finite-difference noise).
    hessian_energy_diagonal_eV_per_A2
        Diagonal second differences of the energy from the same displaced images.
    saddle_force_eV_per_A
        Force on the ion at the saddle (mean of the displaced pairs), eV/A.
    relaxation_eV
        Energy lowered by the relaxation of the saddle and of the minimum, eV.
    n_energy_calls, n_force_calls
        Structures evaluated for energies only and for energies and forces.
    n_atoms, supercell, image_distance_A, ordering
        The frozen framework used.
    seconds
        Wall time by step: model_load, framework, coarse, relax, refine, hessian, total.
    notes
        Warnings (e.g. a non-periodic closure from the ordering, a path through an atom).
    min_distance_to_framework_A
        Closest approach of the profile points to a frozen atom, A: below
        :data:`CLASH_DISTANCE_A` the BVSE path runs through an atom of the ordered
        realisation (a site BVSE saw only as a fractional occupancy), and the CHGNet barrier
        is that of a different path.
    """

    barrier_eV: float
    s_A: np.ndarray
    energy_eV: np.ndarray
    points_A: np.ndarray
    translation_A: np.ndarray
    closure_eV: float
    saddle_index: int
    saddle_point_A: np.ndarray
    saddle_tangent: np.ndarray
    hessian_eV_per_A2: np.ndarray
    hessian_asymmetry_eV_per_A2: float
    hessian_energy_diagonal_eV_per_A2: np.ndarray
    saddle_force_eV_per_A: np.ndarray
    relaxation_eV: dict[str, float]
    n_energy_calls: int
    n_force_calls: int
    n_atoms: int
    supercell: tuple[int, int, int]
    image_distance_A: float
    ordering: dict[str, Any]
    settings: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    min_distance_to_framework_A: float | None = None

    @property
    def segment_lengths_A(self) -> np.ndarray:
        """Lengths of the closed loop's segments (last one back to the translated start), A."""
        closed = np.vstack([self.points_A, self.points_A[:1] + self.translation_A])
        return np.linalg.norm(np.diff(closed, axis=0), axis=1)

    @property
    def saddle_curvature_eV_per_A2(self) -> float:
        """Curvature t . H . t at the saddle (negative at a true saddle), eV/A^2."""
        t = self.saddle_tangent
        return float(t @ self.hessian_eV_per_A2 @ t)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no arrays but the small ones)."""
        return {
            "barrier_eV": self.barrier_eV,
            "closure_eV": self.closure_eV,
            "n_points": len(self.s_A),
            "saddle_curvature_eV_per_A2": self.saddle_curvature_eV_per_A2,
            "hessian_eV_per_A2": self.hessian_eV_per_A2.tolist(),
            "hessian_asymmetry_eV_per_A2": self.hessian_asymmetry_eV_per_A2,
            "relaxation_eV": dict(self.relaxation_eV),
            "n_energy_calls": self.n_energy_calls,
            "n_force_calls": self.n_force_calls,
            "n_atoms": self.n_atoms,
            "min_distance_to_framework_A": self.min_distance_to_framework_A,
            "supercell": list(self.supercell),
            "image_distance_A": self.image_distance_A,
            "ordering": dict(self.ordering),
            "settings": dict(self.settings),
            "seconds": dict(self.seconds),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------
# The model (lazy)
# ---------------------------------------------------------------------------------------

_MODEL_CACHE: dict[str, Any] = {}


def chgnet_available() -> bool:
    """Return True when torch and chgnet can be imported (without importing them)."""
    from importlib.util import find_spec

    return find_spec("torch") is not None and find_spec("chgnet") is not None


def load_chgnet(threads: int = 1) -> Any:
    """Return the pretrained CHGNet (weights from the installed wheel), cached per process.

    Raises
    ------
    MissingMLExtraError
        torch or chgnet is not installed.
    """
    try:
        import torch
        from chgnet.model import CHGNet
    except ImportError as error:  # the ml extra is optional
        raise MissingMLExtraError(
            f"the universal potential needs the ml extra ({error}); install with "
            "`pip install torch==2.13.0 && pip install -e '.[ml]'`"
        ) from error
    if threads > 0:
        torch.set_num_threads(threads)
    key = CHGNET_MODEL_NAME
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = CHGNet.load(model_name=key, use_device="cpu", verbose=False)
    return _MODEL_CACHE[key]


def _predict(
    model: Any, structures: list[Structure], task: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Total energies (eV) and, for ``task="ef"``, forces (eV/A) of a batch of images."""
    import warnings

    if not structures:
        return np.zeros(0), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.predict_structure(structures, task=task, batch_size=batch_size)
    if isinstance(out, dict):
        out = [out]
    energies = np.array(
        [float(o["e"]) * len(s) for o, s in zip(out, structures, strict=True)], dtype=float
    )
    forces = np.array([np.asarray(o["f"], float) for o in out]) if "f" in task else None
    if not np.all(np.isfinite(energies)):
        raise UniversalPotentialError("CHGNet returned a non-finite energy")
    return energies, forces


# ---------------------------------------------------------------------------------------
# Ordering and the frozen framework (pure pymatgen/numpy)
# ---------------------------------------------------------------------------------------


def supercell_for(lattice_matrix_A: np.ndarray, min_width_A: float) -> tuple[int, int, int]:
    """Smallest diagonal supercell whose perpendicular widths are all >= ``min_width_A``."""
    m = np.asarray(lattice_matrix_A, dtype=float)
    volume = abs(float(np.linalg.det(m)))
    counts = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        width = volume / float(np.linalg.norm(np.cross(m[j], m[k])))
        counts.append(max(1, math.ceil(min_width_A / width - 1e-9)))
    return counts[0], counts[1], counts[2]


def _perpendicular_widths(lattice_matrix_A: np.ndarray) -> np.ndarray:
    m = np.asarray(lattice_matrix_A, dtype=float)
    volume = abs(float(np.linalg.det(m)))
    return np.array(
        [volume / np.linalg.norm(np.cross(m[(i + 1) % 3], m[(i + 2) % 3])) for i in range(3)]
    )


def _largest_remainder(fractions: dict[str, float], slots: int) -> dict[str, int]:
    """Integer counts n_X ~ fraction_X * slots with sum <= slots (largest remainders)."""
    exact = {sp: frac * slots for sp, frac in fractions.items()}
    counts = {sp: math.floor(v + 1e-9) for sp, v in exact.items()}
    total_target = min(slots, round(sum(exact.values())))
    order = sorted(exact, key=lambda sp: (-(exact[sp] - counts[sp]), sp))
    i = 0
    while sum(counts.values()) < total_target and order:
        counts[order[i % len(order)]] += 1
        i += 1
    return counts


def order_structure(
    structure: Structure,
    *,
    seed: int | None = None,
    min_distance_A: float | None = None,
    candidate_id: str | None = None,
) -> tuple[Structure, dict[str, Any]]:
    """Return a deterministic ordered version of a (possibly disordered) structure.

    Sites are grouped into classes of identical occupancy; in each class the species counts
    are the occupancies times the class size (largest remainders), placed on a permutation
    of the class's sites drawn from ``seed``; atoms closer than ``min_distance_A`` to an
    atom already placed are dropped. Make the supercell first when the cell holds too few
    sites for the occupancies (``structure * (n1, n2, n3)``). ``seed`` and
    ``min_distance_A`` (A) default to :class:`UniversalSettings`' values.

    Returns
    -------
    (ordered, info)
        The ordered Structure (element species, no oxidation states) and what was done.

    Raises
    ------
    OrderingError
        Nothing is left after ordering.
    """
    from pymatgen.core import Structure as PmgStructure

    defaults = UniversalSettings()
    seed = defaults.ordering_seed if seed is None else seed
    min_distance_A = defaults.min_distance_A if min_distance_A is None else min_distance_A
    classes: dict[tuple[tuple[str, float], ...], list[int]] = {}
    for index, site in enumerate(structure):
        key = tuple(sorted((sp.symbol, round(float(occ), 4)) for sp, occ in site.species.items()))
        classes.setdefault(key, []).append(index)
    rng = np.random.default_rng(seed)
    assigned: list[tuple[int, str]] = []
    n_disordered_classes = 0
    for key in sorted(classes):
        members = classes[key]
        fractions: dict[str, float] = {}
        for symbol, occ in key:
            fractions[symbol] = fractions.get(symbol, 0.0) + occ
        if len(fractions) == 1 and next(iter(fractions.values())) >= 1.0 - 1e-3:
            symbol = next(iter(fractions))
            assigned.extend((i, symbol) for i in members)
            continue
        n_disordered_classes += 1
        counts = _largest_remainder(fractions, len(members))
        slots = [sp for sp in sorted(counts) for _ in range(counts[sp])]
        permutation = rng.permutation(len(members))
        for slot, position in zip(slots, permutation, strict=False):
            assigned.append((members[position], slot))
    assigned.sort()
    lattice = structure.lattice
    frac = np.array([structure[i].frac_coords for i, _ in assigned], dtype=float)
    symbols = [s for _, s in assigned]
    keep = np.ones(len(assigned), dtype=bool)
    dropped = 0
    if len(assigned) > 1:
        disordered_site = np.array([not structure[i].is_ordered for i, _ in assigned])
        distances = lattice.get_all_distances(frac, frac)
        np.fill_diagonal(distances, np.inf)
        for a in range(len(assigned)):
            if not keep[a] or not disordered_site[a]:
                continue
            close = np.flatnonzero((distances[a] < min_distance_A) & keep)
            if np.any(close < a) or (len(close) and not np.all(disordered_site[close])):
                keep[a] = False
                dropped += 1
    if not keep.any():
        raise OrderingError("no atom left after ordering", candidate_id)
    ordered = PmgStructure(lattice, [symbols[i] for i in np.flatnonzero(keep)], frac[keep])
    info = {
        "method": "class-wise largest-remainder occupancy rounding, seeded permutation",
        "seed": seed,
        "n_sites_in": len(structure),
        "n_atoms_out": len(ordered),
        "n_disordered_classes": n_disordered_classes,
        "n_dropped_split_positions": dropped,
        "was_ordered": bool(structure.is_ordered),
        "formula_in": structure.composition.formula,
        "formula_out": ordered.composition.formula,
    }
    return ordered, info


def _framework_structure(framework: Framework, keep_mobile: np.ndarray | None) -> Structure:
    """Return the framework as a pymatgen Structure, mixed sites merged by position."""
    from pymatgen.core import Lattice, Structure

    frac = list(np.mod(framework.frac_coords, 1.0))
    elements = list(framework.elements)
    occupancies = list(framework.occupancies)
    if keep_mobile is not None:
        for f, occ in zip(
            framework.mobile_frac_coords[keep_mobile],
            framework.mobile_occupancies[keep_mobile],
            strict=True,
        ):
            frac.append(np.mod(f, 1.0))
            elements.append(framework.mobile_element)
            occupancies.append(occ)
    sites: list[tuple[np.ndarray, dict[str, float]]] = []
    for f, el, occ in zip(frac, elements, occupancies, strict=True):
        for position, species in sites:
            delta = f - position
            delta -= np.round(delta)
            if np.max(np.abs(delta)) < 1e-4:
                species[el] = species.get(el, 0.0) + float(occ)
                break
        else:
            sites.append((np.asarray(f, float), {el: float(occ)}))
    lattice = Lattice(framework.lattice_matrix_A)
    species_list = []
    for _, species in sites:
        total = sum(species.values())
        scale = 1.0 / total if total > 1.0 else 1.0  # refinement noise above 1
        species_list.append({el: occ * scale for el, occ in species.items()})
    return Structure(lattice, species_list, [p for p, _ in sites])


def frozen_framework(
    framework: Framework,
    path_points_A: np.ndarray | None = None,
    settings: UniversalSettings | None = None,
    *,
    candidate_id: str | None = None,
) -> FrozenFramework:
    """Build the ordered supercell of the frozen framework (see the module docstring).

    With ``mobile_mode="vacancy"`` the mobile-ion sites are kept except those within
    ``vacancy_clearance_A`` of the moving ion's own path (one period, in the supercell: the
    periodic copies of the channel in the other cells of the supercell keep their ions).

    Raises
    ------
    UniversalTooLargeError
        The supercell would exceed ``settings.max_atoms``.
    OrderingError
        Ordering left no atom.
    """
    settings = settings or UniversalSettings()
    vacancy = settings.mobile_mode == "vacancy" and len(framework.mobile_occupancies) > 0
    if vacancy and path_points_A is None:
        raise ValueError("mobile_mode='vacancy' needs the path points")
    keep_mobile = np.ones(len(framework.mobile_occupancies), dtype=bool) if vacancy else None
    base = _framework_structure(framework, keep_mobile)
    supercell = supercell_for(framework.lattice_matrix_A, settings.min_image_distance_A)
    n_images = supercell[0] * supercell[1] * supercell[2]
    expected = base.composition.num_atoms * n_images + 1
    if expected > settings.max_atoms:
        raise UniversalTooLargeError(
            f"supercell {supercell} holds ~{expected:.0f} atoms (cap {settings.max_atoms}); "
            f"raise max_atoms or lower min_image_distance_A ({settings.min_image_distance_A} A)",
            candidate_id,
        )
    big = base * supercell
    cleared = 0.0
    if vacancy:
        assert path_points_A is not None
        big, cleared = _clear_path(
            big, framework.mobile_element, np.asarray(path_points_A, float), settings
        )
    ordered, info = order_structure(
        big,
        seed=settings.ordering_seed,
        min_distance_A=settings.min_distance_A,
        candidate_id=candidate_id,
    )
    info["mobile_mode"] = settings.mobile_mode
    if vacancy:
        info["mobile_ions_removed_near_path"] = round(cleared, 3)
    return FrozenFramework(
        lattice_matrix_A=np.array(ordered.lattice.matrix, dtype=float),
        species=tuple(site.specie.symbol for site in ordered),
        cart_coords_A=np.array(ordered.cart_coords, dtype=float),
        supercell=supercell,
        mobile_element=framework.mobile_element,
        image_distance_A=float(_perpendicular_widths(ordered.lattice.matrix).min()),
        ordering=info,
    )


def _clear_path(
    big: Structure, mobile: str, path_points_A: np.ndarray, settings: UniversalSettings
) -> tuple[Structure, float]:
    """Remove the mobile species from supercell sites near the path; occupancy removed."""
    lattice = big.lattice
    probes = lattice.get_fractional_coords(path_points_A)
    distances = lattice.get_all_distances(big.frac_coords, probes).min(axis=1)
    removed = 0.0
    drop = []
    for index in np.flatnonzero(distances < settings.vacancy_clearance_A):
        site = big[int(index)]
        rest = {sp: occ for sp, occ in site.species.items() if sp.symbol != mobile}
        removed += sum(occ for sp, occ in site.species.items() if sp.symbol == mobile)
        if rest:
            big.replace(int(index), rest, site.frac_coords)
        else:
            drop.append(int(index))
    big.remove_sites(drop)
    return big, removed


class _Polyline:
    """Piecewise-linear periodic path: position at arc length s (any real s)."""

    def __init__(self, points_A: np.ndarray, translation_A: np.ndarray) -> None:
        self.points = np.asarray(points_A, dtype=float)
        self.translation = np.asarray(translation_A, dtype=float)
        closed = np.vstack([self.points, self.points[:1] + self.translation])
        self.closed = closed
        self.segments = np.linalg.norm(np.diff(closed, axis=0), axis=1)
        self.s = np.concatenate([[0.0], np.cumsum(self.segments)])
        self.length = float(self.s[-1])

    def position(self, s: np.ndarray | float) -> np.ndarray:
        s = np.atleast_1d(np.asarray(s, dtype=float))
        periods = np.floor(s / self.length)
        local = s - periods * self.length
        index = np.clip(np.searchsorted(self.s, local, side="right") - 1, 0, len(self.segments) - 1)
        fraction = (local - self.s[index]) / np.maximum(self.segments[index], 1e-12)
        base = self.closed[index] + fraction[:, None] * (
            self.closed[index + 1] - self.closed[index]
        )
        return base + periods[:, None] * self.translation[None, :]

    def tangent(self, s: float, h: float = 0.05) -> np.ndarray:
        d = self.position(s + h)[0] - self.position(s - h)[0]
        return d / max(float(np.linalg.norm(d)), 1e-12)


@dataclass
class _Counter:
    energy: int = 0
    force: int = 0


def _relax(
    model: Any,
    frozen: FrozenFramework,
    starts: list[tuple[np.ndarray, float, np.ndarray | None]],
    settings: UniversalSettings,
    counter: _Counter,
) -> list[tuple[np.ndarray, float]]:
    """Damped steepest descent of the ion, in lockstep for several start points.

    ``starts``: (position, energy, tangent or None); with a tangent the motion is restricted
    to the plane perpendicular to it. Returns the relaxed (position, energy) of each.
    """
    current = [(np.array(p, float), float(e)) for p, e, _ in starts]
    forces: list[np.ndarray | None] = [None] * len(starts)
    steps = [settings.relax_max_step_A] * len(starts)
    # forces at the starts
    energies, f = _predict(model, [frozen.image(p) for p, _ in current], "ef", settings.batch_size)
    counter.force += len(current)
    assert f is not None
    for i in range(len(current)):
        current[i] = (current[i][0], float(energies[i]))
        forces[i] = f[i][-1]
    for _ in range(settings.relax_steps):
        trial = []
        for i, (position, _) in enumerate(current):
            force = np.array(forces[i], float)
            tangent = starts[i][2]
            if tangent is not None:
                force = force - (force @ tangent) * tangent
            step = force / settings.relax_stiffness_eV_per_A2
            norm = float(np.linalg.norm(step))
            if norm > steps[i]:
                step *= steps[i] / norm
            trial.append(position + step)
        energies, f = _predict(model, [frozen.image(p) for p in trial], "ef", settings.batch_size)
        counter.force += len(trial)
        assert f is not None
        for i in range(len(current)):
            if energies[i] < current[i][1]:
                current[i] = (trial[i], float(energies[i]))
                forces[i] = f[i][-1]
            else:
                steps[i] *= 0.5
    return current


def chgnet_path_profile(
    structure: Structure | None,
    analysis: Analysis,
    *,
    mobile_ion: str | None = None,
    settings: UniversalSettings | None = None,
    model: Any = None,
    candidate_id: str | None = None,
) -> UniversalPathResult:
    """CHGNet energies along the BVSE percolating path, refined at the saddle, with its Hessian.

    Parameters
    ----------
    structure
        The candidate's structure (checked against the analysis's lattice when the analysis
        does not record its own cell; the frozen framework is built from
        ``analysis.framework``, which is what the path lives in).
    analysis
        The BVSE analysis (:func:`iondrag.screening.pipeline.analyse_candidate`): its framework and
        relaxed percolating path.
    mobile_ion
        Must match the analysis's mobile ion when given.
    settings
        Numerics (:class:`UniversalSettings`).
    model
        A loaded CHGNet (default: :func:`load_chgnet`, cached).
    candidate_id
        Named in errors.

    Raises
    ------
    MissingMLExtraError, OrderingError, UniversalTooLargeError, UniversalPotentialError
    """
    settings = settings or UniversalSettings()
    seconds: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(seconds.get(name, 0.0) + now - clock, 4)
        clock = now

    framework = analysis.crystal.framework
    if mobile_ion is not None and mobile_ion.strip().capitalize() != framework.mobile_element:
        raise UniversalPotentialError(
            f"mobile ion {mobile_ion} differs from the analysis's {framework.mobile_element}",
            candidate_id,
        )
    # the analysis records the cell it worked in (the reduced primitive cell by default),
    # which is the one the path lives in; a structure given here is then only that crystal
    analysed = getattr(analysis, "structure", None)
    reference = analysed if analysed is not None else structure
    if reference is not None and not np.allclose(
        np.asarray(reference.lattice.matrix), framework.lattice_matrix_A, atol=1e-6
    ):
        raise UniversalPotentialError("structure and analysis have different cells", candidate_id)
    if model is None:
        model = load_chgnet(settings.torch_threads)
    lap("model_load")

    path = analysis.channel.path
    line = _Polyline(path.points_A, path.translation_A)
    frozen = frozen_framework(framework, line.points, settings, candidate_id=candidate_id)
    notes: list[str] = []
    if frozen.ordering["n_disordered_classes"]:
        notes.append(
            f"framework ordered in a {frozen.supercell} supercell (seed "
            f"{settings.ordering_seed}); the profile is one realisation of the disorder"
        )
    lap("framework")

    counter = _Counter()
    length = line.length
    n_coarse = max(8, math.ceil(length / settings.coarse_spacing_A))
    s_coarse = np.linspace(0.0, length, n_coarse + 1)  # last = period end (closure check)
    h = length / n_coarse
    positions = line.position(s_coarse)
    try:
        energies, _ = _predict(
            model, [frozen.image(p) for p in positions], "e", settings.batch_size
        )
    except (RuntimeError, ValueError, IndexError) as error:
        raise UniversalPotentialError(f"CHGNet failed: {error}", candidate_id) from error
    counter.energy += len(positions)
    closure = float(energies[-1] - energies[0])
    s_all = list(s_coarse[:-1])
    e_all = list(energies[:-1])
    displacement: dict[int, np.ndarray] = {}
    lap("coarse")

    k_max = int(np.argmax(energies[:-1]))
    k_min = int(np.argmin(energies[:-1]))
    relaxation = {"saddle_eV": 0.0, "minimum_eV": 0.0}
    if settings.relax_steps > 0:
        starts: list[tuple[np.ndarray, float, np.ndarray | None]] = [
            (positions[k_max], float(energies[k_max]), line.tangent(s_coarse[k_max]))
        ]
        if k_min != k_max:
            starts.append((positions[k_min], float(energies[k_min]), None))
        relaxed = _relax(model, frozen, starts, settings, counter)
        for slot, k in enumerate([k_max, k_min][: len(starts)]):
            new_position, new_energy = relaxed[slot]
            displacement[k] = new_position - positions[k]
            name = "saddle_eV" if slot == 0 else "minimum_eV"
            relaxation[name] = float(energies[k] - new_energy)
            e_all[k] = new_energy
        lap("relax")

    def deformed(s_values: np.ndarray) -> np.ndarray:
        """Path positions with the relaxation displacements tapered over +-h."""
        out = line.position(s_values)
        for k, delta in displacement.items():
            distance = np.abs(s_values - s_coarse[k])
            distance = np.minimum(distance, length - distance)
            weight = np.clip(1.0 - distance / h, 0.0, 1.0)
            out = out + weight[:, None] * delta[None, :]
        return out

    n_ref = max(0, settings.refine_points)
    if n_ref:
        offsets = np.concatenate(
            [
                -h * np.arange(1, n_ref // 2 + 1)[::-1] / (n_ref // 2 + 1),
                h * np.arange(1, n_ref - n_ref // 2 + 1) / (n_ref - n_ref // 2 + 1),
            ]
        )
        s_ref = np.mod(s_coarse[k_max] + offsets, length)
        e_ref, _ = _predict(
            model, [frozen.image(p) for p in deformed(s_ref)], "e", settings.batch_size
        )
        counter.energy += len(s_ref)
        s_all.extend(s_ref.tolist())
        e_all.extend(e_ref.tolist())
    lap("refine")

    order = np.argsort(s_all)
    s_profile = np.asarray(s_all)[order]
    e_profile = np.asarray(e_all)[order]
    points = deformed(s_profile)
    # the deformed positions at the relaxed coarse points are exactly the relaxed positions
    saddle = int(np.argmax(e_profile))
    x_saddle = points[saddle]
    tangent = line.tangent(float(s_profile[saddle]))

    step = settings.hessian_step_A
    displaced = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            displaced.append(x_saddle + sign * step * np.eye(3)[axis])
    e_h, f_h = _predict(model, [frozen.image(p) for p in displaced], "ef", settings.batch_size)
    counter.force += 6
    assert f_h is not None
    ion_forces = f_h[:, -1, :]  # (6, 3): +x, -x, +y, -y, +z, -z
    hessian = np.empty((3, 3))
    for axis in range(3):
        hessian[:, axis] = -(ion_forces[2 * axis] - ion_forces[2 * axis + 1]) / (2.0 * step)
    asymmetry = float(np.max(np.abs(hessian - hessian.T)) / 2.0)
    hessian = 0.5 * (hessian + hessian.T)
    e0 = float(e_profile[saddle])
    energy_diagonal = np.array(
        [(e_h[2 * a] + e_h[2 * a + 1] - 2.0 * e0) / step**2 for a in range(3)]
    )
    saddle_force = ion_forces.reshape(3, 2, 3).mean(axis=(0, 1))
    lap("hessian")

    closest = _closest_approach_A(frozen, points)
    if closest < CLASH_DISTANCE_A:
        notes.append(
            f"the path passes {closest:.2f} A from a frozen atom of the ordered framework "
            "(a partially occupied site in the BVSE mean field): barrier unreliable"
        )
    e_rel = e_profile - float(e_profile.min())
    if abs(closure) > 0.05 and not frozen.ordering["n_disordered_classes"]:
        notes.append(f"profile not periodic: U(end) - U(start) = {closure:.3f} eV")
    seconds["total"] = round(time.perf_counter() - started, 4)
    return UniversalPathResult(
        barrier_eV=float(e_rel.max()),
        s_A=s_profile,
        energy_eV=e_rel,
        points_A=points,
        translation_A=np.asarray(path.translation_A, float),
        closure_eV=closure,
        saddle_index=saddle,
        saddle_point_A=x_saddle,
        saddle_tangent=tangent,
        hessian_eV_per_A2=hessian,
        hessian_asymmetry_eV_per_A2=asymmetry,
        hessian_energy_diagonal_eV_per_A2=energy_diagonal,
        saddle_force_eV_per_A=saddle_force,
        relaxation_eV=relaxation,
        n_energy_calls=counter.energy,
        n_force_calls=counter.force,
        n_atoms=frozen.n_atoms,
        supercell=frozen.supercell,
        image_distance_A=frozen.image_distance_A,
        ordering=frozen.ordering,
        settings=settings.as_dict(),
        seconds=seconds,
        notes=notes,
        min_distance_to_framework_A=closest,
    )


def _closest_approach_A(frozen: FrozenFramework, points_A: np.ndarray) -> float:
    """Smallest distance from the points to any frozen atom (periodic), A."""
    if not frozen.species:
        return float("inf")
    from pymatgen.core import Lattice

    lattice = Lattice(frozen.lattice_matrix_A)
    atoms = lattice.get_fractional_coords(frozen.cart_coords_A)
    probes = lattice.get_fractional_coords(np.asarray(points_A, float))
    return float(lattice.get_all_distances(probes, atoms).min())


# ---------------------------------------------------------------------------------------
# Transport numbers with the same formulas as the BVSE path
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniversalTransport:
    """Conductivity from the CHGNet profile (same formulas as the BVSE ``path`` estimate).

    Attributes
    ----------
    log10_sigma_S_per_cm
        Path formula, isotropic (tr/3 of a rank-1 tensor), with Kramers' factor when the
        parameters ask for it.
    log10_sigma_overdamped_S_per_cm
        The same without the inertial factor.
    drag_saddle_kg_per_s
        t . (H Lambda H) . t at the CHGNet saddle (the constant friction used), kg/s.
    drag_floor_kg_per_s
        Isotropic floor added (parameters.drag_floor_fraction of the saddle drag), kg/s.
    curvature_saddle_eV_per_A2
        t . H . t at the saddle.
    barrier_frequency_rad_per_s, reduced_friction, kramers_factor, damping_regime
        Kramers' analysis at the saddle.
    """

    log10_sigma_S_per_cm: float
    log10_sigma_overdamped_S_per_cm: float
    drag_saddle_kg_per_s: float
    drag_floor_kg_per_s: float
    curvature_saddle_eV_per_A2: float
    barrier_frequency_rad_per_s: float
    reduced_friction: float
    kramers_factor: float
    damping_regime: str


def universal_transport(
    result: UniversalPathResult,
    analysis: Analysis,
    parameters: ScreeningParameters,
) -> UniversalTransport:
    """Mobility and conductivity from the CHGNet profile and saddle Hessian.

    Same formulas as the BVSE ``path`` estimate (iondrag.screening.pipeline._transport):
    generalised Lifson-Jackson along the period (:func:`iondrag.screening.mobility.path_mobility`),
    Nernst-Einstein with the analysis's carrier density, 1/3 for the isotropic average of a
    rank-1 tensor, and Kramers' factor at the saddle. The friction along the path is the
    constant gamma_par of the CHGNet saddle, t (H Lambda H) t with the material's Lambda,
    plus the same floor as the BVSE screen: the integral int gamma e^{+U/kT} ds is dominated
    by the saddle region (Laplace), where this is exact to leading order, and CHGNet Hessians
    elsewhere along the path would cost 6 force calls per point.
    """
    from iondrag.screening.conductivity import nernst_einstein_S_per_m

    framework = analysis.crystal.framework
    lam = analysis.crystal.elastic.lambda_s3_per_kg
    hessian = result.hessian_eV_per_A2
    tangent = result.saddle_tangent
    gamma_tensor = drag_tensor(hessian, lam)
    floor = drag_floor_kg_per_s(gamma_tensor, parameters.drag_floor_fraction)
    gamma_par = float(tangent @ gamma_tensor @ tangent)
    gamma = gamma_par + floor
    if not gamma > 0:
        raise UniversalPotentialError("zero friction at the CHGNet saddle (flat Hessian)")
    curvature = result.saddle_curvature_eV_per_A2
    factor, g, omega_b = kramers_factor(gamma, curvature, framework.mobile_mass_amu)
    inertia = factor if parameters.inertia_correction else 1.0
    translation = float(np.linalg.norm(result.translation_A))
    mobility = path_mobility(
        result.segment_lengths_A,
        result.energy_eV,
        np.full(len(result.energy_eV), gamma),
        translation,
        parameters.temperature_K,
    )
    carriers = analysis.transport.carrier_density_per_m3
    unit = nernst_einstein_S_per_m(
        1.0, max(float(carriers), 1e-300), framework.mobile_charge_e, parameters.temperature_K
    )
    overdamped = (
        mobility.log10_diffusion_m2_per_s
        + float(np.log10(unit * S_PER_M_TO_S_PER_CM))
        + float(np.log10(1.0 / 3.0))
    )
    return UniversalTransport(
        log10_sigma_S_per_cm=overdamped + float(np.log10(inertia)),
        log10_sigma_overdamped_S_per_cm=overdamped,
        drag_saddle_kg_per_s=gamma_par,
        drag_floor_kg_per_s=floor,
        curvature_saddle_eV_per_A2=curvature,
        barrier_frequency_rad_per_s=omega_b,
        reduced_friction=g,
        kramers_factor=factor,
        damping_regime=damping_regime(g),
    )


def universal_fields(
    result: UniversalPathResult | None,
    transport: UniversalTransport | None,
    *,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """Return the proposed CandidateResult fields of this backend (docs/universal.md).

    With ``error`` (the backend failed for this candidate) the numbers are None and the
    error and its cause are recorded; the BVSE result of the candidate stays valid.
    """

    def finite(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    fields: dict[str, Any] = {
        "potential_backend": BACKEND_NAME,
        "barrier_universal_eV": None,
        "log10_sigma_universal_S_per_cm": None,
        "drag_saddle_universal_kg_per_s": None,
        "saddle_hessian_universal_eV_per_A2": None,
        "kramers_factor_universal": None,
        "universal_path": None,
        "universal_details": None,
        "universal_error": None,
        "universal_error_cause": None,
    }
    if error is not None:
        fields["universal_error"] = " ".join(str(error).split())[:500]
        fields["universal_error_cause"] = getattr(error, "cause", "internal_error")
        return fields
    if result is not None:
        fields["barrier_universal_eV"] = finite(result.barrier_eV)
        fields["saddle_hessian_universal_eV_per_A2"] = result.hessian_eV_per_A2.tolist()
        fields["universal_path"] = {
            "arc_length_A": [float(x) for x in result.s_A],
            "energy_eV": [float(x) for x in result.energy_eV],
        }
        fields["universal_details"] = result.summary()
    if transport is not None:
        fields["log10_sigma_universal_S_per_cm"] = finite(transport.log10_sigma_S_per_cm)
        fields["drag_saddle_universal_kg_per_s"] = finite(transport.drag_saddle_kg_per_s)
        fields["kramers_factor_universal"] = finite(transport.kramers_factor)
    return fields
