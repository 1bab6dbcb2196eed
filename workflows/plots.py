"""The figure of ``iondrag show --png``: U and the drag along the path, and a slice of U.

Plotting lives here, not in :mod:`screening` (no plotting inside analysis code). matplotlib
(the ``plot`` extra) is imported inside :func:`plot_candidate` only.

The figure has three panels:

- U(s) along the percolating path, referenced to the path's own minimum, with the saddle
  (the maximum) marked and the path-profile barrier drawn as an arrow;
- the friction along the path, t.gamma.t (kg/s), on its own axis below, sharing s;
- U - min U on the lattice plane (a, b) through the saddle, in Cartesian Å with the true
  aspect ratio, a labelled colour bar, the framework atoms and mobile-ion sites within
  :data:`ATOM_SLAB_A` of the plane, and the path only where it lies in that plane (within
  half a grid step).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from iondrag.screening.candidates import Candidate
    from iondrag.screening.schemas import CandidateResult
    from iondrag.workflows.validate import ValidationReport

#: Atoms within this distance of the slice's plane are drawn on it, Å.
ATOM_SLAB_A = 0.6

__all__ = ["in_plane_mask", "plane_coordinates", "plot_candidate", "profile_from_minimum"]


def profile_from_minimum(energy_eV: list[float] | np.ndarray) -> tuple[np.ndarray, int, float]:
    """Return U(s) - min U(s), the index of the saddle (the maximum) and the barrier, eV."""
    energy = np.asarray(energy_eV, dtype=float)
    shifted = energy - float(np.min(energy))
    saddle = int(np.argmax(shifted))
    return shifted, saddle, float(shifted[saddle])


def plane_coordinates(lattice_A: np.ndarray, frac_ab: np.ndarray) -> np.ndarray:
    """Map fractional (a, b) coordinates to Cartesian in-plane Å (a along x, b in the plane).

    The true shape of the (a, b) face: lengths and the angle between a and b are kept.
    """
    a, b = np.asarray(lattice_A[0], dtype=float), np.asarray(lattice_A[1], dtype=float)
    x_hat = a / np.linalg.norm(a)
    b_x = float(b @ x_hat)
    b_y = float(np.linalg.norm(b - b_x * x_hat))
    basis = np.array([[np.linalg.norm(a), 0.0], [b_x, b_y]])
    return np.asarray(frac_ab, dtype=float) @ basis


def in_plane_mask(frac_c: np.ndarray, plane_c: float, half_width: float) -> np.ndarray:
    """Return True where a fractional c lies within ``half_width`` of the plane (periodic)."""
    delta = (np.asarray(frac_c, dtype=float) - plane_c + 0.5) % 1.0 - 0.5
    return np.abs(delta) <= half_width


def plot_candidate(
    out: Path,
    doc: CandidateResult,
    candidate: Candidate | None,
    parameters_json: str | None,
) -> str:
    """Write the PNG of one scored candidate; return a note for the user.

    The slice of U is recomputed from the stored structure with the run's parameters (the
    grids are not in the database); without a stored structure only the profile is drawn.
    """
    if doc.status != "ok" or doc.path is None:
        raise ValueError(f"{doc.candidate_id}: nothing to plot, the candidate was not scored")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slice_data = None
    note = "no stored structure: slice of U not drawn"
    if candidate is not None and candidate.ok and parameters_json:
        slice_data = _slice(doc, candidate, parameters_json)
        note = "slice of U recomputed from the stored structure"

    figure = plt.figure(figsize=(12.0, 5.2) if slice_data is not None else (6.5, 5.2))
    grid = figure.add_gridspec(
        2, 2 if slice_data is not None else 1, height_ratios=(2.2, 1.0), hspace=0.08
    )
    ax_u = figure.add_subplot(grid[0, 0])
    ax_drag = figure.add_subplot(grid[1, 0], sharex=ax_u)
    _draw_profile(ax_u, ax_drag, doc)
    if slice_data is not None:
        _draw_slice(figure, figure.add_subplot(grid[:, 1]), doc, slice_data)
    figure.suptitle(
        f"{doc.formula or doc.candidate_id} ({doc.candidate_id}): mobile {doc.ion or '?'}, "
        f"T = {doc.temperature_K:g} K",
        fontsize=11,
    )
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, format="png", bbox_inches="tight")
    plt.close(figure)
    return note


def _draw_profile(ax_u: Any, ax_drag: Any, doc: CandidateResult) -> None:
    path = doc.path
    assert path is not None
    s = np.asarray(path.arc_length_A, dtype=float)
    energy, saddle, barrier = profile_from_minimum(path.energy_eV)
    low = int(np.argmin(energy))
    ax_u.plot(s, energy, color="C0", lw=1.6)
    ax_u.plot(s[saddle], energy[saddle], "o", color="C3", zorder=3, label="saddle")
    ax_u.axhline(0.0, color="0.6", lw=0.7)
    ax_u.annotate(
        "",
        xy=(s[saddle], barrier),
        xytext=(s[saddle], 0.0),
        arrowprops={"arrowstyle": "<->", "color": "C3", "lw": 1.0},
    )
    ax_u.text(
        s[saddle],
        0.5 * barrier,
        f"  path barrier {barrier:.3f} eV",
        color="C3",
        va="center",
        ha="left" if s[saddle] < 0.6 * s[-1] else "right",
        fontsize=9,
    )
    ax_u.plot(s[low], 0.0, "s", color="C2", ms=5, label="path minimum")
    extra = []
    if doc.barrier_1d_eV is not None:
        extra.append(f"E_1D {doc.barrier_1d_eV:.3f} eV (percolation)")
    if doc.activation_energy_eV is not None:
        extra.append(f"Arrhenius Ea {doc.activation_energy_eV:.3f} eV")
    ax_u.set_title(
        "U along the percolating path" + (f"; {', '.join(extra)}" if extra else ""), fontsize=9
    )
    ax_u.set_ylabel("U(s) − min along path (eV)")
    ax_u.set_ylim(-0.05 * max(barrier, 1e-3), 1.18 * max(barrier, 1e-3))
    ax_u.legend(fontsize=8, loc="upper left", framealpha=0.8)
    ax_u.tick_params(labelbottom=False)
    drag = np.asarray(path.gamma_parallel_kg_per_s, dtype=float)
    positive = drag > 0
    if positive.any():
        ax_drag.semilogy(s[positive], drag[positive], color="C1", lw=1.3)
        ax_drag.plot(s[saddle], max(drag[saddle], drag[positive].min()), "o", color="C3", ms=4)
    ax_drag.set_ylabel("friction t·γ·t\n(kg/s)", fontsize=9)
    ax_drag.set_xlabel("arc length s along the path (Å)")


def _slice(doc: CandidateResult, candidate: Candidate, parameters_json: str) -> dict[str, Any]:
    from iondrag.screening.analysis import analyse_candidate
    from iondrag.screening.parameters import ScreeningParameters

    stored = json.loads(parameters_json)  # fields of older versions are ignored
    parameters = ScreeningParameters(
        **{k: v for k, v in stored.items() if k in ScreeningParameters.model_fields}
    )
    with np.errstate(over="ignore", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = analyse_candidate(
            candidate.structure,
            parameters,
            candidate_id=candidate.candidate_id,
            mobile_ion=doc.ion,
            elastic=candidate.elastic,
        )
    lattice = np.asarray(analysis.landscape.grid.lattice_matrix_A, dtype=float)
    frac_path = analysis.channel.path.points_A @ np.linalg.inv(lattice)
    saddle = int(np.argmax(analysis.channel.path.energy_eV))
    n_c = analysis.landscape.grid.shape[2]
    k = round((frac_path[saddle, 2] % 1.0) * n_c) % n_c
    energy = analysis.landscape.energy_grid_eV
    finite = np.isfinite(energy)
    plane = energy[:, :, k] - float(np.min(energy[finite]))
    framework = analysis.crystal.framework
    # spacing of the (a, b) planes along c: atoms within ATOM_SLAB_A of the plane are drawn
    spacing = abs(float(np.linalg.det(lattice))) / float(np.linalg.norm(np.cross(*lattice[:2])))
    return {
        "lattice": lattice,
        "plane": plane,
        "plane_c": k / n_c,
        "half_width": 0.5 / n_c,
        "atom_half_width": ATOM_SLAB_A / spacing,
        "path_frac": frac_path % 1.0,
        "atoms_frac": np.asarray(framework.frac_coords, dtype=float) % 1.0,
        "atoms": list(framework.elements),
        "mobile_frac": np.asarray(framework.mobile_frac_coords, dtype=float) % 1.0,
        "mobile": framework.mobile_element,
    }


def _draw_slice(figure: Any, ax: Any, doc: CandidateResult, data: dict[str, Any]) -> None:
    lattice, plane = data["lattice"], data["plane"]
    n_a, n_b = plane.shape
    # cell corners half a step around each grid point (grid point i sits at i / n)
    u, v = np.meshgrid(
        (np.arange(n_a + 1) - 0.5) / n_a, (np.arange(n_b + 1) - 0.5) / n_b, indexing="ij"
    )
    corners = plane_coordinates(lattice, np.stack([u.ravel(), v.ravel()], axis=1))
    x = corners[:, 0].reshape(u.shape)
    y = corners[:, 1].reshape(u.shape)
    finite = np.isfinite(plane)
    barrier = doc.path_barrier_eV or 0.5
    ceiling = max(3.0 * barrier, float(np.percentile(plane[finite], 50)) if finite.any() else 1.0)
    shown = np.ma.masked_invalid(np.where(finite, np.minimum(plane, ceiling), np.nan))
    mesh = ax.pcolormesh(x, y, shown, cmap="viridis", shading="flat", vmin=0.0, vmax=ceiling)
    bar = figure.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(f"U − min U (eV; capped at {ceiling:.2g}; blank: not reached)")
    half = data["half_width"]
    atoms = in_plane_mask(data["atoms_frac"][:, 2], data["plane_c"], data["atom_half_width"])
    if atoms.any():
        xy = plane_coordinates(lattice, data["atoms_frac"][atoms, :2])
        ax.scatter(xy[:, 0], xy[:, 1], s=60, facecolors="white", edgecolors="k", lw=0.8, zorder=3)
        for (px, py), name in zip(xy, np.asarray(data["atoms"])[atoms], strict=True):
            ax.annotate(name, (px, py), fontsize=6, ha="center", va="center", zorder=4)
    mobile = in_plane_mask(data["mobile_frac"][:, 2], data["plane_c"], data["atom_half_width"])
    if mobile.any():
        xy = plane_coordinates(lattice, data["mobile_frac"][mobile, :2])
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=25,
            marker="x",
            color="C1",
            zorder=3,
            label=f"{data['mobile']} sites",
        )
    on_plane = in_plane_mask(data["path_frac"][:, 2], data["plane_c"], half)
    if on_plane.any():
        xy = plane_coordinates(lattice, data["path_frac"][on_plane, :2])
        ax.plot(xy[:, 0], xy[:, 1], ".", color="white", ms=3, zorder=4, label="path in this plane")
    ax.set_aspect("equal")
    ax.set_xlabel("x along a (Å)")
    ax.set_ylabel("y in the (a, b) plane (Å)")
    ax.set_title(f"U on the (a, b) plane through the saddle, c = {data['plane_c']:.2f}", fontsize=9)
    if mobile.any() or on_plane.any():
        ax.legend(fontsize=7, loc="upper right", framealpha=0.7)


def parity_limits(records: list[dict[str, Any]]) -> tuple[float, float]:
    """Axis range of the parity plot, log10 S/cm: the measured values, 1.5 below, 1 above.

    Predictions do not widen it (they are drawn at the edge when outside it).
    """
    measured = [float(r["log10_sigma_exp"]) for r in records]
    if not measured:
        return -12.0, 0.0
    return min(measured) - 1.5, max(measured) + 1.0


def plot_parity(report: ValidationReport, png_out: str | Path) -> Path:
    """Parity plot of predicted vs measured log10 sigma (PNG, matplotlib's Agg canvas).

    Coloured by family (the 9 largest; others grey), upper bounds as open markers with an
    arrow towards lower measured values, the 1e-4 S/cm threshold lines and y = x. Both axes
    span the measured range (:func:`parity_limits`); a prediction outside it is drawn as a
    triangle on the top or bottom edge pointing the way it is off scale, so that one wild
    prediction does not squash the data into a corner.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [r for r in report.per_structure if r["error"] is None]
    low, high = parity_limits(scored)
    pad = 0.02 * (high - low)
    off_scale = {"low": 0, "high": 0}

    def shown(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y (clipped into the axes) and -1/0/+1: below, inside, above the range."""
        x = np.array([r["log10_sigma_exp"] for r in records], dtype=float)
        y = np.array([r["log10_sigma_pred"] for r in records], dtype=float)
        side = np.where(y < low, -1, np.where(y > high, 1, 0))
        off_scale["low"] += int(np.sum(side < 0))
        off_scale["high"] += int(np.sum(side > 0))
        return x, np.clip(y, low + pad, high - pad), side

    figure = Figure(figsize=(9.0, 6.0), dpi=130)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    counts: dict[str, int] = {}
    for r in scored:
        counts[r["family"]] = counts.get(r["family"], 0) + 1
    top = [f for f, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:9]]
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"]  # C7 is grey: "other"
    colours = dict(zip(top, palette, strict=False))
    for family in [*top, "other"]:
        members = [
            r for r in scored if (r["family"] if r["family"] in colours else "other") == family
        ]
        if not members:
            continue
        colour = colours.get(family, "0.55")
        exact = [r for r in members if not r["upper_bound"]]
        bounds = [r for r in members if r["upper_bound"]]
        if exact:
            x, y, side = shown(exact)
            inside = side == 0
            ax.scatter(
                x[inside],
                y[inside],
                s=22,
                color=colour,
                label=f"{family} ({len(members)})",
                alpha=0.85,
            )
            for direction, marker in ((-1, "v"), (1, "^")):
                edge = side == direction
                if edge.any():
                    ax.scatter(x[edge], y[edge], s=40, marker=marker, color=colour, clip_on=False)
        if bounds:
            x, y, side = shown(bounds)
            ax.scatter(
                x,
                y,
                s=30,
                marker="o",
                facecolors="none",
                edgecolors=colour,
                label=None if exact else f"{family} ({len(members)})",
            )
            ax.quiver(
                x,
                y,
                -np.ones_like(x),
                np.zeros_like(y),
                color=colour,
                angles="xy",
                scale_units="xy",
                scale=1.0,
                width=0.003,
                headwidth=4,
            )
    ax.plot([low, high], [low, high], color="k", lw=0.8, label="y = x")
    n_off = off_scale["low"] + off_scale["high"]
    if n_off:
        ax.scatter(
            [],
            [],
            marker="v",
            color="0.3",
            label=f"prediction off scale ({off_scale['low']} below, {off_scale['high']} above)",
        )
    from iondrag.screening.metrics import THRESHOLD_S_PER_CM

    threshold = math.log10(THRESHOLD_S_PER_CM)
    ax.axvline(threshold, color="0.4", ls="--", lw=0.8)
    ax.axhline(threshold, color="0.4", ls="--", lw=0.8, label="1e-4 S/cm")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured log10 sigma (S/cm)  (open, arrow: upper bound)")
    ax.set_ylabel("predicted log10 sigma (S/cm)")
    doc = report.to_json_dict()
    spear = doc["spearman"]
    ax.set_title(
        f"n = {doc['n_scored']}/{doc['n_given']}, Spearman "
        f"{'-' if spear is None else f'{spear:.2f}'}, T = {report.parameters.temperature_K:g} K",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    figure.text(
        0.99, 0.005, f"data: {report.data_attribution}", ha="right", va="bottom", fontsize=6
    )
    figure.tight_layout()
    path = Path(png_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
