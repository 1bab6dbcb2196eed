"""Flag candidates that are likely electronic (or mixed) conductors, not electrolytes.

A solid electrolyte must not conduct electrons. The screen computes ionic transport only, so
metallic and mixed conductors (LiMn2O4, LiV2O4, LiTi2O4, LiCoO2, ...) would be ranked as if
they were electrolytes. :func:`electronic_conductor_flag` marks them by a simple, stated rule
on the framework's transition metals, and by the band gap where the source has one:

1. **mixed valence**: a transition metal (``Element.is_transition_metal``) present in more
   than one oxidation state, or with a non-integer (averaged) state, or whose mean state
   must be non-integer for the cell to be neutral given the other ions' states, e.g.
   Mn3+/Mn4+ in LiMn2O4 (mean Mn3.5+), Ti3+/Ti4+ in LiTi2O4;
2. **open d shell**: a transition metal whose d-electron count, group - oxidation state, is
   neither 0 nor 10 (Ti4+ d0, Zn2+ d10, Cu+ d10 pass; Ti3+ d1, V4+ d1, Mn4+ d3, Fe3+ d5,
   Co3+ d6 are flagged). Low-spin d6 (Co3+ in LiCoO2) is a closed t2g shell and may be an
   insulator; the rule flags it anyway (LiCoO2 is a mixed conductor when delithiated);
3. **small band gap**: a band gap known from the source (the Materials Project's PBE gap,
   which underestimates real gaps) below :data:`BAND_GAP_THRESHOLD_EV`.

The flag is a warning for the user, not a filter and not part of the ranking: it never
changes a predicted conductivity. Oxidation states are those the screen assigned to the
framework (given, bond valence or the composition guess).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymatgen.core import Element

__all__ = ["BAND_GAP_THRESHOLD_EV", "d_electron_count", "electronic_conductor_flag"]

#: A known band gap below this (eV) flags the candidate.
BAND_GAP_THRESHOLD_EV = 0.5

_STATE_TOLERANCE = 0.05


def d_electron_count(symbol: str, oxidation_state: float) -> float | None:
    """Return the d-electron count ``group - oxidation state`` of a transition metal, else None."""
    element = Element(symbol)
    if not element.is_transition_metal or element.group is None or not 3 <= element.group <= 12:
        return None
    return element.group - oxidation_state


def electronic_conductor_flag(
    elements: Iterable[str],
    charges_e: Iterable[float],
    band_gap_eV: float | None = None,
    *,
    occupancies: Iterable[float] | None = None,
    other_charge_e: float = 0.0,
) -> tuple[bool, str | None]:
    """Apply the module's rule to a framework's scatterers.

    Parameters
    ----------
    elements, charges_e
        Element symbol and oxidation state (e) of each framework scatterer.
    band_gap_eV
        The source's band gap, when it has one.
    occupancies, other_charge_e
        Occupancy of each scatterer and the charge per cell of the ions not listed (the
        mobile ions): with them, the mean state the transition metals need for a neutral
        cell is checked too (assigned states that leave the cell charged hide mixed valence).

    Returns
    -------
    (flag, reason)
        ``reason`` names every rule that fired, e.g. ``"mixed valence Mn (+3.5)"``; None when
        the flag is False.
    """
    elements, charges = list(elements), [float(q) for q in charges_e]
    weights = [1.0] * len(elements) if occupancies is None else [float(w) for w in occupancies]
    states: dict[str, set[float]] = {}
    for symbol, charge in zip(elements, charges, strict=True):
        if d_electron_count(symbol, charge) is not None:
            states.setdefault(symbol, set()).add(round(charge, 2))
    balanced: dict[str, float] = {}
    if occupancies is not None and len(states) == 1:
        # one transition metal: the mean state that makes the cell neutral
        (metal,) = states
        net = other_charge_e + sum(q * w for q, w in zip(charges, weights, strict=True))
        amount = sum(w for e, w in zip(elements, weights, strict=True) if e == metal)
        if amount > 0 and abs(net) > _STATE_TOLERANCE:
            assigned = sum(
                q * w for e, q, w in zip(elements, charges, weights, strict=True) if e == metal
            )
            balanced[metal] = round((assigned - net) / amount, 2)
    reasons = []
    for symbol in sorted(states):
        values = sorted(states[symbol])
        shown = "/".join(f"{v:+g}" for v in values)
        if len(values) > 1 or any(abs(v - round(v)) > _STATE_TOLERANCE for v in values):
            reasons.append(f"mixed valence {symbol} ({shown})")
            continue
        mean = balanced.get(symbol)
        if mean is not None and abs(mean - round(mean)) > _STATE_TOLERANCE:
            reasons.append(f"mixed valence {symbol} (mean {mean:+g} for a neutral cell)")
            continue
        d = d_electron_count(symbol, values[0])
        if d is not None and round(d) not in (0, 10):
            reasons.append(f"open d shell {symbol}{shown} (d{round(d)})")
    if band_gap_eV is not None and band_gap_eV < BAND_GAP_THRESHOLD_EV:
        reasons.append(f"band gap {band_gap_eV:g} eV < {BAND_GAP_THRESHOLD_EV:g} eV")
    return (True, "; ".join(reasons)) if reasons else (False, None)
