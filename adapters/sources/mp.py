"""Materials Project source: query the summary and elasticity endpoints through mp-api.

:func:`fetch_mp_candidates` turns an :class:`MPQuery` into :class:`Candidate` objects, with
the structure, provenance and (when the Materials Project has it) the elastic tensor. Answers
are cached in a local SQLite file keyed by (endpoint, canonical query), so a rerun of the
same query does not contact the server; an answer older than the setting
``mp_cache_max_age_days`` (default 30 days) is fetched again.

The client, mp-api (``mp_api``), takes seconds to import: it is imported inside the functions
that talk to the server, never when this module is imported, and not at all on a cache hit.

Errors a user can act on (no key, malformed key, server unreachable, key rejected, rate
limited, server errors) are raised as :class:`~iondrag.screening.errors.SourceError`
subclasses with a one-line message. HTTP 429 and 5xx answers are retried with exponential
backoff up to a budget (``max_retries``, ``backoff_s``) before giving up.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pymatgen.core import Element, Structure

from iondrag.screening.candidates import Candidate, ElasticInput, utc_now_iso
from iondrag.screening.errors import SourceError

if TYPE_CHECKING:
    import requests

__all__ = [
    "DEFAULT_ENDPOINT",
    "ELASTICITY_FIELDS",
    "SUMMARY_FIELDS",
    "MPAuthError",
    "MPQuery",
    "MPRateLimitError",
    "MPServerError",
    "MPUnreachableError",
    "candidate_from_summary",
    "elastic_from_document",
    "fetch_mp_candidates",
    "resolve_endpoint",
]

DEFAULT_ENDPOINT = "https://api.materialsproject.org/"
"""mp-api's default endpoint (``mp_api.client.core.settings._DEFAULT_ENDPOINT``)."""

API_KEY_ENV = "MP_API_KEY"
ENDPOINT_ENV = "MP_API_ENDPOINT"

SUMMARY_FIELDS: tuple[str, ...] = (
    "material_id",
    "formula_pretty",
    "structure",
    "energy_above_hull",
    "band_gap",
    "symmetry",
    "is_stable",
    "theoretical",
)
"""The only fields requested from ``materials/summary`` (``_fields``); the number of sites and
elements come from the structure. (mp-api validates each requested field against the emmet
document's JSON schema, ~0.1 s per field per search: ask for few.)"""

ELASTICITY_FIELDS: tuple[str, ...] = (
    "material_id",
    "elastic_tensor",
    "bulk_modulus",
    "shear_modulus",
)
"""The only fields requested from ``materials/elasticity`` (emmet ``ElasticityDoc``)."""

RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses retried with exponential backoff."""

MAX_PAGE_SIZE = 1000
"""Largest ``_limit`` the Materials Project API accepts (mp-api's default chunk size)."""

ELASTICITY_BATCH = 100
"""Material ids per elasticity request (keeps URLs short)."""

RETRY_AFTER_MAX_S = 60.0

MAX_PAGES = 500
"""Most pages of one query (500 x 1000 documents: more than the whole database). A server
that overstates ``meta.total_doc`` and repeats pages would otherwise be asked forever."""

QUERY_DEADLINE_S = 600.0
"""Default wall time of one Materials Project query, every request, retry and page included."""
"""Longest wait honoured from a server's Retry-After header (s)."""

_API_KEY_PATTERN = re.compile(r"[A-Za-z0-9]{32}")
_MATERIAL_ID_PATTERN = re.compile(r"[a-z]+-[a-z0-9]+")
_FORMULA_PATTERN = re.compile(r"[A-Za-z0-9*().]+")


class MPAuthError(SourceError):
    """The API key is missing, malformed or rejected by the server."""

    cause = "mp_api_key"


class MPUnreachableError(SourceError):
    """The Materials Project API cannot be reached (connection refused, DNS, timeout)."""

    cause = "mp_unreachable"


class MPRateLimitError(SourceError):
    """The server kept answering HTTP 429 after the retry budget was spent."""

    cause = "mp_rate_limited"


class MPServerError(SourceError):
    """The server kept answering HTTP 5xx after the retry budget was spent."""

    cause = "mp_server_error"


# --------------------------------------------------------------------------------------------
# Query
# --------------------------------------------------------------------------------------------


def _split_list(value: Any) -> Any:
    """Accept ``"Li,S"`` as well as ``["Li", "S"]`` (command-line friendly)."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


def _element_symbol(symbol: str) -> str:
    """Return the normalised element symbol (``"li"`` -> ``"Li"``) or raise ValueError."""
    normalised = symbol.strip().capitalize()
    if not Element.is_valid_symbol(normalised):
        raise ValueError(f"{symbol!r} is not an element symbol")
    return normalised


class MPQuery(BaseModel):
    """Filters on the Materials Project summary endpoint; every field is optional.

    At least one filter (or ``max_candidates``) must be given: an unfiltered query would
    download the whole database. Element lists may be given as ``"Li,S"``.
    :meth:`canonical_json` is the cache key: equal queries written differently (element
    order, case, duplicates) have the same canonical form.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    elements: list[str] | None = Field(
        default=None, description="Element symbols that must all be present."
    )
    exclude_elements: list[str] | None = Field(
        default=None, description="Element symbols that must be absent."
    )
    chemsys: str | None = Field(
        default=None, description="Chemical system, e.g. 'Li-P-S' (exactly these elements)."
    )
    formula: str | None = Field(
        default=None, description="Formula, anonymous formula or wildcard, e.g. 'Li3PS4'."
    )
    material_ids: list[str] | None = Field(
        default=None, description="Material ids, e.g. ['mp-1234']."
    )
    energy_above_hull_max_eV: float | None = Field(
        default=None, ge=0, description="Largest energy above the convex hull, eV/atom."
    )
    band_gap_min_eV: float | None = Field(default=None, ge=0, description="Smallest gap, eV.")
    band_gap_max_eV: float | None = Field(default=None, ge=0, description="Largest gap, eV.")
    num_sites_min: int | None = Field(default=None, ge=1, description="Fewest sites per cell.")
    num_sites_max: int | None = Field(default=None, ge=1, description="Most sites per cell.")
    num_elements_min: int | None = Field(default=None, ge=1, description="Fewest elements.")
    num_elements_max: int | None = Field(default=None, ge=1, description="Most elements.")
    is_stable: bool | None = Field(default=None, description="On the convex hull or not.")
    theoretical: bool | None = Field(
        default=None, description="True: no ICSD match; False: experimentally known."
    )
    max_candidates: int | None = Field(
        default=None, ge=1, description="Keep at most this many materials."
    )

    @field_validator("elements", "exclude_elements", mode="before")
    @classmethod
    def _split_elements(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("elements", "exclude_elements")
    @classmethod
    def _check_elements(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        symbols = sorted({_element_symbol(symbol) for symbol in value})
        if not symbols:
            raise ValueError("give at least one element symbol, or leave the filter unset")
        return symbols

    @field_validator("chemsys")
    @classmethod
    def _check_chemsys(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = [part.strip() for part in value.split("-")]
        if not parts or any(not part for part in parts):
            raise ValueError(f"chemsys {value!r} must look like 'Li-P-S'")
        symbols = sorted({_element_symbol(part) for part in parts if part != "*"})
        wildcards = ["*"] * sum(part == "*" for part in parts)
        return "-".join(symbols + wildcards)

    @field_validator("formula")
    @classmethod
    def _check_formula(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _FORMULA_PATTERN.fullmatch(value):
            raise ValueError(f"formula {value!r} has characters a formula cannot have")
        return value

    @field_validator("material_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("material_ids")
    @classmethod
    def _check_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        ids = sorted({item.strip().lower() for item in value})
        bad = [item for item in ids if not _MATERIAL_ID_PATTERN.fullmatch(item)]
        if bad:
            raise ValueError(f"not Materials Project ids (like 'mp-1234'): {bad}")
        if not ids:
            raise ValueError("give at least one material id, or leave the filter unset")
        return ids

    @model_validator(mode="after")
    def _check_consistent(self) -> MPQuery:
        for low, high in (
            ("band_gap_min_eV", "band_gap_max_eV"),
            ("num_sites_min", "num_sites_max"),
            ("num_elements_min", "num_elements_max"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value > high_value:
                raise ValueError(f"{low}={low_value} is larger than {high}={high_value}")
        both = set(self.elements or ()) & set(self.exclude_elements or ())
        if both:
            raise ValueError(f"elements both required and excluded: {sorted(both)}")
        if not self.model_dump(exclude_none=True):
            raise ValueError(
                "an MPQuery needs at least one filter (elements, chemsys, formula, "
                "material_ids, ...) or max_candidates: an unfiltered query would download "
                "the whole Materials Project database"
            )
        return self

    def canonical(self) -> dict[str, Any]:
        """Return the set filters only, normalised (sorted element lists, sorted chemsys)."""
        return self.model_dump(exclude_none=True)

    def canonical_json(self) -> str:
        """Return the canonical serialisation: compact JSON with sorted keys (the cache key)."""
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def summary_search_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments of mp-api's ``materials.summary.search``.

        Ranges are ``(min, max)`` tuples with ``None`` for an open end (mp-api drops it).
        Deprecated materials are always excluded.
        """
        kwargs: dict[str, Any] = {"deprecated": False}
        for name in ("elements", "exclude_elements", "chemsys", "formula", "material_ids"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        ranges = {
            "energy_above_hull": (None, self.energy_above_hull_max_eV),
            "band_gap": (self.band_gap_min_eV, self.band_gap_max_eV),
            "num_sites": (self.num_sites_min, self.num_sites_max),
            "num_elements": (self.num_elements_min, self.num_elements_max),
        }
        for name, (low, high) in ranges.items():
            if low is not None or high is not None:
                kwargs[name] = (low, high)
        for name in ("is_stable", "theoretical"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs


# --------------------------------------------------------------------------------------------
# Key and endpoint
# --------------------------------------------------------------------------------------------


def resolve_endpoint(endpoint: str | None = None) -> str:
    """Return the API endpoint: the argument, else ``MP_API_ENDPOINT``, else mp-api's default.

    The result ends with ``/`` (as mp-api normalises it), so that equal endpoints give equal
    cache keys.
    """
    value = (endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).strip()
    if not re.match(r"https?://", value):
        raise SourceError(
            f"Materials Project endpoint {value!r} must start with http:// or https:// "
            f"(set by the endpoint argument or {ENDPOINT_ENV})"
        )
    return value if value.endswith("/") else value + "/"


def _resolve_api_key(api_key: str | None) -> str:
    """Return the API key (argument, else ``MP_API_KEY``) after mp-api's format check."""
    origin = "the api_key argument"
    if not api_key:
        api_key, origin = os.environ.get(API_KEY_ENV), API_KEY_ENV
    if not api_key or not api_key.strip():
        raise MPAuthError(
            f"no Materials Project API key: set {API_KEY_ENV} (your key is on "
            "https://materialsproject.org/api) or pass api_key"
        )
    api_key = api_key.strip()
    # mp-api (validate_api_key) rejects keys that are not 32 characters long; current keys
    # are 32 letters and digits (legacy 16-character keys no longer work).
    if not _API_KEY_PATTERN.fullmatch(api_key):
        raise MPAuthError(
            f"malformed Materials Project API key in {origin}: expected 32 letters and digits, "
            f"got {len(api_key)} characters; copy the key from https://materialsproject.org/api"
        )
    return api_key


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS mp_queries (
    endpoint TEXT NOT NULL,
    query TEXT NOT NULL,
    retrieved_utc TEXT NOT NULL,
    database_version TEXT,
    n_candidates INTEGER NOT NULL,
    PRIMARY KEY (endpoint, query)
);
CREATE TABLE IF NOT EXISTS mp_candidates (
    endpoint TEXT NOT NULL,
    query TEXT NOT NULL,
    position INTEGER NOT NULL,
    candidate_id TEXT NOT NULL,
    candidate_json TEXT NOT NULL,
    PRIMARY KEY (endpoint, query, position)
);
"""


@contextmanager
def _cache_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """Open the cache (creating file and tables), closing it afterwards."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, timeout=30.0)) as connection:
            connection.executescript(_CACHE_SCHEMA)
            yield connection
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"Materials Project cache {path} is not a usable SQLite file ({exc}); delete it "
            "or choose another with IONDRAG_MP_CACHE_PATH"
        ) from exc
    except OSError as exc:
        raise SourceError(f"cannot open the Materials Project cache {path}: {exc}") from exc


def _cache_read(path: Path, endpoint: str, query_json: str) -> tuple[list[Candidate], str] | None:
    """Return the cached candidates of (endpoint, query) and when they were retrieved.

    None on a miss. ``from_cache`` is not set here: the caller decides whether the entry is
    fresh enough (:func:`_cache_age_days`).
    """
    if not path.exists():
        return None
    with _cache_connection(path) as connection:
        row = connection.execute(
            "SELECT n_candidates, retrieved_utc FROM mp_queries WHERE endpoint = ? AND query = ?",
            (endpoint, query_json),
        ).fetchone()
        if row is None:
            return None
        rows = connection.execute(
            "SELECT candidate_json FROM mp_candidates WHERE endpoint = ? AND query = ? "
            "ORDER BY position",
            (endpoint, query_json),
        ).fetchall()
    if len(rows) != row[0]:
        return None  # incomplete entry: treat as a miss, the next write replaces it
    return [Candidate.model_validate_json(text) for (text,) in rows], row[1]


def _cache_age_days(retrieved_utc: str, now: datetime | None = None) -> float | None:
    """Age of a cache entry in days (0 for a timestamp in the future), None if unreadable."""
    try:
        then = datetime.fromisoformat(retrieved_utc.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    return max(seconds, 0.0) / 86400.0


def _cache_write(
    path: Path,
    endpoint: str,
    query_json: str,
    candidates: list[Candidate],
    retrieved_utc: str,
    database_version: str | None,
) -> None:
    """Store the candidates of (endpoint, query), replacing an older entry, in one transaction."""
    rows = [
        (endpoint, query_json, position, candidate.candidate_id, candidate.model_dump_json())
        for position, candidate in enumerate(candidates)
    ]
    with _cache_connection(path) as connection, connection:
        connection.execute(
            "DELETE FROM mp_candidates WHERE endpoint = ? AND query = ?", (endpoint, query_json)
        )
        connection.execute(
            "INSERT OR REPLACE INTO mp_queries VALUES (?, ?, ?, ?, ?)",
            (endpoint, query_json, retrieved_utc, database_version, len(candidates)),
        )
        connection.executemany("INSERT INTO mp_candidates VALUES (?, ?, ?, ?, ?)", rows)


# --------------------------------------------------------------------------------------------
# HTTP session, retries and error translation
# --------------------------------------------------------------------------------------------


class _QueryStopped(Exception):
    """Raised from the response hook to end a query that cannot finish (see _ResponseLog)."""


class _ResponseLog:
    """Remember the last HTTP response (status and URL); stop paging that cannot end.

    The response hook of the session: mp-api pages until it has ``meta.total_doc``
    documents, so a server that overstates it and answers an empty page, or the same page
    again, would be asked without end. This stops the query on an empty page at a non-zero
    ``_skip``, on a page whose documents all came before, after :data:`MAX_PAGES` pages, and
    after the deadline.
    """

    def __init__(self, deadline_s: float = QUERY_DEADLINE_S) -> None:
        import time

        self.status: int | None = None
        self.url: str | None = None
        self.deadline_s = deadline_s
        self.started = time.monotonic()
        self.pages: dict[str, int] = {}
        self.seen: dict[str, set[str]] = {}
        self.stopped: str | None = None

    def remaining_s(self) -> float:
        import time

        return self.deadline_s - (time.monotonic() - self.started)

    def _stop(self, reason: str) -> NoReturn:
        self.stopped = reason
        raise _QueryStopped(reason)

    def record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        from urllib.parse import parse_qs, urlsplit

        self.status = response.status_code
        self.url = response.url
        if self.remaining_s() <= 0:
            self._stop(f"no complete answer within the query deadline of {self.deadline_s:g} s")
        url = urlsplit(response.url or "")
        if response.status_code != 200 or "/materials/" not in url.path:
            return
        route = url.path
        self.pages[route] = pages = self.pages.get(route, 0) + 1
        if pages > MAX_PAGES:
            self._stop(f"more than {MAX_PAGES} pages from {route} (server overstates total_doc?)")
        try:
            payload = response.json()
        except ValueError:
            return  # mp-api reports a body that is not JSON
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return
        skip = parse_qs(url.query).get("_skip", ["0"])[-1]
        ids = {str(doc.get("material_id")) for doc in data if isinstance(doc, dict)}
        seen = self.seen.setdefault(route, set())
        if skip not in ("", "0") and ids and ids <= seen:
            self._stop(
                f"{route} answered _skip={skip} with documents it had already sent (the server "
                "repeats pages; its total_doc is overstated)"
            )
        seen.update(ids)


def _make_session(
    api_key: str, max_retries: int, backoff_s: float, log: _ResponseLog | None = None
) -> requests.Session:
    """Return a requests session carrying the key and a bounded retry policy.

    Connection errors and HTTP 429/5xx are retried ``max_retries`` times, waiting
    ``backoff_s``, ``2 backoff_s``, ``4 backoff_s``, ... (a server's Retry-After is honoured
    up to :data:`RETRY_AFTER_MAX_S`). After the last retry the final response is returned
    (not raised) so that its status can be reported.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class _BoundedRetry(Retry):
        def get_backoff_time(self) -> float:
            if not self.history:
                return 0.0
            return float(min(self.backoff_max, backoff_s * 2 ** (len(self.history) - 1)))

        def get_retry_after(self, response: Any) -> float | None:
            seconds = super().get_retry_after(response)
            return None if seconds is None else min(seconds, RETRY_AFTER_MAX_S)

    retry = _BoundedRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=sorted(RETRY_STATUSES),
        backoff_factor=backoff_s,
        backoff_max=RETRY_AFTER_MAX_S,
        raise_on_status=False,
        respect_retry_after_header=True,
    )

    class _DeadlineSession(requests.Session):
        """Each request (all its retries together) gets at most the query's remaining time."""

        def request(self, *args: Any, **kwargs: Any) -> Any:
            if log is not None:
                remaining = log.remaining_s()
                if remaining <= 0:
                    log._stop(
                        f"no complete answer within the query deadline of {log.deadline_s:g} s"
                    )
                share = max(remaining / (max_retries + 1), 0.05)
                timeout = kwargs.get("timeout")
                kwargs["timeout"] = share if timeout is None else min(float(timeout), share)
            return super().request(*args, **kwargs)

    session = _DeadlineSession()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["x-api-key"] = api_key
    return session


def _budget(max_retries: int, backoff_s: float) -> str:
    return (
        f"retry budget spent: {max_retries} retries with exponential backoff from "
        f"{backoff_s:g} s (max_retries={max_retries}, backoff_s={backoff_s:g})"
    )


def _status_error(
    status: int, endpoint: str, url: str | None, max_retries: int, backoff_s: float
) -> SourceError:
    """Return the error for a final non-200 HTTP status."""
    where = f"the Materials Project API at {endpoint}"
    if status in (401, 403):
        return MPAuthError(
            f"{where} rejected the API key (HTTP {status}): check {API_KEY_ENV} against "
            "your key on https://materialsproject.org/api"
        )
    if status == 429:
        return MPRateLimitError(
            f"{where} is rate-limiting this client (HTTP 429); {_budget(max_retries, backoff_s)}"
            "; wait a few minutes and rerun, or raise max_retries"
        )
    if status >= 500:
        return MPServerError(
            f"{where} failed with HTTP {status} (server error); "
            f"{_budget(max_retries, backoff_s)}; try again later"
        )
    hint = f"; is {endpoint} the Materials Project API?" if status == 404 else ""
    return SourceError(f"{where} answered HTTP {status} to {url or 'a request'}{hint}")


def _one_line(text: object, limit: int = 300) -> str:
    """Return ``text`` on one line, shortened to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _connection_reason(exc: BaseException) -> str:
    """Return the innermost reason of a connection failure, e.g. 'Connection refused'."""
    reason: object = exc
    for _ in range(5):  # requests error -> urllib3 MaxRetryError -> NewConnectionError
        inner = getattr(reason, "reason", None)
        if inner is None and getattr(reason, "args", None):
            first = reason.args[0]  # type: ignore[attr-defined]
            inner = first if isinstance(first, BaseException) else None
        if inner is None:
            break
        reason = inner
    text = re.sub(r"^\w+\(host=.*?\):\s*", "", _one_line(reason, 300))
    return _one_line(text, 160)


def _transport_error(exc: BaseException, endpoint: str) -> SourceError | None:
    """Translate a requests transport exception (or None if ``exc`` is not one)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError):
        # ConnectTimeout is a ConnectionError too: the host did not answer at all.
        return MPUnreachableError(
            f"cannot reach the Materials Project API at {endpoint}: {_connection_reason(exc)}; "
            f"check {ENDPOINT_ENV} and the network"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return MPUnreachableError(
            f"the Materials Project API at {endpoint} did not answer in time: "
            f"{_connection_reason(exc)}"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return SourceError(f"request to the Materials Project API at {endpoint} failed: {exc}")
    return None


def _probe(
    session: requests.Session, endpoint: str, timeout_s: float, max_retries: int, backoff_s: float
) -> str | None:
    """GET ``<endpoint>heartbeat`` (as mp-api does at start-up); return the database version.

    Fails early, with a clear error, on an unreachable server, and applies the retry policy
    to a rate-limited or failing one (mp-api's own heartbeat call has no retries).
    """
    import requests

    try:
        response = session.get(endpoint + "heartbeat", timeout=timeout_s)
    except requests.exceptions.RequestException as exc:
        raise _transport_error(exc, endpoint) from exc  # type: ignore[misc]
    if response.status_code in (401, 403):
        return None  # mp-api goes on without a heartbeat; the key is checked by the queries
    if response.status_code != 200:
        raise _status_error(response.status_code, endpoint, response.url, max_retries, backoff_s)
    try:
        payload = response.json()
    except ValueError as exc:
        raise SourceError(
            f"{endpoint} does not look like the Materials Project API: its heartbeat is not "
            f"JSON ({_one_line(response.text, 100)!r})"
        ) from exc
    version = payload.get("db_version") if isinstance(payload, dict) else None
    return str(version) if version else None


def _query_error(
    exc: Exception, log: _ResponseLog, endpoint: str, max_retries: int, backoff_s: float
) -> SourceError:
    """Translate an exception raised inside mp-api into a SourceError."""
    if log.stopped is not None or log.remaining_s() <= 0:
        reason = log.stopped or (
            f"no complete answer within the query deadline of {log.deadline_s:g} s"
        )
        return SourceError(
            f"Materials Project query at {endpoint} stopped: {reason}; nothing was screened "
            "(retry later, narrow the query with --max-candidates, or raise deadline_s)"
        )
    for inner in (exc, exc.__cause__, exc.__context__):
        if inner is not None and (translated := _transport_error(inner, endpoint)):
            return translated
    if log.status is not None and (log.status in (401, 403, 429) or log.status >= 500):
        return _status_error(log.status, endpoint, log.url, max_retries, backoff_s)
    return SourceError(f"Materials Project query failed: {_one_line(exc)}")


# --------------------------------------------------------------------------------------------
# Documents -> candidates
# --------------------------------------------------------------------------------------------


def _finite_positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _voigt_matrix(value: Any) -> list[list[float]] | None:
    try:
        matrix = [[float(x) for x in row] for row in value]
    except (TypeError, ValueError):
        return None
    if len(matrix) != 6 or any(len(row) != 6 for row in matrix):
        return None
    if not all(math.isfinite(x) for row in matrix for x in row):
        return None
    return matrix


def elastic_from_document(doc: dict[str, Any]) -> tuple[ElasticInput | None, str | None]:
    """Build the elastic input of one ``materials/elasticity`` document.

    Parameters
    ----------
    doc
        The document as served: ``elastic_tensor.ieee_format`` (6x6 Voigt, GPa, IEEE),
        ``bulk_modulus.vrh`` and ``shear_modulus.vrh`` (GPa).

    Returns
    -------
    ElasticInput or None, and a note
        ``(input, None)`` when usable data was found, else ``(None, reason)``. Moduli that
        are not finite and positive (mechanically unstable entries) are left out; the tensor
        is kept as served, its positive-definiteness is checked downstream.
    """
    material_id = str(doc.get("material_id"))
    tensor = doc.get("elastic_tensor") or {}
    voigt = _voigt_matrix(tensor.get("ieee_format")) if isinstance(tensor, dict) else None
    bulk = _finite_positive((doc.get("bulk_modulus") or {}).get("vrh"))
    shear = _finite_positive((doc.get("shear_modulus") or {}).get("vrh"))
    if voigt is None and (bulk is None or shear is None):
        return None, "elasticity document without a 6x6 tensor or positive K_VRH and G_VRH"
    elastic = ElasticInput(
        voigt_GPa=voigt,
        bulk_modulus_GPa=bulk,
        shear_modulus_GPa=shear,
        source=f"Materials Project {material_id} elasticity",
    )
    return elastic, None


def candidate_from_summary(
    doc: dict[str, Any],
    *,
    query: MPQuery,
    endpoint: str,
    retrieved_utc: str,
    database_version: str | None,
) -> Candidate:
    """Build a :class:`Candidate` from one ``materials/summary`` document.

    A document whose structure is missing or unreadable gives a failed candidate
    (``load_error`` set), never an exception.
    """
    material_id = str(doc.get("material_id"))
    symmetry = doc.get("symmetry") or {}
    provenance: dict[str, Any] = {
        "material_id": material_id,
        "query": query.canonical(),
        "endpoint": endpoint,
        "retrieved_utc": retrieved_utc,
        "energy_above_hull_eV": doc.get("energy_above_hull"),  # eV/atom, as MP gives it
        "band_gap_eV": doc.get("band_gap"),
        "formula_pretty": doc.get("formula_pretty"),
        "is_stable": doc.get("is_stable"),
        "theoretical": doc.get("theoretical"),
        "space_group": {
            "symbol": symmetry.get("symbol"),
            "number": symmetry.get("number"),
            "crystal_system": symmetry.get("crystal_system"),
        },
    }
    if database_version:
        provenance["database_version"] = database_version
    structure_doc = doc.get("structure")
    error: str | None = None
    structure: Structure | None = None
    if not isinstance(structure_doc, dict):
        error = f"{material_id}: the Materials Project returned no structure"
    else:
        try:
            structure = Structure.from_dict(structure_doc)
            provenance["nsites"] = len(structure)
        except Exception as exc:  # any malformed dict: a failed candidate, not an abort
            error = f"{material_id}: unreadable Materials Project structure: {_one_line(exc)}"
    return Candidate(
        candidate_id=material_id,
        source="mp",
        structure=structure,
        formula=doc.get("formula_pretty"),
        provenance=provenance,
        load_error=error,
        load_error_cause="parse_error" if error else None,
    )


# --------------------------------------------------------------------------------------------
# Download and public entry point
# --------------------------------------------------------------------------------------------


def _download(
    query: MPQuery,
    *,
    api_key: str,
    endpoint: str,
    max_retries: int,
    backoff_s: float,
    page_size: int,
    timeout_s: float,
    deadline_s: float = QUERY_DEADLINE_S,
) -> tuple[list[Candidate], str, str | None]:
    """Run the summary and elasticity queries; return candidates, time and database version."""
    log = _ResponseLog(deadline_s)
    session = _make_session(api_key, max_retries, backoff_s, log)
    session.hooks["response"].append(log.record)
    with session:
        try:
            database_version = _probe(session, endpoint, timeout_s, max_retries, backoff_s)
        except _QueryStopped as exc:
            raise _query_error(exc, log, endpoint, max_retries, backoff_s) from exc
        except SourceError as exc:
            if log.remaining_s() <= 0:
                raise _query_error(exc, log, endpoint, max_retries, backoff_s) from exc
            raise
        retrieved_utc = utc_now_iso()
        try:
            from mp_api.client import MPRester
        except ImportError as exc:
            raise SourceError(
                "the Materials Project source needs mp-api: pip install 'iondrag[mp]'"
            ) from exc
        chunk_size = min(page_size, query.max_candidates or page_size)
        num_chunks = (
            None if query.max_candidates is None else math.ceil(query.max_candidates / chunk_size)
        )
        try:
            with warnings.catch_warnings():
                # mp-api warns on a missing heartbeat; our probe already reported problems.
                warnings.filterwarnings("ignore", message="Cannot listen to heartbeat")
                rester = MPRester(
                    api_key=api_key,
                    endpoint=endpoint,
                    session=session,
                    use_document_model=False,
                    mute_progress_bars=True,
                )
            summary_docs = rester.materials.summary.search(
                **query.summary_search_kwargs(),
                fields=list(SUMMARY_FIELDS),
                chunk_size=chunk_size,
                num_chunks=num_chunks,
            )
            unique: dict[str, dict[str, Any]] = {}
            for doc in summary_docs:  # pages of a changing database may overlap
                unique.setdefault(str(doc["material_id"]), doc)
            summary_docs = list(unique.values())[: query.max_candidates]
            ids = list(unique)[: query.max_candidates]
            elastic_docs: dict[str, dict[str, Any]] = {}
            for start in range(0, len(ids), ELASTICITY_BATCH):
                batch = ids[start : start + ELASTICITY_BATCH]
                for doc in rester.materials.elasticity.search(
                    material_ids=batch,
                    fields=list(ELASTICITY_FIELDS),
                    chunk_size=min(page_size, len(batch)),
                ):
                    elastic_docs[str(doc["material_id"])] = doc
        except Exception as exc:  # mp-api raises MPRestError, KeyError, JSON errors, ...
            raise _query_error(exc, log, endpoint, max_retries, backoff_s) from exc

    candidates = []
    for doc in summary_docs:
        candidate = candidate_from_summary(
            doc,
            query=query,
            endpoint=endpoint,
            retrieved_utc=retrieved_utc,
            database_version=database_version,
        )
        elastic_doc = elastic_docs.get(candidate.candidate_id)
        if elastic_doc is not None:
            candidate.elastic, note = elastic_from_document(elastic_doc)
            if note:
                candidate.provenance["elastic_note"] = note
        candidates.append(candidate)
    return candidates, retrieved_utc, database_version


def fetch_mp_candidates(
    query: MPQuery,
    *,
    api_key: str | None = None,
    endpoint: str | None = None,
    cache_path: str | Path | None = None,
    max_retries: int = 4,
    backoff_s: float = 1.0,
    page_size: int = MAX_PAGE_SIZE,
    timeout_s: float = 30.0,
    refresh: bool = False,
    deadline_s: float = QUERY_DEADLINE_S,
    cache_max_age_days: float | None = None,
) -> list[Candidate]:
    """Return the Materials Project materials matching ``query`` as candidates.

    Parameters
    ----------
    query
        The summary filters.
    api_key
        Materials Project API key; default the ``MP_API_KEY`` environment variable.
    endpoint
        API root URL; default ``MP_API_ENDPOINT``, else ``https://api.materialsproject.org/``.
    cache_path
        SQLite cache file; default ``get_settings().resolved_mp_cache_path()``.
    max_retries
        Retries of one request after a connection error or HTTP 429/5xx answer.
    backoff_s
        First wait between retries (s); doubled at each further retry.
    page_size
        Documents per request (``_limit``), at most 1000.
    timeout_s
        Timeout of one request (s) for the start-up check; mp-api uses its own (20 s).
    refresh
        Ignore a cached answer and query the server again (the cache is then updated).
    cache_max_age_days
        A cached answer retrieved longer ago than this (days) is fetched again, and the cache
        updated; 0 always asks the server, ``math.inf`` never expires. Default: the setting
        ``mp_cache_max_age_days`` (``IONDRAG_MP_CACHE_MAX_AGE_DAYS``, 30 days).
    deadline_s
        Wall time of the whole query (every request, retry and page), s; each request gets
        at most its share of what remains. Paging also stops on a repeated page and after
        :data:`MAX_PAGES` pages (a server that overstates ``meta.total_doc``).

    Returns
    -------
    list of Candidate
        One per material, ``candidate_id`` = material id, ``source="mp"``, ``mobile_ion``
        unset; ``elastic`` set when the elasticity endpoint has the material. Provenance:
        ``material_id``, ``query`` (canonical), ``endpoint``, ``retrieved_utc``,
        ``database_version`` (when the server tells), ``energy_above_hull_eV`` (eV/atom),
        ``band_gap_eV``, ``space_group``, and ``from_cache``: True on a cache hit (with
        ``cache_age_days``, the age of the cached answer). An answer fetched again because
        its cached copy had expired says so: ``cache_expired`` True, with
        ``cache_expired_retrieved_utc`` (when the old copy was retrieved) and
        ``cache_max_age_days``.

    Raises
    ------
    MPAuthError
        No key, a malformed key (mp-api's check: 32 characters; letters and digits), or a key
        the server rejects (HTTP 401/403).
    MPUnreachableError
        Connection refused, unknown host or no answer.
    MPRateLimitError, MPServerError
        HTTP 429 or 5xx still answered after ``max_retries`` retries.
    SourceError
        Any other failure of the query or the cache.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    if max_retries < 0 or backoff_s < 0:
        raise ValueError("max_retries and backoff_s must not be negative")
    if cache_max_age_days is not None and not cache_max_age_days >= 0:  # NaN too
        raise ValueError(f"cache_max_age_days must be >= 0 (days), got {cache_max_age_days}")
    resolved_endpoint = resolve_endpoint(endpoint)
    if cache_path is None:
        from iondrag.screening.settings import get_settings

        cache_path = get_settings().resolved_mp_cache_path()
    cache_file = Path(cache_path).expanduser()
    query_json = query.canonical_json()

    expired: dict[str, Any] = {}
    if not refresh:
        cached = _cache_read(cache_file, resolved_endpoint, query_json)
        if cached is not None:
            found, cached_utc = cached
            if cache_max_age_days is None:
                from iondrag.screening.settings import get_settings

                cache_max_age_days = get_settings().mp_cache_max_age_days
            age_days = _cache_age_days(cached_utc)
            if math.isinf(cache_max_age_days) or (
                age_days is not None and age_days < cache_max_age_days
            ):
                for candidate in found:
                    candidate.provenance["from_cache"] = True
                    if age_days is not None:
                        candidate.provenance["cache_age_days"] = round(age_days, 4)
                return found
            expired = {
                "cache_expired": True,
                "cache_expired_retrieved_utc": cached_utc,
                "cache_max_age_days": cache_max_age_days,
            }

    try:
        candidates, retrieved_utc, database_version = _download(
            query,
            api_key=_resolve_api_key(api_key),
            endpoint=resolved_endpoint,
            max_retries=max_retries,
            backoff_s=backoff_s,
            page_size=page_size,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
        )
    except (MPUnreachableError, MPRateLimitError, MPServerError) as exc:
        if not expired:
            raise
        raise type(exc)(
            f"{exc}; the cached answer of this query (retrieved "
            f"{expired['cache_expired_retrieved_utc']}) is older than "
            f"mp_cache_max_age_days = {cache_max_age_days:g}: set "
            "IONDRAG_MP_CACHE_MAX_AGE_DAYS=inf (iondrag screen --mp-cache-max-age-days inf) "
            "to use it anyway"
        ) from exc
    _cache_write(
        cache_file, resolved_endpoint, query_json, candidates, retrieved_utc, database_version
    )
    for candidate in candidates:
        candidate.provenance["from_cache"] = False
        candidate.provenance.update(expired)
    return candidates
