"""A one-candidate screen does no work it does not need (docs/usage.md: speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wf_helpers import REPO_ROOT, clean_env

from iondrag.workflows.cli import _most_candidates


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        env=clean_env(tmp_path),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return set(done.stdout.split())


def test_the_science_does_not_import_scipy_integrate(tmp_path: Path) -> None:
    modules = _modules_after("import iondrag.screening.pipeline", tmp_path)
    assert "iondrag.screening.elastic" in modules and "scipy.integrate" not in modules


def test_a_one_candidate_screen_imports_no_matplotlib_and_starts_no_workers(
    tmp_path: Path,
) -> None:
    code = (
        "from iondrag.workflows import parallel\n"
        "started = []\n"
        "parallel.prestart = lambda n: started.append(n)\n"
        "from iondrag.workflows.cli import main\n"
        "assert main(['screen', '--ids', 'lif-fm3m', '--quiet', '--grid', '0.3', "
        "'--arrhenius', 'none', '--workers', '4', '--model', 'none']) == 0\n"
        "assert started == [1], started\n"
    )
    # without the learned model: scikit-learn itself imports scipy.stats and scipy.integrate
    modules = _modules_after(code, tmp_path)
    assert "jobflow" in modules and "scipy.integrate" not in modules
    assert not any(name == "matplotlib" or name.startswith("matplotlib.") for name in modules)


def test_most_candidates(tmp_path: Path) -> None:
    single = tmp_path / "one.cif"
    single.write_text("data_x\n")
    assert _most_candidates("embedded", None, ["a", "b"]) == 2
    assert _most_candidates("cif", str(single), None) == 1
    assert _most_candidates("cif", str(tmp_path), None) == sys.maxsize
    assert _most_candidates("embedded", None, None) == sys.maxsize
