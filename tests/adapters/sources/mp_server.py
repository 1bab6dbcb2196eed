"""A local stand-in for the Materials Project API, for testing the real mp-api client.

It serves, on 127.0.0.1, the routes and JSON shapes that ``mp_api.client.MPRester`` uses:

- ``GET /heartbeat`` -> ``{"db_version", "version", "access_controlled_batch_ids"}`` (called
  by MPRester at start-up, without the API key);
- ``GET /materials/summary/`` and ``GET /materials/elasticity/`` with filters, ``_fields``,
  ``_limit`` and ``_skip`` -> ``{"data": [...], "meta": {"total_doc": N, ...}}``.

Faults can be planned per route (HTTP status for the next n requests, or forever), the API
key is checked on ``/materials/`` routes (401 otherwise), and every request is recorded
(path and query parameters) so tests can count requests and inspect ``_fields``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymatgen.core import Composition, Structure

MAX_LIMIT = 1000
"""Largest ``_limit`` the real API accepts."""

SUMMARY_FILTERS = frozenset(
    {
        "material_ids",
        "elements",
        "exclude_elements",
        "chemsys",
        "formula",
        "energy_above_hull_min",
        "energy_above_hull_max",
        "band_gap_min",
        "band_gap_max",
        "nsites_min",
        "nsites_max",
        "nelements_min",
        "nelements_max",
        "is_stable",
        "theoretical",
        "deprecated",
    }
)
ELASTICITY_FILTERS = frozenset({"material_ids"})
PAGING = frozenset({"_fields", "_all_fields", "_limit", "_skip"})


@dataclass
class Fault:
    """Answer ``status`` to requests whose path starts with ``route``.

    ``times`` requests get the fault, then the route works again; ``times=None`` is forever.
    """

    status: int
    route: str = "/materials/"
    times: int | None = 1
    retry_after: str | None = None
    served: int = 0

    def applies(self, path: str) -> bool:
        return path.startswith(self.route) and (self.times is None or self.served < self.times)


@dataclass
class RecordedRequest:
    """One request the server received."""

    path: str
    params: dict[str, str]
    api_key: str | None
    status: int = 0


@dataclass
class MPServerState:
    """Documents, faults and request log of a :class:`MPTestServer`."""

    summary_docs: list[dict[str, Any]]
    elasticity_docs: list[dict[str, Any]]
    api_key: str
    db_version: str = "2025.09.25"
    api_version: str = "0.87.3"
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Misbehaviours (see MPTestServer.misbehave): add this to meta.total_doc; serve the
    #: first page whatever _skip says; sleep this long before answering /materials/.
    overstate_total_doc: int = 0
    repeat_pages: bool = False
    hang_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _elements_of(doc: dict[str, Any]) -> set[str]:
    return {str(el) for el in Structure.from_dict(doc["structure"]).composition.elements}


def _match_summary(doc: dict[str, Any], params: dict[str, str]) -> bool:
    """Apply the summary filters the client may send (server-side, as the real API does)."""
    elements = _elements_of(doc)
    checks: list[bool] = []
    if "material_ids" in params:
        checks.append(doc["material_id"] in params["material_ids"].split(","))
    if "elements" in params:
        checks.append(set(params["elements"].split(",")) <= elements)
    if "exclude_elements" in params:
        checks.append(not set(params["exclude_elements"].split(",")) & elements)
    if "chemsys" in params:
        checks.append(
            any(set(system.split("-")) == elements for system in params["chemsys"].split(","))
        )
    if "formula" in params:
        reduced = Composition(doc["formula_pretty"]).reduced_formula
        checks.append(
            any(Composition(f).reduced_formula == reduced for f in params["formula"].split(","))
        )
    for name, key in (
        ("energy_above_hull", "energy_above_hull"),
        ("band_gap", "band_gap"),
        ("nsites", "nsites"),
        ("nelements", "nelements"),
    ):
        if f"{name}_min" in params:
            checks.append(doc[key] >= float(params[f"{name}_min"]))
        if f"{name}_max" in params:
            checks.append(doc[key] <= float(params[f"{name}_max"]))
    for name in ("is_stable", "theoretical", "deprecated"):
        if name in params:
            checks.append(bool(doc.get(name, False)) == _flag(params[name]))
    return all(checks)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        path = url.path
        params = {key: values[-1] for key, values in parse_qs(url.query).items()}
        record = RecordedRequest(path=path, params=params, api_key=self.headers.get("x-api-key"))
        with state.lock:
            state.requests.append(record)
            fault = next((f for f in state.faults if f.applies(path)), None)
            if fault is not None:
                fault.served += 1
        if state.hang_s > 0 and path.startswith("/materials/"):
            time.sleep(state.hang_s)  # a server that accepts and never answers (in time)
        status, payload, headers = self._answer(state, path, params, record, fault)
        record.status = status
        self._send(status, payload, headers)

    def _answer(
        self,
        state: MPServerState,
        path: str,
        params: dict[str, str],
        record: RecordedRequest,
        fault: Fault | None,
    ) -> tuple[int, Any, dict[str, str]]:
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, {"detail": f"planned fault {fault.status}"}, headers
        if path == "/heartbeat":
            return (
                200,
                {
                    "db_version": state.db_version,
                    "version": state.api_version,
                    "access_controlled_batch_ids": [],
                },
                {},
            )
        if path in ("/materials/summary/", "/materials/elasticity/"):
            if record.api_key != state.api_key:
                return 401, {"detail": "Invalid API key"}, {}
            summary = path == "/materials/summary/"
            allowed = (SUMMARY_FILTERS if summary else ELASTICITY_FILTERS) | PAGING
            unknown = sorted(set(params) - allowed)
            if unknown:
                return 400, {"detail": f"unknown query parameters {unknown}"}, {}
            docs = state.summary_docs if summary else state.elasticity_docs
            return self._page(state, docs, params, summary)
        return 404, {"detail": "Not Found"}, {}

    def _page(
        self,
        state: MPServerState,
        docs: list[dict[str, Any]],
        params: dict[str, str],
        summary: bool,
    ) -> tuple[int, Any, dict[str, str]]:
        limit = int(params.get("_limit", 100))
        skip = int(params.get("_skip", 0))
        if not 1 <= limit <= MAX_LIMIT or skip < 0:
            detail = [{"loc": ["query", "_limit"], "msg": f"must be in [1, {MAX_LIMIT}]"}]
            return 422, {"detail": detail}, {}
        if summary:
            matches = [doc for doc in docs if _match_summary(doc, params)]
        elif "material_ids" in params:
            wanted = set(params["material_ids"].split(","))
            matches = [doc for doc in docs if doc["material_id"] in wanted]
        else:
            matches = list(docs)
        page = matches[0:limit] if state.repeat_pages else matches[skip : skip + limit]
        if _flag(params.get("_all_fields", "false")):
            data = page
        else:
            fields = params.get("_fields", "material_id").split(",")
            data = [{name: doc[name] for name in fields if name in doc} for doc in page]
        meta = {
            "api_version": state.api_version,
            "time_stamp": "2025-09-25T00:00:00",
            "total_doc": len(matches) + state.overstate_total_doc,
            "max_limit": MAX_LIMIT,
            "db_version": state.db_version,
        }
        return 200, {"data": data, "meta": meta}, {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: MPServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class MPTestServer:
    """Run the fake Materials Project API in a background thread on an ephemeral port.

    Parameters
    ----------
    summary_docs, elasticity_docs
        Documents served by ``materials/summary`` and ``materials/elasticity`` (full
        documents; the server projects them on ``_fields``).
    api_key
        The only key accepted on ``/materials/`` routes.
    """

    def __init__(
        self,
        summary_docs: list[dict[str, Any]],
        elasticity_docs: list[dict[str, Any]],
        api_key: str,
        db_version: str = "2025.09.25",
    ) -> None:
        try:
            from emmet.core import __version__ as emmet_version
        except ImportError:  # pragma: no cover
            emmet_version = "0.87.3"
        self.state = MPServerState(
            summary_docs=summary_docs,
            elasticity_docs=elasticity_docs,
            api_key=api_key,
            db_version=db_version,
            api_version=emmet_version,
        )
        self._server = _Server(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        """Root URL of the API, e.g. ``http://127.0.0.1:43567/``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> MPTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_fault(
        self,
        status: int,
        *,
        times: int | None = 1,
        route: str = "/materials/",
        retry_after: str | None = None,
    ) -> Fault:
        """Answer ``status`` to the next ``times`` requests on ``route`` (None: forever)."""
        fault = Fault(status=status, route=route, times=times, retry_after=retry_after)
        with self.state.lock:
            self.state.faults.append(fault)
        return fault

    def misbehave(
        self, *, overstate_total_doc: int = 0, repeat_pages: bool = False, hang_s: float = 0.0
    ) -> None:
        """Overstate ``meta.total_doc`` by this many documents, serve the first page for every
        ``_skip``, and/or hold every ``/materials/`` request ``hang_s`` seconds."""
        with self.state.lock:
            self.state.overstate_total_doc = overstate_total_doc
            self.state.repeat_pages = repeat_pages
            self.state.hang_s = hang_s

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests received on ``path`` (exact path, e.g. ``/materials/summary/``)."""
        with self.state.lock:
            return [r for r in self.state.requests if r.path == path]

    def count(self, path: str | None = None) -> int:
        """Number of requests received on ``path``, or on all routes."""
        with self.state.lock:
            return sum(1 for r in self.state.requests if path is None or r.path == path)
