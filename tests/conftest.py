"""Shared fixtures of the whole test suite (keep small)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _mp_test_documents() -> Any:
    """The local MP server and its documents (tests/adapters/sources), loaded by path."""
    name = "iondrag_tests_mp_conftest"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "adapters" / "sources" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def mp_server() -> Iterator[Any]:
    """A real HTTP server on 127.0.0.1 with MP's JSON shapes (its key: ``state.api_key``).

    tests/adapters/sources has its own fixture of this name, which wins there.
    """
    pytest.importorskip("mp_api")
    documents = _mp_test_documents()
    server = documents.MPTestServer(
        documents.make_summary_docs(),
        documents.make_elasticity_docs(),
        api_key=documents.MP_TEST_KEY,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
