"""The CHGNet force-field elastic workflow (iondrag.workflows.ml).

Conversion tests run everywhere; the flow itself needs the ml extra (atomate2's force-field
jobs, torch, chgnet) and skips cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from iondrag.screening.elastic import hill_moduli_GPa
from iondrag.screening.errors import ElasticDataError
from iondrag.workflows.ml import ELASTIC_SOURCE, elastic_input_from_output

#: LiF, Briscoe & Squire 1957 (data/embedded): K = (C11 + 2 C12) / 3.
LIF_BULK_MEASURED_GPA = (111.2 + 2 * 42.0) / 3


def _cubic(c11: float, c12: float, c44: float) -> list[list[float]]:
    v = np.zeros((6, 6))
    v[:3, :3] = c12
    v[[0, 1, 2], [0, 1, 2]] = c11
    v[[3, 4, 5], [3, 4, 5]] = c44
    return v.tolist()


def test_elastic_document_becomes_elastic_input() -> None:
    doc = {"elastic_tensor": {"raw": _cubic(100, 40, 30), "ieee_format": _cubic(100, 40, 30)}}
    result = elastic_input_from_output(doc)
    assert result.source == ELASTIC_SOURCE
    assert np.allclose(result.voigt_GPa, _cubic(100, 40, 30))
    ieee = elastic_input_from_output(doc, frame="ieee")
    assert np.allclose(ieee.voigt_GPa, result.voigt_GPa)


def test_unstable_or_missing_tensor_is_refused() -> None:
    with pytest.raises(ElasticDataError):
        elastic_input_from_output({"elastic_tensor": {"raw": _cubic(40, 100, 30)}})
    with pytest.raises(ElasticDataError):
        elastic_input_from_output({"elastic_tensor": None})


@pytest.mark.ml
@pytest.mark.slow
def test_chgnet_elastic_flow_for_candidates_without_data(tmp_path) -> None:
    pytest.importorskip("torch", reason="the ml extra (torch) is not installed")
    pytest.importorskip("chgnet", reason="the ml extra (chgnet) is not installed")
    pytest.importorskip("atomate2.forcefields", reason="atomate2 is not installed")
    from jobflow import run_locally
    from jobflow.core.store import JobStore
    from maggma.stores import MemoryStore

    from iondrag.screening.candidates import Candidate, ElasticInput
    from iondrag.workflows.ml import attach_chgnet_elastic

    lif = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.027), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    given = ElasticInput(bulk_modulus_GPa=25.0, shear_modulus_GPa=15.0, source="given")
    candidates = [
        Candidate(candidate_id="lif", source="structure", structure=lif, mobile_ion="Li"),
        Candidate(candidate_id="lif-given", source="structure", structure=lif, elastic=given),
    ]
    job = attach_chgnet_elastic(candidates)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    # atomate2's relaxations write their files in the working folder: keep them in tmp_path
    responses = run_locally(job, store=store, ensure_success=True, log=False, root_dir=tmp_path)
    # the replaced flow's last job is the merge; find its output among the responses
    outputs = [
        r.output
        for by_index in responses.values()
        for r in by_index.values()
        if isinstance(r.output, list) and r.output and isinstance(r.output[0], Candidate)
    ]
    assert outputs, "no merged candidates"
    merged = {c.candidate_id: c for c in outputs[-1]}
    assert merged["lif-given"].elastic == given
    computed = merged["lif"].elastic
    assert computed is not None and computed.source.startswith(ELASTIC_SOURCE)
    voigt = np.array(computed.voigt_GPa)
    assert np.all(np.linalg.eigvalsh(voigt) > 0)
    # cubic: C11 = C22 = C33, C44 = C55 = C66, no shear-normal coupling
    assert np.allclose(np.diag(voigt)[:3], voigt[0, 0], rtol=0.02)
    assert np.allclose(np.diag(voigt)[3:], voigt[3, 3], rtol=0.02)
    bulk, shear = hill_moduli_GPa(voigt)
    assert LIF_BULK_MEASURED_GPA / 1.5 < bulk < LIF_BULK_MEASURED_GPA * 1.5
    assert shear > 0
