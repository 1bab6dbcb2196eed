"""The screen as a jobflow Maker: flat dataclass fields, one flow per source.

Every physics knob of :class:`screening.parameters.ScreeningParameters` is a field of
:class:`ScreenMaker` with the same default (tests/workflows check they never drift), plus the
workflow's own knobs: ``chunk_size``, ``workers``, ``store_grids``, ``db_path``.

Example
-------
>>> from jobflow import run_locally
>>> from workflows.makers import ScreenMaker
>>> flow = ScreenMaker(grid_spacing_A=0.3, workers=2).make("cif", "path/to/cifs")
>>> run_locally(flow)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobflow import Flow, Maker
from pymatgen.core import Structure

from screening.database import make_run_id
from screening.parameters import ScreeningParameters
from screening.sources.base import Candidate
from workflows.jobs import DEFAULT_TOP_N, fetch_candidates
from workflows.schemas import SourceSpec

__all__ = ["WORKFLOW_FIELDS", "ScreenMaker", "as_candidates"]

#: What ``ScreenMaker.make`` accepts as candidates built in Python.
CandidateLike = Candidate | Structure | tuple[str, Structure]

#: Fields of ScreenMaker that are not physics (not in ScreeningParameters).
WORKFLOW_FIELDS: tuple[str, ...] = (
    "name",
    "chunk_size",
    "workers",
    "store_grids",
    "db_path",
    "top_n",
)


def as_candidates(items: Any) -> list[Candidate]:
    """Turn a Structure, a Candidate, an ``(id, Structure)`` pair or a list of them into Candidates.

    Structures get :meth:`Candidate.from_structure` ids (formula and structure hash); ids
    must be unique within the list.
    """
    if isinstance(items, Candidate | Structure) or _is_pair(items):
        items = [items]
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(
            "candidates must be a Structure, a Candidate, an (id, Structure) pair or a "
            f"list of them, not {type(items).__name__}"
        )
    candidates: list[Candidate] = []
    for item in items:
        if isinstance(item, Candidate):
            candidates.append(item)
        elif isinstance(item, Structure):
            candidates.append(Candidate.from_structure(item))
        elif _is_pair(item):
            candidates.append(Candidate.from_structure(item[1], candidate_id=str(item[0])))
        else:
            raise TypeError(
                "each candidate must be a Structure, a Candidate or an (id, Structure) "
                f"pair, not {type(item).__name__}"
            )
    ids = [c.candidate_id for c in candidates]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"candidate ids must be unique, repeated: {', '.join(duplicates)}")
    return candidates


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], Structure)
    )


@dataclass
class ScreenMaker(Maker):
    """Screen candidates of one source and rank them in the ranking database.

    Parameters
    ----------
    name
        Name of the flow.
    temperature_K ... elastic
        The fields of :class:`~screening.parameters.ScreeningParameters`, same defaults and
        meaning (see there). ``potential="chgnet"`` adds CHGNet along the BVSE path to each
        scored candidate; ``elastic="chgnet"`` runs atomate2's force-field elastic workflow
        (:func:`workflows.ml.attach_chgnet_elastic`) for candidates without elastic data
        between fetching the candidates and the chunk jobs. Both need the ml extra.
    chunk_size
        Candidates per ``screen_chunk`` job (the unit of work a cluster manager schedules).
    workers
        Processes over which one chunk's candidates run in parallel.
    store_grids
        Save each scored candidate's potential and drag grids in the job store's ``data``
        store (large; off by default).
    db_path
        The SQLite ranking database; None: ``IONDRAG_DB_PATH`` or ``<IONDRAG_HOME>/
        results.sqlite``, read when the jobs run.
    top_n
        Rows of the ranking carried in the final RankingDocument.
    """

    name: str = "iondrag screen"

    # physics: ScreeningParameters' fields, same order and defaults
    temperature_K: float = 300.0
    ion: str | None = None
    grid_spacing_A: float = 0.2
    cutoff_A: float = 6.0
    thermal_smearing: bool = False
    framework_relaxation: Literal["frozen", "elastic"] = "elastic"
    site_exclusion_radius_A: float = 0.0
    estimate_missing_parameters: bool = True
    barrier_reference: Literal["minimum", "occupied_sites"] = "minimum"
    switch_width_A: float = 1.0
    coarse_to_fine: bool = True
    coarse_margin_eV: float = 0.15
    percolation_ceiling_eV: float = 5.0
    percolation_tolerance_eV: float = 0.002
    dimensionality_window_eV: float = 0.1
    window_kT: float = 10.0
    drag_floor_fraction: float = 0.01
    headline: Literal["path_entropic", "homogenised", "path"] = "path_entropic"
    polycrystal_average: Literal["harmonic", "geometric", "bruggeman", "arithmetic"] = "harmonic"
    inertia_correction: bool = True
    carrier_density: Literal["all_sites", "percolating_sites", "connected_sites"] = (
        "connected_sites"
    )
    carrier_statistics: Literal["lattice_gas", "all_ions"] = "lattice_gas"
    extrinsic_defect_fraction: float = 1e-4
    reduce_to_primitive: bool = True
    shared_sites: Literal["mean_field", "random_network"] = "mean_field"
    barrier_compensation: Literal["none", "meyer_neldel"] = "none"
    path_relax_iterations: int = 30
    arrhenius_temperatures_K: tuple[float, ...] = (300.0, 400.0, 500.0, 600.0)
    refine_above_1d_eV: float = 1.0
    memory_budget_MB: float | None = None
    on_grid_too_large: Literal["coarsen", "refuse"] = "coarsen"
    potential: Literal["bvse", "chgnet"] = "bvse"
    elastic: Literal["given_or_estimate", "chgnet"] = "given_or_estimate"

    # workflow
    chunk_size: int = 50
    workers: int = 1
    store_grids: bool = False
    db_path: str | None = None
    top_n: int = DEFAULT_TOP_N

    def parameters(self) -> ScreeningParameters:
        """Return the validated physics parameters of this maker."""
        # a field added to ScreeningParameters but not (yet) here keeps its default; the
        # test of the Maker's fields reports the drift
        values = {
            name: getattr(self, name)
            for name in ScreeningParameters.model_fields
            if hasattr(self, name)
        }
        values["arrhenius_temperatures_K"] = tuple(values["arrhenius_temperatures_K"])
        return ScreeningParameters(**values)

    def source_spec(
        self,
        source: str | CandidateLike | Sequence[CandidateLike] = "embedded",
        path: str | Path | None = None,
        options: dict[str, Any] | None = None,
        candidates: CandidateLike | Sequence[CandidateLike] | None = None,
    ) -> SourceSpec:
        """Return the canonical source of a screen (``ion`` filters embedded and CIF)."""
        source, candidates = _split_source(source, candidates)
        options = dict(options or {})
        if self.ion is not None and source in ("embedded", "cif"):
            options.setdefault("ion", self.parameters().ion)
        return SourceSpec.build(source, path, options, candidates)

    def run_id(
        self,
        source: str | CandidateLike | Sequence[CandidateLike] = "embedded",
        path: str | Path | None = None,
        options: dict[str, Any] | None = None,
        candidates: CandidateLike | Sequence[CandidateLike] | None = None,
    ) -> str:
        """Return the deterministic run id of ``make`` with the same arguments."""
        spec = self.source_spec(source, path, options, candidates)
        return make_run_id(spec.canonical(), self.parameters().fingerprint())

    def make(
        self,
        source: str | CandidateLike | Sequence[CandidateLike] = "embedded",
        path: str | Path | None = None,
        options: dict[str, Any] | None = None,
        candidates: CandidateLike | Sequence[CandidateLike] | None = None,
        run_id: str | None = None,
    ) -> Flow:
        """Build the flow of a screen.

        Parameters
        ----------
        source
            ``"embedded"``, ``"mp"`` or ``"cif"`` (ignored when ``candidates`` is given);
            or the candidates themselves, as for ``candidates``:
            ``make(structure)``, ``make([s1, s2])``, ``make([("a", s1), ("b", s2)])``.
        path
            CIF file or folder, for ``"cif"`` (made absolute now).
        options
            Source options: MPQuery fields for ``"mp"`` (``elements``, ``chemsys``,
            ``energy_above_hull_max_eV``, ``num_sites_max``, ...).
        candidates
            Candidates built in Python instead of a source: a pymatgen ``Structure``, a
            :class:`~screening.sources.base.Candidate`, an ``(id, Structure)`` pair, or a
            list of them (Structures get ids from :meth:`Candidate.from_structure`).
        run_id
            Explicit run id; default: derived from the source and the parameters, so that
            rerunning the same screen resumes the same run.

        Returns
        -------
        Flow
            One ``fetch_candidates`` job that replaces itself with the chunk jobs and the
            ranking job; the flow's output is the final
            :class:`~workflows.schemas.RankingDocument`.
        """
        parameters = self.parameters()
        if self.chunk_size < 1 or self.workers < 1:
            raise ValueError("chunk_size and workers must be at least 1")
        source, candidates = _split_source(source, candidates)
        spec = self.source_spec(source, path, options, candidates)
        run = run_id or make_run_id(spec.canonical(), parameters.fingerprint())
        fetch = fetch_candidates(
            spec,
            parameters,
            run,
            chunk_size=self.chunk_size,
            workers=self.workers,
            store_grids=self.store_grids,
            db_path=None if self.db_path is None else str(self.db_path),
            top_n=self.top_n,
            candidates=None if candidates is None else list(candidates),
        )
        fetch.name = "fetch candidates"
        return Flow([fetch], output=fetch.output, name=self.name)


def _split_source(source: Any, candidates: Any) -> tuple[str, list[Candidate] | None]:
    """Let ``source`` carry the candidates (``make(structure)``) and normalise them."""
    if not isinstance(source, str):
        if candidates is not None:
            raise ValueError("give the candidates either as source or as candidates=, not both")
        return "embedded", as_candidates(source)
    return source, None if candidates is None else as_candidates(candidates)
