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
from itertools import permutations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from screening.units import AMU_KG, ANGSTROM_M, EV_PER_A2_TO_N_PER_M, KB_J_PER_K, thermal_energy_eV


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


# The six tetrahedra of a voxel (Kuhn/Freudenthal triangulation): each runs from corner
# 000 to 111 adding one axis at a time. Adjacent voxels share faces consistently.
_KUHN_TETS = np.array(
    [
        [[0, 0, 0], np.eye(3, dtype=int)[p[0]], np.eye(3, dtype=int)[p[0]] + np.eye(3, dtype=int)[p[1]], [1, 1, 1]]
        for p in permutations(range(3))
    ],
    dtype=np.int64,
)


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
    n_nodes, n_elements
        Size of the finite-element problem.
    """

    diffusion_m2_per_s: np.ndarray
    parallel_bound_m2_per_s: np.ndarray
    series_bound_m2_per_s: np.ndarray
    log_partition_region: float
    log_partition_cell: float
    n_nodes: int
    n_elements: int

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

    Discretisation: linear finite elements on the six tetrahedra of every voxel whose
    corners all lie in the region (outside it there is no flux), with edge-averaged
    exponential fitting (Xu and Zikatanov, Math. Comp. 68 (1999) 1429): each edge coupling
    of the element stiffness of D is multiplied by the exact harmonic mean of w along the
    edge for U linear on it, w_i B(u_j - u_i) with B(x) = x/(e^x - 1), u = U/k_B T. On a
    0.2 A grid U changes by several k_B T between neighbours; plain vertex averages of w
    would overestimate the flux through saddles by large factors, while the fitted scheme is
    exact in 1D for piecewise-linear U. D on an element is k_B T times the inverse of the
    vertex-averaged gamma (friction adds in series).

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
    u = (flat_energy[region_flat] - float(flat_energy[region_flat].min())) / kt  # >= 0
    weight = np.exp(-u)
    voxel_volume = abs(float(np.linalg.det(step_matrix_A)))  # A^3
    finite = np.isfinite(flat_energy)
    reference = float(flat_energy[region_flat].min())
    log_z_cell = float(np.log(np.exp(-(flat_energy[finite] - reference) / kt).sum() * voxel_volume))
    z_region = weight.sum() * voxel_volume
    log_z_region = float(np.log(z_region))
    gamma = np.asarray(gamma_region_kg_per_s, dtype=float)
    diffusion_nodes = kt_joule * np.linalg.inv(gamma)

    local = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    local[region_flat] = np.arange(n)
    corner_index = np.stack(np.unravel_index(region_flat, tuple(shape)), axis=-1)
    heads, tails, couplings, vectors = [], [], [], []
    a_bar = np.zeros((3, 3))
    n_elements = 0
    for tet in _KUHN_TETS:
        vertices = tet @ step_matrix_A  # (4, 3) A
        edges = vertices[1:] - vertices[0]
        volume = abs(float(np.linalg.det(edges))) / 6.0
        gradient = np.linalg.inv(edges) @ np.array(
            [[-1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 1.0]]
        )  # (3, 4): grad of the barycentric coordinates, 1/A
        node_ids = np.empty((n, 4), dtype=np.int64)
        for a in range(4):
            moved = (corner_index + tet[a]) % shape
            node_ids[:, a] = local[np.ravel_multi_index(moved.T, tuple(shape))]
        ids = node_ids[np.all(node_ids >= 0, axis=1)]
        if len(ids) == 0:
            continue
        n_elements += len(ids)
        element_d = kt_joule * np.linalg.inv(gamma[ids].mean(axis=1))  # (E, 3, 3) m^2/s
        stiffness = volume * np.einsum("ia,eij,jb->eab", gradient, element_d, gradient)
        a_bar += volume * np.einsum("ea,eaij->ij", weight[ids], diffusion_nodes[ids]) / 4.0
        for a in range(4):
            for b in range(a + 1, 4):
                i, j = ids[:, a], ids[:, b]
                fitted = weight[i] * _bernoulli(u[j] - u[i])  # harmonic mean of w on the edge
                heads.append(i)
                tails.append(j)
                couplings.append(-stiffness[:, a, b] * fitted)
                vectors.append(np.broadcast_to(vertices[b] - vertices[a], (len(ids), 3)))
    if n_elements == 0:
        zero = np.zeros((3, 3))
        return HomogenisedDiffusion(zero, zero, zero, log_z_region, log_z_cell, n, 0)
    head = np.concatenate(heads)
    tail = np.concatenate(tails)
    coupling = np.concatenate(couplings)
    vector = np.concatenate(vectors)  # edge vector tail - head, A
    # energy a(phi, psi) = sum_edges c (phi_t - phi_h)(psi_t - psi_h), phi = x_k + chi_k
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
    # chi is defined up to a constant on each connected component: pin one node of each
    _, component = connected_components(matrix, directed=False)
    pinned = np.zeros(n, dtype=bool)
    pinned[np.unique(component, return_index=True)[1]] = True
    free = np.flatnonzero(~pinned)
    chi = np.zeros((n, 3))
    if len(free):
        reduced = matrix[free][:, free]
        # symmetric diagonal scaling: w spans many decades, this keeps the pivots sane
        scale = 1.0 / np.sqrt(np.maximum(reduced.diagonal(), 1e-300))
        scaled = reduced.multiply(scale[:, None]).multiply(scale[None, :]).tocsc()
        chi[free] = splu(scaled, permc_spec="COLAMD").solve(rhs[free] * scale[:, None]) * scale[:, None]
    increments = vector + chi[tail] - chi[head]  # (edges, 3) A
    effective = np.einsum("e,ek,el->kl", coupling, increments, increments) / z_region
    parallel = a_bar / z_region
    if n == len(flat_energy) and np.all(finite):
        inverse_mean = np.einsum("r,rij->ij", 1.0 / weight, np.linalg.inv(diffusion_nodes))
        series = np.linalg.inv(inverse_mean * weight.sum() / n**2)
    else:
        series = np.zeros((3, 3))
    return HomogenisedDiffusion(
        diffusion_m2_per_s=0.5 * (effective + effective.T),
        parallel_bound_m2_per_s=parallel,
        series_bound_m2_per_s=series,
        log_partition_region=log_z_region,
        log_partition_cell=log_z_cell,
        n_nodes=n,
        n_elements=n_elements,
    )
