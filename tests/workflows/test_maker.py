"""ScreenMaker: the parameters and run settings it holds, run ids, flow serialisation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from jobflow import Flow
from pydantic import ValidationError
from wf_helpers import FAST_PHYSICS

from iondrag.screening.candidates import Candidate
from iondrag.screening.parameters import ScreeningParameters
from iondrag.workflows.makers import ScreenMaker
from iondrag.workflows.run_settings import ScreenRun
from iondrag.workflows.schemas import SourceSpec


def test_the_maker_holds_the_parameters_and_the_run_settings() -> None:
    """One definition per setting: the Maker carries the models, it does not mirror fields."""
    names = {f.name for f in dataclasses.fields(ScreenMaker)}
    assert names == {"name", "parameters", "run"}
    assert ScreenMaker().parameters == ScreeningParameters()
    assert ScreenMaker().run == ScreenRun()
    maker = ScreenMaker.from_options(grid_spacing_A=0.3, workers=3, top_n=5)
    assert maker.parameters == ScreeningParameters(grid_spacing_A=0.3)
    assert (maker.run.workers, maker.run.top_n) == (3, 5)
    with pytest.raises(TypeError, match="grid_spacing"):
        ScreenMaker.from_options(grid_spacing=0.3)


def test_maker_validates_physics() -> None:
    with pytest.raises(ValidationError):
        ScreenMaker.from_options(grid_spacing_A=5.0)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ScreenMaker.from_options(chunk_size=0)


def test_run_id_depends_on_source_and_parameters(tmp_path: Path, monkeypatch) -> None:
    maker = ScreenMaker.from_options(**FAST_PHYSICS)
    folder = tmp_path / "cifs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert maker.run_id("cif", "cifs") == maker.run_id("cif", folder)  # path made absolute
    assert maker.run_id("embedded") == ScreenMaker.from_options(**FAST_PHYSICS).run_id("embedded")
    assert maker.run_id("embedded") != maker.run_id("cif", folder)
    assert maker.run_id("embedded") != ScreenMaker.from_options(temperature_K=400.0).run_id(
        "embedded"
    )
    assert maker.run_id("mp", options={"elements": "Li,S"}) == maker.run_id(
        "mp", options={"elements": "Li,S", "chemsys": None}
    )
    with pytest.raises(ValueError, match="only used with source 'cif'"):
        SourceSpec.build("embedded", path=folder)


def test_flow_json_round_trip(small_candidates) -> None:
    maker = ScreenMaker.from_options(chunk_size=2, db_path="/tmp/x.sqlite", **FAST_PHYSICS)
    flow = maker.make(candidates=small_candidates)
    text = flow.to_json()
    again = Flow.from_dict(json.loads(text))
    assert again.to_json() == text
    assert [j.name for j in again.jobs] == ["fetch candidates"]
    fetch = again.jobs[0]
    assert fetch.uuid == flow.jobs[0].uuid
    source, parameters, run_id = fetch.function_args
    assert isinstance(source, SourceSpec) and source.source == "candidates"
    assert parameters == maker.parameters
    assert run_id == maker.run_id(candidates=small_candidates)
    candidates = fetch.function_kwargs["candidates"]
    assert all(isinstance(c, Candidate) for c in candidates)
    assert [c.fingerprint() for c in candidates] == [c.fingerprint() for c in small_candidates]
    assert fetch.function_kwargs["chunk_size"] == 2
