"""From a pymatgen Structure to the frozen framework that the mobile ion moves through.

Steps (each recorded in the returned :class:`Framework`):

1. checks: finite coordinates, a non-degenerate cell, no overlapping atoms (two sites closer
   than ``min_distance_A`` whose occupancies add up to more than one);
2. oxidation states, without manual help: the ones the structure already carries, else
   bond-valence analysis (pymatgen's BVAnalyzer), else a composition-based guess (the most
   probable ICSD oxidation states that balance the charge within a tolerance, which also
   handles the non-integer compositions of disordered structures; pymatgen's
   ``oxi_state_guesses`` needs integer amounts and takes seconds on large cells), else
   :class:`~iondrag.screening.errors.OxidationStateError` naming the structure;
3. the mobile species removed from the framework; partially occupied and mixed sites kept
   as occupancy weights (mean field).

Units: lengths in angstrom, charges in e, densities in SI (kg/m^3, m^-3).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from pymatgen.core import Composition, DummySpecies, Element, Species, Structure

from iondrag.screening.errors import (
    InvalidStructureError,
    NoMobileSpeciesError,
    OverlappingAtomsError,
    OxidationStateError,
)
from iondrag.screening.units import AMU_KG, PER_A3_TO_PER_M3

#: Mobile species tried, in this order, when a candidate does not name its own.
DEFAULT_MOBILE_PRIORITY: tuple[str, ...] = ("Li", "Na", "K", "Rb", "Cs", "Ag", "Cu")

#: Relative charge imbalance accepted for composition-based guesses of non-integer
#: (disordered) compositions: |sum q n| / sum |q| n. Refined occupancies of fast conductors
#: are often off by several per cent (Li content poorly determined); the imbalance found is
#: recorded in the framework notes.
CHARGE_BALANCE_TOLERANCE: float = 0.12

#: Relative charge imbalance that costs one unit of log prior in the composition guesses.
_IMBALANCE_NOISE: float = 0.02

#: A cation and an anion on fully occupied sites closer than this fraction of the sum of
#: their ionic radii (:func:`ionic_radii_A`) cannot both be there: LiF has Li-F at 0.96 of
#: the sum, the shortest bonds of real crystals (C-O, N-O, B-O, P-O) about 0.8, and in the
#: 254 OBELiX training CIFs (~90 % with 0.01 fractional-coordinate noise) the closest fully
#: occupied pair is P-O at 0.62. 0.5 leaves room for that noise and refuses a LiF squeezed
#: to a 1 A cell (Li-F 0.87 A, 0.42 of 0.90 + 1.19 A).
MIN_BOND_FRACTION_OF_IONIC_RADII: float = 0.5

#: The same bound when one of the two sites is partly occupied: split and partly occupied
#: mobile-ion sites of refined fast conductors sit closer to the framework (OBELiX: garnet
#: Li at 0.48 of the radii sum, e6a; Li3PS4 Li at 0.57, nhq).
MIN_BOND_FRACTION_PARTIAL_SITES: float = 0.35

#: Elements whose pairs are not checked against ionic radii: hydrogen (H+ has a negative
#: Shannon radius and X-ray refinements place it poorly).
_NO_RADIUS_CHECK: frozenset[str] = frozenset({"H", "D"})

#: BVAnalyzer's combinatorial search is capped to keep its cost bounded (seconds otherwise).
BV_MAX_PERMUTATIONS: int = 2000


@dataclass(frozen=True)
class OxidationAssignment:
    """Oxidation states of a structure and how they were obtained.

    Attributes
    ----------
    structure
        The structure decorated with :class:`pymatgen.core.Species` (disorder kept).
    method
        ``"given"``, ``"bond_valence"`` or ``"composition_guess"``.
    states
        Occupancy-weighted mean oxidation state per element (e).
    """

    structure: Structure
    method: str
    states: dict[str, float]


@dataclass(frozen=True)
class Framework:
    """The frozen framework and the mobile ion, ready for the force field.

    Attributes
    ----------
    lattice_matrix_A
        Lattice vectors as rows, A.
    frac_coords
        Fractional coordinates of framework scatterers, shape (S, 3); a mixed site gives one
        scatterer per species.
    elements, charges_e, occupancies
        Element symbol, oxidation state (e) and occupancy of each scatterer.
    site_occupancies
        Total framework occupancy of each scatterer's site (below one: the site is
        sometimes empty, e.g. shared with the removed mobile ion).
    shares_site_with_mobile
        True for scatterers on a site that the structure also gives to the mobile species
        (a mixed site such as Li/La in Li-La-Ti perovskites).
    mobile_element, mobile_charge_e
        The mobile ion.
    mobile_frac_coords, mobile_occupancies
        The mobile-ion sites removed from the framework (kept for carrier density and plots).
    mobile_site_framework_occupancies
        Framework occupancy of each mobile-ion site (0 unless the site is shared, e.g.
        Li/La in perovskites): the site is empty only when neither holds it.
    oxidation_method, oxidation_states
        How the charges were assigned and the per-element mean states.
    volume_A3, density_kg_per_m3
        Cell volume and mass density of the full crystal (mobile ions included).
    mobile_mass_amu
        Mass of the mobile ion.
    """

    lattice_matrix_A: np.ndarray
    frac_coords: np.ndarray
    elements: tuple[str, ...]
    charges_e: np.ndarray
    occupancies: np.ndarray
    site_occupancies: np.ndarray
    shares_site_with_mobile: np.ndarray
    mobile_element: str
    mobile_charge_e: float
    mobile_frac_coords: np.ndarray
    mobile_occupancies: np.ndarray
    mobile_site_framework_occupancies: np.ndarray
    oxidation_method: str
    oxidation_states: dict[str, float]
    volume_A3: float
    density_kg_per_m3: float
    mobile_mass_amu: float
    formula: str
    notes: list[str] = field(default_factory=list)

    @property
    def cart_coords_A(self) -> np.ndarray:
        """Cartesian coordinates of the framework scatterers, A, shape (S, 3)."""
        return self.frac_coords @ self.lattice_matrix_A

    @property
    def n_mobile_per_cell(self) -> float:
        """Number of mobile ions per cell (sum of occupancies of the removed sites)."""
        return float(self.mobile_occupancies.sum())

    @property
    def carrier_density_per_m3(self) -> float:
        """Mobile-ion number density, all mobile-ion sites counted (theory.md section 4), m^-3."""
        return self.n_mobile_per_cell / self.volume_A3 * PER_A3_TO_PER_M3

    def summary(self) -> dict[str, object]:
        """Return what was done, for the output documents (JSON-friendly)."""
        return {
            "mobile_ion": self.mobile_element,
            "mobile_charge_e": self.mobile_charge_e,
            "oxidation_method": self.oxidation_method,
            "oxidation_states": dict(self.oxidation_states),
            "n_framework_scatterers": len(self.elements),
            "n_mobile_sites_removed": len(self.mobile_occupancies),
            "n_mobile_per_cell": self.n_mobile_per_cell,
            "volume_A3": self.volume_A3,
            "density_kg_per_m3": self.density_kg_per_m3,
            "notes": list(self.notes),
        }


def check_structure(
    structure: Structure,
    candidate_id: str | None = None,
    min_distance_A: float = 0.7,
    mobile_ion: str | None = None,
) -> None:
    """Raise if the structure is not physical.

    Parameters
    ----------
    structure
        The crystal.
    candidate_id
        Named in the error messages.
    min_distance_A
        Two sites closer than this (A) overlap unless their occupancies add up to at most
        one (alternative positions of a disordered atom, or a mixed site).
    mobile_ion
        Pairs of two sites that hold only this species are not checked: the mobile ion is
        removed from the framework, and split positions of it (common in refinements of
        fast conductors, with occupancies that may add up to slightly more than one) do
        not enter the potential.

    Raises
    ------
    InvalidStructureError
        No sites, non-finite coordinates or lattice, or a cell of (near) zero volume.
    OverlappingAtomsError
        Two sites overlap.
    """
    if len(structure) == 0:
        raise InvalidStructureError("the structure has no sites", candidate_id)
    matrix = structure.lattice.matrix
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(structure.frac_coords)):
        raise InvalidStructureError("non-finite lattice or coordinates (NaN or inf)", candidate_id)
    volume = abs(float(np.linalg.det(matrix)))
    if volume < 1.0 or volume / len(structure) < 0.5:
        raise InvalidStructureError(
            f"degenerate cell: volume {volume:.3g} A^3 for {len(structure)} sites", candidate_id
        )
    occupancy = np.array([site.species.num_atoms for site in structure])
    if np.any(occupancy > 1.0 + 1e-3):
        worst = int(np.argmax(occupancy))
        raise OverlappingAtomsError(
            f"site {worst} ({structure[worst].species}) has total occupancy "
            f"{occupancy[worst]:.3f} > 1",
            candidate_id,
        )
    centers, neighbors, _, distances = structure.get_neighbor_list(min_distance_A)
    keep = centers < neighbors  # each pair once; self-images excluded by the neighbor list
    if mobile_ion is not None:
        only_mobile = np.array(
            [all(sp.symbol == mobile_ion for sp in site.species) for site in structure]
        )
        keep &= ~(only_mobile[centers] & only_mobile[neighbors])
    centers, neighbors, distances = centers[keep], neighbors[keep], distances[keep]
    clash = occupancy[centers] + occupancy[neighbors] > 1.0 + 1e-3
    if np.any(clash):
        i = int(np.argmax(clash))
        a, b = int(centers[i]), int(neighbors[i])
        raise OverlappingAtomsError(
            f"sites {a} ({structure[a].species.formula}) and {b} "
            f"({structure[b].species.formula}) are {distances[i]:.2f} A apart "
            f"(bound {min_distance_A} A) with total occupancy "
            f"{occupancy[a] + occupancy[b]:.2f}",
            candidate_id,
        )


def closest_pair_fraction(structure: Structure) -> tuple[float, float, str]:
    """Find the cation-anion pair closest to its bound (distance / sum of ionic radii).

    Only pairs of opposite charge that can be present together (occupancies adding up to
    more than one) are compared, against :data:`MIN_BOND_FRACTION_OF_IONIC_RADII` when both
    sites are fully occupied and :data:`MIN_BOND_FRACTION_PARTIAL_SITES` otherwise; pairs with
    hydrogen are left out (:data:`_NO_RADIUS_CHECK`).

    Parameters
    ----------
    structure
        A structure decorated with oxidation states (:class:`pymatgen.core.Species`).

    Returns
    -------
    fraction, bound, description
        The distance over the radii sum of the pair with the smallest fraction / bound (inf
        when no pair qualifies), its bound, and the pair, e.g.
        ``"Li+ (site 0) and F- (site 4) 0.87 A apart, ionic radii 0.90 + 1.19 A"``.
    """
    symbols, charges, occupancy = [], [], []
    for site in structure:
        main = max(site.species.items(), key=lambda item: item[1])[0]
        symbols.append(main.symbol)
        charges.append(float(getattr(main, "oxi_state", 0) or 0))
        occupancy.append(site.species.num_atoms)
    radii = ionic_radii_A(symbols, charges)
    charge = np.array(charges)
    occ = np.array(occupancy)
    reach = 2.0 * float(radii.max()) * MIN_BOND_FRACTION_OF_IONIC_RADII + 0.1
    centers, neighbors, _, distances = structure.get_neighbor_list(reach)
    keep = (charge[centers] * charge[neighbors] < 0) & (occ[centers] + occ[neighbors] > 1 + 1e-3)
    skip = np.array([symbol in _NO_RADIUS_CHECK for symbol in symbols], dtype=bool)
    keep &= ~skip[centers] & ~skip[neighbors]
    if not np.any(keep):
        return float("inf"), MIN_BOND_FRACTION_OF_IONIC_RADII, ""
    centers, neighbors, distances = centers[keep], neighbors[keep], distances[keep]
    ratio = distances / (radii[centers] + radii[neighbors])
    full = (occ[centers] > 1 - 1e-3) & (occ[neighbors] > 1 - 1e-3)
    bound = np.where(full, MIN_BOND_FRACTION_OF_IONIC_RADII, MIN_BOND_FRACTION_PARTIAL_SITES)
    i = int(np.argmin(ratio / bound))
    a, b = int(centers[i]), int(neighbors[i])

    def name(k: int) -> str:
        sign = "+" if charge[k] > 0 else "-"
        magnitude = abs(charge[k])
        label = "" if abs(magnitude - 1) < 1e-6 else f"{magnitude:g}"
        partial = "" if occ[k] > 1 - 1e-3 else f", occupancy {occ[k]:.2f}"
        return f"{symbols[k]}{label}{sign} (site {k}{partial})"

    return (
        float(ratio[i]),
        float(bound[i]),
        f"{name(a)} and {name(b)} {distances[i]:.2f} A apart, ionic radii "
        f"{radii[a]:.2f} + {radii[b]:.2f} A",
    )


def check_bond_lengths(structure: Structure, candidate_id: str | None = None) -> None:
    """Refuse a cation and an anion closer than their bound (:func:`closest_pair_fraction`).

    Raises
    ------
    OverlappingAtomsError
        Naming the pair, its distance, the radii and the bound.
    """
    fraction, bound, pair = closest_pair_fraction(structure)
    if fraction < bound:
        raise OverlappingAtomsError(
            f"{pair}: {fraction:.2f} of the sum of ionic radii, below {bound}; the cell or "
            "the coordinates are not physical (wrong units? cell too small?)",
            candidate_id,
        )


def choose_mobile_ion(
    structure: Structure, requested: str | None = None, candidate_id: str | None = None
) -> str:
    """Return the mobile species: ``requested``, else the first of the default priority present.

    Raises
    ------
    NoMobileSpeciesError
        The requested species (or, by default, any alkali, Ag or Cu) is absent.
    """
    present = {el.symbol for el in structure.composition.elements}
    if requested is not None:
        symbol = requested.strip().capitalize()
        if symbol not in present:
            raise NoMobileSpeciesError(
                f"no {symbol} in {structure.composition.reduced_formula}", candidate_id
            )
        return symbol
    for symbol in DEFAULT_MOBILE_PRIORITY:
        if symbol in present:
            return symbol
    raise NoMobileSpeciesError(
        f"no mobile species ({', '.join(DEFAULT_MOBILE_PRIORITY)}) in "
        f"{structure.composition.reduced_formula}",
        candidate_id,
    )


def _has_oxidation_states(structure: Structure) -> bool:
    return all(
        isinstance(sp, Species) and sp.oxi_state is not None
        for site in structure
        for sp in site.species
    )


def _mean_states(structure: Structure) -> dict[str, float]:
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for site in structure:
        for sp, occ in site.species.items():
            symbol = sp.symbol
            totals[symbol] = totals.get(symbol, 0.0) + occ * float(getattr(sp, "oxi_state", 0) or 0)
            weights[symbol] = weights.get(symbol, 0.0) + occ
    return {el: totals[el] / weights[el] for el in totals}


def _decorate_by_element(structure: Structure, states: dict[str, float]) -> Structure:
    decorated = structure.copy()
    decorated.add_oxidation_state_by_element(states)
    return decorated


def _plausible(states_by_site: Structure) -> bool:
    """Reject assignments with an anion outside its common states (e.g. O-1 from BVAnalyzer)."""
    for site in states_by_site:
        for sp in site.species:
            q = getattr(sp, "oxi_state", None)
            if q is None:
                return False
            if q < 0 and q not in sp.element.common_oxidation_states:
                return False
    return True


def _bond_valence(structure: Structure) -> Structure | None:
    """Pymatgen's BVAnalyzer; on the primitive cell when that is smaller.

    BVAnalyzer's cost grows quadratically with the number of sites (site lookups), so it
    runs on the primitive cell and the states are carried to the full cell by element when
    every element has a single state; otherwise it runs on the full cell.
    """
    from pymatgen.analysis.bond_valence import BVAnalyzer

    analyzer = BVAnalyzer(max_permutations=BV_MAX_PERMUTATIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            primitive = primitive_structure(structure, 0.1)
            if len(primitive) < len(structure):
                decorated = analyzer.get_oxi_state_decorated_structure(primitive)
                by_element: dict[str, set[float]] = {}
                for site in decorated:
                    for sp in site.species:
                        by_element.setdefault(sp.symbol, set()).add(
                            float(getattr(sp, "oxi_state", 0.0) or 0.0)
                        )
                if not _plausible(decorated):
                    return None  # the full cell would give the same implausible states
                if all(len(v) == 1 for v in by_element.values()):
                    states = {el: next(iter(v)) for el, v in by_element.items()}
                    return _decorate_by_element(structure, states)
            decorated = analyzer.get_oxi_state_decorated_structure(structure)
        except (ValueError, KeyError, IndexError, TypeError, RuntimeError):
            return None
    return decorated if _plausible(decorated) else None


@cache
def _icsd_occurrence() -> dict[str, int]:
    """ICSD occurrence counts of species (pymatgen's bond-valence statistics), e.g. 'P5+'."""
    import os

    from monty.serialization import loadfn
    from pymatgen.core import composition

    return dict(loadfn(os.path.join(composition.MODULE_DIR, "icsd_bv.yaml"))["occurrence"])


def _species_key(symbol: str, state: int) -> str:
    magnitude = "" if abs(state) == 1 else str(abs(state))
    return f"{symbol}{magnitude}{'+' if state > 0 else '-'}"


def closed_shell_anion_charge(element: Element | Species) -> int | None:
    """Return the element's lowest oxidation state (e) when negative, else None.

    The closed-shell anion (noble-gas configuration: O2-, N3-, P3-, Bi3-, Sn4-). Zintl
    anions such as Bi3- in Li3Bi are missing from pymatgen's common and ICSD states, which
    list only the element's cationic chemistry.
    """
    lowest = min(element.oxidation_states, default=0)
    return int(lowest) if lowest < 0 else None


def _element_options(
    element: Element | Species, is_most_electronegative: bool
) -> list[tuple[int, float]]:
    """(state, log prior) pairs: ICSD-observed states with their occurrence frequency.

    The most electronegative element takes only its negative states; when neither the
    common nor the ICSD states have one (Bi in Li3Bi), it takes its closed-shell anion
    state (:func:`closed_shell_anion_charge`).
    """
    occurrence = _icsd_occurrence()
    states = sorted(set(element.common_oxidation_states) | set(element.icsd_oxidation_states))
    if is_most_electronegative:
        anion_states = [q for q in states if q < 0]
        closed_shell = closed_shell_anion_charge(element)
        if not anion_states and closed_shell is not None:
            anion_states = [closed_shell]
        states = anion_states or states
    states = [q for q in states if q != 0] or [0]
    counts = np.array([occurrence.get(_species_key(element.symbol, q), 0) for q in states], float)
    common = set(element.common_oxidation_states)
    # unseen states get half a count; common states without statistics one count
    counts = np.where(counts > 0, counts, [1.0 if q in common else 0.5 for q in states])
    return list(zip(states, np.log(counts / counts.sum()), strict=True))


def balanced_common_states(
    composition: Composition, tolerance: float = CHARGE_BALANCE_TOLERANCE
) -> dict[str, float] | None:
    """Find the most probable oxidation states given the composition, balanced within a tolerance.

    Handles non-integer compositions (partial occupancies, refinement noise), where
    pymatgen's integer guesses fail. Every element tries the oxidation states observed in
    the ICSD, with the prior ln p = ln(occurrence of the species / occurrence of the
    element) from pymatgen's bond-valence statistics. A combination (one state per element)
    scores sum ln p - imbalance / NOISE, imbalance = |sum n q| / sum n |q|, NOISE = 0.02:
    a charge mismatch of 2 % costs as much as a state e times less frequent. The best score
    within ``tolerance`` wins.

    Parameters
    ----------
    composition
        Composition, amounts per cell (may be fractional).
    tolerance
        Largest accepted relative imbalance (dimensionless).

    Returns
    -------
    dict or None
        Element -> oxidation state (e), or None when nothing balances.
    """
    elements = sorted(composition.elements, key=lambda el: el.X)
    most_negative = elements[-1]
    options = [_element_options(el, el == most_negative) for el in elements]
    if np.prod([len(o) for o in options]) > 200_000:
        return None
    amounts = np.array([composition[el] for el in elements])
    best: tuple[float, tuple[int, ...]] | None = None
    for combo in itertools.product(*options):
        charges = np.array([q for q, _ in combo], dtype=float)
        total = float(np.sum(np.abs(charges) * amounts))
        if total == 0:
            continue
        imbalance = abs(float(charges @ amounts)) / total
        if imbalance > tolerance:
            continue
        score = sum(prior for _, prior in combo) - imbalance / _IMBALANCE_NOISE
        if best is None or score > best[0]:
            best = (score, tuple(int(q) for q, _ in combo))
    if best is None:
        return None
    return {el.symbol: float(q) for el, q in zip(elements, best[1], strict=True)}


def assign_oxidation_states(
    structure: Structure, candidate_id: str | None = None
) -> OxidationAssignment:
    """Assign oxidation states without manual help (see module docstring for the order).

    Raises
    ------
    OxidationStateError
        When no method gives a charge-balanced assignment.
    """
    if _has_oxidation_states(structure):
        return OxidationAssignment(structure, "given", _mean_states(structure))
    decorated = _bond_valence(structure)
    if decorated is not None:
        return OxidationAssignment(decorated, "bond_valence", _mean_states(decorated))
    composition = structure.composition
    states = balanced_common_states(composition)
    if states is not None:
        decorated = _decorate_by_element(structure, states)
        return OxidationAssignment(decorated, "composition_guess", _mean_states(decorated))
    raise OxidationStateError(
        f"no charge-balanced oxidation states for {composition.reduced_formula} "
        "(bond valence, composition guesses and common states all failed)",
        candidate_id,
    )


#: Site-matching tolerance of the primitive-cell search, A (pymatgen's default; the 0.01
#: fractional noise of OBELiX's ICSD-derived CIFs, about 0.1 A, stays within it).
PRIMITIVE_TOLERANCE_A: float = 0.25

#: Memory of pymatgen's primitive-cell search per pair of sites of one species, bytes: it
#: holds (group x group) matrices (measured ~75 bytes per pair: 1.2 GB for the 4,000 F of
#: an 8,000-site LiF supercell, ~7 GB at 20,000 sites).
PRIMITIVE_SEARCH_BYTES_PER_PAIR: float = 80.0

#: Largest species group searched with pymatgen (~115 MB by the figure above); larger cells
#: are searched with spglib, whose memory grows linearly with the sites (the same cell for
#: a supercell of a small one; its time grows quadratically, ~2 min at 20,000 sites
#: without symmetry).
PRIMITIVE_SEARCH_MAX_GROUP: int = 1200


def primitive_search_group(structure: Structure) -> int:
    """Return the sites of the largest group of equal species (what the search pairs up)."""
    counts: dict[str, int] = {}
    for site in structure:
        key = site.species_string
        counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)


def primitive_structure(structure: Structure, tolerance_A: float) -> Structure:
    """Return the primitive cell of a crystal (not yet Niggli-reduced), in bounded memory.

    pymatgen's ``get_primitive_structure`` for cells whose largest species group has at
    most :data:`PRIMITIVE_SEARCH_MAX_GROUP` sites; spglib (``standardize_cell`` to the
    primitive cell, positions not idealised) above, each distinct species string (element
    and occupancy) one atom type. Returns ``structure`` itself when no smaller cell is found.
    """
    if primitive_search_group(structure) <= PRIMITIVE_SEARCH_MAX_GROUP:
        return structure.get_primitive_structure(tolerance=tolerance_A)
    import spglib

    keys = [site.species_string for site in structure]
    kinds = {key: index for index, key in enumerate(dict.fromkeys(keys))}
    first = {key: keys.index(key) for key in kinds}
    cell = (
        structure.lattice.matrix.tolist(),
        structure.frac_coords.tolist(),
        [kinds[key] for key in keys],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's notice about its error handling
        try:
            found = spglib.standardize_cell(
                cell, to_primitive=True, no_idealize=True, symprec=tolerance_A
            )
        except Exception:  # spglib's own errors (newer versions raise): no smaller cell
            found = None
    if found is None or len(found[2]) >= len(structure):
        return structure
    lattice, positions, numbers = found
    species = {index: structure[first[key]].species for key, index in kinds.items()}
    return Structure(lattice, [species[int(n)] for n in numbers], positions)


def reduced_primitive_cell(structure: Structure) -> Structure:
    """Return the Niggli-reduced primitive cell of a crystal (pymatgen).

    A supercell, another setting or another origin of the same crystal gives the same cell
    (up to a rigid rotation and translation), so everything computed on it, the potential
    grid included, does not depend on the cell the file happened to use. Occupancies count
    as part of the species (a disordered site maps only onto an equally disordered one).
    Where no smaller cell is found the given cell is only Niggli-reduced.

    The origin is then put on an anchor site: one of the sites of the rarest species (its
    composition string; ties go to the heavier species, then to the first such site), so
    that an origin shift of the same crystal gives the same grid too (exactly when the
    anchor's sites form one orbit, as they usually do for the rarest species).
    """
    matrix = structure.lattice.matrix
    finite = np.all(np.isfinite(matrix)) and np.all(np.isfinite(structure.frac_coords))
    if len(structure) == 0 or not finite or abs(float(np.linalg.det(matrix))) < 1.0:
        return structure  # prepare_framework refuses it with the cause
    try:
        primitive = primitive_structure(structure, PRIMITIVE_TOLERANCE_A)
        reduced = primitive.get_reduced_structure()
        keys = [site.species.formula for site in reduced]
        counts = {key: keys.count(key) for key in keys}
        weight = {key: float(reduced[keys.index(key)].species.weight) for key in counts}
    except Exception:  # e.g. dummy species: prepare_framework names the cause
        return structure  # a cell pymatgen cannot reduce is analysed as given
    anchor_key = min(counts, key=lambda key: (counts[key], -weight[key], key))
    anchor = keys.index(anchor_key)
    reduced.translate_sites(
        list(range(len(reduced))), -reduced[anchor].frac_coords, frac_coords=True, to_unit_cell=True
    )
    return reduced


def prepare_framework(
    structure: Structure,
    mobile_ion: str | None = None,
    *,
    candidate_id: str | None = None,
    min_distance_A: float = 0.7,
) -> Framework:
    """Check the structure, assign charges and separate the mobile ion from the framework.

    Parameters
    ----------
    structure
        The crystal; ordered or disordered (occupancies are kept as weights).
    mobile_ion
        Element symbol of the mobile species; default: the first of
        :data:`DEFAULT_MOBILE_PRIORITY` present.
    candidate_id
        Named in error messages.
    min_distance_A
        Overlap bound for :func:`check_structure`, A.

    Returns
    -------
    Framework
    """
    if len(structure) == 0:
        raise InvalidStructureError("the structure has no sites", candidate_id)
    unknown = sorted(
        {str(sp) for site in structure for sp in site.species if isinstance(sp, DummySpecies)}
    )
    if unknown:
        raise InvalidStructureError(
            f"species that are not chemical elements: {', '.join(unknown)}", candidate_id
        )
    mobile = choose_mobile_ion(structure, mobile_ion, candidate_id)
    check_structure(structure, candidate_id, min_distance_A, mobile_ion=mobile)
    assignment = assign_oxidation_states(structure, candidate_id)
    decorated = assignment.structure
    check_bond_lengths(decorated, candidate_id)

    frac, elements, charges, occupancies, site_totals, shared = [], [], [], [], [], []
    mobile_frac, mobile_occ, mobile_charges, mobile_shared = [], [], [], []
    for site in decorated:
        framework_total = sum(occ for sp, occ in site.species.items() if sp.symbol != mobile)
        holds_mobile = any(sp.symbol == mobile for sp in site.species)
        for sp, occ in site.species.items():
            charge = float(getattr(sp, "oxi_state", 0) or 0)
            if sp.symbol == mobile:
                mobile_frac.append(site.frac_coords)
                mobile_occ.append(occ)
                mobile_charges.append(charge)
                mobile_shared.append(framework_total)
            else:
                frac.append(site.frac_coords)
                elements.append(sp.symbol)
                charges.append(charge)
                occupancies.append(occ)
                site_totals.append(framework_total)
                shared.append(holds_mobile)
    notes: list[str] = []
    total_charge = float(np.dot(charges, occupancies) + np.dot(mobile_charges, mobile_occ))
    scale = float(np.dot(np.abs(charges), occupancies) + np.dot(np.abs(mobile_charges), mobile_occ))
    if scale > 0 and abs(total_charge) / scale > 1e-3:
        notes.append(
            f"charge imbalance {total_charge:+.3f} e per cell ({abs(total_charge) / scale:.1%}) "
            f"with {assignment.method} oxidation states"
        )
    mobile_charge = float(np.average(mobile_charges, weights=mobile_occ))
    if mobile_charge <= 0:
        raise OxidationStateError(
            f"mobile {mobile} was assigned a non-positive charge {mobile_charge:+.2f}",
            candidate_id,
        )
    if not elements:
        raise NoMobileSpeciesError(f"nothing but {mobile} in the structure", candidate_id)
    volume = float(decorated.volume)
    mass_amu = float(decorated.composition.weight)
    density = mass_amu * AMU_KG / (volume * 1e-30)
    return Framework(
        lattice_matrix_A=np.array(decorated.lattice.matrix, dtype=float),
        frac_coords=np.mod(np.array(frac, dtype=float), 1.0),
        elements=tuple(elements),
        charges_e=np.array(charges, dtype=float),
        occupancies=np.array(occupancies, dtype=float),
        site_occupancies=np.array(site_totals, dtype=float),
        shares_site_with_mobile=np.array(shared, dtype=bool),
        mobile_element=mobile,
        mobile_charge_e=round(mobile_charge, 6),
        mobile_frac_coords=np.mod(np.array(mobile_frac, dtype=float), 1.0),
        mobile_occupancies=np.array(mobile_occ, dtype=float),
        mobile_site_framework_occupancies=np.array(mobile_shared, dtype=float),
        oxidation_method=assignment.method,
        oxidation_states=assignment.states,
        volume_A3=volume,
        density_kg_per_m3=density,
        mobile_mass_amu=float(Element(mobile).atomic_mass),
        formula=structure.composition.reduced_formula,
        notes=notes,
    )


def ionic_radii_A(elements: Sequence[str], charges_e: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ionic radius of each (element, charge), A.

    pymatgen's Shannon radius of the nearest integer oxidation state (its average over
    coordinations), else the element's average ionic radius, else its atomic radius.
    """
    radii = []
    for element, charge in zip(elements, charges_e, strict=True):
        radius = None
        # pymatgen warns for states without a Shannon radius (P3-, Sb3-); the fallbacks
        # below cover them, so the warning would only be noise in every screen
        with contextlib.suppress(ValueError, KeyError, TypeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            radius = Species(element, round(float(charge))).ionic_radius
        if radius is None:
            el = Element(element)
            radius = float(el.average_ionic_radius) or el.atomic_radius
        radii.append(float(radius) if radius else 1.0)
    return np.array(radii)
