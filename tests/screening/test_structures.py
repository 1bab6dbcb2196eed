import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from iondrag.screening.errors import (
    InvalidStructureError,
    NoMobileSpeciesError,
    OverlappingAtomsError,
    OxidationStateError,
)
from iondrag.screening.structures import (
    assign_oxidation_states,
    balanced_common_states,
    choose_mobile_ion,
    prepare_framework,
)
from tests.screening.conftest import antifluorite, rocksalt


def test_bond_valence_assigns_ordered_oxide(li2o):
    assignment = assign_oxidation_states(li2o)
    assert assignment.method == "bond_valence"
    assert assignment.states == {"Li": 1.0, "O": -2.0}


def test_given_states_are_kept(li2o):
    decorated = li2o.copy()
    decorated.add_oxidation_state_by_element({"Li": 1, "O": -2})
    assert assign_oxidation_states(decorated).method == "given"


def test_fractional_composition_uses_balanced_common_states():
    # Li-stuffed and slightly off-stoichiometric: no integer guess exists
    lattice = Lattice.cubic(5.0)
    structure = Structure(
        lattice,
        [{"Li": 0.7}, {"Li": 0.7}, {"Ge": 0.5, "P": 0.5}, "S", "S"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    assignment = assign_oxidation_states(structure)
    assert assignment.method in {"common_states_balanced", "composition_guess", "bond_valence"}
    charge = sum(
        occ * assignment.states[sp.symbol] for site in structure for sp, occ in site.species.items()
    )
    total = sum(
        occ * abs(assignment.states[sp.symbol])
        for site in structure
        for sp, occ in site.species.items()
    )
    assert abs(charge) / total < 0.05


def test_balanced_common_states_tolerance():
    from pymatgen.core import Composition

    assert balanced_common_states(Composition("Li24.2Si0.2P3.8S20Br4")) == {
        "Li": 1.0,
        "Si": 4.0,
        "P": 5.0,
        "S": -2.0,
        "Br": -1.0,
    }
    # mixed-valence V (3.25+) is within the tolerance with V3+ (2 % off)
    assert balanced_common_states(Composition("Li5V4P6O24"))["V"] == 3.0
    # Bi5+ is an ICSD state but not a "common" one: found in the second tier
    assert balanced_common_states(Composition("Li40La24Bi16O96"))["Bi"] == 5.0
    # a composition that no choice of states balances within the tolerance
    assert balanced_common_states(Composition("Li5F1")) is None


def test_zintl_anions_take_their_closed_shell_state():
    from pymatgen.core import Composition, Element

    from iondrag.screening.structures import closed_shell_anion_charge

    # Bi3- is in neither pymatgen's common nor its ICSD states of Bi (only cations there)
    assert all(q > 0 for q in Element("Bi").common_oxidation_states)
    assert closed_shell_anion_charge(Element("Bi")) == -3
    assert closed_shell_anion_charge(Element("Sn")) == -4
    assert closed_shell_anion_charge(Element("Li")) is None
    assert balanced_common_states(Composition("Li3Bi")) == {"Li": 1.0, "Bi": -3.0}
    assert balanced_common_states(Composition("Na3Bi")) == {"Na": 1.0, "Bi": -3.0}
    # an element with a common anion state keeps its usual choice
    assert balanced_common_states(Composition("Li2S"))["S"] == -2.0


def test_unbalanceable_structure_names_candidate():
    structure = Structure(
        Lattice.cubic(4.0),
        ["Li", "Li", "Li", "F"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.5, 0.5, 0.5]],
    )
    with pytest.raises(OxidationStateError, match="weird-1"):
        prepare_framework(structure, candidate_id="weird-1")


def test_mobile_species_removed_and_recorded(li2o):
    framework = prepare_framework(li2o)
    assert framework.mobile_element == "Li"
    assert set(framework.elements) == {"O"}
    assert len(framework.mobile_occupancies) == 8
    assert framework.n_mobile_per_cell == pytest.approx(8.0)
    summary = framework.summary()
    assert summary["oxidation_method"] == "bond_valence"
    assert summary["n_mobile_sites_removed"] == 8
    assert summary["oxidation_states"] == {"Li": 1.0, "O": -2.0}
    # carrier density: 8 Li in a 4.61 A cube
    assert framework.carrier_density_per_m3 == pytest.approx(8 / 4.61**3 * 1e30)


def test_mixed_and_partial_sites_are_weights():
    # perovskite Li0.5La0.5TiO3 with a mixed A site
    structure = Structure(
        Lattice.cubic(3.9),
        [{"Li": 0.5, "La": 0.5}, "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    framework = prepare_framework(structure)
    # La stays with its occupancy; the Li part of the site is removed
    assert framework.elements.count("La") == 1
    assert framework.occupancies[framework.elements.index("La")] == pytest.approx(0.5)
    assert "Li" not in framework.elements
    assert list(framework.mobile_occupancies) == [0.5]
    assert framework.oxidation_states["La"] == 3.0


def test_choose_mobile_ion():
    nacl = rocksalt("Na", "Cl", 5.64)
    assert choose_mobile_ion(nacl) == "Na"
    with pytest.raises(NoMobileSpeciesError, match="no Li in NaCl"):
        choose_mobile_ion(nacl, "Li", candidate_id="nacl")


def test_no_mobile_species():
    mgo = rocksalt("Mg", "O", 4.21)
    with pytest.raises(NoMobileSpeciesError, match="mgo"):
        prepare_framework(mgo, candidate_id="mgo")


def test_overlapping_atoms_rejected():
    structure = rocksalt()
    structure.append("F", [0.52, 0.5, 0.5])  # 0.08 A from another F, both fully occupied
    with pytest.raises(OverlappingAtomsError, match="A apart"):
        prepare_framework(structure, candidate_id="clash")


def test_split_positions_with_total_occupancy_one_are_allowed():
    structure = Structure(
        Lattice.cubic(4.03),
        ["Li", {"F": 0.5}, {"F": 0.5}],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.55, 0.5, 0.5]],
    )
    framework = prepare_framework(structure)
    assert framework.occupancies.sum() == pytest.approx(1.0)


def test_non_finite_coordinates_rejected():
    structure = rocksalt()
    structure.replace(0, "Li", [np.nan, 0.0, 0.0])
    with pytest.raises(InvalidStructureError, match="non-finite"):
        prepare_framework(structure, candidate_id="nan")


def test_density_and_mass(lif):
    framework = prepare_framework(lif)
    # LiF: 4 formula units of 25.94 g/mol in (4.03 A)^3 -> 2.63 g/cm^3
    assert framework.density_kg_per_m3 == pytest.approx(2630, rel=0.01)
    assert framework.mobile_mass_amu == pytest.approx(6.94, abs=0.01)


def test_antifluorite_helper_builds_li2o():
    assert antifluorite().composition.reduced_formula == "Li2O"


def test_split_mobile_sites_are_not_overlaps():
    # two Li half-sites 0.3 A apart whose occupancies add up to 1.1 (as in refinements)
    structure = rocksalt()
    structure.make_supercell([2, 1, 1])
    structure.replace(0, {"Li": 0.55}, [0.0, 0.0, 0.0])
    structure.append({"Li": 0.55}, [0.035, 0.0, 0.0])
    framework = prepare_framework(structure)
    assert len(framework.mobile_occupancies) == 9
    with pytest.raises(OverlappingAtomsError):  # the same clash between framework ions fails
        fluoride = structure.copy()
        fluoride.replace(0, {"F": 0.55}, [0.0, 0.0, 0.0])
        fluoride.replace(len(fluoride) - 1, {"F": 0.55}, [0.035, 0.0, 0.0])
        prepare_framework(fluoride)


def test_ionic_radii_fall_back_quietly_for_states_without_a_shannon_radius():
    import warnings

    from iondrag.screening.structures import ionic_radii_A

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pymatgen's "No ionic radius for P3-!" would raise
        radii = ionic_radii_A(["P", "Sb", "O", "Li"], [-3, -3, -2, 1])
    assert np.all(radii > 0.5)
    assert radii[2] == pytest.approx(1.26, abs=0.15)  # O2-: Shannon radius
    assert radii[3] == pytest.approx(0.76, abs=0.15)  # Li+


def test_impossible_bond_lengths_are_refused_naming_the_pair():
    """A LiF squeezed into a 1 A cubic cell (Li-F 0.87 A) passed the 0.7 A global bound."""
    squeezed = Structure(Lattice.cubic(1.0), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(OverlappingAtomsError) as caught:
        prepare_framework(squeezed, candidate_id="tiny-lif")
    message = str(caught.value)
    assert message.startswith("tiny-lif:")
    assert "Li+" in message and "F-" in message and "0.87 A apart" in message
    assert "ionic radii" in message


@pytest.mark.parametrize("a_A", [4.03, 3.4])
def test_real_and_compressed_but_plausible_lif_pass_the_bond_check(a_A):
    # 3.4 A: Li-F 1.70 A, 0.81 of the radii sum (as short as a C-O bond, relatively)
    prepare_framework(rocksalt("Li", "F", a_A))


def test_partly_occupied_mobile_sites_have_a_looser_bond_bound():
    """Split Li sites of refined garnets sit at ~0.48 of the Li-O radii sum (OBELiX e6a)."""
    structure = Structure(
        Lattice.cubic(4.03),
        [{"Li": 0.5}, "F", {"Li": 0.5}],
        [[0.5, 0.5, 0.5 - 1.0 / 4.03], [0.5, 0.5, 0.5], [0, 0, 0]],
    )
    prepare_framework(structure, mobile_ion="Li")  # Li-F 1.0 A at half occupancy: kept
