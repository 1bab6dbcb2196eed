"""iondrag's science core: crystal potential, drag tensor, transport and ranking.

Pure analysis (numpy, scipy, pandas, pymatgen, pydantic); it never imports jobflow. The
internal unit system is defined once in :mod:`iondrag.screening.units`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iondrag")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
