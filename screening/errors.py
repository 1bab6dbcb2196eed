"""Exceptions of the science core.

Every failure that a screen records for a candidate is an :class:`IondragError` subclass with a
short machine-readable ``cause`` (used to group failures in reports) and a message that names
the candidate when one is known. Anything else escaping the science code is a bug.
"""

from __future__ import annotations


class IondragError(ValueError):
    """Base class: a candidate cannot be scored, for a reason a user can act on.

    Parameters
    ----------
    message
        What went wrong, in one line.
    candidate_id
        The candidate concerned, when known; it is prefixed to the message.
    """

    cause: str = "invalid_input"

    def __init__(self, message: str, candidate_id: str | None = None) -> None:
        self.candidate_id = candidate_id
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        prefix = f"{self.candidate_id}: " if self.candidate_id else ""
        return f"{prefix}{self.detail} [{self.cause}]"

    def with_candidate(self, candidate_id: str) -> IondragError:
        """Return the same error, now naming ``candidate_id`` (if it named none)."""
        if self.candidate_id is None:
            self.candidate_id = candidate_id
            self.args = (self._format(),)
        return self

    def __reduce__(self):  # picklable across process pools, with the candidate kept
        return (_rebuild_error, (type(self), self.detail, self.candidate_id))


def _rebuild_error(cls: type[IondragError], detail: str, candidate_id: str | None):
    return cls(detail, candidate_id)


class StructureParseError(IondragError):
    """A structure file could not be read."""

    cause = "parse_error"


class InvalidStructureError(IondragError):
    """The structure is not physical: NaN coordinates, degenerate cell, no atoms."""

    cause = "invalid_structure"


class NoMobileSpeciesError(IondragError):
    """The structure holds none of the requested mobile species."""

    cause = "no_mobile_species"


class OverlappingAtomsError(IondragError):
    """Two framework atoms (with total occupancy above one) sit closer than the bound."""

    cause = "overlapping_atoms"


class OxidationStateError(IondragError):
    """Neither bond-valence analysis nor composition guesses gave oxidation states."""

    cause = "oxidation_states"


class MissingParametersError(IondragError):
    """The force field has no parameters for an element pair or oxidation state."""

    cause = "missing_parameters"


class GridTooLargeError(IondragError):
    """The potential grid would not fit in the memory budget."""

    cause = "grid_too_large"


class HomogenisationError(IondragError):
    """The 3D cell problem was not solved and the headline asked for needs it."""

    cause = "homogenisation_not_solved"


class NoPercolationError(IondragError):
    """No percolating channel below the energy ceiling: the ion is trapped."""

    cause = "no_percolation"


class ElasticDataError(IondragError):
    """Elastic input is missing, malformed or not positive definite."""

    cause = "elastic_data"


class SourceError(IondragError):
    """A candidate source (Materials Project, CIF folder, embedded set) failed as a whole."""

    cause = "source_error"
