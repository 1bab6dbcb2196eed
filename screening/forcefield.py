"""Bond-valence site energy (BVSE) force field for a mobile ion in a frozen framework.

The pair energy between the mobile ion A (charge q_A) and a framework ion j at distance r:

* counter-ions (sign opposite to q_A): a Morse-type bond term with the softBV parameters
  (D0, R_min, alpha) of Chen, Wong and Adams, Acta Cryst. B 75 (2019) 18-33,
  doi:10.1107/S2052520618015718, as tabulated by the MIT-licensed package ``ions``
  (data/forcefield/softbv_params.json, licence in data/forcefield/LICENSE-ions.txt)::

      phi(r) = (D0 / 2) [ (exp(alpha (R_min - r)) - 1)^2 - 1 ]

  The factor 1/2 is the convention of that table's implementations (``ions`` and ``bvlain``),
  which we follow so that our barriers are comparable with theirs;
* like-charged ions: screened Coulomb repulsion with softBV's charges q / sqrt(n)
  (n the principal quantum number, i.e. the period) and screening length
  rho = f (r_cov,A + r_cov,j), f = 0.74, covalent radii of Cordero et al. 2008::

      phi(r) = k_e q_A q_j / sqrt(n_A n_j) erfc(r / rho) / r,   k_e = 14.3996 eV A.

Each framework ion enters with its occupancy as weight (mean field). Energies in eV,
lengths in A.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
from pymatgen.core import Element
from scipy.spatial import cKDTree

from iondrag.screening.data_files import data_dir
from iondrag.screening.errors import MissingParametersError
from iondrag.screening.structures import Framework, closed_shell_anion_charge
from iondrag.screening.units import COULOMB_EV_A

#: softBV screening factor f in rho = f (r_A + r_j) (Chen et al. 2019).
SCREENING_FACTOR: float = 0.74

#: Half width of the smooth step of site exclusion around its radius, A.
EXCLUSION_HALF_WIDTH_A: float = 0.4


@cache
def softbv_table() -> dict[str, Any]:
    """Return the softBV Morse parameters: table[cation][charge][anion][charge] -> params."""
    with open(data_dir() / "forcefield" / "softbv_params.json") as handle:
        return json.load(handle)


@cache
def covalent_radii_A() -> dict[str, float]:
    """Return covalent radii (A) by element symbol (Cordero et al. 2008)."""
    with open(data_dir() / "forcefield" / "covalent_radii.json") as handle:
        return dict(json.load(handle)["radius_A"])


def morse_parameters(
    cation: str,
    cation_charge: int,
    anion: str,
    anion_charge: int,
    *,
    estimate_missing: bool = False,
) -> tuple[float, float, float]:
    """Return softBV (D0 eV, R_min A, alpha 1/A) for a cation-anion pair.

    Parameters
    ----------
    cation, cation_charge, anion, anion_charge
        Element symbols and oxidation states (e).
    estimate_missing
        When the table has no entry, return :func:`estimated_morse_parameters` instead of
        raising (only for an anion in one of its common negative oxidation states).

    Raises
    ------
    MissingParametersError
        When the table has no entry for the pair at these oxidation states (and, with
        ``estimate_missing``, no estimate can be made either).
    """
    entry = _table_entry(cation, cation_charge, anion, anion_charge)
    if entry is not None:
        return float(entry["d0"]), float(entry["r_min"]), float(entry["alpha"])
    if estimate_missing:
        return estimated_morse_parameters(cation, cation_charge, anion, anion_charge)
    raise MissingParametersError(
        f"no softBV parameters for {cation}{cation_charge:+d}-{anion}{anion_charge:+d}"
    )


def _table_entry(
    cation: str, cation_charge: int, anion: str, anion_charge: int
) -> dict[str, float] | None:
    """Return the softBV table's entry for the pair at these oxidation states, or None."""
    by_charge = softbv_table().get(cation, {}).get(str(cation_charge), {}).get(anion, {})
    return by_charge.get(str(anion_charge))


def has_table_entry(cation: str, cation_charge: int, anion: str, anion_charge: int) -> bool:
    """Return whether the softBV table itself lists the pair at these oxidation states."""
    return _table_entry(cation, cation_charge, anion, anion_charge) is not None


def _table_entries() -> Iterator[tuple[str, int, str, int, dict[str, float]]]:
    """Every table entry as (cation, cation charge, anion, anion charge, parameters)."""
    for cation, states in softbv_table().items():
        for q_c, anions in states.items():
            for anion, by_charge in anions.items():
                for q_a, entry in by_charge.items():
                    yield cation, int(q_c), anion, int(q_a), entry


@cache
def _size_softness() -> dict[str, dict[str, float]]:
    """O'Keeffe and Brese's size r (A) and softness c of each element (pymatgen's copy).

    From O'Keeffe & Brese, J. Am. Chem. Soc. 113 (1991) 3226, shipped with pymatgen as
    ``pymatgen/core/bvparam_1991.yaml``.
    """
    import os

    from monty.serialization import loadfn
    from pymatgen import core

    return dict(loadfn(os.path.join(os.path.dirname(core.__file__), "bvparam_1991.yaml")))


def okeeffe_brese_r0_A(cation: str, anion: str) -> float:
    """Bond-valence R0 (A, for b = 0.37 A) of a pair from the elements' sizes and softnesses.

    R0 = r_i + r_j - r_i r_j (sqrt(c_i) - sqrt(c_j))^2 / (c_i r_i + c_j r_j)
    (O'Keeffe & Brese 1991). Raises KeyError for an element outside their table.
    """
    table = _size_softness()
    r_i, c_i = table[cation]["r"], table[cation]["c"]
    r_j, c_j = table[anion]["r"], table[anion]["c"]
    return r_i + r_j - r_i * r_j * (np.sqrt(c_i) - np.sqrt(c_j)) ** 2 / (c_i * r_i + c_j * r_j)


@dataclass(frozen=True)
class SoftBVExtension:
    """Regression of the softBV table on the anions' O'Keeffe-Brese size and softness.

    For a cation state C and an anion X (charge q_X):

        ln b          = a_C + u . f_X,          b = 1 / alpha (A)
        R_min - R0_OB = c_C + v . f_X           (A; R0_OB from :func:`okeeffe_brese_r0_A`)
        ln D0         = d_C + w . (ln|q_X|, f_X)

    with f_X = (r_X, c_X) and one offset per cation state (a_C, c_C, d_C). Least squares
    over every table entry whose elements have O'Keeffe-Brese parameters. The offsets
    carry what is specific to the cation (its bonding softness, characteristic
    coordination and well depth); the anion terms carry how these change across anions,
    which is what an anion missing from the table (P3-, H-, C4-, ...) needs.

    Attributes
    ----------
    cation_states
        Cation keys, e.g. ``"Li+1"``, in the order of the offsets.
    offsets
        Array (n_cations, 3): a_C, c_C, d_C.
    anion_coefficients
        (u, v, w) as arrays of length 2, 2 and 3.
    """

    cation_states: tuple[str, ...]
    offsets: np.ndarray
    anion_coefficients: tuple[np.ndarray, np.ndarray, np.ndarray]

    def predict(
        self, cation: str, cation_charge: int, anion: str, anion_charge: int
    ) -> tuple[float, float, float]:
        """(D0 eV, R_min A, alpha 1/A) of the pair; KeyError when it cannot be estimated."""
        key = f"{cation}{cation_charge:+d}"
        if key not in self.cation_states:
            raise KeyError(key)
        row = self.cation_states.index(key)
        table = _size_softness()
        features = np.array([table[anion]["r"], table[anion]["c"]], dtype=float)
        u, v, w = self.anion_coefficients
        a_c, c_c, d_c = self.offsets[row]
        b_A = float(np.exp(a_c + u @ features))
        r_min_A = okeeffe_brese_r0_A(cation, anion) + float(c_c + v @ features)
        d0_eV = float(np.exp(d_c + w @ np.concatenate([[np.log(abs(anion_charge))], features])))
        return d0_eV, r_min_A, 1.0 / b_A


def fit_softbv_extension(exclude_anion: str | None = None) -> SoftBVExtension:
    """Fit :class:`SoftBVExtension` to the softBV table (optionally without one anion).

    ``exclude_anion`` leaves every entry of that anion out of the fit, to measure how
    well the regression predicts an anion it has not seen (the situation of P3- or H-).
    """
    table = _size_softness()
    rows = [
        row
        for row in _table_entries()
        if row[2] != exclude_anion and row[0] in table and row[2] in table
    ]
    cations = tuple(sorted({f"{cation}{q_c:+d}" for cation, q_c, *_ in rows}))
    index = {key: i for i, key in enumerate(cations)}
    n = len(rows)
    indicator = np.zeros((n, len(cations)))
    features = np.zeros((n, 2))
    log_q = np.zeros(n)
    targets = np.zeros((n, 3))
    for k, (cation, q_c, anion, q_a, entry) in enumerate(rows):
        indicator[k, index[f"{cation}{q_c:+d}"]] = 1.0
        features[k] = table[anion]["r"], table[anion]["c"]
        log_q[k] = np.log(abs(q_a))
        targets[k] = (
            -np.log(entry["alpha"]),
            entry["r_min"] - okeeffe_brese_r0_A(cation, anion),
            np.log(entry["d0"]),
        )
    offsets = np.zeros((len(cations), 3))
    coefficients = []
    for t, extra in enumerate((features, features, np.column_stack([log_q, features]))):
        design = np.hstack([indicator, extra])
        solution, *_ = np.linalg.lstsq(design, targets[:, t], rcond=None)
        offsets[:, t] = solution[: len(cations)]
        coefficients.append(solution[len(cations) :])
    u, v, w = coefficients
    return SoftBVExtension(cations, offsets, (u, v, w))


def held_out_anion_errors(anion: str) -> dict[str, np.ndarray]:
    """Errors of the regression on an anion it was not fitted to (leave-one-anion-out).

    Fits :class:`SoftBVExtension` without ``anion`` and predicts every table entry of it.

    Returns
    -------
    dict
        ``"b"`` and ``"d0"``: relative errors (predicted / table - 1); ``"r_min_A"``: the
        error of R_min in A. One entry per predicted pair.
    """
    model = fit_softbv_extension(exclude_anion=anion)
    errors: dict[str, list[float]] = {"b": [], "d0": [], "r_min_A": []}
    for cation, q_c, other, q_a, entry in _table_entries():
        if other != anion:
            continue
        try:
            d0, r_min, alpha = model.predict(cation, q_c, anion, q_a)
        except KeyError:
            continue
        errors["b"].append(entry["alpha"] / alpha - 1.0)
        errors["d0"].append(d0 / entry["d0"] - 1.0)
        errors["r_min_A"].append(r_min - entry["r_min"])
    return {key: np.array(values) for key, values in errors.items()}


@cache
def softbv_extension() -> SoftBVExtension:
    """Return the regression fitted on the whole table (cached)."""
    return fit_softbv_extension()


def estimated_morse_parameters(
    cation: str, cation_charge: int, anion: str, anion_charge: int
) -> tuple[float, float, float]:
    """softBV-like (D0 eV, R_min A, alpha 1/A) for a pair the table lacks.

    From :class:`SoftBVExtension`. Leaving each of the table's nine anions out in turn
    and predicting it from the other eight (``benchmarks/estimated_parameters.py``) gives
    rms errors of about 11 % in b, 22 % in D0 and 0.06 A in R_min; estimated pairs are
    named in each candidate's warnings.

    Raises
    ------
    MissingParametersError
        The anion is in neither a common negative oxidation state of its element nor its
        closed-shell state (Bi3- of Li3Bi is estimated, P-1 is not), or an element is
        outside O'Keeffe and Brese's table, or the cation state has no table entry at all.
    """
    label = f"{cation}{cation_charge:+d}-{anion}{anion_charge:+d}"
    element = Element(anion)
    if anion_charge >= 0 or (
        anion_charge not in element.common_oxidation_states
        and anion_charge != closed_shell_anion_charge(element)
    ):
        raise MissingParametersError(
            f"no softBV parameters for {label} ({anion}{anion_charge:+d} is neither a common "
            "anion state nor the closed-shell anion, so none are estimated)"
        )
    try:
        return softbv_extension().predict(cation, cation_charge, anion, anion_charge)
    except KeyError:
        raise MissingParametersError(
            f"no softBV parameters for {label}, and none can be estimated "
            "(the cation state has no table entry or an element lacks O'Keeffe-Brese data)"
        ) from None


@dataclass(frozen=True)
class PairField:
    """Per-scatterer pair-potential parameters of the framework seen by one mobile ion.

    Every array has one entry per framework scatterer (mixed sites: one per species).

    Attributes
    ----------
    lattice_matrix_A
        Lattice vectors as rows, A.
    frac_coords
        Scatterer fractional coordinates, shape (S, 3).
    weights
        Occupancies (mean-field weights).
    is_morse
        True for Morse (counter-ion) terms, False for screened Coulomb terms.
    morse_d0_eV, morse_rmin_A, morse_alpha_per_A
        Morse parameters (NaN for Coulomb scatterers).
    coulomb_prefactor_eV_A, coulomb_screening_A
        k_e q_A q_j / sqrt(n_A n_j) and rho (NaN for Morse scatterers).
    cutoff_A, switch_on_A
        Pair terms are multiplied by a C2 switching function from 1 at ``switch_on_A`` to 0
        at ``cutoff_A`` so that U and its derivatives stay smooth.
    thermal_rms_A
        Root-mean-square thermal displacement of each framework ion per Cartesian component,
        A (None: a static framework); pair terms are averaged over it (Debye-Waller).
    relaxation_stiffness_eV_per_A2
        Einstein spring constant k binding each framework ion to its site, eV/A^2 (None: a
        frozen framework). Each pair term is then the relaxed pair energy
        min_u [phi(r + u) + k u^2 / 2]: the partner ion gives way along the bond (see
        :func:`iondrag.screening.potential.relaxed_pair_energy`).
    excluded, exclusion_radius_A
        True for like-charged scatterers on sites shared with the mobile ion: site exclusion
        (see :func:`build_pair_field`) switches their term off within
        ``exclusion_radius_A`` (+- :data:`EXCLUSION_HALF_WIDTH_A`) of the site.
    labels
        Species label of each scatterer, e.g. ``"O2-"``.
    estimated_pairs
        Pairs, e.g. ``"Li+1-P-3"``, whose Morse terms come from
        :func:`estimated_morse_parameters` because the softBV table lacks them.
    """

    lattice_matrix_A: np.ndarray
    frac_coords: np.ndarray
    weights: np.ndarray
    is_morse: np.ndarray
    morse_d0_eV: np.ndarray
    morse_rmin_A: np.ndarray
    morse_alpha_per_A: np.ndarray
    coulomb_prefactor_eV_A: np.ndarray
    coulomb_screening_A: np.ndarray
    cutoff_A: float
    switch_on_A: float
    labels: tuple[str, ...]
    excluded: np.ndarray | None = None
    exclusion_radius_A: float = 0.0
    thermal_rms_A: np.ndarray | None = None
    relaxation_stiffness_eV_per_A2: np.ndarray | None = None
    estimated_pairs: tuple[str, ...] = ()

    @property
    def n_scatterers(self) -> int:
        """Number of framework scatterers."""
        return len(self.weights)

    @cached_property
    def image_tree(self) -> tuple[cKDTree, np.ndarray, np.ndarray]:
        """KD-tree of the scatterer images within the cutoff of the cell.

        Returns the tree, the images' Cartesian positions (A) and the scatterer index of
        each image. Built once per field.
        """
        lattice = self.lattice_matrix_A
        reach = self.cutoff_A * np.linalg.norm(np.linalg.inv(lattice).T, axis=1)
        extent = np.ceil(reach).astype(int) + 1
        images = np.stack(
            np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        frac = self.frac_coords[None, :, :] + images[:, None, :]  # (images, scatterers, 3)
        near = np.all((frac > -reach) & (frac < 1.0 + reach), axis=-1)
        owner = np.broadcast_to(np.arange(self.n_scatterers), near.shape)[near]
        cart = frac[near] @ lattice
        return cKDTree(cart), cart, owner

    @cached_property
    def types(self) -> np.ndarray:
        """Cached :meth:`type_keys`."""
        return self.type_keys()

    def type_keys(self) -> np.ndarray:
        """Integer id per scatterer of its parameter set (scatterers of a type share params)."""
        params = np.stack(
            [
                self.is_morse.astype(float),
                np.nan_to_num(self.morse_d0_eV),
                np.nan_to_num(self.morse_rmin_A),
                np.nan_to_num(self.morse_alpha_per_A),
                np.nan_to_num(self.coulomb_prefactor_eV_A),
                np.nan_to_num(self.coulomb_screening_A),
                np.zeros(self.n_scatterers) if self.excluded is None else self.excluded,
                np.zeros(self.n_scatterers)
                if self.thermal_rms_A is None
                else np.round(self.thermal_rms_A, 5),
                np.zeros(self.n_scatterers)
                if self.relaxation_stiffness_eV_per_A2 is None
                else np.round(self.relaxation_stiffness_eV_per_A2, 6),
            ],
            axis=1,
        )
        _, inverse = np.unique(np.round(params, 10), axis=0, return_inverse=True)
        return inverse.ravel()


def coulomb_pair_parameters(
    element_a: str,
    charge_a: float,
    element_b: str,
    charge_b: float,
    screening_factor: float = SCREENING_FACTOR,
) -> tuple[float, float]:
    """SoftBV screened Coulomb parameters of a like-charged pair.

    Returns
    -------
    (prefactor_eV_A, screening_A)
        k_e q_a q_b / sqrt(n_a n_b) in eV A (n the period) and
        rho = f (r_cov,a + r_cov,b) in A.
    """
    radii = covalent_radii_A()
    rows = Element(element_a).row * Element(element_b).row
    prefactor = COULOMB_EV_A * float(charge_a) * float(charge_b) / float(np.sqrt(rows))
    return prefactor, screening_factor * (radii[element_a] + radii[element_b])


def build_pair_field(
    framework: Framework,
    *,
    cutoff_A: float = 6.0,
    switch_width_A: float = 1.0,
    screening_factor: float = SCREENING_FACTOR,
    site_exclusion_radius_A: float = 0.0,
    thermal_rms_A: np.ndarray | None = None,
    relaxation_stiffness_eV_per_A2: np.ndarray | None = None,
    estimate_missing_parameters: bool = False,
    candidate_id: str | None = None,
) -> PairField:
    """Resolve the BVSE parameters of every framework scatterer for the mobile ion.

    Parameters
    ----------
    framework
        From :func:`iondrag.screening.structures.prepare_framework`.
    cutoff_A
        Pair cutoff radius, A. The softBV terms decay to below 1e-3 eV per pair within 6 A.
    switch_width_A
        Width of the smooth switching region that ends at ``cutoff_A``, A.
    screening_factor
        f in rho = f (r_cov,A + r_cov,j).
    site_exclusion_radius_A
        Disorder beyond the plain mean field (0 turns it off). A like-charged framework ion
        on a site that the structure shares with the mobile species (a mixed site) is
        absent whenever the mobile ion is on that site or hopping through it (conditional
        occupancy): its repulsion is switched off within this radius of the site (a C2 step
        of +-0.4 A). Framework sites that are merely partly occupied (dopants, refinement
        noise) stay mean field. The default reaches past the
        midpoint between neighbouring shared sites (~2 A in perovskites and spinels), so a
        hop between two vacant shared sites sees neither. Plain mean field puts a fraction
        of the ion on every such site and makes shared sites unreachable (e.g. the A sites
        of Li-La-Ti perovskites).
    thermal_rms_A
        Thermal rms displacement of each framework scatterer (A, one per entry of
        ``framework.elements``), or None for a static framework.
    relaxation_stiffness_eV_per_A2
        Static stiffness of each framework scatterer in its site (eV/A^2, one per entry of
        ``framework.elements``), or None for a frozen framework.
    estimate_missing_parameters
        Estimate the Morse terms of pairs the softBV table lacks
        (:func:`estimated_morse_parameters`) instead of failing; they are listed in
        ``PairField.estimated_pairs``.
    candidate_id
        Named in errors.

    Raises
    ------
    MissingParametersError
        An element pair or oxidation state has no softBV parameters, or an element has no
        covalent radius.
    """
    if not 0 < switch_width_A < cutoff_A:
        raise ValueError("need 0 < switch_width_A < cutoff_A")
    mobile = framework.mobile_element
    q_mobile = round(framework.mobile_charge_e)
    radii = covalent_radii_A()
    count = len(framework.elements)
    is_morse = np.zeros(count, dtype=bool)
    d0, rmin, alpha = (np.full(count, np.nan) for _ in range(3))
    prefactor, screening = np.full(count, np.nan), np.full(count, np.nan)
    labels = []
    estimated: set[str] = set()
    keep = np.ones(count, dtype=bool)
    for i, (element, charge) in enumerate(
        zip(framework.elements, framework.charges_e, strict=True)
    ):
        q = round(float(charge))
        labels.append(f"{element}{abs(q) if abs(q) != 1 else ''}{'+' if q > 0 else '-'}")
        if q == 0:
            keep[i] = False  # a neutral species takes part in neither term
            continue
        if q * q_mobile < 0:
            try:
                if estimate_missing_parameters and not has_table_entry(
                    mobile, q_mobile, element, q
                ):
                    d0[i], rmin[i], alpha[i] = estimated_morse_parameters(
                        mobile, q_mobile, element, q
                    )
                    estimated.add(f"{mobile}{q_mobile:+d}-{element}{q:+d}")
                else:
                    d0[i], rmin[i], alpha[i] = morse_parameters(mobile, q_mobile, element, q)
            except MissingParametersError as error:
                raise (error.with_candidate(candidate_id) if candidate_id else error) from None
            is_morse[i] = True
        else:
            if element not in radii:
                raise MissingParametersError(f"no covalent radius for {element}", candidate_id)
            prefactor[i], screening[i] = coulomb_pair_parameters(
                mobile, q_mobile, element, float(charge), screening_factor
            )
    if not np.any(is_morse & keep):
        raise MissingParametersError(
            f"no counter-ions for {mobile}{q_mobile:+d} in the framework", candidate_id
        )
    return PairField(
        lattice_matrix_A=framework.lattice_matrix_A,
        frac_coords=framework.frac_coords[keep],
        weights=framework.occupancies[keep],
        is_morse=is_morse[keep],
        morse_d0_eV=d0[keep],
        morse_rmin_A=rmin[keep],
        morse_alpha_per_A=alpha[keep],
        coulomb_prefactor_eV_A=prefactor[keep],
        coulomb_screening_A=screening[keep],
        cutoff_A=float(cutoff_A),
        switch_on_A=float(cutoff_A - switch_width_A),
        labels=tuple(label for label, k in zip(labels, keep, strict=True) if k),
        excluded=(
            (~is_morse & framework.shares_site_with_mobile)[keep]
            if site_exclusion_radius_A > 0
            else None
        ),
        exclusion_radius_A=float(site_exclusion_radius_A),
        thermal_rms_A=None if thermal_rms_A is None else np.asarray(thermal_rms_A, float)[keep],
        relaxation_stiffness_eV_per_A2=None
        if relaxation_stiffness_eV_per_A2 is None
        else np.asarray(relaxation_stiffness_eV_per_A2, float)[keep],
        estimated_pairs=tuple(sorted(estimated)),
    )
