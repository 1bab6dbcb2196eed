"""Score one candidate: the stages of :mod:`iondrag.screening.analysis`, then its document.

:func:`score_candidate` is what a screen calls: it runs
:func:`~iondrag.screening.analysis.analyse_candidate` and builds
:meth:`~iondrag.screening.schemas.CandidateResult.from_analysis`, so that every candidate
gives a :class:`~iondrag.screening.schemas.CandidateResult` (failed ones with the cause) and
never raises for a bad candidate. Workflow jobs call :func:`score_candidate` and nothing else.

With ``parameters.potential == "chgnet"`` (ml extra) CHGNet is evaluated along the BVSE path
(:mod:`iondrag.screening.universal`) and recorded in the ``*_universal_*`` fields next to the
BVSE result, which stays the headline (docs/universal.md: along the BVSE path CHGNet ranks
measured conductivities worse than BVSE). A CHGNet failure never fails the candidate:
``universal_error`` and ``universal_error_cause`` say why.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from iondrag.screening.analysis import Analysis, analyse_candidate
from iondrag.screening.candidates import Candidate
from iondrag.screening.errors import IondragError
from iondrag.screening.parameters import ScreeningParameters
from iondrag.screening.schemas import CandidateGrids, CandidateResult
from iondrag.screening.universal import (
    UNIVERSAL_RESULT_FIELDS,
    UniversalSettings,
    chgnet_path_profile,
    universal_fields,
    universal_transport,
)

__all__ = ["UNIVERSAL_RESULT_FIELDS", "score_candidate", "universal_result_fields"]


def universal_result_fields(
    structure: Any,
    analysis: Analysis,
    parameters: ScreeningParameters,
    *,
    candidate_id: str | None = None,
    settings: UniversalSettings | None = None,
) -> tuple[dict[str, Any], list[str], float]:
    """CHGNet along the BVSE path of ``analysis``; never raises for a candidate.

    Returns
    -------
    fields
        The :data:`UNIVERSAL_RESULT_FIELDS` of the document (None numbers and the error
        with its cause when CHGNet failed: ml extra missing, ordering, supercell above
        ``settings.max_atoms``, a model failure, or an unexpected exception).
    notes
        Warnings of the CHGNet evaluation (e.g. the path runs through an atom of the
        ordered realisation of a disordered framework).
    seconds
        Wall time of the CHGNet evaluation, s.
    """
    started = time.perf_counter()
    notes: list[str] = []
    try:
        result = chgnet_path_profile(
            structure, analysis, settings=settings, candidate_id=candidate_id
        )
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # IondragError with its cause; anything else: internal_error
        fields = universal_fields(None, None, error=_named(error, candidate_id))
    else:
        notes = [f"universal potential (CHGNet): {note}" for note in result.notes]
        try:
            with np.errstate(over="ignore", under="ignore"):
                transport = universal_transport(result, analysis, parameters)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as error:  # the profile is kept, the conductivity is not
            fields = universal_fields(result, None)
            failed = universal_fields(None, None, error=_named(error, candidate_id))
            fields["universal_error"] = failed["universal_error"]
            fields["universal_error_cause"] = failed["universal_error_cause"]
        else:
            fields = universal_fields(result, transport)
    fields = {name: fields.get(name) for name in UNIVERSAL_RESULT_FIELDS}
    return fields, notes, time.perf_counter() - started


def _named(error: BaseException, candidate_id: str | None) -> BaseException:
    """Return the error naming the candidate (IondragError) or with its type (others)."""
    if isinstance(error, IondragError):
        return error.with_candidate(candidate_id) if candidate_id else error
    prefix = f"{candidate_id}: " if candidate_id else ""
    return RuntimeError(f"{prefix}{type(error).__name__}: {error}")  # cause: internal_error


def _failure(
    candidate: Candidate,
    error: BaseException | str,
    parameters: ScreeningParameters,
    **kwargs: Any,
) -> CandidateResult:
    """Return a failed document of this screen (its potential backend recorded)."""
    document = CandidateResult.from_failure(
        candidate,
        error,
        temperature_K=parameters.temperature_K,
        parameters_fingerprint=parameters.fingerprint(),
        **kwargs,
    )
    document.potential_backend = parameters.potential
    return document


def score_candidate(
    candidate: Candidate,
    parameters: ScreeningParameters,
    *,
    keep_grids: bool = False,
) -> tuple[CandidateResult, CandidateGrids | None]:
    """Score one candidate; never raises for a bad candidate.

    Returns the result document (status ``failed`` with a one-line error naming the
    candidate for documented bad input, ``error`` for an unexpected exception) and, when
    asked and scored, the grids for the data store.

    With ``parameters.potential == "chgnet"`` a scored candidate also gets CHGNet along its
    BVSE path (:func:`universal_result_fields`, numerics ``parameters.universal``); the BVSE
    fields are unchanged and stay
    the headline, and a CHGNet failure is recorded in ``universal_error`` /
    ``universal_error_cause`` without failing the candidate.
    """
    if not candidate.ok:
        return (
            _failure(
                candidate,
                candidate.load_error or "no structure",
                parameters,
                cause=candidate.load_error_cause or "parse_error",
            ),
            None,
        )
    started = time.perf_counter()
    try:
        # one BLAS thread: screens parallelise over candidates (processes), and threaded
        # BLAS on small matrix-vector products oversubscribes the cores (8x slower, measured)
        with threadpool_limits(limits=1), np.errstate(over="ignore", under="ignore"):
            analysis = analyse_candidate(
                candidate.structure,
                parameters,
                candidate_id=candidate.candidate_id,
                mobile_ion=parameters.ion or candidate.mobile_ion,
                elastic=candidate.elastic,
            )
            document = CandidateResult.from_analysis(candidate, analysis, parameters)
    except IondragError as error:
        return _failure(
            candidate, error, parameters, ion=parameters.ion or candidate.mobile_ion
        ), None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a bug must not stop the screen; it is recorded as "error"
        return _failure(
            candidate, error, parameters, ion=parameters.ion or candidate.mobile_ion
        ), None
    if parameters.elastic == "chgnet" and candidate.elastic is None:
        reason = candidate.provenance.get("elastic_chgnet_error") or (
            "no CHGNet elastic tensor reached this candidate (the jobflow screen computes "
            "them before scoring)"
        )
        document.warnings.append(
            f"elastic='chgnet' but {reason}: Lambda from {document.elastic_source}"
        )
    if parameters.potential == "chgnet":
        # the cell the BVSE path was found in (the reduced primitive cell by default)
        fields, notes, seconds = universal_result_fields(
            analysis.crystal.structure,
            analysis,
            parameters,
            candidate_id=candidate.candidate_id,
            settings=parameters.universal,
        )
        document = document.model_copy(update=fields)
        document.warnings.extend(notes)
        document.seconds["universal"] = round(seconds, 4)
    document.seconds["total"] = round(time.perf_counter() - started, 4)
    grids = None
    if keep_grids:
        grids = CandidateGrids.from_arrays(
            candidate.candidate_id,
            analysis.landscape.grid.lattice_matrix_A,
            analysis.landscape.energy_grid_eV,
            analysis.channel.region_flat,
            analysis.channel.gamma_region_kg_per_s,
        )
    return document, grids
