"""Helpers of the workflow tests: subprocess environment, CLI runner, CIF folders."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Coarse, fast physics (about a second per small candidate), with the strict force field
#: (no estimated softBV parameters), so that Li3P stays the missing-parameters case.
FAST_PHYSICS: dict = {
    "grid_spacing_A": 0.3,
    "arrhenius_temperatures_K": (),
    "estimate_missing_parameters": False,
}

#: The same as CLI options.
FAST_CLI: tuple[str, ...] = (
    "--grid",
    "0.3",
    "--arrhenius",
    "none",
    "--param",
    "estimate_missing_parameters=false",
)

#: Small embedded candidates: three that score (Li and Na) and one that fails (no softBV
#: parameters for Li-P).
SMALL_IDS: tuple[str, ...] = ("lif-fm3m", "nacl-fm3m", "li2o-fm3m", "li3p-p63mmc")


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess: own HOME and IONDRAG_HOME, no jobflow config, no MP key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBFLOW_", "IONDRAG_", "MP_API", "MONGOMOCK_"))
    }
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), IONDRAG_HOME=str(tmp / "iondrag_home"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cli_command(args: Sequence[object]) -> list[str]:
    """The command line of ``python -m iondrag.workflows.cli ARGS``."""
    return [sys.executable, "-m", "iondrag.workflows.cli", *map(str, args)]


def run_cli(
    args: Sequence[object], env: dict[str, str], *, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess and capture its output."""
    return subprocess.run(
        cli_command(args),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_cifs(folder: Path, ids: Sequence[str], *, broken: bool = True) -> Path:
    """CIF files of embedded candidates (named <id>.cif), plus one unreadable file."""
    from pymatgen.io.cif import CifWriter

    from iondrag.adapters.sources.embedded import embedded_structure

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for candidate_id in ids:
            CifWriter(embedded_structure(candidate_id)).write_file(folder / f"{candidate_id}.cif")
    if broken:
        (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nnot a cif\n")
    return folder


def one_line_error(stderr: str) -> str:
    """The single non-empty line of stderr (asserting there is exactly one)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]
