"""Package boundaries: screening/ never imports the workflow layer; the CLI imports lazily."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN_IN_SCREENING = ("jobflow", "workflows", "fireworks", "jobflow_remote")

HEAVY_FOR_HELP = ("mp_api", "matplotlib", "fireworks", "torch", "jobflow", "pymatgen")


def _run(code: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_screening_modules_do_not_import_the_workflow_layer() -> None:
    found = _run(
        """
        import importlib, json, pkgutil, sys
        import screening
        names = ["screening"] + [
            m.name for m in pkgutil.walk_packages(screening.__path__, "screening.")
        ]
        failed = {}
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as error:  # an optional dependency of one module
                failed[name] = str(error)
        print(json.dumps({"modules": names, "failed": failed, "loaded": sorted(sys.modules)}))
        """
    )
    assert len(found["modules"]) > 10
    loaded = set(found["loaded"])
    for name in FORBIDDEN_IN_SCREENING:
        assert not any(m == name or m.startswith(name + ".") for m in loaded), name


def test_screening_sources_contain_no_forbidden_import_statements() -> None:
    pattern = re.compile(
        r"^\s*(?:from|import)\s+(" + "|".join(FORBIDDEN_IN_SCREENING) + r")\b", re.MULTILINE
    )
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0).strip()}"
        for path in sorted((REPO_ROOT / "screening").rglob("*.py"))
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_help_imports_no_heavy_module() -> None:
    found = _run(
        """
        import contextlib, io, json, sys
        from workflows.cli import main
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
