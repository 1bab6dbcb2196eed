"""Percolation analysis of the crystal potential on its periodic grid.

The accessible region at energy E is {r : U(r) < E}. It percolates in d dimensions when one
of its connected components, followed through the periodic boundaries, winds around the
cell along d independent lattice translations. The d-dimensional percolation energy E_d is
the lowest E at which that happens; the barrier is E_d - min U.

Components are labelled inside the cell (26-neighbour connectivity, scipy.ndimage), then
joined across the periodic boundaries with a union-find that keeps the lattice offset
between each label and its root: an edge that closes a loop with a non-zero offset is a
winding vector, and the rank of a component's winding vectors is its dimensionality.

Units: energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from itertools import product

import numpy as np
from scipy import ndimage

#: Most bisection steps of one search: an interval of 50 eV halves to 1e-15 eV in 56 steps,
#: so a loop that runs longer is stuck at the float spacing of its bounds.
MAX_BISECTION_STEPS: int = 64

#: The 13 "forward" neighbour steps of 26-connectivity (the other 13 are their negatives).
FORWARD_STEPS: np.ndarray = np.array(
    [s for s in product((-1, 0, 1), repeat=3) if s > (0, 0, 0)], dtype=np.int64
)
_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


class _OffsetUnionFind:
    """Union-find over component labels that tracks the lattice offset to the root."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.offset = np.zeros((n, 3), dtype=np.int64)  # position of node relative to parent
        self.windings: dict[int, list[np.ndarray]] = {}

    def find(self, x: int) -> tuple[int, np.ndarray]:
        path = []
        while self.parent[x] != x:
            path.append(x)
            x = int(self.parent[x])
        root = x
        # path compression, accumulating offsets from the top of the path down
        total = np.zeros(3, dtype=np.int64)
        for node in reversed(path):
            total = total + self.offset[node]
            self.offset[node] = total
            self.parent[node] = root
        return root, (self.offset[path[0]].copy() if path else np.zeros(3, dtype=np.int64))

    def union(self, a: int, b: int, shift: np.ndarray) -> None:
        """Join a and b, where b's copy sits at a's position + ``shift`` cells."""
        root_a, off_a = self.find(a)
        root_b, off_b = self.find(b)
        if root_a == root_b:
            winding = off_a + shift - off_b
            if np.any(winding):
                self.windings.setdefault(root_a, []).append(winding)
            return
        # place root_b under root_a: pos(root_b) = pos(a) + shift - off_b relative to root_a
        self.parent[root_b] = root_a
        self.offset[root_b] = off_a + shift - off_b
        moved = self.windings.pop(root_b, [])
        if moved:
            self.windings.setdefault(root_a, []).extend(moved)

    def dimensionality(self, root: int) -> int:
        vectors = self.windings.get(root)
        if not vectors:
            return 0
        return int(np.linalg.matrix_rank(np.array(vectors, dtype=float)))


@dataclass(frozen=True)
class Components:
    """Periodic connected components of a boolean grid mask.

    Attributes
    ----------
    labels
        Label of each grid point after periodic joining (0 = outside the mask), shape of grid.
    dimensionality
        Percolation dimensionality (0-3) of each label, indexed by label.
    """

    labels: np.ndarray
    dimensionality: np.ndarray

    @property
    def max_dimensionality(self) -> int:
        """Highest dimensionality of any component."""
        return int(self.dimensionality.max()) if len(self.dimensionality) else 0


@cache
def _boundary_links(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 26-neighbour links of a periodic grid that cross the cell boundary.

    Returns flat indices of the source and destination points and the lattice shift
    (cells) of the destination, for the 13 forward steps. Cached per grid shape.
    """
    dims = np.array(shape)
    sources, targets, shifts = [], [], []
    for step in FORWARD_STEPS:
        crossing = np.zeros(shape, dtype=bool)
        for axis in range(3):
            if step[axis] == 0:
                continue
            index: list[slice] = [slice(None)] * 3
            index[axis] = slice(-1, None) if step[axis] > 0 else slice(0, 1)
            crossing[tuple(index)] = True
        idx = np.argwhere(crossing)
        moved = idx + step
        shift = np.floor_divide(moved, dims)
        sources.append(np.ravel_multi_index(idx.T, shape))
        targets.append(np.ravel_multi_index((moved - shift * dims).T, shape))
        shifts.append(shift)
    return np.concatenate(sources), np.concatenate(targets), np.concatenate(shifts)


def periodic_components(mask: np.ndarray) -> Components:
    """Label the periodic connected components of ``mask`` and their dimensionality.

    Parameters
    ----------
    mask
        Boolean array on the periodic grid (shape n1, n2, n3).

    Returns
    -------
    Components
    """
    labels, count = ndimage.label(mask, structure=_FULL_CONNECTIVITY)
    finder = _OffsetUnionFind(count + 1)
    if count:
        sources, targets, shifts = _boundary_links(mask.shape)
        flat = labels.ravel()
        a, b = flat[sources], flat[targets]
        pick = (a > 0) & (b > 0)
        if np.any(pick):
            # one int64 key per (label, label, shift) link so that np.unique stays 1-D (fast)
            code = (shifts[pick] + 1) @ np.array([9, 3, 1])
            keys = np.unique((a[pick].astype(np.int64) * (count + 1) + b[pick]) * 27 + code)
            pairs, code = np.divmod(keys, 27)
            first, second = np.divmod(pairs, count + 1)
            steps = np.stack([code // 9, (code // 3) % 3, code % 3], axis=1) - 1
            for u, v, shift in zip(first, second, steps, strict=True):
                finder.union(int(u), int(v), shift)
    roots = np.array([finder.find(i)[0] for i in range(count + 1)], dtype=np.int64)
    dims = np.zeros(count + 1, dtype=np.int64)
    for root in np.unique(roots[1:]) if count else []:
        dims[root] = finder.dimensionality(int(root))
    joined = roots[labels]
    return Components(labels=joined, dimensionality=dims)


def site_voxels(shape: tuple[int, int, int], frac_coords: np.ndarray) -> np.ndarray:
    """Flat index of the grid voxel nearest to each fractional position (periodic)."""
    dims = np.array(shape)
    index = np.round(np.mod(np.asarray(frac_coords, float), 1.0) * dims).astype(int) % dims
    return np.ravel_multi_index(index.T, tuple(dims))


def site_connection_levels_eV(
    energy_grid_eV: np.ndarray,
    site_frac_coords: np.ndarray,
    start_eV: float,
    ceiling_eV: float,
    tolerance_eV: float = 0.01,
) -> np.ndarray:
    """Lowest level L_i at which each site joins a percolating component of {U < L}.

    A mobile ion on site i reaches the conducting network only over the bottleneck that
    separates its basin from it; L_i is that bottleneck's energy (the minimax energy of
    paths from the site to a percolating channel), found by bisection on the level with
    :func:`periodic_components`. Sites of the same level share the labelings (cached).

    Parameters
    ----------
    energy_grid_eV
        U on the periodic grid, eV (+inf where not evaluated).
    site_frac_coords
        Fractional coordinates of the sites, shape (n, 3).
    start_eV
        A level at which a channel percolates (e.g. just above E_1), eV. Sites already
        connected there get ``start_eV``.
    ceiling_eV
        Highest level searched, eV; sites not connected below it get +inf.
    tolerance_eV
        Bisection tolerance, eV.

    Returns
    -------
    np.ndarray
        L_i in eV, shape (n,).
    """
    voxels = site_voxels(energy_grid_eV.shape, site_frac_coords)
    cache: dict[int, np.ndarray] = {}

    def connected(level: float) -> np.ndarray:
        key = int(np.floor(level / tolerance_eV))
        if key not in cache:
            components = periodic_components(energy_grid_eV < key * tolerance_eV)
            labels = components.labels.ravel()[voxels]
            cache[key] = (labels > 0) & (components.dimensionality[labels] >= 1)
        return cache[key]

    start_key_level = (np.floor(start_eV / tolerance_eV) + 1) * tolerance_eV
    top_level = np.floor(ceiling_eV / tolerance_eV) * tolerance_eV
    levels = np.full(len(voxels), np.inf)
    at_start = connected(start_key_level)
    levels[at_start] = start_eV
    todo = ~at_start & connected(top_level)
    low = np.full(len(voxels), start_key_level)
    high = np.full(len(voxels), top_level)
    for _ in range(MAX_BISECTION_STEPS):
        active = todo & (high - low > tolerance_eV)
        if not np.any(active):
            break
        for lo_hi in np.unique(np.stack([low[active], high[active]], axis=1), axis=0):
            group = active & (low == lo_hi[0]) & (high == lo_hi[1])
            middle = 0.5 * (lo_hi[0] + lo_hi[1])
            inside = connected(middle)
            high[group & inside] = middle
            low[group & ~inside] = middle
    levels[todo] = high[todo]
    return levels


@dataclass(frozen=True)
class PercolationResult:
    """Percolation energies of a potential grid.

    Attributes
    ----------
    minimum_energy_eV
        min U on the grid, eV.
    energies_eV
        Percolation energy E_d for d = 1, 2, 3 (absolute, eV; inf when none below the ceiling).
    tolerance_eV
        Bisection tolerance: each E_d is within this of the grid's exact threshold.
    ceiling_eV
        Energy above min U up to which percolation was searched, eV.
    """

    minimum_energy_eV: float
    energies_eV: dict[int, float]
    tolerance_eV: float
    ceiling_eV: float
    evaluations: int = field(default=0, compare=False)

    @property
    def barriers_eV(self) -> dict[int, float]:
        """Percolation barriers E_d - min U, eV (inf when none)."""
        return {d: e - self.minimum_energy_eV for d, e in self.energies_eV.items()}

    @property
    def channel_level_eV(self) -> float:
        """E_1 plus the bisection tolerance, eV: the level of the conducting channel.

        E_1 is the upper end of its bisection bracket, so {U < E_1} percolates already; the
        tolerance keeps the channel level clear of that edge. The percolating loop and the
        carriers' connection levels both start from it.
        """
        return self.energies_eV[1] + self.tolerance_eV

    @property
    def dimensionality(self) -> int:
        """Highest d with a percolation energy below the ceiling (0 when trapped)."""
        finite = [d for d, e in self.energies_eV.items() if np.isfinite(e)]
        return max(finite) if finite else 0


def percolation_energies(
    energy_grid_eV: np.ndarray,
    ceiling_eV: float = 5.0,
    tolerance_eV: float = 0.002,
    lower_bounds_eV: dict[int, float] | None = None,
    upper_bounds_eV: dict[int, float] | None = None,
) -> PercolationResult:
    """Percolation energies E_1, E_2, E_3 of a periodic grid of U by bisection.

    Each probe labels the region U < E once and updates the brackets of all three
    dimensionalities (the dimensionality of the region grows monotonically with E).

    Parameters
    ----------
    energy_grid_eV
        U on the periodic grid (n1, n2, n3), eV; +inf marks points known to be inaccessible.
    ceiling_eV
        Search up to min U + ceiling, eV.
    tolerance_eV
        Bracket width at which bisection stops, eV.
    lower_bounds_eV, upper_bounds_eV
        Optional known brackets per dimensionality (absolute energies), e.g. from a coarser
        grid; upper bounds are verified before use.

    Returns
    -------
    PercolationResult
    """
    finite = energy_grid_eV[np.isfinite(energy_grid_eV)]
    if finite.size == 0:
        raise ValueError("no finite potential values on the grid")
    u_min = float(finite.min())
    top = u_min + ceiling_eV
    low = dict.fromkeys((1, 2, 3), u_min)
    high = dict.fromkeys((1, 2, 3), top)
    evaluations = 0

    def probe(level: float) -> int:
        nonlocal evaluations
        evaluations += 1
        return periodic_components(energy_grid_eV < level).max_dimensionality

    def record(level: float, dim: int) -> None:
        for d in (1, 2, 3):
            if d <= dim:
                high[d] = min(high[d], level)
            else:
                low[d] = max(low[d], level)

    if lower_bounds_eV:
        for d, value in lower_bounds_eV.items():
            low[d] = max(low[d], min(value, top))
    dim_top = probe(top)
    reachable = {d: d <= dim_top for d in (1, 2, 3)}
    record(top, dim_top)
    if upper_bounds_eV:
        for d, value in sorted(upper_bounds_eV.items()):
            if reachable[d] and low[d] < value < high[d]:
                record(value, probe(value))
    for d in (1, 2, 3):
        if not reachable[d]:
            continue
        for _ in range(MAX_BISECTION_STEPS):
            if high[d] - low[d] <= tolerance_eV:
                break
            mid = 0.5 * (low[d] + high[d])
            if not low[d] < mid < high[d]:
                break  # the bracket is at the float spacing: as fine as it can get
            record(mid, probe(mid))
    energies = {d: (high[d] if reachable[d] else float("inf")) for d in (1, 2, 3)}
    return PercolationResult(u_min, energies, tolerance_eV, ceiling_eV, evaluations)
