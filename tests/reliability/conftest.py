"""Fixtures of the reliability tests (helpers in rel_helpers.py, beside this file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_helpers import write_bad_cases, write_good_cases


@pytest.fixture(scope="session")
def bad_and_good_cifs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A folder with one CIF per bad-input case and three good ones (do not modify)."""
    folder: Path = tmp_path_factory.mktemp("bad_input") / "cifs"
    expected = write_bad_cases(folder)
    good = write_good_cases(folder)
    return {"folder": folder, "bad": expected, "good": good}
