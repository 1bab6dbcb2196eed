"""The likely-electronic-conductor flag: mixed valence, open d shells, small band gaps."""

from __future__ import annotations

from iondrag.screening.electronic import d_electron_count, electronic_conductor_flag


def test_d_electron_counts() -> None:
    assert d_electron_count("Ti", 4) == 0
    assert d_electron_count("Zn", 2) == 10
    assert d_electron_count("Co", 3) == 6
    assert d_electron_count("Li", 1) is None
    assert d_electron_count("O", -2) is None


def test_closed_shells_and_main_group_are_not_flagged() -> None:
    assert electronic_conductor_flag(["Ti", "O", "O"], [4, -2, -2]) == (False, None)
    assert electronic_conductor_flag(["Zn", "S"], [2, -2]) == (False, None)
    assert electronic_conductor_flag(["P", "S"], [5, -2]) == (False, None)


def test_open_d_shell_and_mixed_valence_are_flagged() -> None:
    flag, reason = electronic_conductor_flag(["Co", "O", "O"], [3, -2, -2])
    assert flag and reason == "open d shell Co+3 (d6)"
    flag, reason = electronic_conductor_flag(["Mn", "Mn", "O"], [3, 4, -2])
    assert flag and reason is not None and reason.startswith("mixed valence Mn (+3/+4)")


def test_mixed_valence_hidden_by_unbalanced_integer_states() -> None:
    # LiTi2O4 assigned Ti4+ everywhere: the cell is +1 per formula unit, so Ti is +3.5
    elements = ["Ti", "Ti", "O", "O", "O", "O"]
    charges = [4, 4, -2, -2, -2, -2]
    flag, reason = electronic_conductor_flag(
        elements, charges, occupancies=[1] * 6, other_charge_e=1.0
    )
    assert flag and reason == "mixed valence Ti (mean +3.5 for a neutral cell)"
    # a neutral cell with the same assigned states is not flagged
    assert not electronic_conductor_flag(elements, charges, occupancies=[1] * 6)[0]


def test_small_band_gap_is_flagged() -> None:
    flag, reason = electronic_conductor_flag(["P", "S"], [5, -2], band_gap_eV=0.1)
    assert flag and reason == "band gap 0.1 eV < 0.5 eV"
    assert not electronic_conductor_flag(["P", "S"], [5, -2], band_gap_eV=3.0)[0]
