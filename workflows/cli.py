"""The ``iondrag`` command: screen, query, show, validate.

Exit codes (scripts can rely on them):

- 0: the command ran (a screen in which some candidates failed still exits 0);
- 1: the command was refused or could not run (bad source path, malformed database, missing
  Materials Project key, SQL that writes, ...): one line on stderr;
- 2: usage error (unknown option, invalid value): one line on stderr;
- 130: interrupted (Ctrl-C), 143: terminated (SIGTERM); the run is marked ``interrupted``
  and rerunning the same screen resumes it.

A traceback is printed only with ``--debug``. Heavy modules (jobflow, pymatgen, mp_api,
matplotlib, fireworks) are imported inside the commands, so ``iondrag --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import pandas as pd

    from screening.schemas import CandidateResult
    from screening.sources.base import Candidate

__all__ = ["main"]

PROG = "iondrag"


class UsageError(Exception):
    """Invalid arguments (exit code 2)."""


class _PrintableStream:
    """Text stream that escapes control characters (all but newline and tab) on the way out.

    Candidate ids, error messages and query results come from file names and file contents;
    an ESC byte among them would reach the terminal as a command. Installed on stdout by
    :func:`main`; stderr lines are escaped where they are written (:func:`_print_error`),
    since the progress bar needs its carriage returns.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from screening.text import printable

        lines = text.split("\n")
        self._stream.write("\n".join(printable(line.replace("\t", "    ")) for line in lines))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _print_error(text: str) -> None:
    """Print one line to stderr, control characters escaped."""
    from screening.text import printable

    print(printable(text), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _default_workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


#: Largest --workers accepted at all; the screen caps it further (workflows.parallel.worker_cap).
MAX_WORKERS: int = 1024


def _worker_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"--workers {text} is more than any machine runs (at most {MAX_WORKERS}; the "
            "screen uses no more than the candidates, CPUs and memory allow)"
        )
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``iondrag`` and its commands."""
    common = _Parser(add_help=False)
    # SUPPRESS: `iondrag --debug screen` and `iondrag screen --debug` both work (a subparser's
    # default would otherwise overwrite the main parser's value)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print tracebacks and jobflow's log",
    )
    parser = _Parser(
        prog=PROG,
        description="High-throughput screen of solid ionic conductors: crystal potential, "
        "drag tensor, conductivity; results in an SQLite ranking database.",
        parents=[common],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    screen = commands.add_parser(
        "screen",
        parents=[common],
        help="screen candidates and rank them",
        description="Screen candidates (embedded default set, Materials Project or CIFs) "
        "and store the ranking in the database. Rerunning the same screen resumes it.",
    )
    screen.add_argument(
        "--source",
        choices=("embedded", "mp", "cif"),
        default=None,
        help="candidate source (default: embedded; cif when PATH is given)",
    )
    screen.add_argument("path", nargs="?", help="CIF folder or file (with --source cif)")
    mp = screen.add_argument_group("Materials Project filters (--source mp; needs MP_API_KEY)")
    mp.add_argument("--elements", help="elements that must all be present, e.g. Li,S")
    mp.add_argument("--chemsys", help="chemical system, e.g. Li-P-S")
    mp.add_argument("--max-ehull", type=_float, help="largest energy above hull, eV/atom")
    mp.add_argument("--max-sites", type=_positive_int, help="most sites per cell")
    mp.add_argument("--max-candidates", type=_positive_int, help="keep at most N materials")
    screen.add_argument(
        "--ids",
        help="with --source embedded: screen only these candidate ids, comma-separated "
        "(e.g. lif-fm3m,li2o-fm3m)",
    )
    physics = screen.add_argument_group("physics")
    physics.add_argument("--ion", help="mobile species (default: each candidate's own)")
    _add_backend_options(physics)
    physics.add_argument("--temperature", type=_float, default=300.0, help="K (default 300)")
    physics.add_argument(
        "--grid", type=_float, default=0.2, help="potential grid spacing, Å (default 0.2)"
    )
    physics.add_argument(
        "--arrhenius",
        default=None,
        help="temperatures of the Arrhenius fit, K, comma-separated, or 'none' "
        "(default 300,400,500,600)",
    )
    run = screen.add_argument_group("execution and output")
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help=f"processes per chunk (default: available CPUs up to 8, here {_default_workers()})",
    )
    run.add_argument(
        "--chunk-size", type=_positive_int, default=50, help="candidates per job (default 50)"
    )
    run.add_argument("--db", type=Path, help="SQLite ranking database (default in IONDRAG_HOME)")
    run.add_argument("--json", type=Path, help="write the ranking as a JSON list of records")
    run.add_argument("--run-id", help="explicit run id (default: derived from source+parameters)")
    run.add_argument(
        "--store-grids", action="store_true", help="save potential/drag grids in the job store"
    )
    run.add_argument("--top", type=_positive_int, default=20, help="rows printed (default 20)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    _add_param_option(run, "site_exclusion_radius_A=0")
    screen.set_defaults(handler=_screen)

    query = commands.add_parser(
        "query",
        parents=[common],
        help="run read-only SQL on the ranking database",
        description="Run one read-only SQL statement on the ranking database (tables: "
        "results, runs, documents) and print the rows.",
    )
    query.add_argument(
        "sql",
        help='e.g. "SELECT formula, sigma_S_per_cm FROM results '
        'ORDER BY sigma_S_per_cm DESC LIMIT 10"',
    )
    query.add_argument("--db", type=Path, help="SQLite ranking database")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--max-rows", type=_positive_int, default=None, help="print at most N")
    query.set_defaults(handler=_query)

    show = commands.add_parser(
        "show",
        parents=[common],
        help="one candidate: tensors, barriers, path profile (+ PNG)",
        description="Print a candidate's stored result: barriers, conductivity and "
        "diffusion tensors, drag, path profile; with --png a plot of U along the path and "
        "a slice of U (recomputed from the stored structure).",
    )
    show.add_argument("candidate_id")
    show.add_argument("--db", type=Path, help="SQLite ranking database")
    show.add_argument("--run-id", help="run to read (default: the newest with this candidate)")
    show.add_argument("--png", type=Path, help="write a PNG plot here")
    show.set_defaults(handler=_show)

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="predicted vs experimental conductivities",
        description="Score CIFs named <ID>.cif and compare with a CSV of measured "
        "conductivities (columns ID, 'Ionic conductivity (S cm-1)').",
    )
    validate.add_argument("--cifs", type=Path, required=True, help="folder of <ID>.cif")
    validate.add_argument("--table", type=Path, required=True, help="CSV of measurements")
    validate.add_argument("--json", type=Path, help="write the report as JSON")
    validate.add_argument("--png", type=Path, help="write a parity plot")
    validate.add_argument("--workers", type=_worker_count, default=None)
    validate.add_argument("--limit", type=_positive_int, default=None, help="first N only")
    validate.add_argument("--temperature", type=_float, default=300.0, help="K (default 300)")
    validate.add_argument("--grid", type=_float, default=0.2, help="Å (default 0.2)")
    validate.add_argument("--ion", help="mobile species (default: each candidate's own)")
    _add_backend_options(validate)
    validate.add_argument(
        "--journal",
        type=Path,
        help="file the scored structures are appended to as they finish, so that rerunning "
        "the same command resumes (default: one per CIF folder under $IONDRAG_HOME/validate)",
    )
    validate.add_argument(
        "--fresh", action="store_true", help="score everything again, reusing no journal record"
    )
    validate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_param_option(validate, "polycrystal_average=bruggeman")
    validate.set_defaults(handler=_validate)
    return parser


def _add_param_option(group: Any, example: str) -> None:
    """--param KEY=VALUE (repeatable): any ScreeningParameters field."""
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any ScreeningParameters field, e.g. --param {example}",
    )


def _add_backend_options(group: Any) -> None:
    """--potential and --elastic (ScreeningParameters.potential / .elastic; ml extra)."""
    group.add_argument(
        "--potential",
        choices=("bvse", "chgnet"),
        default=None,
        help="bvse (default): bond-valence potential; chgnet: also CHGNet along the BVSE "
        "path, recorded as barrier_universal_eV and log10_sigma_universal_S_per_cm (the "
        "headline stays BVSE; docs/universal.md; needs the ml extra)",
    )
    group.add_argument(
        "--elastic",
        choices=("given_or_estimate", "chgnet"),
        default=None,
        help="given_or_estimate (default): elastic data or the bond-stiffness estimate; "
        "chgnet: atomate2's force-field elastic workflow with CHGNet for candidates without "
        "elastic data (slow: about a minute for a small cubic cell; needs the ml extra)",
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _backend_options(args: argparse.Namespace) -> dict[str, str]:
    """ScreeningParameters fields set by --potential / --elastic (only when given)."""
    return {
        name: value
        for name in ("potential", "elastic")
        if (value := getattr(args, name, None)) is not None
    }


def _require_ml_extra(parameters: Any) -> None:
    """Refuse, in one line, a CHGNet option without the ml extra (before any work).

    Raises
    ------
    screening.universal.MissingMLExtraError
        ``potential`` or ``elastic`` is ``"chgnet"`` and torch/chgnet (or, for the elastic
        workflow, atomate2's force fields) cannot be imported.
    """
    wanted = [
        f"--{name} chgnet"
        for name in ("potential", "elastic")
        if getattr(parameters, name) == "chgnet"
    ]
    if not wanted:
        return
    from importlib.util import find_spec

    from screening.universal import MissingMLExtraError

    modules = ["torch", "chgnet"]
    if parameters.elastic == "chgnet":
        modules.append("atomate2")
    missing = []
    for module in modules:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise MissingMLExtraError(
            f"{' and '.join(wanted)} needs the ml extra (missing: {', '.join(missing)}); "
            "install it with `pip install torch==2.13.0 && pip install -e '.[ml]'`"
        )


def _one_line(error: BaseException) -> str:
    """Return a one-line message for an exception (pydantic errors summarised)."""
    errors = getattr(error, "errors", None)
    if callable(errors) and type(error).__name__ == "ValidationError":
        try:
            first = error.errors()[0]  # type: ignore[attr-defined]
            where = ".".join(str(part) for part in first.get("loc", ())) or "value"
            return f"invalid {where}: {first.get('msg', error)}"
        except Exception:  # pragma: no cover - defensive
            pass
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _db_path(value: Path | None) -> Path:
    from workflows.jobs import resolve_db_path

    return resolve_db_path(value)


def _parameters_or_usage(**values: Any) -> Any:
    from pydantic import ValidationError

    from screening.parameters import ScreeningParameters

    try:
        return ScreeningParameters(**values)
    except ValidationError as error:
        raise UsageError(_one_line(error)) from error


def _physics_parameters(args: argparse.Namespace, **extra: Any) -> Any:
    """ScreeningParameters from the physics flags of screen and validate.

    ``--param KEY=VALUE`` is applied last, so it wins over the dedicated flags.
    """
    physics: dict[str, Any] = {
        "temperature_K": args.temperature,
        "grid_spacing_A": args.grid,
        "ion": args.ion,
        **extra,
    }
    physics.update(_backend_options(args))
    physics.update(_param_options(getattr(args, "param", [])))
    return _parameters_or_usage(**physics)


def _param_options(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs of ScreeningParameters fields; values parsed as JSON when they can be."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param needs KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, list):
            value = tuple(value)
        out[key.strip()] = value
    return out


def _arrhenius(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    if text.strip().lower() in ("none", "off", ""):
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--arrhenius takes comma-separated temperatures, got {text!r}") from None


class _Progress:
    """A tqdm bar fed by polling the ranking database for the run's rows."""

    def __init__(self, db_path: Path, run_id: str, *, enabled: bool) -> None:
        self.db_path = db_path
        self.run_id = run_id
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="iondrag-progress", daemon=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _poll(self, conn: Any) -> tuple[int | None, int]:
        run = conn.execute(
            "SELECT n_candidates FROM runs WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        done = conn.execute(
            "SELECT COUNT(*) FROM results WHERE run_id = ?", (self.run_id,)
        ).fetchone()[0]
        return (None if run is None else run[0]), int(done)

    def _loop(self) -> None:
        import sqlite3

        from tqdm import tqdm

        bar = None
        try:
            conn = sqlite3.connect(self.db_path, timeout=30)
        except sqlite3.Error:
            return
        try:
            with conn:
                while True:
                    stopping = self._stop.wait(0.5)
                    try:
                        total, done = self._poll(conn)
                    except sqlite3.Error:
                        total, done = None, 0
                    if total is not None:
                        if bar is None:
                            bar = tqdm(
                                total=total,
                                desc="screening",
                                unit="cand",
                                file=sys.stderr,
                                dynamic_ncols=True,
                                leave=True,
                            )
                        if (bar.total, bar.n) != (total, min(done, total)):
                            bar.total = total
                            bar.n = min(done, total)
                            bar.refresh()
                    if stopping:
                        break
        finally:
            if bar is not None:
                bar.close()
            conn.close()


def _write_json(path: Path, data: Any) -> None:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)


# --------------------------------------------------------------------------------------------
# screen
# --------------------------------------------------------------------------------------------


def _screen(args: argparse.Namespace) -> int:
    source = args.source or ("cif" if args.path else "embedded")
    if source == "cif" and not args.path:
        raise UsageError("--source cif needs a PATH (a folder of CIFs or one CIF file)")
    if source != "cif" and args.path:
        raise UsageError(f"PATH is only used with --source cif, not {source}")
    mp_options = {
        "elements": args.elements,
        "chemsys": args.chemsys,
        "energy_above_hull_max_eV": args.max_ehull,
        "num_sites_max": args.max_sites,
        "max_candidates": args.max_candidates,
    }
    mp_options = {k: v for k, v in mp_options.items() if v is not None}
    if mp_options and source != "mp":
        raise UsageError(
            "--elements/--chemsys/--max-ehull/--max-sites/--max-candidates need --source mp"
        )
    arrhenius = _arrhenius(args.arrhenius)
    extra = {} if arrhenius is None else {"arrhenius_temperatures_K": arrhenius}
    parameters = _physics_parameters(args, **extra)
    ids = None
    if args.ids is not None:
        if source != "embedded":
            raise UsageError(f"--ids selects embedded candidates, not {source}")
        ids = sorted({part.strip() for part in args.ids.split(",") if part.strip()})
        if not ids:
            raise UsageError(f"--ids needs candidate ids, got {args.ids!r}")
    _require_ml_extra(parameters)
    if source == "mp":
        from pydantic import ValidationError

        from screening.sources.mp import MPQuery

        try:
            MPQuery(**mp_options)
        except ValidationError as error:
            raise UsageError(_one_line(error)) from error
    if source == "cif":
        path = Path(args.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"CIF path does not exist: {path}")

    from contextlib import closing

    from screening import database
    from workflows.makers import ScreenMaker

    db_path = _db_path(args.db)
    _open_ranking_database(db_path)  # refuses a malformed, foreign or unwritable file
    if args.json:
        _check_output_file(args.json, "--json")
    workers = _capped_workers(
        args.workers,
        parameters,
        n_candidates=_count_candidates(source, args.path, ids, mp_options),
        quiet=False,
    )
    maker = ScreenMaker(
        workers=workers,
        chunk_size=args.chunk_size,
        store_grids=args.store_grids,
        db_path=str(db_path),
        top_n=args.top,
        # every physics field the Maker mirrors (tests/workflows/test_maker.py), and those
        # the user set (a field the Maker lacks then fails loudly instead of being dropped)
        **{
            name: getattr(parameters, name)
            for name in type(parameters).model_fields
            if name in parameters.model_fields_set or hasattr(ScreenMaker, name)
        },
    )
    options: dict[str, Any] | None = mp_options if source == "mp" else None
    if ids is not None:
        options = {"ids": ids}
    flow = maker.make(source, args.path, options=options, run_id=args.run_id)
    run_id = args.run_id or maker.run_id(source, args.path, options=options)

    from workflows.managers import run_in_process
    from workflows.parallel import abort_pools, prestart
    from workflows.stores import default_job_store

    store = _open_job_store(default_job_store)
    prestart(maker.workers)  # workers import the science while the candidates load
    try:
        with _Progress(db_path, run_id, enabled=not args.quiet):
            run_in_process(flow, store, log=bool(getattr(args, "debug", False)))
    except BaseException as error:
        # the run stays "running" otherwise: say how it ended (a rerun resumes it all the same)
        _mark_run_ended(db_path, run_id, "interrupted" if _is_interrupt(error) else "failed")
        raise
    finally:
        abort_pools()  # nothing is in flight any more: do not wait for idle workers

    from screening.ranking import format_ranking, records

    with closing(database.connect(db_path)) as conn:
        ranking = database.read_ranking(conn, run_id)
        failures = database.failure_counts(conn, run_id)
        run = database.get_run(conn, run_id) or {}
    if args.json:
        _write_json(args.json, records(ranking))
    if not args.quiet:
        print(format_ranking(ranking, args.top))
        print()
        print(_summary(run_id, run, failures, db_path))
    if run.get("status") == "incomplete":
        _print_error(
            f"{PROG}: warning: run {run_id} is incomplete ({run.get('n_missing')} candidates "
            "missing); rerun the same command to finish it"
        )
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit code 143)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _is_interrupt(error: BaseException) -> bool:
    return isinstance(error, KeyboardInterrupt)


def _mark_run_ended(db_path: Path, run_id: str, status: str) -> None:
    """Record ``status`` on a run that is still ``running``; never raises (best effort)."""
    from contextlib import closing

    from screening import database

    try:
        with closing(database.connect(db_path)) as conn:
            database.mark_run_ended(conn, run_id, status)
    except Exception:  # the database itself may be what failed
        pass


def _open_ranking_database(path: Path) -> None:
    """Open (and create) the ranking database now, or refuse in one line saying what to do.

    Raises
    ------
    screening.database.RankingDatabaseError
        Not SQLite, not iondrag's, or it cannot be created or written here.
    """
    import sqlite3
    from contextlib import closing

    from screening import database

    try:
        with closing(database.connect(path)) as conn:
            database.check_writable(conn, path)
    except (sqlite3.Error, OSError) as error:
        raise database.RankingDatabaseError(
            f"cannot open the ranking database {path} for writing: "
            f"{getattr(error, 'strerror', None) or error}; pass --db FILE in a writable folder "
            "(or set IONDRAG_HOME / IONDRAG_DB_PATH)"
        ) from error


def _open_job_store(factory: Any) -> Any:
    """Connect the job store now; a corrupt or unwritable file is refused in one line."""
    import sqlite3

    from screening.settings import get_settings

    store = factory()
    try:
        store.connect()
        store.close()
    except (sqlite3.Error, OSError) as error:
        where = get_settings().home / "jobstore"
        raise RuntimeError(
            f"cannot use the job store in {where}: {error}; it holds only intermediate "
            "outputs: move the folder away (or set IONDRAG_HOME) and rerun"
        ) from error
    return store


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Raises
    ------
    UsageError
        ``path`` is a folder, or its folder cannot be created or written.
    """
    path = path.expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name, e.g. {path}/out.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{option} {path}: cannot create its folder ({error.strerror or error})"
        ) from error
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def _count_candidates(
    source: str, path: str | None, ids: list[str] | None, mp_options: dict[str, Any]
) -> int | None:
    """Candidates a screen will load, when that is cheap to know (else None)."""
    if ids is not None:
        return len(ids)
    if source == "cif" and path is not None:
        from screening.sources.cif import find_cif_files

        return len(find_cif_files(path))
    if source == "mp":
        return mp_options.get("max_candidates")
    return None


def _capped_workers(
    requested: int | None, parameters: Any, *, n_candidates: int | None, quiet: bool
) -> int:
    """--workers (default: the CPUs up to 8) capped by candidates, CPUs and memory.

    Says so in one line on stderr when an explicit --workers is lowered.
    """
    from screening.settings import get_settings
    from workflows.parallel import worker_cap

    budget = parameters.memory_budget_MB or get_settings().memory_budget_MB
    asked = requested or _default_workers()
    workers, reasons = worker_cap(asked, n_candidates=n_candidates, memory_budget_MB=budget)
    if requested is not None and workers < requested and not quiet:
        _print_error(f"{PROG}: using {workers} workers, not {requested} ({'; '.join(reasons)})")
    return workers


def _summary(run_id: str, run: dict[str, Any], failures: dict[str, int], db_path: Path) -> str:
    n_failed = (run.get("n_failed") or 0) + (run.get("n_error") or 0)
    causes = ", ".join(f"{cause} {n}" for cause, n in failures.items())
    lines = [
        f"run {run_id}: {run.get('n_candidates')} candidates, {run.get('n_ok') or 0} scored, "
        f"{n_failed} failed"
        + (f" ({causes})" if causes else "")
        + f"; {run.get('n_reused') or 0} reused from earlier runs",
        f"ranking database: {db_path}",
        f'  {PROG} query "SELECT candidate_id, formula, sigma_S_per_cm FROM results '
        f"WHERE run_id = '{run_id}' ORDER BY sigma_S_per_cm DESC LIMIT 10\" --db {db_path}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# query
# --------------------------------------------------------------------------------------------


def _query(args: argparse.Namespace) -> int:
    from screening.database import run_query

    frame = run_query(_db_path(args.db), args.sql, max_rows=args.max_rows)
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        from screening.ranking import records

        print(json.dumps(records(frame), indent=1))
    elif frame.empty:
        print("(no rows)" if len(frame.columns) else "(no result)")
    else:
        print(_table(frame))
    return 0


def _table(frame: pd.DataFrame) -> str:
    import pandas as pd

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "NULL"
        if isinstance(value, float):
            return f"{value:.6g}"
        text = str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    shown = frame.map(cell) if hasattr(frame, "map") else frame.applymap(cell)
    return shown.to_string(index=False)


# --------------------------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------------------------

_SPARK = "▁▂▃▄▅▆▇█"


def _spark(values: Sequence[float], width: int = 48) -> str:
    if not values:
        return ""
    import numpy as np

    data = np.interp(
        np.linspace(0, len(values) - 1, min(width, len(values))),
        np.arange(len(values)),
        np.asarray(values, dtype=float),
    )
    low, high = float(np.min(data)), float(np.max(data))
    span = high - low or 1.0
    return "".join(_SPARK[int((v - low) / span * (len(_SPARK) - 1))] for v in data)


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}{(' ' + unit) if unit else ''}"
    return f"{value}{(' ' + unit) if unit else ''}"


def _matrix(rows: list[list[float]] | None, indent: str) -> str:
    if not rows:
        return indent + "-"
    return "\n".join(indent + "  ".join(f"{x: .3e}" for x in row) for row in rows)


def _show_text(run_id: str, doc: CandidateResult) -> str:
    lines = [
        f"candidate   {doc.candidate_id}  ({doc.formula or '?'}, source {doc.source}, "
        f"mobile ion {doc.ion or '?'})",
        f"run         {run_id}   status {doc.status}   T = {doc.temperature_K:g} K",
    ]
    if doc.status != "ok":
        lines.append(f"error       {doc.error} [{doc.error_cause}]")
        return "\n".join(lines)
    dim = f"{doc.dimensionality}D" if doc.dimensionality is not None else "-"
    lines += [
        f"barriers    E1D {_fmt(doc.barrier_1d_eV, 'eV')}   E2D {_fmt(doc.barrier_2d_eV, 'eV')}"
        f"   E3D {_fmt(doc.barrier_3d_eV, 'eV')}   path {_fmt(doc.path_barrier_eV, 'eV')}"
        f"   dimensionality {dim}",
        f"sigma       {_fmt(doc.sigma_S_per_cm, 'S/cm')} (log10 "
        f"{_fmt(doc.log10_sigma_S_per_cm)}); anisotropy {_fmt(doc.anisotropy_ratio)}; "
        f"path formula log10 {_fmt(doc.log10_sigma_path_S_per_cm)}",
        "sigma tensor (S/cm)",
        _matrix(doc.sigma_tensor_S_per_cm, "            "),
        "diffusion tensor (m^2/s)",
        _matrix(doc.diffusion_tensor_m2_per_s, "            "),
        f"drag        t.gamma.t at saddle {_fmt(doc.drag_saddle_kg_per_s, 'kg/s')}; floor "
        f"{_fmt(doc.drag_floor_kg_per_s, 'kg/s')}; elastic data: {doc.elastic_source or '-'}",
        "Lambda (s^3/kg)",
        _matrix(doc.lambda_s3_per_kg, "            "),
        f"dynamics    Kramers factor {_fmt(doc.kramers_factor)}; reduced friction "
        f"{_fmt(doc.reduced_friction)} ({doc.damping_regime or '-'}); barrier frequency "
        f"{_fmt(doc.barrier_frequency_rad_per_s, 'rad/s')}",
    ]
    if doc.activation_energy_eV is not None:
        lines.append(
            f"arrhenius   Ea {_fmt(doc.activation_energy_eV, 'eV')}; prefactor "
            f"{_fmt(doc.arrhenius_prefactor_S_K_per_cm, 'S K/cm')} over "
            f"{doc.arrhenius_temperatures_K} K"
        )
    if doc.path is not None and doc.path.energy_eV:
        path = doc.path
        top = max(range(len(path.energy_eV)), key=path.energy_eV.__getitem__)
        lines += [
            f"path        length {_fmt(path.length_A, 'Å')} over {len(path.energy_eV)} points,"
            f" translation {path.translation_cells} (cells); U max "
            f"{_fmt(path.energy_eV[top], 'eV')} at s = {_fmt(path.arc_length_A[top], 'Å')}",
            f"U(s)        {_spark(path.energy_eV)}",
        ]
    if doc.potential_backend == "chgnet":
        if doc.universal_error_cause:
            lines.append(f"chgnet      failed: {doc.universal_error} (BVSE result above kept)")
        else:
            lines.append(
                f"chgnet      along the BVSE path: barrier {_fmt(doc.barrier_universal_eV, 'eV')}"
                f"; path formula log10 sigma {_fmt(doc.log10_sigma_universal_S_per_cm)} "
                "(diagnostic; the headline is BVSE)"
            )
            if doc.universal_path and doc.universal_path.get("energy_eV"):
                lines.append(f"U_chgnet(s) {_spark(doc.universal_path['energy_eV'])}")
    if doc.warnings:
        lines.append("warnings    " + "; ".join(doc.warnings))
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    from contextlib import closing

    from screening import database

    db_path = _db_path(args.db)
    with closing(database.connect(db_path, read_only=True)) as conn:
        run_id, doc, candidate = database.load_document(conn, args.candidate_id, args.run_id)
        run = database.get_run(conn, run_id) or {}
    print(_show_text(run_id, doc))
    if args.png:
        note = _plot_png(args.png, doc, candidate, run.get("parameters_json"))
        print(f"plot        {args.png}" + (f" ({note})" if note else ""))
    return 0


def _plot_png(
    out: Path, doc: CandidateResult, candidate: Candidate | None, parameters_json: str | None
) -> str:
    """U along the path and a slice of U through the saddle; returns a note for the user."""
    if doc.status != "ok" or doc.path is None:
        raise ValueError(f"{doc.candidate_id}: nothing to plot, the candidate was not scored")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    note = ""
    slice_data = None
    if candidate is not None and candidate.ok and parameters_json:
        from screening.parameters import ScreeningParameters
        from screening.pipeline import analyse_candidate

        stored = json.loads(parameters_json)  # fields of older versions are ignored
        parameters = ScreeningParameters(
            **{k: v for k, v in stored.items() if k in ScreeningParameters.model_fields}
        )
        with np.errstate(over="ignore", under="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = analyse_candidate(
                candidate.structure,
                parameters,
                candidate_id=candidate.candidate_id,
                mobile_ion=doc.ion,
                elastic=candidate.elastic,
            )
        lattice = analysis.grid.lattice_matrix_A
        frac = analysis.path.points_A @ np.linalg.inv(lattice)
        saddle = int(np.argmax(analysis.path.energy_eV))
        n_c = analysis.grid.shape[2]
        k = round((frac[saddle, 2] % 1.0) * n_c) % n_c
        energy = analysis.energy_grid_eV[:, :, k] - float(
            np.min(analysis.energy_grid_eV[np.isfinite(analysis.energy_grid_eV)])
        )
        slice_data = (energy, frac % 1.0, k / n_c)
        note = "slice of U recomputed from the stored structure"
    else:
        note = "no stored structure: slice of U not drawn"

    figure, axes = plt.subplots(1, 2 if slice_data is not None else 1, figsize=(11, 4.2))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.plot(doc.path.arc_length_A, doc.path.energy_eV, color="C0")
    ax.set_xlabel("arc length s (Å)")
    ax.set_ylabel("U(s) − min U (eV)", color="C0")
    ax.set_title(f"{doc.candidate_id}: U along the percolating path")
    if any(g > 0 for g in doc.path.gamma_parallel_kg_per_s):
        twin = ax.twinx()
        twin.semilogy(
            doc.path.arc_length_A,
            [max(g, 1e-30) for g in doc.path.gamma_parallel_kg_per_s],
            color="C3",
            alpha=0.7,
        )
        twin.set_ylabel("t·γ·t (kg/s)", color="C3")
    if slice_data is not None:
        energy, frac, c_frac = slice_data
        finite = np.isfinite(energy)
        ceiling = float(np.percentile(energy[finite], 60)) if finite.any() else 1.0
        ceiling = max(ceiling, 2.0 * (doc.path_barrier_eV or 0.5))
        image = np.ma.masked_invalid(np.where(finite, np.minimum(energy, ceiling), np.nan))
        ax2 = axes[1]
        shown = ax2.imshow(
            image.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="equal"
        )
        ax2.plot(frac[:, 0], frac[:, 1], ".", color="white", markersize=2)
        ax2.set_xlabel("fractional a")
        ax2.set_ylabel("fractional b")
        ax2.set_title(f"U − min U at c = {c_frac:.2f} (eV; dots: path, projected)")
        figure.colorbar(shown, ax=ax2)
    figure.tight_layout()
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, format="png")
    plt.close(figure)
    return note


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    parameters = _physics_parameters(args)
    _require_ml_extra(parameters)
    for path, what in ((args.cifs, "CIF folder"), (args.table, "table")):
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{what} does not exist: {path}")
    try:
        from screening.validation import run_validation
    except ImportError as error:
        raise RuntimeError(f"iondrag validate is not available: {error}") from error
    from screening.settings import get_settings

    cifs = Path(args.cifs).expanduser()
    report = run_validation(
        cifs,
        Path(args.table).expanduser(),
        parameters=parameters,
        workers=args.workers or _default_workers(),
        json_out=args.json,
        png_out=args.png,
        limit=args.limit,
        progress=not args.quiet,
        prepare_candidate=_elastic_preparation(parameters),
        journal=args.journal or get_settings().validation_journal_path(cifs),
        reuse_journal=not args.fresh,
    )
    print(report.summary_text())
    return 0


def _elastic_preparation(parameters: Any) -> Any:
    """Return the candidate preparation of ``validate`` (CHGNet elastic tensors or None)."""
    if parameters.elastic != "chgnet":
        return None
    from workflows.ml import candidate_with_chgnet_elastic

    return candidate_with_chgnet_elastic


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``iondrag``; return the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from screening import __version__

        print(f"{PROG} {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    prog = f"{PROG} {args.command}"
    original_stdout = sys.stdout
    sys.stdout = _PrintableStream(original_stdout)
    terminate_handler = None
    if threading.current_thread() is threading.main_thread():
        import signal

        terminate_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run_command(args, prog)
    finally:
        sys.stdout = original_stdout
        if terminate_handler is not None:
            import signal

            signal.signal(signal.SIGTERM, terminate_handler)


def _run_command(args: argparse.Namespace, prog: str) -> int:
    """Run the command's handler; map exceptions to one line and an exit code."""
    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            return int(args.handler(args))
    except _Terminated:
        _print_error(f"{prog}: terminated (SIGTERM; rerun the same command to resume)")
        return 143
    except KeyboardInterrupt:
        _print_error(f"{prog}: interrupted (rerun the same command to resume)")
        return 130
    except UsageError as error:
        _print_error(f"{prog}: error: {error} (see {prog} --help)")
        return 2
    except Exception as error:
        if debug:
            import traceback

            traceback.print_exc()
        known = _is_refusal(error)
        message = _one_line(error)
        if not known:
            message = f"internal error: {type(error).__name__}: {message}" + (
                "" if debug else " (rerun with --debug for the traceback)"
            )
        _print_error(f"{prog}: error: {message}")
        return 1


def _is_refusal(error: BaseException) -> bool:
    """Errors a user can act on (bad input, files, keys); anything else is a bug."""
    import sqlite3

    from screening.errors import IondragError

    if isinstance(error, IondragError | OSError | sqlite3.Error | ImportError | ValueError):
        return True
    return type(error).__name__ in ("ValidationError", "RuntimeError")


if __name__ == "__main__":
    sys.exit(main())
