"""A journal of scored structures, so that an interrupted ``iondrag validate`` resumes.

Each line of the journal (JSON Lines) holds one structure's record and the key it was
scored under. The key is a SHA-256 digest of everything the record depends on: the CIF's
bytes, the screening parameters, iondrag's own source and force-field data, and the
candidate preparation (e.g. CHGNet elastic tensors) with its source. A rerun reuses a record
only under the same key, so a changed file, parameter or code revision is scored afresh.

Lines are appended and flushed one at a time as structures finish; a line cut short by an
interruption is skipped when the journal is read.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from iondrag.screening import __version__
from iondrag.screening.data_files import data_dir
from iondrag.screening.parameters import ScreeningParameters

#: Error causes not journalled: a crashed worker (killed for memory, say) is not a property
#: of the structure, so a rerun tries it again.
TRANSIENT_CAUSES = frozenset({"worker_crashed"})


#: Modules of the physics (:mod:`iondrag.screening`) that no record depends on: the learned
#: model and the validation metrics read records, they do not make them, and ``text`` only
#: escapes names for printing. Editing them keeps the journal valid, so ``iondrag learn``
#: and the metrics rerun in seconds while their own code changes.
NOT_SCORING_MODULES = frozenset({"learning.py", "metrics.py", "text.py"})

#: Libraries whose version enters the key (a new release may change a structure's numbers).
KEYED_LIBRARIES = ("numpy", "scipy", "pymatgen", "spglib", "chgnet", "torch")

#: The libraries behind the bond-valence physics alone (CHGNet and torch only matter with
#: ``potential="chgnet"``): what a learned model trained on BVSE descriptors depends on.
BVSE_LIBRARIES = ("numpy", "scipy", "pymatgen", "spglib")


def science_package() -> Path:
    """Return the folder of :mod:`iondrag.screening`, the code every record depends on.

    Located through the physics package itself, not through this file: the journal is an
    adapter and lives in another folder.
    """
    import iondrag.screening

    return Path(iondrag.screening.__file__).resolve().parent


@cache
def code_fingerprint(libraries: tuple[str, ...] = KEYED_LIBRARIES) -> str:
    """Return a digest of iondrag's science code, its data and its libraries' versions (hex).

    Covers every ``.py`` file of the physics package (:func:`science_package`) but
    :data:`NOT_SCORING_MODULES`, the CIF reader that turns a file into a candidate
    (:mod:`iondrag.adapters.sources.cif`), the force-field tables of the data folder and the
    installed versions of ``libraries`` (default :data:`KEYED_LIBRARIES`): records scored
    by other code are never reused.
    """
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(__version__.encode())
    for library in libraries:
        try:
            digest.update(f"{library}=={version(library)}".encode())
        except PackageNotFoundError:
            digest.update(f"{library} absent".encode())
    from iondrag.adapters.sources import cif

    package = science_package()
    files = [
        path
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(package).as_posix() not in NOT_SCORING_MODULES
    ]
    files += [Path(cif.__file__).resolve(), *sorted((data_dir() / "forcefield").rglob("*"))]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(path.parents[1]).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def record_key(
    cif_path: str | Path,
    parameters: ScreeningParameters,
    prepare: Callable[..., Any] | None = None,
) -> str:
    """Return the key a structure's record is journalled under (hex SHA-256).

    Parameters
    ----------
    cif_path
        The CIF file (its bytes enter the key, not its name or time stamp).
    parameters
        Screening parameters of the run.
    prepare
        Candidate preparation of the run, or None; its qualified name and source file
        enter the key.
    """
    digest = hashlib.sha256(Path(cif_path).read_bytes())
    digest.update(parameters.model_dump_json().encode())
    digest.update(code_fingerprint().encode())
    if prepare is not None:
        digest.update(f"{prepare.__module__}.{prepare.__qualname__}".encode())
        source = inspect.getsourcefile(prepare)
        if source is not None:
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars (records keep inf and NaN as JSON extensions)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class ValidationJournal:
    """Append-only JSON Lines file of (key, id, record).

    A journal that cannot be read or written warns (RuntimeWarning) and records why in
    ``error``; the run goes on without it (a full disk or a read-only home must not stop a
    validation, it only costs the resumption).

    Parameters
    ----------
    path
        The journal file; created with its folder on the first record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.error: str | None = None

    def _fail(self, action: str, error: OSError, consequence: str) -> None:
        self.error = " ".join(f"{action}: {error}".split())
        warnings.warn(
            f"journal {self.path} not {action} ({error}); {consequence}",
            RuntimeWarning,
            stacklevel=3,
        )

    def read(self) -> dict[str, dict[str, Any]]:
        """Return key -> record of every complete line (a later line wins)."""
        try:
            content = self.path.read_bytes() if self.path.is_file() else b""
        except OSError as error:
            self._fail("read", error, "scoring every structure")
            return {}
        records: dict[str, dict[str, Any]] = {}
        for line in content.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # cut short by an interruption, or not text at all
                continue
            if isinstance(entry, dict) and isinstance(entry.get("record"), dict):
                records[str(entry.get("key"))] = entry["record"]
        return records

    def append(self, key: str, ident: str, record: dict[str, Any]) -> None:
        """Append one record and flush it to disk (transient failures are not written).

        After the first failed write the journal stops writing (one warning per run).
        """
        if self.error is not None or record.get("error_cause") in TRANSIENT_CAUSES:
            return
        line = json.dumps({"key": key, "id": ident, "record": record}, default=_plain)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab+") as handle:  # binary: writes go to the end
                size = handle.seek(0, 2)
                if size > 0:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":  # the previous run was cut mid-line
                        handle.write(b"\n")
                handle.write(line.encode() + b"\n")
                handle.flush()
        except OSError as error:
            self._fail("written", error, "this run will not resume")
