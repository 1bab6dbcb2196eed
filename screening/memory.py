"""The memory one candidate's analysis takes: the cost model behind the memory budget.

The budget (``IONDRAG_MEMORY_BUDGET_MB``, ``ScreeningParameters.memory_budget_MB``) bounds
the peak resident memory of the process that scores a candidate (a worker), the process's
own at rest included. Before any grid is allocated, :func:`plan_grid` estimates that peak
for the requested grid and coarsens the grid until the estimate fits, or fails the
candidate (:class:`~iondrag.screening.errors.GridTooLargeError`, naming the budget and the
estimate) when even the coarsest allowed grid does not.

The estimate, from the stages measured one by one (``benchmarks/bench_memory.py
--stages``; peak of ``tracemalloc`` and of the resident set, numpy 2.4, Linux x86-64):

    estimate = BASE_MB
               + BYTES_PER_GRID_POINT    x fine grid points
               + BYTES_PER_STENCIL_POINT x stencil points (grid points within the cutoff
                                           of a scatterer, :func:`stencil_points`)
               + BYTES_PER_PADDED_POINT  x points of the padded lookup grid
               + BYTES_PER_SITE          x sites of the analysed cell
               + WORKSPACE_MB            (the block workspaces)

* ``BASE_MB``: a worker at rest, the science imported and one candidate scored (lazily
  imported modules, spline caches): 130 MB.
* Per grid point the transport stages dominate, and they scale with the transport region
  (the points below E_1 + window), which is not known before the grid: the estimate takes
  the region to fill the grid, its largest possible size. Measured with the region at 99 %
  of a 551,368-point grid (LiF 4x4x4 as given, 3000 K): the homogenisation (finite-volume
  matrix of ~11 edges per node, its CSR copy and the conjugate-gradient solve) peaks at
  2.1 kB per point over what the earlier stages keep (U, the region, the drag tensors:
  ~0.3 kB); the path search 1.0 kB, the Hessian on the region 0.35 kB, the potential and
  percolation 0.1-0.15 kB. Region fractions at 300 K are 0.04-0.64 (median 0.25) on the
  embedded set and 0.01-0.40 (median 0.13) on the 243 scored OBELiX structures, so typical
  peaks are 1.5-4x below the estimate: it is an upper bound, not a prediction.
* Per stencil point (what :func:`iondrag.screening.potential.evaluate_grid` keeps of the offsets
  within the cutoff: vectors, flat indices, squared lengths, 40 bytes, ~56 while they are
  built): what a fine grid costs in a small cell (LiF's 2-atom cell at 0.05 A has 195,112
  grid points and 11 million stencil points).
* The blocks of :data:`iondrag.screening.potential.PAIR_BLOCK` pairs,
  :data:`iondrag.screening.potential.STENCIL_BLOCK_POINTS` stencil candidates and
  :data:`iondrag.screening.carriers.DISTANCE_BLOCK_TRIPLES` distance triples: ~60 MB, whatever the
  cell.
* Per site of the analysed cell: the framework's arrays, the pair field's image tree and
  the pymatgen structure (~10 kB).

Not in the estimate: the structure as given, held before the estimate is made (pymatgen
sites, ~5 kB each: 110 MB for a 21,952-site supercell whose primitive cell is analysed);
and the homogenisation's sparse LU, the fallback when conjugate gradients do not converge,
which runs only within what the plan leaves of the budget (:func:`direct_solver_MB`, the
fill-in of a 3D stencil: ~1 GB at 20,000 unknowns), or fails the candidate naming both.

Every size is in bytes or MB (10^6 bytes) as its name says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iondrag.screening.errors import GridTooLargeError

#: Resident memory of a worker at rest (the science imported, one candidate scored), MB.
BASE_MB: float = 130.0

#: Peak bytes per fine grid point, the transport region filling the grid (module docstring).
BYTES_PER_GRID_POINT: float = 2450.0

#: Bytes per stencil point of the fine grid (offsets kept and their per-batch gathers).
BYTES_PER_STENCIL_POINT: float = 60.0

#: Bytes per point of the padded lookup grid (int32, built plane by plane).
BYTES_PER_PADDED_POINT: float = 4.0

#: Bytes per site of the analysed cell (framework arrays, image tree, pymatgen sites).
BYTES_PER_SITE: float = 10_000.0

#: Block workspaces of the potential, the stencil and the distance sums, MB.
WORKSPACE_MB: float = 60.0

#: Bytes per fine grid point held through the transport stages whatever the region's size
#: (U, the region's indices, its drag tensors and their regularised copy, ~0.3 kB with the
#: region filling the grid): what stays beside the homogenisation's sparse LU.
BYTES_HELD_PER_GRID_POINT: float = 350.0

#: Sparse LU of the homogenisation's cell problem (the fallback when conjugate gradients do
#: not converge; SuperLU's factors, not seen by tracemalloc): MB at 10,000 unknowns and the
#: growth exponent of the fill-in of a 3D stencil. Measured on periodic 26-neighbour grids
#: (COLAMD): 42 MB at 2,744 unknowns, 144 MB at 5,832, 383 MB at 10,648, 991 MB at 19,683.
DIRECT_SOLVER_MB_AT_10K_NODES: float = 345.0
DIRECT_SOLVER_EXPONENT: float = 1.62

#: Coarsest grid spacing a screen falls back to under its memory budget, A.
COARSEST_GRID_SPACING_A: float = 0.5

#: Relative step of the search for the finest grid that fits the budget.
_SPACING_STEP: float = 1.01


#: What the plan of the candidate being analysed in this process leaves for the sparse LU
#: fallback of the homogenisation, MB (:func:`plan_grid` sets it; None: no plan, no limit).
_direct_solver_allowance_MB: float | None = None


def direct_solver_MB(n_nodes: int) -> float:
    """Estimated memory of the sparse LU of an ``n_nodes`` cell problem, MB.

    Its factors (:data:`DIRECT_SOLVER_MB_AT_10K_NODES`, :data:`DIRECT_SOLVER_EXPONENT`)
    and the cell problem's own arrays (:data:`BYTES_PER_GRID_POINT` per node).
    """
    n = max(n_nodes, 0)
    factors = DIRECT_SOLVER_MB_AT_10K_NODES * (n / 10_000) ** DIRECT_SOLVER_EXPONENT
    return factors + n * BYTES_PER_GRID_POINT / 1e6


def direct_solver_allowance_MB() -> float | None:
    """Memory the current candidate's plan leaves for the sparse LU fallback, MB (or None)."""
    return _direct_solver_allowance_MB


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak resident memory of one candidate's analysis (module docstring).

    Attributes
    ----------
    shape
        Fine grid shape.
    n_grid_points, n_stencil_points, n_padded_points, n_sites
        The sizes the estimate scales with.
    base_MB, grid_MB, stencil_MB, sites_MB, workspace_MB
        Its terms, MB.
    """

    shape: tuple[int, int, int]
    n_grid_points: int
    n_stencil_points: int
    n_padded_points: int
    n_sites: int
    base_MB: float
    grid_MB: float
    stencil_MB: float
    sites_MB: float
    workspace_MB: float

    @property
    def total_MB(self) -> float:
        """The estimate, MB."""
        return self.base_MB + self.grid_MB + self.stencil_MB + self.sites_MB + self.workspace_MB

    @property
    def beside_direct_solver_MB(self) -> float:
        """Memory held beside the homogenisation's sparse LU, MB.

        The LU runs on the transport region (at most the grid) after the potential's
        workspaces are gone; beside it stay the process, the sites and what the transport
        stages hold per grid point (:data:`BYTES_HELD_PER_GRID_POINT`).
        """
        return self.base_MB + self.sites_MB + self.n_grid_points * BYTES_HELD_PER_GRID_POINT / 1e6

    def describe(self) -> str:
        """Return the estimate and its largest terms in a few words."""
        return (
            f"~{self.total_MB:.0f} MB (grid {self.shape}: {self.grid_MB:.0f} MB, stencil "
            f"{self.stencil_MB:.0f} MB, {self.n_sites} sites {self.sites_MB:.0f} MB, worker "
            f"{self.base_MB + self.workspace_MB:.0f} MB)"
        )


def stencil_points(
    lattice_matrix_A: np.ndarray, shape: tuple[int, int, int], cutoff_A: float
) -> int:
    """Grid points within the cutoff (plus half a voxel diagonal) of a scatterer.

    The number :func:`iondrag.screening.potential.evaluate_grid` keeps, from the volume of that
    sphere over the voxel volume (within a few per cent).
    """
    lattice = np.asarray(lattice_matrix_A, dtype=float)
    steps = lattice / np.array(shape, dtype=float)[:, None]
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) - 0.5
    half_diagonal = float(np.max(np.linalg.norm(corners @ steps, axis=1)))
    voxel_A3 = abs(float(np.linalg.det(steps)))
    return int(4.0 / 3.0 * math.pi * (cutoff_A + half_diagonal) ** 3 / voxel_A3) + 1


def padded_points(
    lattice_matrix_A: np.ndarray, shape: tuple[int, int, int], cutoff_A: float
) -> int:
    """Points of the padded lookup grid of :func:`~iondrag.screening.potential.evaluate_grid`.

    An upper bound.
    """
    reciprocal = np.linalg.inv(np.asarray(lattice_matrix_A, dtype=float)).T
    extent = np.ceil(cutoff_A * np.linalg.norm(reciprocal, axis=1) * np.array(shape)) + 1
    return int(np.prod(np.array(shape) + 2 * extent + 1))


def candidate_memory(
    lattice_matrix_A: np.ndarray,
    shape: tuple[int, int, int],
    *,
    cutoff_A: float,
    n_sites: int,
) -> MemoryEstimate:
    """Estimate the peak resident memory of one candidate's analysis on a fine grid.

    Parameters
    ----------
    lattice_matrix_A
        Lattice vectors of the analysed cell as rows, A.
    shape
        Fine grid shape.
    cutoff_A
        Pair-term cutoff, A.
    n_sites
        Sites of the analysed cell (framework and mobile ion).

    Returns
    -------
    MemoryEstimate
    """
    n_points = int(np.prod(shape))
    n_stencil = stencil_points(lattice_matrix_A, shape, cutoff_A)
    n_padded = padded_points(lattice_matrix_A, shape, cutoff_A)
    return MemoryEstimate(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        n_grid_points=n_points,
        n_stencil_points=n_stencil,
        n_padded_points=n_padded,
        n_sites=int(n_sites),
        base_MB=BASE_MB,
        grid_MB=(n_points * BYTES_PER_GRID_POINT + n_padded * BYTES_PER_PADDED_POINT) / 1e6,
        stencil_MB=n_stencil * BYTES_PER_STENCIL_POINT / 1e6,
        sites_MB=n_sites * BYTES_PER_SITE / 1e6,
        workspace_MB=WORKSPACE_MB,
    )


def plan_grid(
    lattice_matrix_A: np.ndarray,
    spacing_A: float,
    shape_for: Callable[[float], tuple[int, int, int]],
    *,
    memory_budget_MB: float,
    cutoff_A: float,
    n_sites: int,
    on_too_large: str = "coarsen",
    candidate_id: str | None = None,
) -> tuple[tuple[int, int, int], list[str]]:
    """Choose the fine grid: the requested spacing, or the finest that fits the budget.

    Parameters
    ----------
    lattice_matrix_A
        Lattice vectors of the analysed cell as rows, A.
    spacing_A
        Requested grid spacing, A.
    shape_for
        Fine grid shape of a spacing (A).
    memory_budget_MB
        Peak resident memory allowed, MB.
    cutoff_A, n_sites
        As in :func:`candidate_memory`.
    on_too_large
        ``"coarsen"``: coarsen the grid (up to :data:`COARSEST_GRID_SPACING_A`, or the
        requested spacing if coarser) until the estimate fits, with a warning;
        ``"refuse"``: raise at once.
    candidate_id
        Named in the error.

    Returns
    -------
    shape, notes
        The fine grid shape and the warnings (the coarsening, if any).

    Raises
    ------
    GridTooLargeError
        When the grid does not fit (``refuse``) or even the coarsest grid does not; the
        message names the budget, the estimate and what to do.
    """

    def estimate(h: float) -> MemoryEstimate:
        return candidate_memory(lattice_matrix_A, shape_for(h), cutoff_A=cutoff_A, n_sites=n_sites)

    global _direct_solver_allowance_MB
    _direct_solver_allowance_MB = None
    requested = estimate(spacing_A)
    if requested.total_MB <= memory_budget_MB:
        _direct_solver_allowance_MB = memory_budget_MB - requested.beside_direct_solver_MB
        return requested.shape, []
    advice = (
        "raise the budget (IONDRAG_MEMORY_BUDGET_MB or --param memory_budget_MB) "
        "if the machine has the memory"
    )
    if on_too_large == "refuse":
        raise GridTooLargeError(
            f"the {spacing_A} A grid needs {requested.describe()}, over the "
            f"{memory_budget_MB:.0f} MB memory budget; {advice} or use a coarser --grid",
            candidate_id,
        )
    coarsest = max(COARSEST_GRID_SPACING_A, spacing_A)
    at_coarsest = estimate(coarsest)
    if at_coarsest.total_MB > memory_budget_MB:
        raise GridTooLargeError(
            f"cell too large for the {memory_budget_MB:.0f} MB memory budget: even the "
            f"coarsest grid ({coarsest} A) needs {at_coarsest.describe()}; {advice}",
            candidate_id,
        )
    # the finest spacing that fits, in steps of 1 % (the estimate falls with the spacing)
    h = spacing_A
    while h < coarsest:
        h = min(h * _SPACING_STEP, coarsest)
        fits = estimate(h)
        if fits.total_MB <= memory_budget_MB:
            break
    else:
        fits = at_coarsest
    _direct_solver_allowance_MB = memory_budget_MB - fits.beside_direct_solver_MB
    return fits.shape, [
        f"grid coarsened from {spacing_A} A to {h:.3f} A to fit the {memory_budget_MB:.0f} MB "
        f"memory budget (estimated peak {fits.total_MB:.0f} MB; {requested.total_MB:.0f} MB "
        f"at {spacing_A} A)"
    ]
