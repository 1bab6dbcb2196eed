"""The crystal potential U(r) of the mobile ion, its gradient and Hessian, on a periodic grid.

U(r) = sum_j w_j phi_j(|r - R_j|) over framework scatterers j (occupancy w_j) and their
periodic images, with the BVSE pair terms of :mod:`iondrag.screening.forcefield`. Derivatives are
analytic: for a radial pair term,

    grad phi = phi'(r) r_hat,
    H_phi    = phi''(r) r_hat r_hat^T + (phi'(r)/r) (1 - r_hat r_hat^T).

Grid sums are vectorised over (grid point, scatterer) pairs: for every scatterer the grid
points within the cutoff form a fixed stencil of index offsets (the grid is affine), so the
squared distances of a batch of scatterers to all stencil points come from one matrix
product, and contributions are accumulated with ``np.bincount``. No Python loop runs over
grid points. A batch is worked through in blocks of at most :data:`PAIR_BLOCK` pairs, summed
element by element in the batch's order (``np.add.at``), so the workspace is bounded
whatever the stencil and the numbers do not depend on the block size
(:mod:`iondrag.screening.memory` budgets what stays: the stencil, the padded lookup, the outputs).

Units: positions A, U eV, gradient eV/A, Hessian eV/A^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.special import erfc

from iondrag.screening.forcefield import EXCLUSION_HALF_WIDTH_A, PairField

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

#: Below this fraction of the grid, :func:`evaluate_grid` filters pairs by target first.
SPARSE_FRACTION: float = 0.5

#: Most (stencil point, scatterer) pairs :func:`evaluate_grid` computes at once. A batch of
#: ``batch_pairs`` (which fixes the order of the sums, hence the numbers) is worked through
#: in blocks of this many pairs, summed in the same order: the workspace (~100 bytes a pair,
#: in :data:`iondrag.screening.memory.WORKSPACE_MB`) stays bounded and the result is unchanged.
PAIR_BLOCK: int = 1 << 19

#: Most points of the box of candidate stencil offsets scanned at once (:func:`_stencil`).
STENCIL_BLOCK_POINTS: int = 1 << 19


@dataclass(frozen=True)
class PeriodicGrid:
    """A periodic grid of points i/n in fractional coordinates of a cell.

    Attributes
    ----------
    lattice_matrix_A
        Lattice vectors as rows, A.
    shape
        Points along each lattice vector.
    """

    lattice_matrix_A: np.ndarray
    shape: tuple[int, int, int]

    @property
    def n_points(self) -> int:
        """Number of grid points."""
        return int(np.prod(self.shape))

    @cached_property
    def step_matrix_A(self) -> np.ndarray:
        """Grid steps as rows (a_i / n_i), A."""
        return self.lattice_matrix_A / np.array(self.shape, dtype=float)[:, None]

    def unravel(self, flat_indices: np.ndarray) -> np.ndarray:
        """Integer grid indices (P, 3) of flat indices."""
        return np.stack(np.unravel_index(flat_indices, self.shape), axis=-1)

    def frac_coords(self, flat_indices: np.ndarray | None = None) -> np.ndarray:
        """Fractional coordinates of grid points (all, or the given flat indices)."""
        if flat_indices is None:
            flat_indices = np.arange(self.n_points)
        return self.unravel(flat_indices) / np.array(self.shape, dtype=float)

    def cart_coords_A(self, flat_indices: np.ndarray | None = None) -> np.ndarray:
        """Cartesian coordinates of grid points, A."""
        return self.frac_coords(flat_indices) @ self.lattice_matrix_A


def grid_shape_for_spacing(lattice_matrix_A: np.ndarray, spacing_A: float) -> tuple[int, int, int]:
    """Points per lattice vector so that the spacing along each vector is at most ``spacing_A``."""
    lengths = np.linalg.norm(lattice_matrix_A, axis=1)
    shape = np.maximum(np.ceil(lengths / spacing_A - 1e-9), 4).astype(int)
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def make_grid(
    lattice_matrix_A: np.ndarray,
    spacing_A: float = 0.2,
    *,
    memory_budget_MB: float = 2048.0,
    on_too_large: str = "coarsen",
    candidate_id: str | None = None,
    cutoff_A: float = 6.0,
    n_sites: int = 0,
) -> tuple[PeriodicGrid, list[str]]:
    """Build the grid, checking its estimated peak memory against the budget first.

    Parameters
    ----------
    lattice_matrix_A
        Lattice vectors as rows, A.
    spacing_A
        Requested spacing between grid points, A.
    memory_budget_MB
        Largest estimated peak memory of the analysis allowed, MB
        (:func:`iondrag.screening.memory.candidate_memory`).
    on_too_large
        ``"coarsen"``: increase the spacing until the grid fits, with a warning (returned);
        ``"refuse"``: raise :class:`~iondrag.screening.errors.GridTooLargeError`.
    candidate_id
        Named in errors and warnings.
    cutoff_A, n_sites
        Pair-term cutoff (A) and sites of the cell, for the estimate.

    Returns
    -------
    grid, warnings
    """
    from iondrag.screening.memory import plan_grid

    if spacing_A <= 0:
        raise ValueError("grid spacing must be positive")
    lattice = np.asarray(lattice_matrix_A, dtype=float)
    shape, notes = plan_grid(
        lattice,
        spacing_A,
        lambda h: grid_shape_for_spacing(lattice, h),
        memory_budget_MB=memory_budget_MB,
        cutoff_A=cutoff_A,
        n_sites=n_sites,
        on_too_large=on_too_large,
        candidate_id=candidate_id,
    )
    return PeriodicGrid(lattice, shape), notes


@dataclass(frozen=True)
class PotentialValues:
    """U and (optionally) its derivatives at a set of points.

    Attributes
    ----------
    energy_eV
        U, shape (P,).
    gradient_eV_per_A
        grad U, shape (P, 3), or None.
    hessian_eV_per_A2
        Hessian, shape (P, 3, 3), or None.
    """

    energy_eV: np.ndarray
    gradient_eV_per_A: np.ndarray | None = None
    hessian_eV_per_A2: np.ndarray | None = None


def _switch(r: np.ndarray, r_on: float, r_off: float, derivatives: int) -> tuple[np.ndarray, ...]:
    """C2 switching function S(r) (1 below r_on, 0 above r_off) and dS/dr, d2S/dr2.

    Only pairs in the switching shell are computed (about 40 % of pairs at default cutoffs).
    """
    shell = np.flatnonzero(r > r_on)
    width = r_off - r_on
    x = np.minimum((r[shell] - r_on) / width, 1.0)
    x2 = x * x
    s = np.ones_like(r)
    s[shell] = 1.0 - x2 * x * (10.0 - 15.0 * x + 6.0 * x2)
    if derivatives == 0:
        return (s,)
    ds = np.zeros_like(r)
    ds[shell] = -30.0 * x2 * (1.0 - x) ** 2 / width
    d2s = np.zeros_like(r)
    d2s[shell] = -60.0 * x * (1.0 - x) * (1.0 - 2.0 * x) / width**2
    return s, ds, d2s


def radial_terms(
    r: np.ndarray,
    field: PairField,
    type_index: int,
    derivatives: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Pair energy phi(r) and its radial derivatives for one scatterer's parameters.

    Parameters
    ----------
    r
        Distances, A (positive).
    field
        Force-field parameters.
    type_index
        Index of a scatterer whose parameters are used.
    derivatives
        0: phi only; 1: phi, phi'; 2: phi, phi', phi''.

    Returns
    -------
    phi (eV), phi' (eV/A) or None, phi'' (eV/A^2) or None, with the switching function
    applied.
    """
    rms = 0.0 if field.thermal_rms_A is None else float(field.thermal_rms_A[type_index])
    if field.relaxation_stiffness_eV_per_A2 is not None:
        spline = _relaxed_spline(field, type_index)
        phi = spline(r)
        dphi = spline(r, 1) if derivatives >= 1 else None
        d2phi = spline(r, 2) if derivatives >= 2 else None
    elif rms > 0:
        spline = _smeared_spline(field, type_index)
        phi = spline(r)
        dphi = spline(r, 1) if derivatives >= 1 else None
        d2phi = spline(r, 2) if derivatives >= 2 else None
    elif field.is_morse[type_index]:
        d0 = field.morse_d0_eV[type_index]
        alpha = field.morse_alpha_per_A[type_index]
        e = np.exp(alpha * (field.morse_rmin_A[type_index] - r))
        phi = 0.5 * d0 * e * (e - 2.0)  # = (d0/2) [(e - 1)^2 - 1]
        dphi = -d0 * alpha * e * (e - 1.0) if derivatives >= 1 else None
        d2phi = d0 * alpha**2 * e * (2.0 * e - 1.0) if derivatives >= 2 else None
    else:
        prefactor = field.coulomb_prefactor_eV_A[type_index]
        rho = field.coulomb_screening_A[type_index]
        inv_r = 1.0 / r
        ec = erfc(r / rho)
        phi = prefactor * ec * inv_r
        dphi = d2phi = None
        if derivatives >= 1:
            g = _TWO_OVER_SQRT_PI / rho * np.exp(-((r / rho) ** 2))
            dphi = -prefactor * (g * inv_r + ec * inv_r**2)
            if derivatives >= 2:
                d2phi = 2.0 * prefactor * (g / rho**2 + g * inv_r**2 + ec * inv_r**3)
    phi, dphi, d2phi = _times_switch(
        phi, dphi, d2phi, _switch(r, field.switch_on_A, field.cutoff_A, derivatives), derivatives
    )
    if field.excluded is not None and field.excluded[type_index]:
        # site exclusion: 1 - S(r) with S switching from 1 inside to 0 outside the exclusion
        # radius, i.e. the term is off on and around the site, fully on beyond it
        inner = _switch(
            r,
            field.exclusion_radius_A - EXCLUSION_HALF_WIDTH_A,
            field.exclusion_radius_A + EXCLUSION_HALF_WIDTH_A,
            derivatives,
        )
        on = (1.0 - inner[0], *(-x for x in inner[1:]))
        phi = np.where(on[0] > 0, phi, 0.0)  # the bare term is infinite on the site itself
        if dphi is not None:
            dphi = np.where(on[0] > 0, dphi, 0.0)
        if d2phi is not None:
            d2phi = np.where(on[0] > 0, d2phi, 0.0)
        phi, dphi, d2phi = _times_switch(phi, dphi, d2phi, on, derivatives)
    return phi, dphi, d2phi


def _bare_pair_energy(r: np.ndarray, field: PairField, type_index: int) -> np.ndarray:
    """Return the unswitched pair energy phi(r), eV."""
    if field.is_morse[type_index]:
        d0 = field.morse_d0_eV[type_index]
        e = np.exp(field.morse_alpha_per_A[type_index] * (field.morse_rmin_A[type_index] - r))
        return 0.5 * d0 * e * (e - 2.0)
    rho = field.coulomb_screening_A[type_index]
    return field.coulomb_prefactor_eV_A[type_index] * erfc(r / rho) / r


def _term_key(field: PairField, type_index: int) -> tuple[float, ...]:
    """Return the parameters that define one bare pair term (cache key of its splines)."""
    return (
        float(field.is_morse[type_index]),
        float(np.nan_to_num(field.morse_d0_eV[type_index])),
        float(np.nan_to_num(field.morse_rmin_A[type_index])),
        float(np.nan_to_num(field.morse_alpha_per_A[type_index])),
        float(np.nan_to_num(field.coulomb_prefactor_eV_A[type_index])),
        float(np.nan_to_num(field.coulomb_screening_A[type_index])),
        field.cutoff_A,
    )


_SMEARED_SPLINES: dict[tuple[float, ...], CubicSpline] = {}


def _smeared_spline(field: PairField, type_index: int) -> CubicSpline:
    """Cubic spline of the pair energy averaged over the partner's thermal displacements.

    For an isotropic Gaussian displacement of the framework ion (rms sigma per Cartesian
    component) the average of a radial function is the 3D convolution

        phi_bar(r) = 1/(sigma sqrt(2 pi) r) int_0^inf r' phi(r')
                     [exp(-(r - r')^2 / 2 sigma^2) - exp(-(r + r')^2 / 2 sigma^2)] dr',

    evaluated by the trapezoid rule on a grid of min(0.005 A, sigma/4) (r' phi(r') is finite
    at 0 for both terms) and interpolated with a cubic spline whose derivatives give phi_bar' and
    phi_bar''. Cached per parameter set.
    """
    sigma = float(field.thermal_rms_A[type_index])  # type: ignore[index]
    # exact values: a key rounded would hand one candidate a spline built for another's
    # slightly different parameters, and its numbers would depend on what ran before
    key = (*_term_key(field, type_index), float(sigma))
    spline = _SMEARED_SPLINES.get(key)
    if spline is not None:
        return spline
    step = min(0.005, sigma / 4.0)  # resolve the Gaussian kernel
    top = field.cutoff_A + 8.0 * sigma + 0.5
    source = np.arange(step, top + 6.0 * sigma, step)
    weight = source * _bare_pair_energy(source, field, type_index)  # r' phi(r')
    targets = np.arange(0.05, top, 0.01)
    # kernel restricted to +-8 sigma around each target keeps this a banded sum
    values = np.empty_like(targets)
    norm = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
    for start in range(0, len(targets), 256):
        t = targets[start : start + 256, None]
        kernel = np.exp(-((t - source) ** 2) / (2 * sigma**2)) - np.exp(
            -((t + source) ** 2) / (2 * sigma**2)
        )
        values[start : start + 256] = norm / t[:, 0] * (kernel @ weight) * step
    spline = CubicSpline(targets, values, extrapolate=True)
    _SMEARED_SPLINES[key] = spline
    return spline


def relaxed_pair_energy(
    phi: Callable[[np.ndarray], np.ndarray],
    r_A: np.ndarray,
    stiffness_eV_per_A2: float,
    max_shift_A: float = 1.5,
    step_A: float = 0.002,
) -> np.ndarray:
    """Pair energy with the partner ion relaxed along the bond, eV.

    The framework ion is bound to its site by a spring of constant k and gives way to the
    mobile ion along the line that joins them (the only direction the radial force acts in):

        phi_R(r) = min_u [phi(r + u) + k u^2 / 2],   |u| <= max_shift_A.

    Each partner relaxes independently (no framework-framework coupling beyond k), which is
    the pair-additive limit of the harmonic framework of theory section 1. phi_R <= phi, and
    by the envelope theorem phi_R'(r) = phi'(r + u*) = -k u*: the force is unchanged, the
    steep walls (bottlenecks) soften most. Minimised on a grid of u (``step_A``), refined by
    a parabola through the best point and its neighbours.

    Parameters
    ----------
    phi
        Pair energy phi(r) (eV) of the distance (A), vectorised.
    r_A
        Distances, A, shape (N,).
    stiffness_eV_per_A2
        k, eV/A^2 (positive).
    max_shift_A, step_A
        Range and resolution of the displacement u, A.

    Returns
    -------
    numpy.ndarray
        phi_R at ``r_A``, eV.
    """
    if stiffness_eV_per_A2 <= 0:
        raise ValueError("the relaxation stiffness must be positive (eV/A^2)")
    shifts = np.arange(-max_shift_A, max_shift_A + step_A / 2, step_A)
    r = np.asarray(r_A, dtype=float)[:, None]
    moved = np.maximum(r + shifts[None, :], 1e-3)  # the partner never crosses the ion
    total = phi(moved.ravel()).reshape(moved.shape) + 0.5 * stiffness_eV_per_A2 * shifts**2
    best = np.clip(np.argmin(total, axis=1), 1, len(shifts) - 2)
    rows = np.arange(len(r))
    left, mid, right = total[rows, best - 1], total[rows, best], total[rows, best + 1]
    curvature = left - 2.0 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature > 0, 0.5 * (left - right) / curvature, 0.0)
    return mid - 0.25 * (left - right) * np.clip(offset, -1.0, 1.0)


_RELAXED_SPLINES: dict[tuple[float, ...], CubicSpline] = {}


def _relaxed_spline(field: PairField, type_index: int) -> CubicSpline:
    """Cubic spline of the relaxed pair energy (:func:`relaxed_pair_energy`), cached."""
    stiffness = float(field.relaxation_stiffness_eV_per_A2[type_index])  # type: ignore[index]
    rms = 0.0 if field.thermal_rms_A is None else float(field.thermal_rms_A[type_index])
    key = (*_term_key(field, type_index), float(rms), float(stiffness))  # exact, as above
    spline = _RELAXED_SPLINES.get(key)
    if spline is not None:
        return spline

    def base(r: np.ndarray) -> np.ndarray:
        if rms > 0:
            return np.asarray(_smeared_spline(field, type_index)(r))
        return _bare_pair_energy(r, field, type_index)

    targets = np.arange(0.05, field.cutoff_A + 0.5, 0.01)
    spline = CubicSpline(targets, relaxed_pair_energy(base, targets, stiffness))
    _RELAXED_SPLINES[key] = spline
    return spline


def _times_switch(
    phi: np.ndarray,
    dphi: np.ndarray | None,
    d2phi: np.ndarray | None,
    switch: tuple[np.ndarray, ...],
    derivatives: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Product rule for phi * S and its first two radial derivatives."""
    if derivatives == 0:
        return phi * switch[0], None, None
    s, ds, d2s = switch
    assert dphi is not None
    dphi_s = dphi * s + phi * ds
    d2phi_s = None
    if derivatives >= 2:
        assert d2phi is not None
        d2phi_s = d2phi * s + 2.0 * dphi * ds + phi * d2s
    return phi * s, dphi_s, d2phi_s


def stencil_extent(grid: PeriodicGrid, cutoff_A: float) -> np.ndarray:
    """Largest |index offset| (per lattice direction) a grid point within the cutoff can have.

    The stencil of :func:`_stencil` spans offsets ``-extent .. extent + 1`` along each axis.
    """
    reciprocal = np.linalg.inv(grid.lattice_matrix_A).T  # rows b_i with a_i . b_j = delta_ij
    shape = np.array(grid.shape)
    return np.ceil(cutoff_A * np.linalg.norm(reciprocal, axis=1) * shape).astype(int) + 1


def _stencil(grid: PeriodicGrid, cutoff_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets m of grid points that can lie within the cutoff of a scatterer.

    Returns the offsets (K, 3, int32) and their Cartesian vectors from the centre of the
    scatterer's voxel, (m - 1/2) . steps (K, 3), A. The box of candidate offsets is
    scanned in slabs of at most :data:`STENCIL_BLOCK_POINTS` points (the same offsets, in
    the same order, as in one piece), so the workspace does not grow with the box.
    """
    steps = grid.step_matrix_A
    extent = stencil_extent(grid, cutoff_A)
    axes = [np.arange(-e, e + 2) for e in extent]
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) - 0.5
    half_diagonal = float(np.max(np.linalg.norm(corners @ steps, axis=1)))
    plane = len(axes[1]) * len(axes[2])
    slab = max(1, STENCIL_BLOCK_POINTS // plane)
    radius_sq = (cutoff_A + half_diagonal) ** 2

    def slabs() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for start in range(0, len(axes[0]), slab):
            grids = np.meshgrid(axes[0][start : start + slab], axes[1], axes[2], indexing="ij")
            offsets = np.stack(grids, axis=-1).reshape(-1, 3)
            del grids
            vectors = (offsets - 0.5) @ steps
            keep = np.einsum("ij,ij->i", vectors, vectors) < radius_sq
            yield offsets, vectors, keep

    # two passes (count, then fill): the kept offsets (int32) and vectors are the only
    # arrays of the stencil's size
    n_kept = sum(int(np.count_nonzero(keep)) for _, _, keep in slabs())
    kept_offsets = np.empty((n_kept, 3), dtype=np.int32)
    kept_vectors = np.empty((n_kept, 3))
    filled = 0
    for offsets, vectors, keep in slabs():
        n = int(np.count_nonzero(keep))
        kept_offsets[filled : filled + n] = offsets[keep]
        kept_vectors[filled : filled + n] = vectors[keep]
        filled += n
    return kept_offsets, kept_vectors


def _padded_lookup(
    grid: PeriodicGrid, low: np.ndarray, high: np.ndarray, lookup: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map every point of a padded, non-periodic grid to an output slot.

    A scatterer in voxel ``base`` reaches padded points ``base + m - low`` for stencil
    offsets ``low <= m <= high``; wrapping those back onto the periodic grid once, here,
    replaces three modulo operations per pair by one gather.

    Returns the lookup over the padded grid (output slot or -1; int32 when the slots fit,
    4 bytes per padded point) and the padded strides. Built plane by plane: no other array
    of the padded grid's size is held.
    """
    shape = np.array(grid.shape)
    padded_shape = shape + (high - low)
    wrapped = [(np.arange(p) + lo) % n for p, lo, n in zip(padded_shape, low, shape, strict=True)]
    strides = np.array([padded_shape[1] * padded_shape[2], padded_shape[2], 1], dtype=np.int64)
    dtype = np.int32 if int(lookup.max(initial=-1)) < np.iinfo(np.int32).max else np.int64
    out = np.empty(int(np.prod(padded_shape)), dtype=dtype)
    plane = wrapped[1][:, None] * shape[2] + wrapped[2][None, :]
    size = int(strides[0])
    for i, row in enumerate(wrapped[0]):
        out[i * size : (i + 1) * size] = lookup[(row * (shape[1] * shape[2]) + plane).ravel()]
    return out, strides


def _pair_terms(
    field: PairField,
    representative: int,
    derivatives: int,
    hessian_only: bool,
    r: np.ndarray,
    weight: np.ndarray,
    disp: np.ndarray | None,
) -> Iterator[np.ndarray]:
    """Per-pair contributions of one block, in the order of :func:`evaluate_grid`'s outputs.

    U (unless ``hessian_only``), the three gradient components (unless ``hessian_only``),
    then the six Voigt components of the Hessian; ``disp`` is grid point minus scatterer, A.
    """
    phi, dphi, d2phi = radial_terms(r, field, representative, derivatives)
    if not hessian_only:
        yield weight * phi
    if derivatives >= 1:
        assert dphi is not None and disp is not None
        radial = weight * dphi / r
        for axis in range(3 if not hessian_only else 0):
            yield radial * disp[:, axis]
        if derivatives >= 2:
            assert d2phi is not None
            along = weight * (d2phi - dphi / r) / r**2
            for i, j in _VOIGT_PAIRS:
                w = along * disp[:, i] * disp[:, j]
                if i == j:
                    w = w + radial
                yield w


def evaluate_grid(
    field: PairField,
    grid: PeriodicGrid,
    points: np.ndarray | None = None,
    derivatives: int = 0,
    batch_pairs: int = 4_000_000,
    *,
    hessian_only: bool = False,
    pair_block: int | None = None,
) -> PotentialValues:
    """U (and derivatives) at grid points.

    Parameters
    ----------
    field
        Framework pair potentials.
    grid
        The periodic grid (its lattice must be the field's).
    points
        Flat indices of the grid points wanted (any order, unique); None for all.
    derivatives
        0: U only; 1: U and gradient; 2: U, gradient and Hessian.
    batch_pairs
        (Stencil point, scatterer) pairs summed as one batch: fixes the order of the sums.
    hessian_only
        With ``derivatives=2``, accumulate only the Hessian (U and its gradient are returned
        as zeros): the drag needs nothing else where U is already known.
    pair_block
        Most pairs held at once (default :data:`PAIR_BLOCK`); bounds the workspace, does
        not change the result.

    Returns
    -------
    PotentialValues
        Arrays in the order of ``points`` (or of the flat grid).
    """
    pair_block = PAIR_BLOCK if pair_block is None else max(1, int(pair_block))
    n_total = grid.n_points
    lookup = np.full(n_total, -1, dtype=np.int64)
    if points is None:
        lookup[:] = np.arange(n_total)
        n_out = n_total
    else:
        points = np.asarray(points, dtype=np.int64)
        lookup[points] = np.arange(len(points))
        n_out = len(points)
    energy = np.zeros(n_out)
    gradient = np.zeros((n_out, 3)) if derivatives >= 1 else None
    hessian6 = np.zeros((n_out, 6)) if derivatives >= 2 else None
    if n_out == 0:
        return PotentialValues(energy, gradient, _full_hessian(hessian6))

    offsets, vectors = _stencil(grid, field.cutoff_A)
    low, high = offsets.min(axis=0), offsets.max(axis=0)
    padded_lookup, strides = _padded_lookup(grid, low, high, lookup)
    del lookup
    stencil_flat = (offsets - low) @ strides  # int64
    del offsets
    vectors_sq = np.einsum("ij,ij->i", vectors, vectors)
    n_stencil = len(vectors)
    shape = np.array(grid.shape)
    cutoff_sq = field.cutoff_A**2
    scaled = field.frac_coords * shape
    base = np.floor(scaled).astype(np.int64) % shape
    base_flat = base @ strides
    shift = (scaled - np.floor(scaled) - 0.5) @ grid.step_matrix_A  # from voxel centre, A
    types = field.types
    batch = max(1, batch_pairs // n_stencil)
    sparse = points is not None and n_out < SPARSE_FRACTION * n_total
    # the arrays the sums go to: U, the gradient's and the Hessian's components
    outputs: list[np.ndarray] = []
    if not hessian_only:
        outputs.append(energy)
        if gradient is not None:
            outputs.extend(gradient[:, axis] for axis in range(3))
    if hessian6 is not None:
        outputs.extend(hessian6[:, c] for c in range(6))

    for type_id in np.unique(types):
        members = np.flatnonzero(types == type_id)
        representative = int(members[0])
        for start in range(0, len(members), batch):
            chunk = members[start : start + batch]
            d = shift[chunk]  # (B, 3)
            d_sq = np.einsum("ij,ij->i", d, d)
            chunk_base = base_flat[chunk]
            chunk_weight = field.weights[chunk]
            # the batch's pairs in blocks of stencil rows (same pairs, same order); a batch
            # split into blocks sums into its own arrays, element by element in that order
            # (np.add.at), which is what np.bincount does for the whole batch in one go
            rows = max(1, pair_block // len(chunk))
            sums = np.zeros((len(outputs), n_out)) if rows < n_stencil else None
            for k0 in range(0, n_stencil, rows):
                k1 = min(k0 + rows, n_stencil)
                if sparse:
                    # few wanted points: find the (stencil point, scatterer) pairs that land
                    # on one first (an integer gather), then compute distances for those only
                    hit = padded_lookup[stencil_flat[k0:k1, None] + chunk_base[None, :]]
                    k_idx, b_idx = np.nonzero(hit >= 0)
                    target = hit[k_idx, b_idx]
                    del hit
                    k_idx += k0
                    disp = vectors[k_idx] - d[b_idx]
                    r_sq_pairs = np.einsum("ij,ij->i", disp, disp)
                    near = r_sq_pairs < cutoff_sq
                    k_idx, b_idx, target = k_idx[near], b_idx[near], target[near]
                    r_sq_pairs = r_sq_pairs[near]
                else:
                    # |v - d|^2 = |v|^2 - 2 v.d + |d|^2 for all stencil points and scatterers
                    r_sq = vectors_sq[k0:k1, None] - 2.0 * (vectors[k0:k1] @ d.T) + d_sq
                    k_idx, b_idx = np.nonzero(r_sq < cutoff_sq)
                    r_sq_pairs = r_sq[k_idx, b_idx]
                    del r_sq
                    k_idx += k0
                    target = padded_lookup[stencil_flat[k_idx] + chunk_base[b_idx]]
                    if points is not None:
                        inside = target >= 0
                        k_idx, b_idx, target = k_idx[inside], b_idx[inside], target[inside]
                        r_sq_pairs = r_sq_pairs[inside]
                if len(target) == 0:
                    continue
                terms = _pair_terms(
                    field,
                    representative,
                    derivatives,
                    hessian_only,
                    np.sqrt(np.maximum(r_sq_pairs, 1e-12)),
                    chunk_weight[b_idx],
                    (vectors[k_idx] - d[b_idx]) if derivatives >= 1 else None,
                )
                for index, weights in enumerate(terms):
                    if sums is None:
                        outputs[index] += np.bincount(target, weights=weights, minlength=n_out)
                    else:
                        np.add.at(sums[index], target, weights)
            if sums is not None:
                for index, total in enumerate(sums):
                    outputs[index] += total
    return PotentialValues(energy, gradient, _full_hessian(hessian6))


_VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _full_hessian(hessian6: np.ndarray | None) -> np.ndarray | None:
    if hessian6 is None:
        return None
    full = np.empty((len(hessian6), 3, 3))
    for c, (i, j) in enumerate(_VOIGT_PAIRS):
        full[:, i, j] = hessian6[:, c]
        full[:, j, i] = hessian6[:, c]
    return full


def evaluate_points(
    field: PairField, points_cart_A: np.ndarray, derivatives: int = 0
) -> PotentialValues:
    """U (and derivatives) at arbitrary Cartesian points (any cell image).

    Neighbours come from a KD-tree of scatterer images; meant for paths, saddles and
    checks (thousands of points), not for whole grids.

    Parameters
    ----------
    field
        Framework pair potentials.
    points_cart_A
        Points, shape (P, 3), A.
    derivatives
        0, 1 or 2 as in :func:`evaluate_grid`.
    """
    points = np.atleast_2d(np.asarray(points_cart_A, dtype=float))
    lattice = field.lattice_matrix_A
    frac = points @ np.linalg.inv(lattice)
    wrapped = (frac - np.floor(frac)) @ lattice
    tree, image_cart, owner = field.image_tree
    n = len(points)
    neighbours = tree.query_ball_point(wrapped, field.cutoff_A)
    counts = np.fromiter((len(x) for x in neighbours), dtype=np.int64, count=n)
    p_idx = np.repeat(np.arange(n), counts)
    i_idx = np.fromiter(
        (j for row in neighbours for j in row), dtype=np.int64, count=int(counts.sum())
    )
    disp = wrapped[p_idx] - image_cart[i_idx]  # point minus scatterer, A
    r = np.maximum(np.linalg.norm(disp, axis=1), 1e-12)
    scatterer = owner[i_idx]
    types = field.types
    energy = np.zeros(n)
    gradient = np.zeros((n, 3)) if derivatives >= 1 else None
    hessian6 = np.zeros((n, 6)) if derivatives >= 2 else None
    for type_id in np.unique(types[scatterer]) if len(scatterer) else []:
        pick = np.flatnonzero(types[scatterer] == type_id)
        representative = int(scatterer[pick[0]])
        rr, dd, target = r[pick], disp[pick], p_idx[pick]
        weight = field.weights[scatterer[pick]]
        phi, dphi, d2phi = radial_terms(rr, field, representative, derivatives)
        energy += np.bincount(target, weights=weight * phi, minlength=n)
        if derivatives >= 1:
            assert dphi is not None and gradient is not None
            radial = weight * dphi / rr
            for axis in range(3):
                gradient[:, axis] += np.bincount(target, weights=radial * dd[:, axis], minlength=n)
            if derivatives >= 2:
                assert d2phi is not None and hessian6 is not None
                along = weight * (d2phi - dphi / rr) / rr**2
                for c, (i, j) in enumerate(_VOIGT_PAIRS):
                    w = along * dd[:, i] * dd[:, j]
                    if i == j:
                        w = w + radial
                    hessian6[:, c] += np.bincount(target, weights=w, minlength=n)
    return PotentialValues(energy, gradient, _full_hessian(hessian6))
