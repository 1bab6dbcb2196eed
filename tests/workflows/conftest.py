"""Fixtures of the workflow tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from wf_helpers import SMALL_IDS, write_cifs


@pytest.fixture(scope="session")
def small_cifs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with CIFs of SMALL_IDS and one broken file (do not modify)."""
    return write_cifs(tmp_path_factory.mktemp("cifs"), SMALL_IDS)


@pytest.fixture(scope="session")
def small_candidates() -> list:
    """The SMALL_IDS embedded candidates, in that order."""
    from iondrag.adapters.sources import load_candidates

    by_id = {c.candidate_id: c for c in load_candidates("embedded")}
    return [by_id[i] for i in SMALL_IDS]
