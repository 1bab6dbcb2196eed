"""The Materials Project source against a local HTTP server, through the real mp-api client.

Each fetch that reaches the summary endpoint costs about a second (mp-api validates every
requested field against the emmet schema), so scenarios are grouped to keep the file fast.
"""

from __future__ import annotations

import math
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymatgen.core import Structure

from iondrag.adapters.sources import load_candidates, mp
from iondrag.adapters.sources.mp import (
    ELASTICITY_FIELDS,
    SUMMARY_FIELDS,
    MPAuthError,
    MPQuery,
    MPRateLimitError,
    MPServerError,
    MPUnreachableError,
    fetch_mp_candidates,
)
from iondrag.screening.errors import SourceError

REPO_ROOT = Path(__file__).resolve().parents[3]
SUMMARY = "/materials/summary/"
ELASTICITY = "/materials/elasticity/"
FAST = {"max_retries": 2, "backoff_s": 0.001}
# what a candidate needs from each endpoint, and what it may ask for besides (no heavy fields)
SUMMARY_NEEDED = {"material_id", "structure", "energy_above_hull", "band_gap"}
SUMMARY_ALLOWED = SUMMARY_NEEDED | {"formula_pretty", "symmetry", "is_stable", "theoretical"}
ELASTIC_NEEDED = {"material_id", "elastic_tensor"}
ELASTIC_ALLOWED = ELASTIC_NEEDED | {"bulk_modulus", "shear_modulus"}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key or endpoint from the developer's shell; default cache inside tmp_path."""
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("MP_API_ENDPOINT", raising=False)
    monkeypatch.delenv("IONDRAG_MP_CACHE_PATH", raising=False)
    monkeypatch.delenv("IONDRAG_MP_CACHE_MAX_AGE_DAYS", raising=False)
    monkeypatch.setenv("IONDRAG_HOME", str(tmp_path / "iondrag-home"))


def fetch(server: Any, key: str, cache: Path, query: MPQuery | None = None, **kwargs: Any):
    options = {**FAST, **kwargs}
    return fetch_mp_candidates(
        query or MPQuery(elements=["Li"]),
        api_key=key,
        endpoint=server.endpoint,
        cache_path=cache,
        **options,
    )


def served(server: Any) -> dict[str, dict[str, Any]]:
    return {doc["material_id"]: doc for doc in server.state.summary_docs}


def lithium_ids(server: Any) -> list[str]:
    return [
        doc["material_id"]
        for doc in server.state.summary_docs
        if "Li" in Structure.from_dict(doc["structure"]).composition
    ]


def cached_queries(cache: Path) -> list[tuple[str, str, int]]:
    if not cache.exists():
        return []
    with sqlite3.connect(cache) as connection:
        return connection.execute("SELECT endpoint, query, n_candidates FROM mp_queries").fetchall()


# --- happy path -------------------------------------------------------------------------------


def test_candidates_fields_and_pagination(mp_server, mp_key, tmp_path):
    candidates = fetch(mp_server, mp_key, tmp_path / "cache.sqlite", page_size=2)

    # the lithium materials, in the server's order, over three summary pages
    assert [c.candidate_id for c in candidates] == lithium_ids(mp_server)
    assert len(candidates) == 5
    summary_requests = mp_server.requests_to(SUMMARY)
    assert [r.params.get("_skip", "0") for r in summary_requests] == ["0", "2", "4"]
    assert all(int(r.params["_limit"]) <= 2 for r in summary_requests)

    # only the needed fields were asked for, with the key, on both endpoints
    for request in summary_requests:
        asked = set(request.params["_fields"].split(","))
        assert SUMMARY_NEEDED <= asked <= SUMMARY_ALLOWED
        assert asked == set(SUMMARY_FIELDS)
        assert "_all_fields" not in request.params
        assert request.params["elements"] == "Li"
        assert request.api_key == mp_key
    elastic_requests = mp_server.requests_to(ELASTICITY)
    assert len(elastic_requests) == 2  # 3 of the 5 have elasticity docs: pages of 2 and 1
    asked_ids: set[str] = set()
    for request in elastic_requests:
        asked = set(request.params["_fields"].split(","))
        assert ELASTIC_NEEDED <= asked <= ELASTIC_ALLOWED
        assert asked == set(ELASTICITY_FIELDS)
        asked_ids |= set(request.params["material_ids"].split(","))
    assert asked_ids == {c.candidate_id for c in candidates}

    # structures and provenance are what the server served
    docs = served(mp_server)
    for candidate in candidates:
        doc = docs[candidate.candidate_id]
        assert candidate.ok and candidate.source == "mp" and candidate.mobile_ion is None
        assert candidate.structure == Structure.from_dict(doc["structure"])
        assert candidate.formula == doc["formula_pretty"]
        prov = candidate.provenance
        assert prov["material_id"] == candidate.candidate_id
        assert prov["query"] == {"elements": ["Li"]}
        assert prov["endpoint"] == mp_server.endpoint
        assert prov["retrieved_utc"].endswith("+00:00")
        assert prov["database_version"] == mp_server.state.db_version
        assert prov["energy_above_hull_eV"] == doc["energy_above_hull"]
        assert prov["band_gap_eV"] == doc["band_gap"]
        assert prov["space_group"]["number"] == doc["symmetry"]["number"]
        assert prov["nsites"] == doc["nsites"]
        assert prov["from_cache"] is False

    # elastic data attached where the server had usable data
    elastic_docs = {doc["material_id"]: doc for doc in mp_server.state.elasticity_docs}
    by_id = {c.candidate_id: c for c in candidates}
    for material_id in ("mp-1138", "mp-1960"):
        elastic = by_id[material_id].elastic
        doc = elastic_docs[material_id]
        assert elastic is not None
        assert elastic.voigt_GPa == doc["elastic_tensor"]["ieee_format"]
        assert elastic.bulk_modulus_GPa == doc["bulk_modulus"]["vrh"]
        assert elastic.shear_modulus_GPa == doc["shear_modulus"]["vrh"]
        assert elastic.source == f"Materials Project {material_id} elasticity"
    assert by_id["mp-1138"].elastic.voigt_GPa[3][3] == 63.0  # LiF C44, GPa
    assert by_id["mp-2251"].elastic is None  # negative G_VRH and no tensor: not usable
    assert "elastic_note" in by_id["mp-2251"].provenance
    assert by_id["mp-1153"].elastic is None and "elastic_note" not in by_id["mp-1153"].provenance


def test_filters_are_sent_and_max_candidates_stops_paging(mp_server, mp_key, tmp_path):
    query = MPQuery(
        elements=["Li"],
        exclude_elements=["N"],
        energy_above_hull_max_eV=0.05,
        band_gap_min_eV=2.0,
        num_sites_max=12,
        theoretical=False,
        max_candidates=3,
    )
    candidates = fetch(mp_server, mp_key, tmp_path / "cache.sqlite", query=query, page_size=2)

    matching = [
        doc["material_id"]
        for doc in mp_server.state.summary_docs
        if doc["material_id"] in lithium_ids(mp_server)
        and doc["band_gap"] >= 2.0
        and doc["nsites"] <= 12
        and not doc["theoretical"]
    ]
    assert len(matching) == 4
    assert [c.candidate_id for c in candidates] == matching[:3]
    requests = mp_server.requests_to(SUMMARY)
    assert len(requests) == 2  # 3 of 4 wanted: two pages of 2, no third
    params = requests[0].params
    assert params["exclude_elements"] == "N"
    assert float(params["energy_above_hull_max"]) == 0.05
    assert float(params["band_gap_min"]) == 2.0
    assert int(params["nsites_max"]) == 12
    assert params["theoretical"] == "False"
    assert params["deprecated"] == "False"
    assert not {"band_gap_max", "nsites_min", "energy_above_hull_min"} & set(params)


def test_dispatcher_with_key_and_endpoint_from_environment(
    mp_server, mp_key, tmp_path, monkeypatch
):
    monkeypatch.setenv("MP_API_KEY", mp_key)
    monkeypatch.setenv("MP_API_ENDPOINT", mp_server.endpoint.rstrip("/"))
    candidates = load_candidates("mp", elements="Na")

    assert sorted(c.candidate_id for c in candidates) == ["mp-22862", "mp-2352"]
    nacl = next(c for c in candidates if c.formula == "NaCl")
    assert nacl.provenance["endpoint"] == mp_server.endpoint
    # moduli only, no tensor, on the server: K and G (GPa) attached
    assert nacl.elastic is not None and nacl.elastic.voigt_GPa is None
    assert (nacl.elastic.bulk_modulus_GPa, nacl.elastic.shear_modulus_GPa) == (25.0, 14.5)
    default_cache = tmp_path / "iondrag-home" / "mp_cache.sqlite"  # the settings default
    assert [row[2] for row in cached_queries(default_cache)] == [2]


# --- cache ------------------------------------------------------------------------------------


def test_rerun_is_served_from_the_cache_without_mp_api(mp_server, mp_key, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = fetch(mp_server, mp_key, cache)
    requests_after_first = mp_server.count()
    assert requests_after_first > 0
    key = MPQuery(elements=["Li"]).canonical_json()
    assert cached_queries(cache) == [(mp_server.endpoint, key, len(first))]

    # the same query written differently: same canonical form, no request at all
    second = fetch(mp_server, mp_key, cache, query=MPQuery(elements="li, Li"))
    assert mp_server.count() == requests_after_first
    assert [c.candidate_id for c in second] == [c.candidate_id for c in first]
    for old, new in zip(first, second, strict=True):
        assert new.structure == old.structure
        assert new.elastic == old.elastic
        assert new.provenance["from_cache"] is True
        assert new.provenance["retrieved_utc"] == old.provenance["retrieved_utc"]

    # refresh asks the server again and replaces the entry
    fetch(mp_server, mp_key, cache, refresh=True)
    assert mp_server.count(SUMMARY) == 2
    assert len(cached_queries(cache)) == 1

    # in a fresh interpreter, with the server gone: the module and a cache hit import
    # neither mp_api nor requests
    mp_server.stop()
    script = textwrap.dedent(
        f"""
        import sys
        import iondrag.adapters.sources.mp as mp
        assert "mp_api" not in sys.modules, "import iondrag.adapters.sources.mp imported mp_api"
        found = mp.fetch_mp_candidates(
            mp.MPQuery(elements=["Li"]), api_key={mp_key!r}, endpoint={mp_server.endpoint!r},
            cache_path={str(cache)!r},
        )
        assert [c.candidate_id for c in found] == {[c.candidate_id for c in first]!r}
        assert "mp_api" not in sys.modules, "a cache hit imported mp_api"
        assert "requests" not in sys.modules, "a cache hit imported requests"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _age_cache(cache: Path, days: float) -> str:
    """Write the retrieval time of every cached answer ``days`` back; return it."""
    then = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    with closing(sqlite3.connect(cache)) as connection, connection:
        connection.execute("UPDATE mp_queries SET retrieved_utc = ?", (then,))
    return then


def _cached_retrieval(cache: Path) -> str:
    with closing(sqlite3.connect(cache)) as connection:
        return connection.execute("SELECT retrieved_utc FROM mp_queries").fetchone()[0]


def test_cached_answers_older_than_the_maximum_age_are_fetched_again(
    mp_server, mp_key, tmp_path, monkeypatch
):
    cache = tmp_path / "cache.sqlite"
    first = fetch(mp_server, mp_key, cache)
    assert mp_server.count(SUMMARY) == 1

    # fresh (default maximum age: the setting, 30 days): served from the cache, with its age
    _age_cache(cache, 29)
    fresh = fetch(mp_server, mp_key, cache)
    assert mp_server.count(SUMMARY) == 1
    assert [c.candidate_id for c in fresh] == [c.candidate_id for c in first]
    for candidate in fresh:
        assert candidate.provenance["from_cache"] is True
        assert candidate.provenance["cache_age_days"] == pytest.approx(29, abs=0.01)
        assert "cache_expired" not in candidate.provenance

    # older than 30 days: asked again, the answer says why, the cache entry is renewed
    old = _age_cache(cache, 31)
    again = fetch(mp_server, mp_key, cache)
    assert mp_server.count(SUMMARY) == 2
    assert [c.candidate_id for c in again] == [c.candidate_id for c in first]
    for candidate in again:
        prov = candidate.provenance
        assert prov["from_cache"] is False
        assert prov["cache_expired"] is True
        assert prov["cache_expired_retrieved_utc"] == old
        assert prov["cache_max_age_days"] == 30
        assert prov["retrieved_utc"] > old
    assert _cached_retrieval(cache) == again[0].provenance["retrieved_utc"]
    assert len(cached_queries(cache)) == 1
    renewed = fetch(mp_server, mp_key, cache)  # the renewed entry is fresh
    assert mp_server.count(SUMMARY) == 2
    assert all(c.provenance["from_cache"] is True for c in renewed)
    assert all("cache_expired" not in c.provenance for c in renewed)  # not stored in the cache

    # the maximum age: argument first, then IONDRAG_MP_CACHE_MAX_AGE_DAYS
    _age_cache(cache, 5)
    fetch(mp_server, mp_key, cache, cache_max_age_days=10)
    assert mp_server.count(SUMMARY) == 2
    monkeypatch.setenv("IONDRAG_MP_CACHE_MAX_AGE_DAYS", "inf")
    _age_cache(cache, 10_000)
    kept = fetch(mp_server, mp_key, cache)
    assert mp_server.count(SUMMARY) == 2 and kept[0].provenance["from_cache"] is True
    monkeypatch.setenv("IONDRAG_MP_CACHE_MAX_AGE_DAYS", "2")
    _age_cache(cache, 5)
    assert fetch(mp_server, mp_key, cache)[0].provenance["cache_max_age_days"] == 2
    assert mp_server.count(SUMMARY) == 3
    fetch(mp_server, mp_key, cache, cache_max_age_days=0)  # 0: always asks
    assert mp_server.count(SUMMARY) == 4
    with pytest.raises(ValueError, match="cache_max_age_days"):
        fetch(mp_server, mp_key, cache, cache_max_age_days=-1)


def test_expired_answer_and_server_down_names_the_way_to_keep_the_old_answer(
    mp_server, mp_key, tmp_path
):
    cache = tmp_path / "cache.sqlite"
    fetch(mp_server, mp_key, cache)
    old = _age_cache(cache, 40)
    mp_server.add_fault(503, times=None, route=SUMMARY)
    with pytest.raises(MPServerError, match="IONDRAG_MP_CACHE_MAX_AGE_DAYS=inf") as info:
        fetch(mp_server, mp_key, cache)
    assert old in str(info.value)
    assert _cached_retrieval(cache) == old  # the old answer is kept
    assert fetch(mp_server, mp_key, cache, cache_max_age_days=math.inf)[0].provenance["from_cache"]


def test_unusable_cache_file_is_a_clear_error(mp_server, mp_key, tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SourceError, match="not a usable SQLite file"):
        fetch(mp_server, mp_key, cache)
    assert mp_server.count() == 0


# --- errors -----------------------------------------------------------------------------------


def test_missing_key(mp_server, tmp_path):
    with pytest.raises(MPAuthError, match="set MP_API_KEY") as info:
        fetch_mp_candidates(
            MPQuery(elements=["Li"]), endpoint=mp_server.endpoint, cache_path=tmp_path / "c.db"
        )
    assert info.value.cause == "mp_api_key"
    assert mp_server.count() == 0


@pytest.mark.parametrize("bad_key", ["short", "abcdefghijklmnopqrstuvwxyz01234-", "x" * 33])
def test_malformed_key(mp_server, tmp_path, bad_key):
    with pytest.raises(MPAuthError, match="expected 32 letters and digits") as info:
        fetch(mp_server, bad_key, tmp_path / "cache.sqlite")
    assert bad_key not in str(info.value)  # never echo a key
    assert mp_server.count() == 0


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key(mp_server, mp_key, tmp_path, status):
    key = mp_key
    if status == 401:
        key = "Z" * 32  # well formed, but not the server's: a real 401
    else:
        mp_server.add_fault(403, times=None, route=SUMMARY)
    with pytest.raises(MPAuthError, match=rf"rejected the API key \(HTTP {status}\)"):
        fetch(mp_server, key, tmp_path / "cache.sqlite")
    assert mp_server.count(SUMMARY) == 1  # not retried
    assert cached_queries(tmp_path / "cache.sqlite") == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server(mp_key, tmp_path):
    endpoint = f"http://127.0.0.1:{_free_port()}/"
    with pytest.raises(MPUnreachableError, match="cannot reach the Materials Project API") as info:
        fetch_mp_candidates(
            MPQuery(elements=["Li"]),
            api_key=mp_key,
            endpoint=endpoint,
            cache_path=tmp_path / "cache.sqlite",
            **FAST,
        )
    assert endpoint in str(info.value) and "Connection refused" in str(info.value)
    assert info.value.cause == "mp_unreachable"


@pytest.mark.parametrize(
    ("summary_faults", "elastic_faults"),
    [((429, 429), (503,)), ((500,), (502, 429))],
)
def test_retry_then_success(mp_server, mp_key, tmp_path, summary_faults, elastic_faults):
    for route, faults in ((SUMMARY, summary_faults), (ELASTICITY, elastic_faults)):
        for status in faults:
            # a Retry-After of 0 s is honoured like the backoff
            mp_server.add_fault(status, times=1, route=route, retry_after="0")
    candidates = fetch(mp_server, mp_key, tmp_path / "cache.sqlite")

    assert [c.candidate_id for c in candidates] == lithium_ids(mp_server)
    assert sum(c.elastic is not None for c in candidates) == 2
    assert [r.status for r in mp_server.requests_to(SUMMARY)] == [*summary_faults, 200]
    assert [r.status for r in mp_server.requests_to(ELASTICITY)] == [*elastic_faults, 200]


def test_rate_limit_forever_stops_at_the_budget(mp_server, mp_key, tmp_path):
    mp_server.add_fault(429, times=None, route=SUMMARY)
    with pytest.raises(MPRateLimitError, match=r"HTTP 429.*max_retries=3") as info:
        fetch(mp_server, mp_key, tmp_path / "cache.sqlite", max_retries=3)
    assert mp_server.count(SUMMARY) == 4  # first try + 3 retries
    assert info.value.cause == "mp_rate_limited"
    assert "\n" not in str(info.value)
    assert cached_queries(tmp_path / "cache.sqlite") == []


@pytest.mark.parametrize("route", [SUMMARY, "/heartbeat"])
def test_server_error_forever_stops_at_the_budget(mp_server, mp_key, tmp_path, route):
    mp_server.add_fault(503, times=None, route=route)
    with pytest.raises(MPServerError, match=r"HTTP 503 \(server error\).*max_retries=2") as info:
        fetch(mp_server, mp_key, tmp_path / "cache.sqlite")
    assert mp_server.count(route) == 3  # first try + 2 retries
    assert info.value.cause == "mp_server_error"
    assert cached_queries(tmp_path / "cache.sqlite") == []


def test_endpoint_must_be_a_url(mp_key, tmp_path):
    with pytest.raises(SourceError, match="must start with http"):
        fetch_mp_candidates(
            MPQuery(elements=["Li"]), api_key=mp_key, endpoint="localhost:1234", cache_path=tmp_path
        )


# --- query model ------------------------------------------------------------------------------


def test_query_canonical_form_ignores_order_case_and_duplicates():
    one = MPQuery(elements="S,li", chemsys="S-P-Li", material_ids=["mp-2", "MP-1", "mp-2"])
    two = MPQuery(elements=["Li", "S", "S"], chemsys="Li-P-S", material_ids="mp-1,mp-2")
    assert one.canonical_json() == two.canonical_json()
    assert one.chemsys == "Li-P-S" and one.elements == ["Li", "S"]
    assert MPQuery(elements=["Li"]).canonical_json() != MPQuery(elements=["Na"]).canonical_json()
    assert MPQuery(chemsys="Li-*").chemsys == "Li-*"


def test_query_search_arguments():
    query = MPQuery(
        chemsys="S-Li",
        energy_above_hull_max_eV=0.1,
        band_gap_max_eV=3.0,
        num_sites_min=2,
        num_elements_max=4,
        is_stable=False,
        material_ids=["mp-1"],
    )
    assert query.summary_search_kwargs() == {
        "deprecated": False,
        "chemsys": "Li-S",
        "material_ids": ["mp-1"],
        "energy_above_hull": (None, 0.1),
        "band_gap": (None, 3.0),
        "num_sites": (2, None),
        "num_elements": (None, 4),
        "is_stable": False,
    }


@pytest.mark.parametrize(
    "options",
    [
        {"elements": ["Xx"]},
        {"chemsys": "Li--S"},
        {"formula": "Li3PS4; DROP"},
        {"material_ids": ["1234"]},
        {"energy_above_hull_max_eV": -0.1, "elements": ["Li"]},
        {"band_gap_min_eV": 3, "band_gap_max_eV": 1},
        {"num_sites_min": 10, "num_sites_max": 5},
        {"elements": ["Li"], "exclude_elements": ["Li"]},
        {"elements": ["Li"], "ion": "Li"},
        {},
    ],
)
def test_query_rejects_bad_input(options):
    with pytest.raises(ValidationError):
        MPQuery(**options)


# --- servers that never finish (issue 15) -----------------------------------------------------


def test_overstated_total_doc_with_repeated_pages_stops(mp_server, mp_key, tmp_path):
    """A server that overstates total_doc and serves page one for every _skip was asked
    forever (108,760 identical requests in 150 s); the query stops on the repeated page."""
    mp_server.misbehave(overstate_total_doc=10_000_000, repeat_pages=True)
    started = time.monotonic()
    with pytest.raises(SourceError, match="repeats pages") as info:
        fetch(mp_server, mp_key, tmp_path / "cache.sqlite", page_size=2)
    assert time.monotonic() - started < 30
    assert mp_server.count(SUMMARY) <= 3  # page one, then the repeat
    assert "\n" not in str(info.value) and mp_server.endpoint in str(info.value)
    assert cached_queries(tmp_path / "cache.sqlite") == []


def test_overstated_total_doc_with_empty_pages_stops(mp_server, mp_key, tmp_path):
    mp_server.misbehave(overstate_total_doc=10_000_000)
    candidates = fetch(mp_server, mp_key, tmp_path / "cache.sqlite", page_size=2)
    assert [c.candidate_id for c in candidates] == lithium_ids(mp_server)
    assert mp_server.count(SUMMARY) <= 4  # three pages and the first empty one


def test_pages_are_capped(mp_server, mp_key, tmp_path, monkeypatch):
    """Distinct pages without end stop at MAX_PAGES (here lowered to 2 for speed)."""
    monkeypatch.setattr(mp, "MAX_PAGES", 2)
    mp_server.misbehave(overstate_total_doc=10_000_000)
    with pytest.raises(SourceError, match="more than 2 pages"):
        fetch(mp_server, mp_key, tmp_path / "cache.sqlite", page_size=1)
    assert mp_server.count(SUMMARY) == 3


def test_hung_server_is_reported_at_the_query_deadline(mp_server, mp_key, tmp_path):
    mp_server.misbehave(hang_s=30.0)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"query deadline of 3 s") as info:
        fetch(mp_server, mp_key, tmp_path / "cache.sqlite", deadline_s=3.0)
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    assert "\n" not in str(info.value)
