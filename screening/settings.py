"""User settings, read at call time from the environment (prefix ``IONDRAG_``).

Nothing here is evaluated at import: call :func:`get_settings` where a value is needed, so
that a changed environment (tests, cluster workers) is honoured.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IondragSettings(BaseSettings):
    """Paths and budgets of an iondrag installation.

    Every field can be set as an environment variable ``IONDRAG_<FIELD>`` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="IONDRAG_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".iondrag",
        description="Folder for the default ranking database, job store and caches.",
    )
    db_path: Path | None = Field(
        default=None, description="SQLite ranking database; default <home>/results.sqlite."
    )
    mp_cache_path: Path | None = Field(
        default=None,
        description="SQLite cache of Materials Project answers; default <home>/mp_cache.sqlite.",
    )
    mp_cache_max_age_days: float = Field(
        default=30.0,
        ge=0,
        description="Materials Project answers cached longer than this (days) are fetched "
        "again; 0 asks the server every time, inf keeps them forever.",
    )
    memory_budget_MB: float = Field(
        default=2048.0,
        gt=0,
        description="Peak memory of the process scoring one candidate, its own included (MB): "
        "grids are coarsened to fit (iondrag.screening.memory), a cell whose coarsest grid "
        "does not fit fails with grid_too_large.",
    )

    def resolved_db_path(self) -> Path:
        """Return the ranking database path, defaulting into ``home``."""
        return self.db_path or self.home / "results.sqlite"

    def resolved_mp_cache_path(self) -> Path:
        """Return the Materials Project cache path, defaulting into ``home``."""
        return self.mp_cache_path or self.home / "mp_cache.sqlite"

    def validation_journal_path(self, cifs_dir: Path) -> Path:
        """Return the journal of ``iondrag validate`` on a CIF folder, in ``home``.

        ``<home>/validate/<folder name>-<digest of its resolved path>.jsonl``: one journal
        per folder, so that rerunning a validation of the same folder resumes it.
        """
        import hashlib

        folder = Path(cifs_dir).resolve()
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        return self.home / "validate" / f"{folder.name}-{digest}.jsonl"


def get_settings(**overrides: object) -> IondragSettings:
    """Read the settings now (environment first, then ``overrides``)."""
    return IondragSettings(**overrides)  # type: ignore[arg-type]
