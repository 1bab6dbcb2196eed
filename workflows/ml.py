"""Force-field elastic tensors for Lambda: atomate2's elastic workflow with CHGNet (issue 7).

For a candidate without elastic data, ``--elastic chgnet`` runs atomate2's force-field
elastic flow (tight bulk relaxation with the cell free and the symmetry fixed, strained
cells with the ions relaxed, linear stress-strain fit: ``atomate2.forcefields.flows.elastic.
ElasticMaker``) with the pretrained CHGNet, and converts its ``ElasticDocument`` into
screening's :class:`~iondrag.screening.candidates.ElasticInput` with the source recorded.

Everything heavy (atomate2's force-field modules, torch, chgnet) is imported inside the
functions: importing this module costs no more than jobflow.

Public API
----------
ForceFieldElasticMaker
    Flat dataclass Maker: ``make(structure) -> Flow`` whose output is an ElasticInput.
make_elastic_flow(structure, maker=None) -> Flow
    The same, as a function.
elastic_input_from_output(doc) -> ElasticInput
    ElasticDocument (object or dict) -> ElasticInput (Voigt, GPa, structure's frame).
attach_chgnet_elastic(candidates) -> Response
    Job: candidates without elastic data get one elastic flow each, then a merge job returns
    the candidates with ``elastic`` filled (failures keep ``elastic=None``, i.e. the estimate,
    and say why in ``provenance["elastic_chgnet_error"]``). Wire it between
    ``fetch_candidates`` and the chunk jobs.
candidate_with_chgnet_elastic(candidate) -> Candidate
    The same for one candidate, run here (``iondrag validate --elastic chgnet``).
run_elastic_locally(structure) -> (ElasticInput, ElasticDocument)
    Run the flow in this process (scripts, tests, benchmarks).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from jobflow import Flow, Maker, Response, job
from jobflow.core.job import JobConfig
from jobflow.core.reference import OnMissing

from iondrag.screening.candidates import Candidate, ElasticInput
from iondrag.screening.elastic import check_stiffness
from iondrag.screening.errors import ElasticDataError

__all__ = [
    "ELASTIC_SOURCE",
    "ForceFieldElasticMaker",
    "attach_chgnet_elastic",
    "candidate_with_chgnet_elastic",
    "elastic_input_from_output",
    "elastic_input_job",
    "make_elastic_flow",
    "merge_elastic",
    "prepare_elastic_structure",
    "run_elastic_locally",
]

#: ``ElasticInput.source`` of tensors computed here.
ELASTIC_SOURCE = "chgnet (atomate2 force-field elastic workflow)"


def prepare_elastic_structure(
    structure: Any,
    *,
    primitive: bool = True,
    ordering_seed: int = 20250214,
    max_atoms: int = 200,
    candidate_id: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Return the ordered (primitive) cell the elastic flow runs on, and what was done.

    Disordered structures are ordered with :func:`iondrag.screening.universal.order_structure`
    (deterministic, composition kept per occupancy class; all species, mobile ions
    included: the elastic response is the whole crystal's). Ordered structures go to the
    primitive cell (fewer atoms, same Cartesian frame), which keeps the tensor in the
    candidate's frame.

    Raises
    ------
    iondrag.screening.universal.UniversalTooLargeError
        More than ``max_atoms`` atoms after ordering.
    """
    from iondrag.screening.universal import UniversalTooLargeError, order_structure

    info: dict[str, Any] = {"was_ordered": bool(structure.is_ordered)}
    work = structure.copy()
    work.remove_oxidation_states()
    if not work.is_ordered:
        if primitive:  # order the primitive cell: half the atoms of a body-centred cell
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reduced = work.get_primitive_structure(tolerance=0.01)
            if len(reduced) < len(work):
                work = reduced
                info["primitive_before_ordering"] = True
        work, ordering = order_structure(work, seed=ordering_seed, candidate_id=candidate_id)
        info["ordering"] = ordering
    if primitive and work.is_ordered:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reduced = work.get_primitive_structure(tolerance=0.01)
        if len(reduced) < len(work):
            work = reduced
            info["primitive"] = True
    info["n_atoms"] = len(work)
    if len(work) > max_atoms:
        raise UniversalTooLargeError(
            f"{len(work)} atoms for the elastic workflow (cap {max_atoms})", candidate_id
        )
    return work, info


@dataclass
class ForceFieldElasticMaker(Maker):
    """atomate2's force-field elastic flow with CHGNet, output converted to ElasticInput.

    Parameters
    ----------
    name
        Name of the flow.
    force_field_name
        atomate2 force-field name (``"CHGNet"``: the chgnet package's pretrained weights,
        shipped in its wheel).
    relax_fmax_eV_per_A
        Force convergence of the bulk and of the strained relaxations, eV/A (atomate2's
        default, 1e-5, costs many steps on CPU; 1e-3 changes LiF's moduli by < 1 GPa).
    relax_steps
        Largest number of optimiser steps per relaxation.
    fix_symmetry
        Keep the space group during the relaxations (atomate2's default for elastic flows).
    relax_bulk
        Relax the cell first (atomate2: zero-stress reference).
    sym_reduce, symprec
        Use the symmetry to reduce the strained cells.
    strain_magnitudes
        Strains applied along each of atomate2's six strain states; None: atomate2's
        default (-0.01, -0.005, 0.005, 0.01). Two (-0.01, 0.01) halve the cost of a
        low-symmetry cell (central differences stay exact for the linear response).
    primitive, ordering_seed, max_atoms
        See :func:`prepare_elastic_structure`.
    torch_threads
        Threads torch may use (the calculator is created inside the jobs).
    """

    name: str = "chgnet elastic"
    force_field_name: str = "CHGNet"
    relax_fmax_eV_per_A: float = 1e-3
    relax_steps: int = 500
    fix_symmetry: bool = True
    relax_bulk: bool = True
    sym_reduce: bool = True
    symprec: float = 0.01
    strain_magnitudes: tuple[float, ...] | None = None
    primitive: bool = True
    ordering_seed: int = 20250214
    max_atoms: int = 200
    torch_threads: int = 1

    def atomate2_maker(self) -> Any:
        """Return the atomate2 ``ElasticMaker`` configured from these fields."""
        from atomate2.forcefields.flows.elastic import ElasticMaker
        from atomate2.forcefields.jobs import ForceFieldRelaxMaker

        common: dict[str, Any] = {
            "force_field_name": self.force_field_name,
            "relax_kwargs": {"fmax": self.relax_fmax_eV_per_A},
            "steps": self.relax_steps,
            "fix_symmetry": self.fix_symmetry,
        }
        return ElasticMaker(
            name=f"{self.name} (atomate2)",
            sym_reduce=self.sym_reduce,
            symprec=self.symprec,
            bulk_relax_maker=(
                ForceFieldRelaxMaker(relax_cell=True, **common) if self.relax_bulk else None
            ),
            elastic_relax_maker=ForceFieldRelaxMaker(relax_cell=False, **common),
            generate_elastic_deformations_kwargs=(
                {}
                if self.strain_magnitudes is None
                else {"strain_magnitudes": list(self.strain_magnitudes)}
            ),
        )

    def make(self, structure: Any, candidate_id: str | None = None) -> Flow:
        """Flow: atomate2 elastic flow on the prepared cell, then the ElasticInput job."""
        _limit_torch_threads(self.torch_threads)
        work, info = prepare_elastic_structure(
            structure,
            primitive=self.primitive,
            ordering_seed=self.ordering_seed,
            max_atoms=self.max_atoms,
            candidate_id=candidate_id,
        )
        elastic = self.atomate2_maker().make(work)
        convert = elastic_input_job(elastic.output, preparation=info)
        convert.name = "elastic input"
        return Flow([elastic, convert], output=convert.output, name=self.name)


def _limit_torch_threads(threads: int) -> None:
    if threads > 0:
        try:
            import torch
        except ImportError:  # the flow fails later with atomate2's own message
            return
        torch.set_num_threads(threads)


def make_elastic_flow(structure: Any, maker: ForceFieldElasticMaker | None = None) -> Flow:
    """Return the force-field elastic flow of one structure (output: ElasticInput)."""
    return (maker or ForceFieldElasticMaker()).make(structure)


def elastic_input_from_output(
    doc: Any, *, frame: str = "raw", preparation: dict[str, Any] | None = None
) -> ElasticInput:
    """Convert atomate2's ElasticDocument (object or dict) into an ElasticInput.

    Parameters
    ----------
    doc
        ``ElasticDocument`` or its dict (``elastic_tensor.raw`` / ``ieee_format``, GPa).
    frame
        ``"raw"``: the tensor in the Cartesian frame of the structure the flow ran on (the
        candidate's own frame: the primitive cell keeps it, and the relaxation keeps the
        symmetry), which is the frame of the Hessians that Lambda multiplies (default);
        ``"ieee"``: the IEEE standard orientation (as the Materials Project reports).

    Raises
    ------
    ElasticDataError
        No tensor, or a tensor that is not a stable stiffness (Born criteria).
    """
    data = doc.model_dump() if hasattr(doc, "model_dump") else dict(doc)
    tensor_doc = data.get("elastic_tensor") or {}
    if hasattr(tensor_doc, "model_dump"):
        tensor_doc = tensor_doc.model_dump()
    key = {"raw": "raw", "ieee": "ieee_format"}[frame]
    voigt = tensor_doc.get(key)
    if voigt is None:
        raise ElasticDataError(f"the elastic document has no {key} tensor")
    checked = check_stiffness(np.array([[float(x) for x in row] for row in voigt]))
    source = ELASTIC_SOURCE
    if preparation and preparation.get("ordering"):
        source += f"; ordered cell (seed {preparation['ordering']['seed']})"
    return ElasticInput(voigt_GPa=checked.tolist(), source=source)


@job
def elastic_input_job(doc: Any, preparation: dict[str, Any] | None = None) -> ElasticInput:
    """Job: ElasticDocument -> ElasticInput (fails, as a job, on an unstable tensor)."""
    return elastic_input_from_output(doc, preparation=preparation)


@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def merge_elastic(
    candidates: list[Candidate], ids: list[str], inputs: list[ElasticInput | dict | None]
) -> list[Candidate]:
    """Return the candidates with ``elastic`` set from the flows' outputs (None: failed)."""
    by_id = dict(zip(ids, inputs, strict=True))
    merged = []
    for candidate in candidates:
        if candidate.candidate_id not in by_id:
            merged.append(candidate)
            continue
        value = by_id[candidate.candidate_id]
        update: dict[str, Any] = {}
        if value is None:
            provenance = dict(candidate.provenance)
            provenance["elastic_chgnet_error"] = "force-field elastic flow failed or unstable"
            update["provenance"] = provenance
        else:
            update["elastic"] = (
                value if isinstance(value, ElasticInput) else ElasticInput.model_validate(value)
            )
        merged.append(candidate.model_copy(update=update))
    return merged


@job
def attach_chgnet_elastic(
    candidates: list[Candidate], maker: ForceFieldElasticMaker | None = None
) -> Response:
    """Job: one elastic flow per candidate without elastic data, then :func:`merge_elastic`.

    Candidates that already carry elastic data, or that failed to load, pass through.
    A candidate whose structure cannot be prepared (too many atoms) keeps ``elastic=None``
    with the reason in its provenance.
    """
    maker = maker or ForceFieldElasticMaker()
    flows, ids, outputs = [], [], []
    prepared: list[Candidate] = []
    for candidate in candidates:
        if not candidate.ok or candidate.elastic is not None:
            prepared.append(candidate)
            continue
        try:
            flow = maker.make(candidate.structure, candidate_id=candidate.candidate_id)
        except (ValueError, ImportError) as error:  # IondragError is a ValueError
            provenance = dict(candidate.provenance)
            provenance["elastic_chgnet_error"] = str(error)[:300]
            prepared.append(candidate.model_copy(update={"provenance": provenance}))
            continue
        prepared.append(candidate)
        flows.append(flow)
        ids.append(candidate.candidate_id)
        outputs.append(flow.output)
    merge = merge_elastic(prepared, ids, outputs)
    merge.name = "merge elastic"
    return Response(replace=Flow([*flows, merge], output=merge.output))


def candidate_with_chgnet_elastic(
    candidate: Candidate, maker: ForceFieldElasticMaker | None = None
) -> Candidate:
    """Return the candidate with a CHGNet elastic tensor, computed here when it has none.

    For runs outside a jobflow screen (``iondrag validate --elastic chgnet``; a module-level
    function, so process pools can pickle it). Candidates with elastic data, or that failed
    to load, are returned unchanged; when the workflow fails the candidate keeps
    ``elastic=None`` (the estimate) with the reason in ``provenance["elastic_chgnet_error"]``.
    """
    if not candidate.ok or candidate.elastic is not None:
        return candidate
    try:
        elastic, _ = run_elastic_locally(candidate.structure, maker)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # recorded; the screen goes on with the estimate
        provenance = dict(candidate.provenance)
        provenance["elastic_chgnet_error"] = " ".join(f"{type(error).__name__}: {error}".split())[
            :300
        ]
        return candidate.model_copy(update={"provenance": provenance})
    return candidate.model_copy(update={"elastic": elastic})


def run_elastic_locally(
    structure: Any, maker: ForceFieldElasticMaker | None = None
) -> tuple[ElasticInput, Any]:
    """Run the elastic flow here (in-memory store, temporary folder).

    Returns
    -------
    (ElasticInput, ElasticDocument-as-dict)
    """
    from jobflow import run_locally
    from jobflow.core.store import JobStore
    from maggma.stores import MemoryStore

    flow = make_elastic_flow(structure, maker)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with tempfile.TemporaryDirectory(prefix="iondrag_elastic_") as root:
        responses = run_locally(
            flow,
            store=store,
            create_folders=True,
            root_dir=root,
            ensure_success=True,
            log=True,
        )
    elastic_flow = flow.jobs[0]
    assert isinstance(elastic_flow, Flow)
    fit_uuid = elastic_flow.jobs[-1].uuid
    document = responses[fit_uuid][1].output
    result = responses[flow.jobs[-1].uuid][1].output
    return result, document
