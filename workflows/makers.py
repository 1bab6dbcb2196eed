"""The screen as a jobflow Maker: the physics parameters and the run settings, one flow per source.

:class:`ScreenMaker` holds a :class:`~iondrag.screening.parameters.ScreeningParameters` (the
one definition of every physics knob) and a :class:`ScreenRun` (chunk size, workers, grids,
database); :meth:`ScreenMaker.from_options` takes the fields of both as flat keywords.

Example
-------
>>> from jobflow import run_locally
>>> from iondrag.workflows.makers import ScreenMaker
>>> flow = ScreenMaker.from_options(grid_spacing_A=0.3, workers=2).make("cif", "path/to/cifs")
>>> run_locally(flow)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker
from pymatgen.core import Structure

from iondrag.adapters.database import make_run_id
from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.workflows.jobs import fetch_candidates
from iondrag.workflows.run_settings import ScreenRun
from iondrag.workflows.schemas import SourceSpec

__all__ = ["ScreenMaker", "ScreenRun", "as_candidates"]

#: What ``ScreenMaker.make`` accepts as candidates built in Python.
CandidateLike = Candidate | Structure | tuple[str, Structure]


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
    parameters
        The physics (:class:`~iondrag.screening.parameters.ScreeningParameters`): its one
        definition, with defaults, units and meaning. ``potential="chgnet"`` adds CHGNet
        along the BVSE path to each scored candidate; ``elastic="chgnet"`` runs atomate2's
        force-field elastic workflow (:func:`iondrag.workflows.ml.attach_chgnet_elastic`)
        for candidates without elastic data between fetching the candidates and the chunk
        jobs. Both need the ml extra.
    run
        How the screen runs (:class:`ScreenRun`: chunk size, workers, grids, database).

    :meth:`from_options` takes the fields of both as flat keywords:
    ``ScreenMaker.from_options(grid_spacing_A=0.3, workers=2)``.
    """

    name: str = "iondrag screen"
    parameters: ScreeningParameters = field(default_factory=ScreeningParameters)
    run: ScreenRun = field(default_factory=ScreenRun)

    @classmethod
    def from_options(cls, name: str = "iondrag screen", **options: Any) -> ScreenMaker:
        """Build a Maker from flat keywords: fields of ScreeningParameters and ScreenRun.

        Raises
        ------
        TypeError
            A keyword that is a field of neither.
        pydantic.ValidationError
            A value out of its field's bounds.
        """
        physics = {k: v for k, v in options.items() if k in ScreeningParameters.model_fields}
        run = {k: v for k, v in options.items() if k in ScreenRun.model_fields}
        unknown = sorted(set(options) - set(physics) - set(run))
        if unknown:
            raise TypeError(
                f"not a field of ScreeningParameters or ScreenRun: {', '.join(unknown)}"
            )
        return cls(name=name, parameters=ScreeningParameters(**physics), run=ScreenRun(**run))

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
        if self.parameters.ion is not None and source in ("embedded", "cif"):
            options.setdefault("ion", self.parameters.ion)
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
        return make_run_id(spec.canonical(), self.parameters.fingerprint())

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
            :class:`~iondrag.screening.candidates.Candidate`, an ``(id, Structure)`` pair, or a
            list of them (Structures get ids from :meth:`Candidate.from_structure`).
        run_id
            Explicit run id; default: derived from the source and the parameters, so that
            rerunning the same screen resumes the same run.

        Returns
        -------
        Flow
            One ``fetch_candidates`` job that replaces itself with the chunk jobs and the
            ranking job; the flow's output is the final
            :class:`~iondrag.workflows.schemas.RankingDocument`.
        """
        parameters = self.parameters
        source, candidates = _split_source(source, candidates)
        spec = self.source_spec(source, path, options, candidates)
        run = run_id or make_run_id(spec.canonical(), parameters.fingerprint())
        fetch = fetch_candidates(
            spec,
            parameters,
            run,
            chunk_size=self.run.chunk_size,
            workers=self.run.workers,
            store_grids=self.run.store_grids,
            db_path=self.run.db_path,
            top_n=self.run.top_n,
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
