"""Shared fixtures of the whole test suite (keep small)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def iondrag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """IONDRAG_HOME and HOME in tmp_path, no jobflow configuration, for this test."""
    home = tmp_path / "iondrag_home"
    monkeypatch.setenv("IONDRAG_HOME", str(home))
    for name in ("JOBFLOW_CONFIG_FILE", "JOBFLOW_JOB_STORE", "IONDRAG_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return home
