"""The three wings and their boundaries (docs/architecture.md).

- the physics (``iondrag.screening``) imports no adapter, no application and no workflow or
  store library (jobflow, atomate2, maggma, FireWorks, jobflow-remote);
- the adapters (``iondrag.adapters``) import no application;
- nothing imports the wings by their folder names (``screening``, ``adapters``,
  ``workflows``): the installed names live under ``iondrag``;
- ``iondrag --help`` and the commands' help import no heavy module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "screening": (
        "jobflow",
        "jobflow_remote",
        "fireworks",
        "atomate2",
        "maggma",
        "iondrag.adapters",
        "iondrag.workflows",
    ),
    "adapters": ("iondrag.workflows",),
}

#: The folder names of the wings, which are not import names.
FOLDER_NAMES = ("screening", "adapters", "workflows")

HEAVY_FOR_HELP = ("mp_api", "matplotlib", "fireworks", "torch", "jobflow", "pymatgen")


def _run(code: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT / "data",  # no folder here shares a wing's name
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _import_statements(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) of every import statement under ``folder``."""
    pattern = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)
    found = []
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(REPO_ROOT)), match.group(1) or match.group(2)))
    return found


def _is(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_a_wing_loads_nothing_it_must_not_import(wing: str) -> None:
    found = _run(
        f"""
        import importlib, json, pkgutil, sys
        import iondrag.{wing} as wing
        names = [wing.__name__] + [
            m.name for m in pkgutil.walk_packages(wing.__path__, wing.__name__ + ".")
        ]
        failed = {{}}
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as error:  # an optional dependency of one module
                failed[name] = str(error)
        print(json.dumps({{"modules": names, "failed": failed, "loaded": sorted(sys.modules)}}))
        """
    )
    assert len(found["modules"]) > 3
    loaded = set(found["loaded"])
    for name in FORBIDDEN[wing]:
        assert not any(_is(m, name) for m in loaded), (wing, name)


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_a_wing_has_no_forbidden_import_statement(wing: str) -> None:
    offenders = [
        f"{path}: {module}"
        for path, module in _import_statements(wing)
        if any(_is(module, name) for name in FORBIDDEN[wing])
    ]
    assert offenders == []


def test_nothing_imports_a_wing_by_its_folder_name() -> None:
    offenders = [
        f"{path}: {module}"
        for folder in (*FOLDER_NAMES, "tests", "benchmarks")
        for path, module in _import_statements(folder)
        if any(_is(module, name) for name in FOLDER_NAMES)
    ]
    assert offenders == []


def test_the_installed_names_live_under_iondrag() -> None:
    found = _run(
        """
        import importlib.util, json
        import iondrag.screening.pipeline, iondrag.adapters.database, iondrag.workflows.cli
        print(json.dumps({
            "folders": {n: importlib.util.find_spec(n) is not None
                        for n in ("screening", "adapters", "workflows")},
            "iondrag": iondrag.screening.pipeline.__name__,
        }))
        """
    )
    assert found["iondrag"] == "iondrag.screening.pipeline"
    assert found["folders"] == {"screening": False, "adapters": False, "workflows": False}


def test_help_imports_no_heavy_module() -> None:
    found = _run(
        """
        import contextlib, io, json, sys
        from iondrag.workflows.cli import main
        codes = []
        for argv in (["--help"], ["screen", "--help"], ["query", "--help"], ["show", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit as exit:
                    codes.append(exit.code)
        print(json.dumps({"codes": codes, "loaded": sorted(sys.modules)}))
        """
    )
    assert found["codes"] == [0, 0, 0, 0]
    loaded = set(found["loaded"])
    for name in HEAVY_FOR_HELP:
        assert not any(m == name or m.startswith(name + ".") for m in loaded), name
