"""Mobility and diffusion from the potential and the drag (theory.md section 3).

* :func:`path_mobility`: the generalised Lifson-Jackson formula along one period of a
  percolating path,

      mu = |T|^2 / [ int_0^L e^{-U/kT} ds  *  int_0^L gamma_par(s) e^{+U/kT} ds ],

  with |T| the lattice translation of the period (for a straight path |T| = L; a tortuous
  channel moves the ion |T| along the crystal per period, hence |T|^2 and not L^2).
* :func:`homogenised_diffusion`: the effective 3D diffusion tensor of the Smoluchowski
  equation with D(r) = k_B T gamma(r)^-1, by periodic homogenisation with linear finite
  elements (six tetrahedra per grid voxel, Kuhn triangulation) restricted to the region
  that carries weight, with the series and parallel bounds.
* :func:`kramers_factor`: the inertial correction of the overdamped rate.

Units: lengths A at the interface (converted to m inside), energies eV, gamma kg/s,
mobility s/kg, diffusion m^2/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import cg, splu

from iondrag.screening.memory import direct_solver_allowance_MB, direct_solver_MB
from iondrag.screening.units import (
    AMU_KG,
    ANGSTROM_M,
    EV_PER_A2_TO_N_PER_M,
    HBAR_EV_S,
    KB_EV_PER_K,
    KB_J_PER_K,
    thermal_energy_eV,
)

#: Stands for an infinite Boltzmann temperature (every factor exp(-E/k_B T*) = 1), K.
ISOKINETIC_TEMPERATURE_K: float = 1e12

#: Conjugate-gradient iteration budget of the cell problem (tens are usually enough).
CG_MAX_ITERATIONS: int = 5_000

#: Relative residual at which conjugate gradients stop on the (diagonally scaled) cell
#: problem. The corrector's error enters D_eff only quadratically (D_eff is the minimum of an
#: energy), so D_eff is exact to far better than this; two solves of the same problem agree
#: to within it.
CG_RTOL: float = 1e-10

#: Sparse LU (fallback when CG does not converge) only up to this many unknowns (fill-in).
DIRECT_SOLVER_MAX_NODES: int = 20_000


def _periodic_trapezoid(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Trapezoid sums over a closed loop: 0.5 (f_i + f_{i+1}) ds_i, summed."""
    return 0.5 * (values + np.roll(values, -1)) * segments


@dataclass(frozen=True)
class PathMobility:
    """Result of the path formula.

    Attributes
    ----------
    log10_mobility_s_per_kg
        log10 of mu (kept in log form: mu underflows for high barriers).
    mobility_s_per_kg, diffusion_m2_per_s
        mu and D = k_B T mu (0.0 when below the float range).
    barrier_eV
        max U - min U along the path.
    saddle_index
        Index of the highest point.
    """

    log10_mobility_s_per_kg: float
    barrier_eV: float
    saddle_index: int
    temperature_K: float

    @property
    def mobility_s_per_kg(self) -> float:
        """Mobility mu, s/kg (m/(N s))."""
        return float(10.0**self.log10_mobility_s_per_kg)

    @property
    def diffusion_m2_per_s(self) -> float:
        """D = k_B T mu, m^2/s."""
        return KB_J_PER_K * self.temperature_K * self.mobility_s_per_kg

    @property
    def log10_diffusion_m2_per_s(self) -> float:
        """log10 D."""
        return self.log10_mobility_s_per_kg + float(np.log10(KB_J_PER_K * self.temperature_K))


def path_mobility(
    segments_A: np.ndarray,
    energy_eV: np.ndarray,
    gamma_parallel_kg_per_s: np.ndarray,
    translation_length_A: float,
    temperature_K: float,
) -> PathMobility:
    """Generalised Lifson-Jackson mobility along one period of a closed path.

    Parameters
    ----------
    segments_A
        Length of segment i (from point i to point i+1, the last closing the loop), A.
    energy_eV
        U at the points, eV.
    gamma_parallel_kg_per_s
        t . gamma . t at the points, kg/s (positive).
    translation_length_A
        |T|, the displacement along the crystal per period, A.
    temperature_K
        Temperature, K.

    Returns
    -------
    PathMobility
    """
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")
    gamma = np.asarray(gamma_parallel_kg_per_s, dtype=float)
    if np.any(~np.isfinite(gamma)) or np.any(gamma <= 0):
        raise ValueError("gamma_parallel must be finite and positive along the path")
    kt = thermal_energy_eV(temperature_K)
    u = np.asarray(energy_eV, dtype=float)
    u_min, u_max = float(u.min()), float(u.max())
    ds = np.asarray(segments_A, dtype=float) * ANGSTROM_M
    # both integrals with their exponent shifted to avoid overflow; shifts restored in logs
    z = _periodic_trapezoid(np.exp(-(u - u_min) / kt), ds).sum()
    g = _periodic_trapezoid(gamma * np.exp((u - u_max) / kt), ds).sum()
    log_mu = (
        2.0 * np.log(translation_length_A * ANGSTROM_M)
        - np.log(z)
        - np.log(g)
        - (u_max - u_min) / kt
    )
    return PathMobility(
        log10_mobility_s_per_kg=float(log_mu / np.log(10.0)),
        barrier_eV=u_max - u_min,
        saddle_index=int(np.argmax(u)),
        temperature_K=float(temperature_K),
    )


def occupied_site_level_eV(
    site_energies_eV: np.ndarray,
    occupancies: np.ndarray,
    temperature_K: float,
    highest_eV: float,
) -> float | None:
    """Energy level from which the ions on their crystallographic sites start their hops.

    Each mobile ion on site i (occupancy n_i, energy U_i) crosses the channel's saddle
    E_s at the rate exp(-(E_s - U_i) / k_B T), so the ions together cross as N exp(-(E_s -
    E_occ) / k_B T) with

        E_occ = k_B T ln( sum_i n_i exp(U_i / k_B T) / sum_i n_i ),

    the occupancy-weighted soft maximum of the site energies. Sites above ``highest_eV``
    (the channel's saddle; also sites a framework ion shares, where the mean-field U is
    meaningless) are left out.

    Parameters
    ----------
    site_energies_eV
        U at the mobile ion's crystallographic sites, eV.
    occupancies
        Their occupancies (dimensionless, > 0).
    temperature_K
        Temperature, K.
    highest_eV
        Sites with U above this level are ignored, eV.

    Returns
    -------
    float or None
        E_occ in eV, or None when no site qualifies.
    """
    u = np.asarray(site_energies_eV, dtype=float)
    n = np.asarray(occupancies, dtype=float)
    keep = np.isfinite(u) & (u <= highest_eV) & (n > 0)
    if not np.any(keep):
        return None
    kt = thermal_energy_eV(temperature_K)
    u, n = u[keep], n[keep]
    top = float(u.max())
    return top + kt * float(np.log(np.sum(n * np.exp((u - top) / kt)) / n.sum()))


def kramers_factor(
    gamma_parallel_saddle_kg_per_s: float, curvature_saddle_eV_per_A2: float, mass_amu: float
) -> tuple[float, float, float]:
    """Inertial correction of the overdamped rate at a saddle (theory.md section 3).

    Kramers' transmission factor is k = sqrt(1 + (g/2)^2) - g/2 with g = gamma/(M omega_b),
    omega_b = sqrt(|U''|/M); the overdamped (Smoluchowski) rate is the transition-state
    rate times 1/g, so the overdamped mobility is multiplied by g k (-> 1 at high friction,
    -> g at low friction: the rate cannot exceed the transition-state value).

    Parameters
    ----------
    gamma_parallel_saddle_kg_per_s
        Friction along the path at the saddle, kg/s.
    curvature_saddle_eV_per_A2
        U'' along the path at the saddle (negative at a true saddle), eV/A^2.
    mass_amu
        Mass of the mobile ion, amu.

    Returns
    -------
    factor, g, omega_b_rad_per_s
        Multiplier of the overdamped mobility, reduced friction g, barrier frequency.
    """
    mass = mass_amu * AMU_KG
    curvature = abs(curvature_saddle_eV_per_A2) * EV_PER_A2_TO_N_PER_M
    omega_b = float(np.sqrt(curvature / mass))
    if omega_b == 0:
        return 1.0, float("inf"), 0.0
    g = gamma_parallel_saddle_kg_per_s / (mass * omega_b)
    transmission = np.sqrt(1.0 + 0.25 * g * g) - 0.5 * g
    return float(g * transmission), float(g), omega_b


def site_phonon_energy_eV(site_hessian_eV_per_A2: np.ndarray, mass_amu: float) -> float:
    """Hbar omega of the mobile ion vibrating in its site, eV.

    omega = sqrt(k / M) with k the mean of the positive eigenvalues of the Hessian of U at
    the site (eV/A^2, converted to N/m) and M the ion's mass: the phonon scale of the ion
    itself, e.g. 0.04 eV for k = 3 eV/A^2 and Li.
    """
    values = np.linalg.eigvalsh(0.5 * (site_hessian_eV_per_A2 + site_hessian_eV_per_A2.T))
    positive = values[values > 0]
    if len(positive) == 0:
        return 0.0
    omega = np.sqrt(float(np.mean(positive)) * EV_PER_A2_TO_N_PER_M / (mass_amu * AMU_KG))
    return float(HBAR_EV_S * omega)


def meyer_neldel_temperature_K(temperature_K: float, meyer_neldel_energy_eV: float) -> float:
    """Temperature of the Boltzmann factors under Meyer-Neldel compensation, K.

    The compensation rule multiplies every activated rate exp(-E / k_B T) by exp(E / E_MN):
    an activated process of energy E needs about E / E_MN phonons of energy E_MN, and the
    many ways of combining them give it an entropy E / E_MN (Yelon and Movaghar, Phys. Rev.
    Lett. 65 (1990) 618; for Li conductors Muy et al., Chem. Mater. 30 (2018) 5573). That
    is every Boltzmann factor taken at T* with 1/(k_B T*) = 1/(k_B T) - 1/E_MN, while the
    measured activation energy d ln(sigma)/d(-1/k_B T) stays E. At and above the
    isokinetic temperature E_MN / k_B all barriers compensate completely (T* infinite,
    returned as 1e12 K: every Boltzmann factor one); the rule is not extrapolated beyond.
    """
    if meyer_neldel_energy_eV <= 0:
        return float(temperature_K)
    inverse = 1.0 / thermal_energy_eV(temperature_K) - 1.0 / meyer_neldel_energy_eV
    if inverse <= 0:
        return ISOKINETIC_TEMPERATURE_K
    return float(min(1.0 / (inverse * KB_EV_PER_K), ISOKINETIC_TEMPERATURE_K))


def damping_regime(reduced_friction: float) -> str:
    """Name the dynamical regime from g = gamma_par / (M omega_b) at the saddle.

    ``overdamped`` for g >= 2 (the Kramers factor g k is above 0.83), ``intermediate`` for
    0.1 <= g < 2, ``underdamped`` below (there the energy-diffusion regime, where the rate
    is proportional to gamma, limits transport and Kramers' spatial-diffusion factor is an
    upper bound).
    """
    if reduced_friction >= 2.0:
        return "overdamped"
    if reduced_friction >= 0.1:
        return "intermediate"
    return "underdamped"


@dataclass(frozen=True)
class HomogenisedDiffusion:
    """Effective diffusion tensor from periodic homogenisation.

    Attributes
    ----------
    diffusion_m2_per_s
        D_eff (3, 3) for ions in the percolating region, m^2/s.
    parallel_bound_m2_per_s
        (1/Z) int w D over the region (upper bound, Voigt-like), m^2/s.
    series_bound_m2_per_s
        [ (1/Z) int w ... ]: the Reuss-like lower bound (Z <(wD)^-1>)^-1 over the whole cell;
        zero when some part of the cell is inaccessible, m^2/s.
    log_partition_region
        ln of Z over the region (A^3, energies from ``reference_eV``).
    log_partition_cell
        ln of Z over the whole grid (same units and reference).
    n_nodes, n_couplings
        Size of the finite-element problem.
    unsolved_reason
        Why the cell problem was not solved (D_eff is then NaN; the bounds and partition
        functions stay valid), or None when it was.
    """

    diffusion_m2_per_s: np.ndarray
    parallel_bound_m2_per_s: np.ndarray
    series_bound_m2_per_s: np.ndarray
    log_partition_region: float
    log_partition_cell: float
    n_nodes: int
    n_couplings: int
    unsolved_reason: str | None = None

    @property
    def solved(self) -> bool:
        """Whether D_eff was computed (False: the solvers failed within their budgets)."""
        return self.unsolved_reason is None

    @property
    def region_weight_fraction(self) -> float:
        """Boltzmann fraction of the cell's partition function inside the region."""
        return float(np.exp(self.log_partition_region - self.log_partition_cell))


def _bernoulli(x: np.ndarray) -> np.ndarray:
    """B(x) = x / (e^x - 1), with B(0) = 1, stable for large |x|."""
    out = np.ones_like(x)
    small = np.abs(x) < 1e-8
    big = ~small
    out[big] = x[big] / np.expm1(x[big])
    out[small] = 1.0 - 0.5 * x[small]
    return out


def selling_decomposition(
    metric: np.ndarray, max_iterations: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Selling's decomposition of symmetric positive definite 3x3 tensors.

    Every SPD M can be written M = sum_{i<j} rho_ij e_ij e_ij^T with rho_ij >= 0 and integer
    vectors e_ij (Selling 1874; Conway and Sloane 1992): reduce a superbase b_0..b_3
    (b_0 + b_1 + b_2 + b_3 = 0) until b_i^T M b_j <= 0 for all i != j, then
    rho_ij = -b_i^T M b_j and e_ij = b_k x b_l with {k, l} the complement of {i, j}. It gives
    a finite-volume stencil with non-negative weights for anisotropic diffusion on a
    lattice (Fehrenbach and Mirebeau, J. Math. Imaging Vis. 49 (2014) 123).

    Parameters
    ----------
    metric
        Tensors, shape (N, 3, 3), in lattice-index coordinates.

    Returns
    -------
    weights, offsets
        Shapes (N, 6) (non-negative) and (N, 6, 3) (integers).
    """
    n = len(metric)
    base = np.zeros((n, 4, 3), dtype=np.int64)
    base[:, 0] = [1, 0, 0]
    base[:, 1] = [0, 1, 0]
    base[:, 2] = [0, 0, 1]
    base[:, 3] = [-1, -1, -1]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    active = np.arange(n)  # nodes not yet reduced: each pass works on those only
    for _ in range(max_iterations):
        sub_base, sub_metric = base[active], metric[active]
        products = np.stack(
            [
                np.einsum("ni,nij,nj->n", sub_base[:, i], sub_metric, sub_base[:, j])
                for i, j in pairs
            ],
            axis=1,
        )
        scale = np.abs(products).max(axis=1, keepdims=True)
        positive = products > 1e-12 * scale
        still = positive.any(axis=1)
        active, positive = active[still], positive[still]
        if len(active) == 0:
            break
        choice = np.argmax(positive, axis=1)
        for pair_index, (i, j) in enumerate(pairs):
            rows = active[choice == pair_index]
            if len(rows) == 0:
                continue
            bi = base[rows, i].copy()
            for k in range(4):
                if k not in (i, j):
                    base[rows, k] += bi
            base[rows, i] = -bi
    else:
        # not reduced within the budget (extremely anisotropic or not positive definite):
        # keep those nodes' axis-aligned couplings only, a consistent stencil for the
        # diagonal part of M
        stuck = active
        base[stuck] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]]
        diagonal_only = np.zeros_like(metric[stuck])
        diagonal_only[:, np.arange(3), np.arange(3)] = metric[stuck][:, np.arange(3), np.arange(3)]
        metric = metric.copy()
        metric[stuck] = diagonal_only
    weights = np.empty((n, 6))
    offsets = np.empty((n, 6, 3), dtype=np.int64)
    for index, (i, j) in enumerate(pairs):
        k, m_other = (m for m in range(4) if m not in (i, j))
        weights[:, index] = -np.einsum("ni,nij,nj->n", base[:, i], metric, base[:, j])
        offsets[:, index] = np.cross(base[:, k], base[:, m_other])
    return np.maximum(weights, 0.0), offsets


class CellProblemNotSolved(ArithmeticError):
    """The cell problem defeated both solvers within their budgets (message: why)."""


def _solve_cell_problem(matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve K chi = rhs for the periodic corrector (K singular: constants per component).

    One node per connected component is pinned to zero; the rest is solved by conjugate
    gradients after a symmetric diagonal scaling (w spans many decades), with sparse LU as
    a fallback for small systems (at most ``DIRECT_SOLVER_MAX_NODES`` unknowns, within the
    memory budget). Raises :class:`CellProblemNotSolved`, saying why, when neither can.
    """
    n = matrix.shape[0]
    _, component = connected_components(matrix, directed=False)
    pinned = np.zeros(n, dtype=bool)
    pinned[np.unique(component, return_index=True)[1]] = True
    free = np.flatnonzero(~pinned)
    chi = np.zeros((n, rhs.shape[1]))
    if len(free) == 0:
        return chi
    reduced = matrix[free][:, free]
    scale = 1.0 / np.sqrt(np.maximum(reduced.diagonal(), 1e-300))
    scaled = reduced.multiply(scale[:, None]).multiply(scale[None, :]).tocsr()
    scaled_rhs = rhs[free] * scale[:, None]
    # after the diagonal scaling conjugate gradients usually converge in tens of iterations,
    # where sparse LU suffers fill-in on 3D stencils; on large low-symmetry cells (tens of
    # thousands of unknowns, Boltzmann weights spanning e^15) they can stall instead
    solution = np.zeros_like(scaled_rhs)
    residual = 0.0
    for k in range(rhs.shape[1]):
        if not np.any(scaled_rhs[:, k]):
            continue
        solution[:, k], info = cg(scaled, scaled_rhs[:, k], rtol=CG_RTOL, maxiter=CG_MAX_ITERATIONS)
        if info != 0:
            # the other columns go to the LU with this one, or are not solved at all: no
            # more conjugate gradients
            reached = np.linalg.norm(scaled_rhs[:, k] - scaled @ solution[:, k])
            residual = float(reached / np.linalg.norm(scaled_rhs[:, k]))
            break
    if residual > 0.0:
        stalled = (
            f"the homogenisation's conjugate gradients stalled at a relative residual of "
            f"{residual:.1e} (target {CG_RTOL:g}, {CG_MAX_ITERATIONS} iterations)"
        )
        if len(free) > DIRECT_SOLVER_MAX_NODES:
            raise CellProblemNotSolved(
                f"{stalled}; {len(free)} unknowns are too many for the sparse LU "
                f"({DIRECT_SOLVER_MAX_NODES})"
            )
        # the LU's fill-in grows as n^1.6 (1 GB at 20,000 unknowns): only within what the
        # memory budget leaves (iondrag.screening.memory)
        allowance = direct_solver_allowance_MB()
        needed = direct_solver_MB(len(free))
        if allowance is not None and needed > allowance:
            raise CellProblemNotSolved(
                f"{stalled}; the sparse LU on {len(free)} unknowns needs ~{needed:.0f} MB, "
                f"more than the memory budget leaves (~{max(allowance, 0.0):.0f} MB; "
                "IONDRAG_MEMORY_BUDGET_MB or --param memory_budget_MB raise it)"
            )
        solution = splu(scaled.tocsc(), permc_spec="COLAMD").solve(scaled_rhs)
    chi[free] = solution * scale[:, None]
    return chi


def homogenised_diffusion(
    energy_grid_eV: np.ndarray,
    step_matrix_A: np.ndarray,
    region_flat: np.ndarray,
    gamma_region_kg_per_s: np.ndarray,
    temperature_K: float,
) -> HomogenisedDiffusion:
    """Effective diffusion tensor of the Smoluchowski equation by periodic homogenisation.

    Solves, for each direction k, the cell problem div[ w D (e_k + grad chi_k) ] = 0 with
    periodic chi_k, w = exp(-U/k_B T), D = k_B T gamma^-1, and returns

        D_eff = (1/Z) int_region w D (1 + grad chi^T),   Z = int_region w.

    Discretisation: finite volumes on the grid. At each node the local tensor, written in
    grid-index coordinates M = S^-T D S^-1 (S: grid steps as rows), is split by Selling's
    decomposition into six non-negative couplings along integer grid offsets
    (:func:`selling_decomposition`); each node gives half of them to the edges (m, m + e) and
    (m - e, m). Every edge coupling is then exponentially fitted (Scharfetter-Gummel): it is
    multiplied by the exact harmonic mean of w along the edge for U linear on it,
    w_i B(u_j - u_i), B(x) = x/(e^x - 1), u = U/k_B T. The result is a weighted graph
    Laplacian (symmetric positive semidefinite, an M-matrix) for any anisotropic D and any
    cell shape, exact in 1D for piecewise-linear U, and consistent in 3D. Edges with an end
    outside the region are dropped (no flux through its boundary).

    Parameters
    ----------
    energy_grid_eV
        U on the periodic grid (n1, n2, n3), eV.
    step_matrix_A
        Grid steps as rows (a_i / n_i), A.
    region_flat
        Flat grid indices of the region (points that carry weight).
    gamma_region_kg_per_s
        Drag tensors at the region points (already regularised), shape (R, 3, 3), kg/s.
    temperature_K
        Temperature, K.

    Returns
    -------
    HomogenisedDiffusion
    """
    shape = np.array(energy_grid_eV.shape)
    kt = thermal_energy_eV(temperature_K)
    kt_joule = KB_J_PER_K * temperature_K
    flat_energy = energy_grid_eV.ravel()
    region_flat = np.asarray(region_flat, dtype=np.int64)
    n = len(region_flat)
    reference = float(flat_energy[region_flat].min())
    u = (flat_energy[region_flat] - reference) / kt  # >= 0
    weight = np.exp(-u)
    voxel_volume = abs(float(np.linalg.det(step_matrix_A)))  # A^3
    finite = np.isfinite(flat_energy)
    log_z_cell = float(np.log(np.exp(-(flat_energy[finite] - reference) / kt).sum() * voxel_volume))
    z_region = weight.sum() * voxel_volume
    log_z_region = float(np.log(z_region))
    gamma = np.asarray(gamma_region_kg_per_s, dtype=float)
    diffusion_nodes = kt_joule * np.linalg.inv(gamma)  # (R, 3, 3) m^2/s
    parallel = np.einsum("r,rij->ij", weight, diffusion_nodes) * voxel_volume / z_region

    steps_inverse = np.linalg.inv(step_matrix_A)
    metric = np.einsum("ia,rij,jb->rab", steps_inverse, diffusion_nodes, steps_inverse)
    couplings, offsets = selling_decomposition(metric)  # (R, 6), (R, 6, 3)
    del metric
    local = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    local[region_flat] = np.arange(n)
    index = np.stack(np.unravel_index(region_flat, tuple(shape)), axis=-1)
    heads, tails, values, vectors = [], [], [], []
    for sign in (1, -1):
        for k in range(6):
            offset = sign * offsets[:, k]
            target = local[np.ravel_multi_index(((index + offset) % shape).T, tuple(shape))]
            keep = (target >= 0) & (couplings[:, k] > 0)
            head, tail = np.flatnonzero(keep), target[keep]
            fitted = weight[head] * _bernoulli(u[tail] - u[head])  # harmonic mean of w on edge
            heads.append(head)
            tails.append(tail)
            values.append(0.5 * voxel_volume * couplings[keep, k] * fitted)
            vectors.append(offset[keep] @ step_matrix_A)  # tail - head, A
    del local, index, couplings, offsets, target, keep, fitted, offset, head, tail
    # int32 node indices (what the sparse matrix would convert them to anyway): the
    # largest arrays of the solve are per edge, and the lists go as soon as they are joined
    index_type = np.int32 if n < np.iinfo(np.int32).max else np.int64
    head = np.concatenate(heads).astype(index_type)
    del heads
    tail = np.concatenate(tails).astype(index_type)
    del tails
    coupling = np.concatenate(values)
    del values
    vector = np.concatenate(vectors)
    del vectors
    if len(coupling) == 0:
        zero = np.zeros((3, 3))
        return HomogenisedDiffusion(zero, parallel, zero, log_z_region, log_z_cell, n, 0)
    # a(phi, psi) = sum_edges c (phi_t - phi_h)(psi_t - psi_h) with phi = x_k + chi_k
    matrix = coo_matrix(
        (
            np.concatenate([coupling, coupling, -coupling, -coupling]),
            (np.concatenate([head, tail, head, tail]), np.concatenate([head, tail, tail, head])),
        ),
        shape=(n, n),
    ).tocsr()
    rhs = np.zeros((n, 3))
    for k in range(3):
        drive = coupling * vector[:, k]
        rhs[:, k] = np.bincount(head, weights=drive, minlength=n) - np.bincount(
            tail, weights=drive, minlength=n
        )
    n_couplings = len(coupling)
    if n == len(flat_energy) and np.all(finite):
        inverse_mean = np.einsum("r,rij->ij", 1.0 / weight, np.linalg.inv(diffusion_nodes))
        series = np.linalg.inv(inverse_mean * weight.sum() / n**2)
    else:
        series = np.zeros((3, 3))
    reason: str | None = None
    try:
        chi = _solve_cell_problem(matrix, rhs)
    except CellProblemNotSolved as unsolved:
        # the tensor is a second estimate: a cell problem the solvers cannot do within their
        # budgets leaves D_eff unknown (NaN) and says why, it does not fail the candidate
        effective, reason = np.full((3, 3), np.nan), str(unsolved)
    else:
        increments = vector + chi[tail] - chi[head]  # (edges, 3) A
        effective = np.einsum("e,ek,el->kl", coupling, increments, increments) / z_region
        effective = 0.5 * (effective + effective.T)
    return HomogenisedDiffusion(
        diffusion_m2_per_s=effective,
        parallel_bound_m2_per_s=parallel,
        series_bound_m2_per_s=series,
        log_partition_region=log_z_region,
        log_partition_cell=log_z_cell,
        n_nodes=n,
        n_couplings=n_couplings,
        unsolved_reason=reason,
    )
