"""ScreenMaker: fields in step with ScreeningParameters, run ids, flow serialisation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from jobflow import Flow
from pydantic import ValidationError
from wf_helpers import FAST_PHYSICS

from screening.parameters import ScreeningParameters
from screening.sources.base import Candidate
from workflows.makers import WORKFLOW_FIELDS, ScreenMaker
from workflows.schemas import SourceSpec


def test_maker_fields_and_defaults_match_screening_parameters() -> None:
    fields = {f.name: f for f in dataclasses.fields(ScreenMaker)}
    physics = {name: f for name, f in fields.items() if name not in WORKFLOW_FIELDS}
    assert sorted(physics) == sorted(ScreeningParameters.model_fields)
    for name, info in ScreeningParameters.model_fields.items():
        assert physics[name].default == info.default, name
    assert ScreenMaker().parameters() == ScreeningParameters()
    assert set(WORKFLOW_FIELDS) == {
        "name",
        "chunk_size",
        "workers",
        "store_grids",
        "db_path",
        "top_n",
    }


def test_maker_validates_physics() -> None:
    with pytest.raises(ValidationError):
        ScreenMaker(grid_spacing_A=5.0).parameters()
    with pytest.raises(ValueError, match="at least 1"):
        ScreenMaker(chunk_size=0).make()


def test_run_id_depends_on_source_and_parameters(tmp_path: Path, monkeypatch) -> None:
    maker = ScreenMaker(**FAST_PHYSICS)
    folder = tmp_path / "cifs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert maker.run_id("cif", "cifs") == maker.run_id("cif", folder)  # path made absolute
    assert maker.run_id("embedded") == ScreenMaker(**FAST_PHYSICS).run_id("embedded")
    assert maker.run_id("embedded") != maker.run_id("cif", folder)
    assert maker.run_id("embedded") != ScreenMaker(temperature_K=400.0).run_id("embedded")
    assert maker.run_id("mp", options={"elements": "Li,S"}) == maker.run_id(
        "mp", options={"elements": "Li,S", "chemsys": None}
    )
    with pytest.raises(ValueError, match="only used with source 'cif'"):
        SourceSpec.build("embedded", path=folder)


def test_flow_json_round_trip(small_candidates) -> None:
    maker = ScreenMaker(chunk_size=2, db_path="/tmp/x.sqlite", **FAST_PHYSICS)
    flow = maker.make(candidates=small_candidates)
    text = flow.to_json()
    again = Flow.from_dict(json.loads(text))
    assert again.to_json() == text
    assert [j.name for j in again.jobs] == ["fetch candidates"]
    fetch = again.jobs[0]
    assert fetch.uuid == flow.jobs[0].uuid
    source, parameters, run_id = fetch.function_args
    assert isinstance(source, SourceSpec) and source.source == "candidates"
    assert parameters == maker.parameters()
    assert run_id == maker.run_id(candidates=small_candidates)
    candidates = fetch.function_kwargs["candidates"]
    assert all(isinstance(c, Candidate) for c in candidates)
    assert [c.fingerprint() for c in candidates] == [c.fingerprint() for c in small_candidates]
    assert fetch.function_kwargs["chunk_size"] == 2
