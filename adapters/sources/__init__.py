"""Candidate sources behind one interface: embedded default set, Materials Project, CIF files.

Use :func:`load_candidates`; the Materials Project client (mp_api, slow to import) is only
imported when that source is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iondrag.screening.candidates import Candidate, ElasticInput, SourceName

__all__ = ["Candidate", "ElasticInput", "SourceName", "load_candidates"]


def load_candidates(
    source: SourceName = "embedded", path: str | Path | None = None, **options: Any
) -> list[Candidate]:
    """Return the candidates of one source.

    Parameters
    ----------
    source
        ``"embedded"`` (the default set shipped in data/), ``"mp"`` (Materials Project, needs
        MP_API_KEY) or ``"cif"`` (a folder of CIF files or one file, given as ``path``).
    path
        The CIF folder or file, for ``source="cif"``.
    **options
        Passed to the source: for ``"mp"`` the query fields of
        :class:`iondrag.adapters.sources.mp.MPQuery` and the connection options of
        :func:`iondrag.adapters.sources.mp.fetch_mp_candidates` (``api_key``, ``endpoint``,
        ``cache_path``, ``max_retries``, ``backoff_s``, ``refresh``, ``cache_max_age_days``);
        for ``"embedded"`` ``ion`` to keep only
        candidates of that mobile species.

    Returns
    -------
    list of Candidate
        Failed loads included, as candidates with ``load_error`` set.
    """
    if source == "embedded":
        from iondrag.adapters.sources.embedded import load_embedded_candidates

        return load_embedded_candidates(**options)
    if source == "cif":
        if path is None:
            raise ValueError("source 'cif' needs a path to a CIF file or folder")
        from iondrag.adapters.sources.cif import load_cif_candidates

        return load_cif_candidates(path, **options)
    if source == "mp":
        from iondrag.adapters.sources.mp import MPQuery, fetch_mp_candidates

        ion = options.pop("ion", None)
        connection = {
            k: options.pop(k)
            for k in (
                "api_key",
                "endpoint",
                "cache_path",
                "max_retries",
                "backoff_s",
                "refresh",
                "cache_max_age_days",
            )
            if k in options
        }
        candidates = fetch_mp_candidates(MPQuery(**options), **connection)
        if ion is not None:
            candidates = [c.model_copy(update={"mobile_ion": ion}) for c in candidates]
        return candidates
    raise ValueError(f"unknown source {source!r}; use embedded, mp or cif")
