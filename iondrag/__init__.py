"""iondrag: high-throughput screening of solid ionic conductors.

The installed package has three wings, each a top-level folder of the source tree
(``iondrag/`` links them under one import name; docs/architecture.md draws the house):

``iondrag.screening``
    The physics: pure functions and typed records (numpy, scipy, pandas, pymatgen,
    pydantic), no I/O beyond the shipped parameter tables, never jobflow.
``iondrag.adapters``
    What talks to the outside: candidate sources (Materials Project, CIF folders, the
    embedded set), the SQLite ranking database, the jobflow job stores and the validation
    journal and table reader.
``iondrag.workflows``
    The applications: jobflow Makers, jobs and flows, one process pool, and the commands
    of the ``iondrag`` CLI (screen, validate, show, query, learn, params).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iondrag")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
