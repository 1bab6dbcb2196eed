"""The percolating minimum-energy path of the mobile ion and its energy profile U(s).

A path is a closed loop of the periodic crystal: it starts at a point and ends at the same
point translated by a lattice vector (its winding). Among such loops through the lowest
point of the percolating region, we take the one that minimises the path integral of
exp(U/k_B T) ds, the factor that controls the path mobility (theory.md section 3): it is the
channel an overdamped ion uses. It is found exactly on the grid graph (26 neighbours) by
Dijkstra's algorithm with the lattice offsets of the shortest-path tree: the best loop is
tree path + one non-tree edge + tree path back, over all edges that close a loop with a
non-zero winding.

The grid polyline is then resampled, smoothed and relaxed with the analytic gradient of U
(a string method: the component of -grad U normal to the path, with equal-arc
reparametrisation) so that the profile follows the continuous minimum-energy path between
grid points.

Units: positions A, energies eV, temperatures K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from iondrag.screening.errors import NoPercolationError
from iondrag.screening.forcefield import PairField
from iondrag.screening.percolation import FORWARD_STEPS, periodic_components
from iondrag.screening.potential import PeriodicGrid, evaluate_points
from iondrag.screening.units import thermal_energy_eV

#: Steepest-descent step of the string relaxation per unit normal force, A^2/eV.
STEP_A2_PER_EV: float = 0.01

#: Resolution of the grid-path weights and of the choice of its lowest point (a power of
#: two, so that sums of quantised weights are exact). Symmetry-equivalent loops have equal
#: costs on the grid; unquantised, round-off (of the cell's frame, of the BLAS kernel) broke
#: those ties and a rotated crystal could get another, equivalent but differently placed,
#: starting loop, from which the 30-step string method ends ~1e-4 apart. Quantised, ties are
#: exact and broken by grid order, which does not depend on the frame.
PATH_WEIGHT_QUANTUM: float = 2.0**-40

#: Energies closer than this are one tie when the loop's lowest point is chosen, eV.
SOURCE_ENERGY_QUANTUM_EV: float = 1e-9

#: Edges whose lattice winding is checked at once (bounds that step's workspace).
EDGE_BLOCK: int = 1 << 20


def _quantised(values: np.ndarray, quantum: float) -> np.ndarray:
    """Round ``values`` to multiples of ``quantum`` (ties of round-off become exact ties)."""
    return np.round(np.asarray(values, dtype=float) / quantum) * quantum


@dataclass(frozen=True)
class PercolatingPath:
    """One period of a percolating channel.

    Attributes
    ----------
    points_A
        Unwrapped Cartesian points along one period, shape (P, 3), A; the point after the
        last is ``points_A[0] + translation_A``.
    translation_A
        The lattice translation of one period, A.
    translation_cells
        The same in lattice vectors (integers).
    energy_eV
        U at the points, eV (filled for relaxed paths, else from the grid).
    """

    points_A: np.ndarray
    translation_A: np.ndarray
    translation_cells: np.ndarray
    energy_eV: np.ndarray

    @property
    def closed_points_A(self) -> np.ndarray:
        """Points with the first point repeated, translated, at the end: (P + 1, 3)."""
        return np.vstack([self.points_A, self.points_A[:1] + self.translation_A])

    @property
    def segment_lengths_A(self) -> np.ndarray:
        """Lengths of the P segments of the closed loop, A."""
        return np.linalg.norm(np.diff(self.closed_points_A, axis=0), axis=1)

    @property
    def length_A(self) -> float:
        """Arc length of one period, A."""
        return float(self.segment_lengths_A.sum())

    @property
    def arc_length_A(self) -> np.ndarray:
        """Arc length s at each point, A (0 at the first point)."""
        return np.concatenate([[0.0], np.cumsum(self.segment_lengths_A)[:-1]])

    @property
    def tangents(self) -> np.ndarray:
        """Unit tangents at the points (central differences on the closed loop), (P, 3)."""
        closed = self.closed_points_A
        before = np.vstack([self.points_A[-1:] - self.translation_A, self.points_A[:-1]])
        forward = closed[1:] - closed[:-1]
        backward = self.points_A - before
        t = (
            forward / np.linalg.norm(forward, axis=1)[:, None]
            + backward / np.linalg.norm(backward, axis=1)[:, None]
        )
        return t / np.maximum(np.linalg.norm(t, axis=1), 1e-300)[:, None]


def _graph(
    energy: np.ndarray, grid: PeriodicGrid, nodes: np.ndarray, weight_energy: np.ndarray
) -> tuple[coo_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges between region nodes: (matrix, src, dst, shift cells, weight) for 13 steps."""
    shape = np.array(grid.shape)
    local = np.full(grid.n_points, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    idx = grid.unravel(nodes)
    src_all, dst_all, shift_all, weight_all = [], [], [], []
    for step in FORWARD_STEPS:
        moved = idx + step
        shift = np.floor_divide(moved, shape)
        target = local[np.ravel_multi_index((moved - shift * shape).T, grid.shape)]
        ok = target >= 0
        length = float(np.linalg.norm(step @ grid.step_matrix_A))
        src = np.flatnonzero(ok)
        dst = target[ok]
        src_all.append(src)
        dst_all.append(dst)
        shift_all.append(shift[ok])
        weight = length * 0.5 * (weight_energy[src] + weight_energy[dst])
        weight_all.append(_quantised(weight, PATH_WEIGHT_QUANTUM))
    del local, idx, moved, shift, target, ok
    # int32 node indices (what the sparse matrix converts them to anyway) and int8 shifts
    # (-1, 0, 1): the edge arrays are the largest of the path search
    n = len(nodes)
    index_type = np.int32 if n < np.iinfo(np.int32).max else np.int64
    src = np.concatenate(src_all).astype(index_type)
    del src_all
    dst = np.concatenate(dst_all).astype(index_type)
    del dst_all
    shifts = np.concatenate(shift_all).astype(np.int8)
    del shift_all
    weights = np.concatenate(weight_all)
    del weight_all
    matrix = coo_matrix(
        (
            np.concatenate([weights, weights]),
            (np.concatenate([src, dst]), np.concatenate([dst, src])),
        ),
        shape=(n, n),
    )
    return matrix, src, dst, shifts, weights


def _tree_offsets(
    predecessors: np.ndarray, source: int, node_index: np.ndarray, shape: np.ndarray
) -> np.ndarray:
    """Lattice offset (cells) of each node's copy reached along the shortest-path tree."""
    n = len(predecessors)
    reached = predecessors >= 0
    step_shift = np.zeros((n, 3), dtype=np.int64)
    child = np.flatnonzero(reached)
    parent = predecessors[child]
    delta = node_index[child] - node_index[parent]
    # a step of -1/0/+1 that wrapped shows as a jump of about -n or +n
    step_shift[child] = (delta < -1).astype(np.int64) - (delta > 1).astype(np.int64)
    offset = step_shift.copy()
    ancestor = np.where(reached, predecessors, source)
    ancestor[source] = source
    # pointer doubling: offset <- offset + offset[ancestor], ancestor <- ancestor[ancestor]
    for _ in range(64):
        if np.all(ancestor == source):
            break
        offset = offset + np.where((ancestor == source)[:, None], 0, offset[ancestor])
        ancestor = np.where(ancestor == source, source, ancestor[ancestor])
    return offset


def grid_percolating_path(
    energy_grid_eV: np.ndarray,
    grid: PeriodicGrid,
    level_eV: float,
    temperature_K: float,
    candidate_id: str | None = None,
    channel_level_eV: float | None = None,
) -> PercolatingPath:
    """Find the best percolating loop on the grid graph below ``level_eV``.

    The loop is the one of least resistance sum exp(U/k_B T) ds through the lowest point of
    the channel: the lowest grid point of the components that percolate below
    ``channel_level_eV`` (default ``level_eV``). With ``channel_level_eV`` just above E_1
    that is the conducting channel itself; a deeper pocket off the channel (a dead end the
    ion leaves by the way it came) is not part of the loop.

    Parameters
    ----------
    energy_grid_eV
        U on the grid (n1, n2, n3), eV.
    grid
        The grid.
    level_eV
        Only points with U below this take part (at least the 1D percolation energy), eV.
    temperature_K
        Sets the weight exp(U / k_B T) of the path integral.
    candidate_id
        Named in errors.
    channel_level_eV
        Level (eV, at most ``level_eV``) whose percolating components hold the loop's
        lowest point; None: ``level_eV``.

    Raises
    ------
    NoPercolationError
        The region below ``level_eV`` does not percolate.
    """
    components = periodic_components(energy_grid_eV < level_eV)
    percolating = np.flatnonzero(components.dimensionality >= 1)
    if len(percolating) == 0:
        raise NoPercolationError(f"no percolating channel below {level_eV:.3f} eV", candidate_id)
    flat_labels = components.labels.ravel()
    flat_energy = energy_grid_eV.ravel()
    in_channel = np.isin(flat_labels, percolating)
    nodes = np.flatnonzero(in_channel)
    kt = thermal_energy_eV(temperature_K)
    # weights relative to the level: exp((U - level)/kT) <= 1; a small length term keeps
    # the path straight inside wells where the exponential underflows
    weight_energy = np.exp(np.minimum((flat_energy[nodes] - level_eV) / kt, 0.0)) + 1e-9
    graph, src, dst, shifts, weights = _graph(flat_energy, grid, nodes, weight_energy)
    matrix = graph.tocsr()
    del graph
    source_energy = flat_energy[nodes]
    if channel_level_eV is not None and channel_level_eV < level_eV:
        channel = periodic_components(energy_grid_eV < channel_level_eV)
        at_channel_level = np.isin(
            channel.labels.ravel()[nodes], np.flatnonzero(channel.dimensionality >= 1)
        )
        if np.any(at_channel_level):
            source_energy = np.where(at_channel_level, source_energy, np.inf)
    source = int(np.argmin(_quantised(source_energy, SOURCE_ENERGY_QUANTUM_EV)))
    distance, predecessors = dijkstra(
        matrix, directed=False, indices=source, return_predecessors=True
    )
    del matrix
    node_index = grid.unravel(nodes)
    offsets = _tree_offsets(predecessors, source, node_index, np.array(grid.shape))
    reached = np.isfinite(distance)
    # the edges that close a loop with a lattice winding, in blocks of edges (integer
    # arithmetic: the same as in one piece, without three (edges, 3) arrays)
    closing = np.empty(len(src), dtype=bool)
    for start in range(0, len(src), EDGE_BLOCK):
        part = slice(start, start + EDGE_BLOCK)
        winding = offsets[src[part]] + shifts[part] - offsets[dst[part]]
        closing[part] = reached[src[part]] & reached[dst[part]] & np.any(winding != 0, axis=1)
    if not np.any(closing):
        raise NoPercolationError(
            f"no loop with a lattice winding below {level_eV:.3f} eV", candidate_id
        )
    cost = np.where(closing, distance[src] + weights + distance[dst], np.inf)
    best = int(np.argmin(cost))
    p, q = int(src[best]), int(dst[best])
    translation = offsets[p] + shifts[best] - offsets[q]

    def chain(node: int) -> list[int]:
        out = [node]
        while out[-1] != source:
            out.append(int(predecessors[out[-1]]))
        return out

    first = chain(p)[::-1]  # source ... p
    second = chain(q)[:-1]  # q ... (excluding source)
    lattice = grid.lattice_matrix_A
    frac = grid.frac_coords(nodes)
    points = [frac[i] + offsets[i] for i in first]
    points += [frac[i] + offsets[i] + translation for i in second]
    cart = np.array(points) @ lattice
    return PercolatingPath(
        points_A=cart,
        translation_A=translation @ lattice,
        translation_cells=translation.astype(np.int64),
        energy_eV=flat_energy[nodes][first + second],
    )


def resample(path: PercolatingPath, spacing_A: float) -> PercolatingPath:
    """Resample a loop at (about) equal arc-length spacing, A."""
    closed = path.closed_points_A
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    count = max(int(np.ceil(s[-1] / spacing_A)), 8)
    targets = np.linspace(0.0, s[-1], count, endpoint=False)
    points = np.stack([np.interp(targets, s, closed[:, a]) for a in range(3)], axis=1)
    energy = np.interp(targets, s, np.append(path.energy_eV, path.energy_eV[0]))
    return PercolatingPath(points, path.translation_A, path.translation_cells, energy)


def smooth(path: PercolatingPath, width_A: float) -> PercolatingPath:
    """Periodic Gaussian smoothing of the points along the loop (width in A of arc)."""
    spacing = path.length_A / len(path.points_A)
    sigma = width_A / spacing
    # unwrap-aware: smooth the deviation from the straight line through the period
    fraction = path.arc_length_A / path.length_A
    line = fraction[:, None] * path.translation_A
    deviation = path.points_A - line
    smoothed = ndimage.gaussian_filter1d(deviation, sigma, axis=0, mode="wrap")
    return PercolatingPath(
        smoothed + line, path.translation_A, path.translation_cells, path.energy_eV
    )


def relax_path(
    field: PairField,
    path: PercolatingPath,
    iterations: int = 40,
    max_step_A: float = 0.03,
    spacing_A: float = 0.1,
    converged_eV_per_A: float = 0.02,
) -> PercolatingPath:
    """String-method relaxation of a loop towards the minimum-energy path.

    Each iteration moves every point along the component of -grad U normal to the path
    (at most ``max_step_A``) and reparametrises to equal arc length.

    Parameters
    ----------
    field
        The pair potentials (analytic gradient).
    path
        Starting loop.
    iterations
        Number of relaxation steps.
    max_step_A
        Largest displacement of a point per iteration, A.
    spacing_A
        Arc-length spacing after each reparametrisation, A.
    converged_eV_per_A
        Stop when the largest force normal to the path is below this, eV/A.

    Returns
    -------
    PercolatingPath
        With ``energy_eV`` evaluated exactly at the final points.
    """
    current = resample(path, spacing_A)
    for _ in range(iterations):
        values = evaluate_points(field, current.points_A, derivatives=1)
        assert values.gradient_eV_per_A is not None
        tangent = current.tangents
        force = -values.gradient_eV_per_A
        normal = force - np.einsum("ij,ij->i", force, tangent)[:, None] * tangent
        size = np.linalg.norm(normal, axis=1)
        if size.max() < converged_eV_per_A:
            break
        # steepest descent with a step of STEP_A2_PER_EV per eV/A, capped at max_step_A
        step = np.minimum(STEP_A2_PER_EV, max_step_A / np.maximum(size, 1e-12))
        moved = current.points_A + step[:, None] * normal
        current = resample(
            PercolatingPath(
                moved, current.translation_A, current.translation_cells, current.energy_eV
            ),
            spacing_A,
        )
    energy = evaluate_points(field, current.points_A).energy_eV
    return PercolatingPath(
        current.points_A, current.translation_A, current.translation_cells, energy
    )
