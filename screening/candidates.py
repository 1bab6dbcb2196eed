"""What every candidate source returns: :class:`Candidate`, with provenance and elastic input."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pymatgen.core import Structure

SourceName = Literal["embedded", "mp", "cif", "structure"]


def utc_now_iso() -> str:
    """Return the current UTC time as an ISO 8601 string (retrieval timestamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class ElasticInput(BaseModel):
    """Elastic data that comes with a candidate, with where it came from.

    Either a full stiffness tensor in Voigt notation (6x6, GPa, IEEE convention as in
    pymatgen and the Materials Project) or isotropic bulk and shear moduli (GPa).
    """

    model_config = ConfigDict(extra="forbid")

    voigt_GPa: list[list[float]] | None = Field(
        default=None, description="6x6 stiffness tensor C in Voigt notation, GPa."
    )
    bulk_modulus_GPa: float | None = Field(default=None, description="Bulk modulus K, GPa.")
    shear_modulus_GPa: float | None = Field(default=None, description="Shear modulus G, GPa.")
    source: str = Field(description="Where the numbers come from (database id, DOI, method).")

    @field_validator("voigt_GPa")
    @classmethod
    def _check_voigt(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return value
        array = np.asarray(value, dtype=float)
        if array.shape != (6, 6) or not np.all(np.isfinite(array)):
            raise ValueError("voigt_GPa must be a finite 6x6 matrix")
        return value

    @model_validator(mode="after")
    def _check_some_data(self) -> ElasticInput:
        has_moduli = self.bulk_modulus_GPa is not None and self.shear_modulus_GPa is not None
        if self.voigt_GPa is None and not has_moduli:
            raise ValueError("give voigt_GPa or both bulk_modulus_GPa and shear_modulus_GPa")
        for name in ("bulk_modulus_GPa", "shear_modulus_GPa"):
            modulus = getattr(self, name)
            if modulus is not None and not (np.isfinite(modulus) and modulus > 0):
                raise ValueError(f"{name} must be finite and positive, got {modulus}")
        return self


class Candidate(BaseModel):
    """One structure to screen, or the record of one that could not be loaded.

    A candidate whose structure could not be obtained keeps ``structure=None`` and the
    reason in ``load_error``: it becomes a failed row of the screen, never an abort.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    candidate_id: str = Field(description="Stable id, unique within its source.")
    source: SourceName
    structure: Structure | None = None
    formula: str | None = Field(default=None, description="Reduced formula, when known.")
    mobile_ion: str | None = Field(
        default=None, description="Element symbol of the mobile ion, when the source knows it."
    )
    elastic: ElasticInput | None = None
    experimental_sigma_S_per_cm: float | None = Field(
        default=None, description="Measured room-temperature conductivity, S/cm, if known."
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="Source details: query or file, database id, DOIs, retrieval time (UTC).",
    )
    load_error: str | None = Field(
        default=None, description="Why the structure could not be loaded (failed candidate)."
    )
    load_error_cause: str | None = Field(
        default=None, description="Short cause code of load_error (see iondrag.screening.errors)."
    )

    @field_validator("structure", mode="before")
    @classmethod
    def _structure_from_dict(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return Structure.from_dict(value)
        return value

    @field_serializer("structure")
    def _structure_to_dict(self, structure: Structure | None) -> dict[str, Any] | None:
        return None if structure is None else structure.as_dict()

    @model_validator(mode="after")
    def _fill_formula(self) -> Candidate:
        if self.formula is None and self.structure is not None:
            self.formula = self.structure.composition.reduced_formula
        return self

    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        candidate_id: str | None = None,
        *,
        mobile_ion: str | None = None,
        elastic: ElasticInput | None = None,
        experimental_sigma_S_per_cm: float | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Candidate:
        """Wrap a pymatgen Structure built in Python (source ``"structure"``).

        Parameters
        ----------
        structure
            The crystal to screen (a copy is kept; occupancies are kept as disorder).
        candidate_id
            Stable id; default ``<reduced formula>-<first 8 hex of the structure's hash>``,
            so that the same structure gets the same id (and a rerun resumes its run).
        mobile_ion, elastic, experimental_sigma_S_per_cm, provenance
            As the fields of the same name (default: the structure's own alkali ion, no
            elastic data, so elastic moduli are estimated).
        """
        if not isinstance(structure, Structure):
            raise TypeError(f"expected a pymatgen Structure, got {type(structure).__name__}")
        structure = structure.copy()
        if candidate_id is None:
            digest = hashlib.sha256(
                json.dumps(structure.as_dict(), sort_keys=True, default=str).encode()
            ).hexdigest()[:8]
            candidate_id = f"{structure.composition.reduced_formula}-{digest}"
        return cls(
            candidate_id=str(candidate_id),
            source="structure",
            structure=structure,
            mobile_ion=mobile_ion,
            elastic=elastic,
            experimental_sigma_S_per_cm=experimental_sigma_S_per_cm,
            provenance=dict(provenance or {"created_utc": utc_now_iso()}),
        )

    def fingerprint(self) -> str:
        """Short hash of what is screened: source, id, structure and elastic input.

        A rerun reuses a stored result only when this and the parameters' fingerprint match,
        so an edited CIF under the same name is screened again.
        """
        payload = {
            "source": self.source,
            "candidate_id": self.candidate_id,
            "structure": None if self.structure is None else self.structure.as_dict(),
            "mobile_ion": self.mobile_ion,
            "elastic": None if self.elastic is None else self.elastic.model_dump(),
            "load_error": self.load_error,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def ok(self) -> bool:
        """True when the candidate has a structure to screen."""
        return self.structure is not None and self.load_error is None
