"""Random site-and-hop networks in periodic supercells (docs/theory.md section 7).

On sites that the mobile ion shares with framework ions (Li/La on the A site of the
Li-La-Ti-O perovskites) a passing ion meets one particular arrangement, not the mean field.
We therefore solve the conductance of a random resistor network built from the primitive
cell's sites and hops, replicated into a large periodic supercell, and average over draws.

* :func:`replicate_network`, :func:`simple_cubic_bonds`: the periodic supercell network.
* :func:`network_topology`: connected components and the lattice translations they wind
  around (percolation dimensionality), exactly, from a spanning tree of each component.
* :func:`effective_conductivity`: the homogenised conductivity tensor of a periodic
  resistor network (Kirchhoff's laws with a periodic potential corrector).
* :func:`random_network_conductivity`: sites blocked at random, bonds of Arrhenius
  conductance exp(-E_b / k_B T), statistics over seeded draws and the unblocked reference.
* :func:`critical_path_barrier_eV`: the Ambegaokar-Halperin-Langer critical barrier.

Units: lengths A, energies eV, temperature K. Bond conductances g are in any unit [g]
(e.g. S); the effective conductivity is then in [g]/A (multiply S/A by 1e10 for S/m).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix, diags
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.sparse.linalg import LinearOperator, cg, splu

from iondrag.screening.conductivity import POLYCRYSTAL_AVERAGES
from iondrag.screening.units import thermal_energy_eV

#: Conjugate gradients are preconditioned by the diagonal alone when the conducting bonds'
#: conductances span at most this ratio, by the factor of the strong bonds beyond.
CG_MAX_CONTRAST: float = 1e7

#: Bonds up to this many e-folds below the critical conductance enter the preconditioner.
STRONG_BOND_WINDOW: float = 6.0

#: Bonds this many e-folds (1e-20) below the critical conductance at which the network wraps
#: in all its dimensions are dropped before the solve: they change sigma by a relative 1e-20
#: times a geometric factor of at most the number of bonds times (L a)^2 / a^2, and would
#: otherwise stretch the spread of g beyond what double precision resolves.
WEAK_BOND_WINDOW: float = 46.0

#: ``auto``: iterations of CG before it falls back to sparse LU.
AUTO_CG_ITERATIONS: int = 3_000

#: Largest system that ``auto`` hands to sparse LU (fill-in grows fast in 3D: 0.4 s for 8000
#: sites of a simple-cubic network, 6 s for 27000).
DIRECT_SOLVER_MAX_NODES: int = 30_000

#: Relative residual at which conjugate gradients stop (Jacobi-scaled system).
CG_RELATIVE_TOLERANCE: float = 1e-12

#: Net current into the sites, relative to the total bond current, above which a solve fails.
KIRCHHOFF_TOLERANCE: float = 1e-6

#: Conjugate-gradient iteration budget.
CG_MAX_ITERATIONS: int = 20_000

#: A cycle's net translation must be a lattice vector to this accuracy (fractional units).
WINDING_TOLERANCE: float = 1e-6


@dataclass(frozen=True)
class PeriodicNetwork:
    """A site-and-hop network in a periodic cell.

    Attributes
    ----------
    site_cart_coords_A
        Cartesian positions of the sites in the cell, shape (n, 3), A.
    bond_i, bond_j
        Sites joined by each bond, shape (m,).
    bond_shift_A
        Bond vectors r_j + image - r_i (Cartesian), shape (m, 3), A.
    cell_matrix_A
        Lattice vectors of the (super)cell as rows, shape (3, 3), A.
    primitive_site
        Index of the primitive-cell site each site replicates, shape (n,).
    primitive_bond
        Index of the primitive-cell hop each bond replicates, shape (m,).
    """

    site_cart_coords_A: np.ndarray
    bond_i: np.ndarray
    bond_j: np.ndarray
    bond_shift_A: np.ndarray
    cell_matrix_A: np.ndarray
    primitive_site: np.ndarray
    primitive_bond: np.ndarray

    @property
    def n_sites(self) -> int:
        """Number of sites in the cell."""
        return len(self.site_cart_coords_A)

    @property
    def n_bonds(self) -> int:
        """Number of bonds in the cell."""
        return len(self.bond_i)


def replicate_network(
    site_frac_coords: np.ndarray,
    bond_i: np.ndarray,
    bond_j: np.ndarray,
    bond_image: np.ndarray,
    lattice_matrix_A: np.ndarray,
    supercell: tuple[int, int, int],
) -> PeriodicNetwork:
    """Replicate a primitive-cell site-and-hop network into an n1 x n2 x n3 periodic supercell.

    Primitive hop b joins site i in cell 0 to site j in cell ``bond_image[b]``; its copy from
    cell t joins the copy of i in t to the copy of j in (t + image) mod n, through the
    supercell image floor((t + image) / n). Site s of cell t gets index t_flat * n_p + s
    (t_flat = (t1 n2 + t2) n3 + t3), bond b of cell t the index t_flat * m_p + b.

    Parameters
    ----------
    site_frac_coords
        Fractional coordinates of the primitive sites, shape (n_p, 3).
    bond_i, bond_j
        Primitive sites joined by each hop, shape (m_p,).
    bond_image
        Integer cell translation of site j for each hop, shape (m_p, 3).
    lattice_matrix_A
        Primitive lattice vectors as rows (pymatgen convention), A.
    supercell
        Repetitions (n1, n2, n3) along the three lattice vectors.

    Returns
    -------
    PeriodicNetwork
        The supercell network; its cell is diag(n) @ lattice, its bond vectors are those
        of the primitive hops.
    """
    frac = np.atleast_2d(np.asarray(site_frac_coords, dtype=float))
    lattice = np.asarray(lattice_matrix_A, dtype=float)
    i = np.asarray(bond_i, dtype=np.int64)
    j = np.asarray(bond_j, dtype=np.int64)
    image = np.asarray(bond_image, dtype=np.int64).reshape(-1, 3)
    reps = np.asarray(supercell, dtype=np.int64)
    n_p, m_p = len(frac), len(i)
    if reps.shape != (3,) or np.any(reps < 1):
        raise ValueError(f"supercell must be three positive integers, got {supercell}")
    if len(j) != m_p or len(image) != m_p:
        raise ValueError("bond_i, bond_j and bond_image must have the same length")
    if m_p and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n_p):
        raise ValueError("bond sites out of range")
    cells = np.stack(np.unravel_index(np.arange(int(np.prod(reps))), tuple(reps)), axis=1)
    n_cells = len(cells)
    positions = ((cells[:, None, :] + frac[None, :, :]) @ lattice).reshape(-1, 3)
    target = cells[:, None, :] + image[None, :, :]  # (cells, m_p, 3)
    wrapped = np.ravel_multi_index(tuple(np.mod(target, reps).transpose(2, 0, 1)), tuple(reps))
    source_cell = np.repeat(np.arange(n_cells), m_p).reshape(n_cells, m_p)
    shift = (frac[j] + image - frac[i]) @ lattice
    return PeriodicNetwork(
        site_cart_coords_A=positions,
        bond_i=(source_cell * n_p + i[None, :]).ravel(),
        bond_j=(wrapped * n_p + j[None, :]).ravel(),
        bond_shift_A=np.tile(shift, (n_cells, 1)),
        cell_matrix_A=reps[:, None] * lattice,
        primitive_site=np.tile(np.arange(n_p), n_cells),
        primitive_bond=np.tile(np.arange(m_p), n_cells),
    )


def simple_cubic_bonds(L: int, a_A: float = 1.0) -> PeriodicNetwork:
    """Build the periodic L x L x L simple-cubic lattice of spacing ``a_A`` (A), 3 L^3 bonds.

    Bonds come in the order of :func:`replicate_network`: site by site, the hops along
    +x, +y, +z (``primitive_bond`` 0, 1, 2).
    """
    return replicate_network(
        np.zeros((1, 3)),
        np.zeros(3, dtype=np.int64),
        np.zeros(3, dtype=np.int64),
        np.eye(3, dtype=np.int64),
        a_A * np.eye(3),
        (L, L, L),
    )


@dataclass(frozen=True)
class NetworkTopology:
    """Connected components of a periodic network and how they wind around the cell.

    Attributes
    ----------
    component
        Component label of each site, shape (n,).
    dimensionality
        Percolation dimensionality (0-3) of each component: the rank of the lattice
        translations its closed loops wind around (0: a finite cluster).
    winding_cells
        The distinct winding translations of all components, in cells of the supercell,
        shape (k, 3), integers.
    """

    component: np.ndarray
    dimensionality: np.ndarray
    winding_cells: np.ndarray

    @property
    def max_dimensionality(self) -> int:
        """Highest dimensionality of any component (0 when nothing percolates)."""
        return int(self.dimensionality.max()) if len(self.dimensionality) else 0


def _as_bonds(
    n_sites: int, bond_i: np.ndarray, bond_j: np.ndarray, bond_shift_A: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.asarray(bond_i, dtype=np.int64).ravel()
    j = np.asarray(bond_j, dtype=np.int64).ravel()
    d = np.asarray(bond_shift_A, dtype=float).reshape(-1, 3)
    if not (len(i) == len(j) == len(d)):
        raise ValueError("bond_i, bond_j and bond_shift_A must have the same length")
    if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n_sites):
        raise ValueError(f"bond sites out of range for {n_sites} sites")
    if not np.all(np.isfinite(d)):
        raise ValueError("bond shifts must be finite")
    return i, j, d


def _tree_positions(
    n: int, i: np.ndarray, j: np.ndarray, d: np.ndarray, component: np.ndarray
) -> np.ndarray:
    """Unwrapped positions of the sites along a spanning tree of each component (A).

    A breadth-first search from a virtual root joined to the first site of every component
    gives each site a parent and the bond vector from it; the positions relative to the
    component's first site are then summed along the tree by pointer jumping (log depth
    vectorised passes).
    """
    first = np.unique(component, return_index=True)[1]
    key = np.minimum(i, j) * n + np.maximum(i, j)
    pair_key, pair_bond = np.unique(key[i != j], return_index=True)
    pair_bond = np.flatnonzero(i != j)[pair_bond]
    rows = np.concatenate([i[pair_bond], np.full(len(first), n)])
    cols = np.concatenate([j[pair_bond], first])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    _, predecessor = breadth_first_order(graph, n, directed=False, return_predecessors=True)
    parent = predecessor[:n].astype(np.int64)
    at_root = parent == n
    parent[at_root] = np.flatnonzero(at_root)
    relative = np.zeros((n, 3))
    child = np.flatnonzero(~at_root)
    up = parent[child]
    bond = pair_bond[np.searchsorted(pair_key, np.minimum(up, child) * n + np.maximum(up, child))]
    forward = i[bond] == up
    relative[child] = np.where(forward[:, None], d[bond], -d[bond])
    ancestor = parent
    while np.any(ancestor[ancestor] != ancestor):
        relative = relative + relative[ancestor]
        ancestor = ancestor[ancestor]
    return relative


def network_topology(
    n_sites: int,
    bond_i: np.ndarray,
    bond_j: np.ndarray,
    bond_shift_A: np.ndarray,
    cell_matrix_A: np.ndarray,
) -> NetworkTopology:
    """Label the connected components of a periodic network and their dimensionality.

    Each component is unwrapped along a spanning tree; every other bond then closes a loop
    whose net translation r_i + d_b - r_j is a lattice vector of the cell (the winding). A
    component percolates (wraps around the periodic cell) when one of its windings is
    non-zero; the rank of its windings is its dimensionality. Exact, for any winding.

    Parameters
    ----------
    n_sites
        Number of sites.
    bond_i, bond_j, bond_shift_A
        The bonds: site i to site j displaced by the Cartesian vector d_b, A.
    cell_matrix_A
        Lattice vectors of the periodic cell as rows, A.

    Returns
    -------
    NetworkTopology

    Raises
    ------
    ValueError
        When a loop's translation is not a lattice vector (shifts inconsistent with the cell).
    """
    i, j, d = _as_bonds(n_sites, bond_i, bond_j, bond_shift_A)
    cell = np.asarray(cell_matrix_A, dtype=float)
    if n_sites == 0:
        empty = np.zeros(0, dtype=np.int64)
        return NetworkTopology(empty, empty, np.zeros((0, 3), dtype=np.int64))
    adjacency = coo_matrix((np.ones(len(i)), (i, j)), shape=(n_sites, n_sites))
    count, component = connected_components(adjacency, directed=False)
    component = component.astype(np.int64)
    position = _tree_positions(n_sites, i, j, d, component)
    fractional = (position[i] + d - position[j]) @ np.linalg.inv(cell)
    winding = np.rint(fractional)
    if np.any(np.abs(fractional - winding) > WINDING_TOLERANCE):
        worst = float(np.abs(fractional - winding).max())
        raise ValueError(
            f"bond shifts are not consistent with the cell: a loop misses a lattice vector "
            f"by {worst:.3g} cells"
        )
    winding = winding.astype(np.int64)
    winds = np.any(winding != 0, axis=1)
    dimensionality = np.zeros(count, dtype=np.int64)
    labels = component[i[winds]]
    vectors = winding[winds]
    order = np.argsort(labels, kind="stable")
    labels, vectors = labels[order], vectors[order]
    bounds = np.flatnonzero(np.diff(labels)) + 1
    for group_labels, group in zip(
        np.split(labels, bounds), np.split(vectors, bounds), strict=True
    ):
        if len(group_labels):
            distinct = np.unique(group, axis=0).astype(float)
            dimensionality[group_labels[0]] = int(np.linalg.matrix_rank(distinct))
    return NetworkTopology(
        component=component,
        dimensionality=dimensionality,
        winding_cells=np.unique(vectors, axis=0) if len(vectors) else np.zeros((0, 3), int),
    )


def _laplacian(n: int, li: np.ndarray, lj: np.ndarray, weight: np.ndarray) -> csr_matrix:
    """Weighted graph Laplacian sum_b w_b (e_i - e_j)(e_i - e_j)^T, shape (n, n)."""
    return coo_matrix(
        (
            np.concatenate([weight, weight, -weight, -weight]),
            (np.concatenate([li, lj, li, lj]), np.concatenate([li, lj, lj, li])),
        ),
        shape=(n, n),
    ).tocsr()


def _strong_bond_preconditioner(
    n: int, li: np.ndarray, lj: np.ndarray, d: np.ndarray, weight: np.ndarray, cell: np.ndarray
) -> csr_matrix:
    """Laplacian of the strong bonds plus the diagonal of the weak ones.

    Strong bonds are those within ``STRONG_BOND_WINDOW`` (in ln g) below the critical
    conductance g_c of the critical-path analysis (the largest g at which the bonds with
    g_b >= g_c wrap around the cell). Clusters of fast bonds hanging on slow ones are the
    modes that stall Jacobi-preconditioned CG when g spans many decades; the exact factor
    of this matrix treats them exactly, and the strong bonds are a sparse, fractal subset
    whose factor fills in little.
    """
    log_resistance = -np.log(weight)
    critical = critical_path_barrier_eV(n, li, lj, d, log_resistance, cell)
    strong = log_resistance <= critical + STRONG_BOND_WINDOW
    weak = ~strong
    diagonal = np.bincount(li[weak], weights=weight[weak], minlength=n) + np.bincount(
        lj[weak], weights=weight[weak], minlength=n
    )
    return (_laplacian(n, li[strong], lj[strong], weight[strong]) + diags(diagonal)).tocsr()


def _factor(matrix):
    """Sparse LU of a symmetric matrix: symmetric mode, minimum degree on A + A^T."""
    return splu(
        matrix.tocsc(),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


def _conjugate_gradients(
    matrix, rhs: np.ndarray, max_iterations: int, preconditioner=None
) -> np.ndarray | None:
    """CG column by column to ``CG_RELATIVE_TOLERANCE``; None when one does not converge."""
    solution = np.zeros_like(rhs)
    for k in range(rhs.shape[1]):
        if not np.any(rhs[:, k]):
            continue
        solution[:, k], info = cg(
            matrix,
            rhs[:, k],
            rtol=CG_RELATIVE_TOLERANCE,
            maxiter=max_iterations,
            M=preconditioner,
        )
        if info != 0:
            return None
    return solution


def _solve_grounded(
    laplacian: csr_matrix,
    rhs: np.ndarray,
    pinned: np.ndarray,
    preconditioner: csr_matrix | None,
    solver: Literal["auto", "direct", "cg"],
) -> np.ndarray:
    """Solve L chi = rhs with chi = 0 at one pinned node per component.

    The system is Jacobi-scaled first. ``direct``: sparse LU with one step of iterative
    refinement. ``cg``: conjugate gradients to a relative residual of
    ``CG_RELATIVE_TOLERANCE``, preconditioned by the exact factor of ``preconditioner``
    (grounded and scaled alike) when given. ``auto``: CG with at most
    ``AUTO_CG_ITERATIONS`` iterations, then sparse LU if that fails and the system has at
    most ``DIRECT_SOLVER_MAX_NODES`` unknowns (beyond, CG with ``CG_MAX_ITERATIONS``).
    """
    n = laplacian.shape[0]
    free = np.flatnonzero(~pinned)
    chi = np.zeros((n, rhs.shape[1]))
    if len(free) == 0:
        return chi
    scale = 1.0 / np.sqrt(laplacian.diagonal()[free])

    def grounded(matrix: csr_matrix) -> csr_matrix:
        return matrix[free][:, free].multiply(scale[:, None]).multiply(scale[None, :]).tocsr()

    scaled = grounded(laplacian)
    scaled_rhs = rhs[free] * scale[:, None]
    small = len(free) <= DIRECT_SOLVER_MAX_NODES
    solution = None
    if solver != "direct":
        budget = CG_MAX_ITERATIONS if solver == "cg" or not small else AUTO_CG_ITERATIONS
        try:
            operator = None
            if preconditioner is not None:
                factor = _factor(grounded(preconditioner))
                operator = LinearOperator(scaled.shape, factor.solve)
            solution = _conjugate_gradients(scaled, scaled_rhs, budget, operator)
        except RuntimeError:  # exactly singular factor: g beyond double precision's range
            solution = None
        if solution is None and (solver == "cg" or not small):
            raise ArithmeticError(
                f"conjugate gradients did not converge ({len(free)} nodes); a supercell of "
                f"at most {DIRECT_SOLVER_MAX_NODES} sites is solved by sparse LU"
            )
    if solution is None:
        factor = _factor(scaled)
        solution = factor.solve(scaled_rhs)
        solution += factor.solve(scaled_rhs - scaled @ solution)
    chi[free] = solution * scale[:, None]
    return chi


def _check_solution(
    n: int, li: np.ndarray, lj: np.ndarray, weight: np.ndarray, d: np.ndarray, drop: np.ndarray
) -> None:
    """Raise ArithmeticError when the potentials violate Kirchhoff's law or the Voigt bound.

    The energy form is variational: any error in chi raises it, so a failed solve shows as
    a conductivity above the parallel (Voigt) bound (1/V) sum_b g_b d_b d_b^T, or as a net
    current into the sites above ``KIRCHHOFF_TOLERANCE`` times sum_b g_b (|d_b + dchi_b| + |d_b|)
    (the total current, and the current without the corrector).
    Both happen only when the conductances span more decades than double precision holds.
    """
    current = weight[:, None] * drop
    net = np.stack(
        [
            np.bincount(li, weights=current[:, k], minlength=n)
            - np.bincount(lj, weights=current[:, k], minlength=n)
            for k in range(3)
        ],
        axis=1,
    )
    total = np.einsum("b,bk->k", weight, np.abs(drop) + np.abs(d))  # currents and drive
    energy = np.einsum("b,bk->k", weight, drop * drop)
    voigt = np.einsum("b,bk->k", weight, d * d)
    if np.any(np.abs(net).sum(axis=0) > KIRCHHOFF_TOLERANCE * total) or np.any(
        energy > voigt * (1.0 + 1e-9)
    ):
        span = float(np.log10(weight.max() / weight.min()))
        raise ArithmeticError(
            f"the network solve failed (conductances spanning {span:.0f} decades); narrow the "
            f"spread of g (e.g. a higher temperature or capped barriers)"
        )


def _conductivity(
    n_sites: int,
    i: np.ndarray,
    j: np.ndarray,
    d: np.ndarray,
    g: np.ndarray,
    cell: np.ndarray,
    solver: Literal["auto", "direct", "cg"],
    prune: bool = True,
) -> tuple[np.ndarray, int]:
    """sigma_eff ([g]/A) and the percolation dimensionality of the bonds with g > 0.

    With ``prune``, bonds more than ``WEAK_BOND_WINDOW`` e-folds below the critical
    conductance at which the network wraps in all its dimensions are dropped first.
    """
    present = g > 0
    i, j, d, g = i[present], j[present], d[present], g[present]
    topology = network_topology(n_sites, i, j, d, cell)
    sigma = np.zeros((3, 3))
    if topology.max_dimensionality == 0:
        return sigma, 0
    # only components that wind carry current: a finite cluster takes chi = -E.r exactly
    active_site = topology.dimensionality[topology.component] >= 1
    on = active_site[i]
    i, j, d, g = i[on], j[on], d[on], g[on]
    log_resistance = np.log(g.max() / g)
    if prune and log_resistance.max() > WEAK_BOND_WINDOW:
        critical = critical_path_barrier_eV(  # an upper bound, within 1 e-fold
            n_sites,
            i,
            j,
            d,
            log_resistance,
            cell,
            dimension=topology.max_dimensionality,
            tolerance_eV=1.0,
        )
        weak = log_resistance > critical + WEAK_BOND_WINDOW
        if np.any(weak):
            sigma, _ = _conductivity(
                n_sites, i[~weak], j[~weak], d[~weak], g[~weak], cell, solver, prune=False
            )
            return sigma, topology.max_dimensionality
    local = np.full(n_sites, -1, dtype=np.int64)
    active = np.flatnonzero(active_site)
    local[active] = np.arange(len(active))
    li, lj = local[i], local[j]
    n = len(active)
    weight = g / g.max()
    laplacian = _laplacian(n, li, lj, weight)
    rhs = np.stack(
        [
            np.bincount(li, weights=weight * d[:, k], minlength=n)
            - np.bincount(lj, weights=weight * d[:, k], minlength=n)
            for k in range(3)
        ],
        axis=1,
    )
    pinned = np.zeros(n, dtype=bool)
    pinned[np.unique(topology.component[active], return_index=True)[1]] = True
    preconditioner = None
    if solver != "direct" and weight.min() < 1.0 / CG_MAX_CONTRAST:
        preconditioner = _strong_bond_preconditioner(n, li, lj, d, weight, cell)
    chi = _solve_grounded(laplacian, rhs, pinned, preconditioner, solver)
    drop = d + chi[lj] - chi[li]  # (bonds, 3): voltage drop per unit field along each axis
    _check_solution(n, li, lj, weight, d, drop)
    sigma = np.einsum("b,bk,bl->kl", g, drop, drop) / abs(np.linalg.det(cell))
    # current flows only along the windings: project out the round-off elsewhere
    span = topology.winding_cells.astype(float) @ cell
    u, singular, _ = np.linalg.svd(span.T, full_matrices=False)
    basis = u[:, singular > 1e-9 * singular.max()]
    projector = basis @ basis.T
    sigma = projector @ (0.5 * (sigma + sigma.T)) @ projector
    return sigma, topology.max_dimensionality


def effective_conductivity(
    n_sites: int,
    bond_i: np.ndarray,
    bond_j: np.ndarray,
    bond_shift_A: np.ndarray,
    conductances: np.ndarray,
    cell_matrix_A: np.ndarray,
    solver: Literal["auto", "direct", "cg"] = "auto",
) -> np.ndarray:
    """Effective conductivity tensor of a periodic resistor network.

    A uniform field E (voltage per A) is applied to the periodic network. The potential is
    -(E.r + chi) with chi periodic, so bond b (site i to site j, bond vector d_b) carries the
    current I_b = g_b (E.d_b + chi_j - chi_i) from i to j. Kirchhoff's current law at every
    site is the graph-Laplacian system

        L chi = b(E),   L = sum_b g_b (e_i - e_j)(e_i - e_j)^T,
        b_i(E) = sum_{b: i_b = i} g_b E.d_b - sum_{b: j_b = i} g_b E.d_b,

    singular with a constant per connected component: one site per component is grounded,
    and components that do not wind around the cell (finite clusters, isolated sites) carry
    no current and are left out. The mean current density is J = (1/V) sum_b I_b d_b =
    sigma_eff E with

        sigma_eff = (1/V) sum_b g_b (d_b + dchi_b)(d_b + dchi_b)^T,   dchi_b = chi_j - chi_i

    (one corrector per axis; the symmetric energy form, equal to (1/V) sum g (d + dchi) d^T
    at the solution, and second-order accurate in the solver's error). It is projected onto
    the span of the windings (no current can flow across them).

    Parameters
    ----------
    n_sites
        Number of sites in the cell.
    bond_i, bond_j
        Sites joined by each bond, shape (m,).
    bond_shift_A
        Bond vectors r_j + image - r_i (Cartesian), shape (m, 3), A.
    conductances
        Bond conductances g_b >= 0 in any unit [g]; zero removes the bond.
    cell_matrix_A
        Lattice vectors of the periodic cell as rows, A; V = |det|.
    solver
        ``cg``: conjugate gradients on the Jacobi-scaled system to a relative residual of
        1e-12; when g spans more than ``CG_MAX_CONTRAST`` (1e7) they are preconditioned by
        the exact sparse factor of the strong bonds (within ``STRONG_BOND_WINDOW`` e-folds
        below the critical-path conductance) plus the diagonal of the others. ``direct``:
        sparse LU with one refinement step (its fill-in grows fast: 0.4 s for 8000 sites,
        6 s for 27000). ``auto`` (default): CG, then sparse LU if CG has not converged in
        ``AUTO_CG_ITERATIONS`` and the system is at most ``DIRECT_SOLVER_MAX_NODES``.
        Both agree to 1e-14 for g spanning up to 25 decades (tested); beyond double
        precision's reach (about 30 decades) a failed solve raises ArithmeticError (see
        :func:`_check_solution`), never a wrong tensor.

    Returns
    -------
    np.ndarray
        sigma_eff, shape (3, 3), in [g]/A (J in [g] V / A^2 per E in V/A): a simple-cubic
        network of spacing a and bond conductance g gives g/a times the identity.
    """
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"unknown solver {solver!r}")
    i, j, d = _as_bonds(n_sites, bond_i, bond_j, bond_shift_A)
    g = np.asarray(conductances, dtype=float).ravel()
    if len(g) != len(i):
        raise ValueError("one conductance per bond is needed")
    if np.any(~np.isfinite(g)) or np.any(g < 0):
        raise ValueError("conductances must be finite and non-negative")
    sigma, _ = _conductivity(n_sites, i, j, d, g, np.asarray(cell_matrix_A, float), solver)
    return sigma


def polycrystal_conductivity(
    sigma: np.ndarray, average: Literal["harmonic", "geometric", "bruggeman", "arithmetic"]
) -> float:
    """Polycrystal average of a conductivity tensor from its principal values.

    ``harmonic`` (3 / sum 1/sigma_i, zero unless the network conducts along all three
    directions), ``arithmetic`` (tr/3), ``geometric`` or ``bruggeman``
    (iondrag.screening.conductivity.POLYCRYSTAL_AVERAGES); same unit as ``sigma``.
    """
    principal = np.clip(np.linalg.eigvalsh(0.5 * (sigma + sigma.T)), 0.0, None)
    return POLYCRYSTAL_AVERAGES[average](principal)


def _per_site_or_primitive(values: np.ndarray, full: int, primitive: np.ndarray, name: str):
    array = np.asarray(values, dtype=float).ravel()
    if len(array) == full:
        return array
    if len(primitive) and len(array) == primitive.max() + 1:
        return array[primitive]
    raise ValueError(f"{name}: expected one value per primitive entry or per supercell entry")


@dataclass(frozen=True)
class RandomNetworkConductivity:
    """Conductivity of a random site-blocked network, over draws and for the unblocked one.

    Conductivities are sigma in 1/A for bond conductances g = exp(-E_b / k_B T)
    (dimensionless: the attempt-frequency prefactor is the caller's), averaged over a
    polycrystal from the principal values (``polycrystal_average``).

    Attributes
    ----------
    log10_sigma_draws
        log10 sigma of each draw; -inf where the draw does not conduct (sigma = 0).
    dimensionality_draws
        Percolation dimensionality (0-3) of each draw's open network.
    log10_sigma_mean, log10_sigma_std
        Mean and sample standard deviation (ddof = 1) of log10 sigma over the draws that
        conduct. The mean is -inf when none conducts; the standard deviation is nan with
        fewer than two conducting draws. Never computed on -inf values.
    percolating_fraction
        Fraction of draws with a cluster that wraps around the supercell (dimensionality
        >= 1).
    conducting_fraction
        Fraction of draws whose polycrystal sigma is > 0 (with ``harmonic``, those that
        percolate in three dimensions).
    mean_tensor
        Mean of the draws' tensors (non-conducting draws count as zero), 1/A.
    log10_sigma_unblocked, dimensionality_unblocked, unblocked_tensor
        The same for the reference network with no site blocked.
    polycrystal_average, temperature_K, n_draws, seed
        The settings.
    """

    log10_sigma_draws: np.ndarray
    dimensionality_draws: np.ndarray
    log10_sigma_mean: float
    log10_sigma_std: float
    percolating_fraction: float
    conducting_fraction: float
    mean_tensor: np.ndarray
    log10_sigma_unblocked: float
    dimensionality_unblocked: int
    unblocked_tensor: np.ndarray
    polycrystal_average: str
    temperature_K: float
    n_draws: int
    seed: int

    @property
    def log10_ratio_to_unblocked(self) -> float:
        """Mean log10(sigma_random / sigma_unblocked) over the conducting draws.

        -inf when no draw conducts, nan when the unblocked network does not conduct.
        """
        if not np.isfinite(self.log10_sigma_unblocked):
            return float("nan")
        return self.log10_sigma_mean - self.log10_sigma_unblocked


def random_network_conductivity(
    network: PeriodicNetwork,
    bond_barrier_eV: np.ndarray,
    site_blocking_probability: np.ndarray,
    temperature_K: float,
    n_draws: int = 8,
    seed: int = 0,
    polycrystal_average: Literal["harmonic", "geometric", "bruggeman", "arithmetic"] = "harmonic",
) -> RandomNetworkConductivity:
    """Conductivity of a periodic hopping network whose sites are blocked at random.

    In each draw every site i is blocked (taken by a framework ion) independently with
    probability p_i; a blocked site loses all its bonds. Each open bond conducts with
    g_b = exp(-E_b / k_B T). The draws use ``numpy.random.default_rng(seed)`` (one uniform
    number per site and draw), so the result is a deterministic function of ``seed``.

    Parameters
    ----------
    network
        The supercell network (:func:`replicate_network`).
    bond_barrier_eV
        Activation energy E_b of each hop, eV (+inf: no hop); one per primitive hop
        (mapped by ``network.primitive_bond``) or one per supercell bond.
    site_blocking_probability
        p_i in [0, 1], one per primitive site (``network.primitive_site``) or per site.
    temperature_K
        Temperature, K.
    n_draws
        Number of random configurations.
    seed
        Seed of the generator.
    polycrystal_average
        Average of the principal values (:func:`polycrystal_conductivity`).

    Returns
    -------
    RandomNetworkConductivity
    """
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")
    if n_draws < 1:
        raise ValueError("n_draws must be at least 1")
    if polycrystal_average not in POLYCRYSTAL_AVERAGES:
        raise ValueError(f"unknown polycrystal average {polycrystal_average!r}")
    i, j, d = _as_bonds(network.n_sites, network.bond_i, network.bond_j, network.bond_shift_A)
    cell = np.asarray(network.cell_matrix_A, dtype=float)
    barrier = _per_site_or_primitive(
        bond_barrier_eV, network.n_bonds, network.primitive_bond, "bond_barrier_eV"
    )
    blocking = _per_site_or_primitive(
        site_blocking_probability,
        network.n_sites,
        network.primitive_site,
        "site_blocking_probability",
    )
    if np.any(np.isnan(barrier)) or np.any(barrier == -np.inf):
        raise ValueError("barriers must be finite or +inf")
    if np.any(~(blocking >= 0) | ~(blocking <= 1)):
        raise ValueError("blocking probabilities must lie in [0, 1]")
    kt = thermal_energy_eV(temperature_K)
    finite = np.isfinite(barrier)
    reference = float(barrier[finite].min()) if np.any(finite) else 0.0
    g = np.zeros(len(barrier))
    g[finite] = np.exp(-(barrier[finite] - reference) / kt)  # <= 1, no overflow
    offset = -reference / (kt * np.log(10.0))

    def log10_average(sigma: np.ndarray) -> float:
        value = polycrystal_conductivity(sigma, polycrystal_average)
        return float(np.log10(value)) + offset if value > 0 else float("-inf")

    unblocked, dim_unblocked = _conductivity(network.n_sites, i, j, d, g, cell, "auto")
    blocked_draws = np.random.default_rng(seed).random((n_draws, network.n_sites)) < blocking
    logs = np.empty(n_draws)
    dims = np.empty(n_draws, dtype=np.int64)
    total = np.zeros((3, 3))
    for draw, blocked in enumerate(blocked_draws):
        g_open = np.where(blocked[i] | blocked[j], 0.0, g)
        sigma, dims[draw] = _conductivity(network.n_sites, i, j, d, g_open, cell, "auto")
        logs[draw] = log10_average(sigma)
        total += sigma
    conducting = logs[np.isfinite(logs)]
    return RandomNetworkConductivity(
        log10_sigma_draws=logs,
        dimensionality_draws=dims,
        log10_sigma_mean=float(conducting.mean()) if len(conducting) else float("-inf"),
        log10_sigma_std=float(conducting.std(ddof=1)) if len(conducting) > 1 else float("nan"),
        percolating_fraction=float(np.mean(dims >= 1)),
        conducting_fraction=len(conducting) / n_draws,
        mean_tensor=total / n_draws * 10.0**offset,
        log10_sigma_unblocked=log10_average(unblocked),
        dimensionality_unblocked=dim_unblocked,
        unblocked_tensor=unblocked * 10.0**offset,
        polycrystal_average=polycrystal_average,
        temperature_K=float(temperature_K),
        n_draws=int(n_draws),
        seed=int(seed),
    )


def critical_path_barrier_eV(
    n_sites: int,
    bond_i: np.ndarray,
    bond_j: np.ndarray,
    bond_shift_A: np.ndarray,
    barriers_eV: np.ndarray,
    cell_matrix_A: np.ndarray,
    dimension: int = 1,
    tolerance_eV: float = 0.0,
) -> float:
    """Critical barrier E_c of Ambegaokar, Halperin and Langer's critical path analysis.

    The smallest E_c such that the bonds with E_b <= E_c form a cluster that wraps around
    the periodic cell along ``dimension`` independent lattice translations
    (:func:`network_topology`). E_c is one of the barriers, found by bisection over their
    sorted values. In the AHL picture sigma ~ exp(-E_c / k_B T) for a wide barrier
    distribution.

    Parameters
    ----------
    n_sites, bond_i, bond_j, bond_shift_A, cell_matrix_A
        The periodic network (see :func:`effective_conductivity`).
    barriers_eV
        E_b of each bond, eV (+inf: never open).
    dimension
        1: spanning in some direction (the usual finite-size estimator of the threshold);
        3: the network conducts along all three directions.
    tolerance_eV
        0 (default): E_c exactly. Otherwise the bisection halves the energy bracket and
        stops when it is narrower than this; the result is then its upper end, a barrier
        at which the bonds do percolate, at most ``tolerance_eV`` above E_c.

    Returns
    -------
    float
        E_c in eV; +inf when even all bonds do not percolate in ``dimension`` dimensions.
    """
    if dimension not in (1, 2, 3):
        raise ValueError(f"dimension must be 1, 2 or 3, got {dimension}")
    i, j, d = _as_bonds(n_sites, bond_i, bond_j, bond_shift_A)
    barrier = np.asarray(barriers_eV, dtype=float).ravel()
    if len(barrier) != len(i) or np.any(np.isnan(barrier)):
        raise ValueError("one barrier (not nan) per bond is needed")
    levels = np.unique(barrier[np.isfinite(barrier)])

    def percolates(index: int) -> bool:
        keep = barrier <= levels[index]
        topology = network_topology(n_sites, i[keep], j[keep], d[keep], cell_matrix_A)
        return topology.max_dimensionality >= dimension

    if len(levels) == 0 or not percolates(len(levels) - 1):
        return float("inf")
    low, high = -1, len(levels) - 1  # levels[low] does not percolate, levels[high] does
    while high - low > 1:
        if low >= 0 and tolerance_eV > 0:
            if levels[high] - levels[low] <= tolerance_eV:
                break
            halfway = 0.5 * (levels[low] + levels[high])
            middle = int(np.clip(np.searchsorted(levels, halfway), low + 1, high - 1))
        else:
            middle = (low + high) // 2
        if percolates(middle):
            high = middle
        else:
            low = middle
    return float(levels[high])
