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

from iondrag.workflows.run_settings import ScreenRun

if TYPE_CHECKING:
    import pandas as pd

    from iondrag.screening.candidates import Candidate
    from iondrag.screening.schemas import CandidateResult

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
        from iondrag.screening.text import printable

        lines = text.split("\n")
        self._stream.write("\n".join(printable(line.replace("\t", "    ")) for line in lines))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _print_error(text: str) -> None:
    """Print one line to stderr, control characters escaped."""
    from iondrag.screening.text import printable

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


#: Largest --workers accepted at all; the screen caps it further
#: (iondrag.workflows.parallel.worker_cap).
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


def _days(text: str) -> float:
    value = _float(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected days >= 0 (or inf), got {text!r}")
    return value


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
    mp.add_argument("--min-band-gap", type=_float, help="smallest band gap, eV (MP's PBE gap)")
    mp.add_argument("--max-band-gap", type=_float, help="largest band gap, eV (MP's PBE gap)")
    mp.add_argument("--exclude-elements", help="elements that must be absent, e.g. Mn,Co,Ni")
    mp.add_argument("--formula", help="formula, anonymous formula or wildcard, e.g. Li3PS4")
    mp.add_argument("--material-ids", help="Materials Project ids, e.g. mp-1138,mp-1960")
    mp.add_argument(
        "--refresh-cache",
        action="store_true",
        help="ask the server again instead of the local cache of this query (the cache, "
        "<IONDRAG_HOME>/mp_cache.sqlite, is then updated; delete the file to empty it)",
    )
    mp.add_argument(  # the setting mp_cache_max_age_days (screening/settings.py) for one screen
        "--mp-cache-max-age-days",
        type=_days,
        metavar="DAYS",
        help="ask the server again when the cached answer is older than DAYS (0: always, "
        "inf: never; default: the setting mp_cache_max_age_days, IONDRAG_MP_CACHE_MAX_AGE_DAYS, "
        "30)",
    )
    screen.add_argument(
        "--ids",
        help="with --source embedded: screen only these candidate ids, comma-separated "
        "(e.g. lif-fm3m,li2o-fm3m)",
    )
    physics = screen.add_argument_group("physics")
    _add_physics_options(physics)
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
    _add_field_option(run, "--chunk-size", ScreenRun, "chunk_size", parse=_positive_int)
    run.add_argument("--db", type=Path, help="SQLite ranking database (default in IONDRAG_HOME)")
    run.add_argument("--json", type=Path, help="write the ranking as a JSON list of records")
    run.add_argument("--run-id", help="explicit run id (default: derived from source+parameters)")
    _add_field_option(run, "--store-grids", ScreenRun, "store_grids", flag_only=True)
    _add_field_option(run, "--top", ScreenRun, "top_n", parse=_positive_int)
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    _add_param_option(run, "site_exclusion_radius_A=0")
    _add_model_options(run, rank_by=True)
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
    validate.add_argument(
        "--fold",
        choices=("A", "B"),
        help="score only one of the two family-disjoint halves of the table (fixed, seeded; "
        "docs/validation.md); every report shows both halves' figures",
    )
    _add_physics_options(validate)
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
    _add_model_options(validate, rank_by=False)
    validate.set_defaults(handler=_validate)

    params = commands.add_parser(
        "params",
        parents=[common],
        help="list every --param KEY with its unit, default and meaning",
        description="List the physics parameters (ScreeningParameters) that --param "
        "KEY=VALUE sets in screen and validate, with type, unit, default, bounds and meaning. "
        "Same as --param help.",
    )
    params.add_argument("--format", choices=("text", "json"), default="text")
    params.set_defaults(handler=_params)
    _add_learn_parser(commands, common)
    return parser


def _add_model_options(group: Any, *, rank_by: bool) -> None:
    """``--model`` (and ``--rank-by``) of screen and validate (issue 18, docs/learning.md)."""
    group.add_argument(
        "--model",
        default=None,
        help="learned model file (from iondrag learn) adding log10_sigma_learned with its "
        "interval; default: the shipped model; 'none' turns it off",
    )
    if rank_by:
        group.add_argument(
            "--rank-by",
            choices=("physics", "learned"),
            default="physics",
            help="order of the printed table and JSON (default physics, the headline)",
        )


def _add_learn_parser(commands: Any, common: Any) -> None:
    learn = commands.add_parser(
        "learn",
        parents=[common],
        help="fit a model on measured conductivities with the physics as descriptors",
        description="Score the CIFs with the screen's physics (validate's journal is reused), "
        "join the measured conductivities and fit a model on physics descriptors plus "
        "composition; report family-grouped cross-validation (docs/learning.md).",
    )
    learn.add_argument("--cifs", type=Path, required=True, help="folder of <ID>.cif")
    learn.add_argument("--table", type=Path, required=True, help="CSV of measurements")
    learn.add_argument("--out", type=Path, required=True, help="model file to write (.joblib)")
    learn.add_argument("--workers", type=_positive_int, default=None)
    learn.add_argument("--limit", type=_positive_int, default=None, help="first N CIFs only")
    _add_physics_options(learn)
    learn.add_argument("--estimator", choices=("forest", "boosting"), default="forest")
    learn.add_argument(
        "--rows",
        choices=("all", "cif"),
        default="cif",
        help="train on the rows with a CIF (default) or on every table row (physics and "
        "occupancy missing without a CIF; ranked lower in the grouped CV, docs/learning.md)",
    )
    learn.add_argument("--folds", type=_positive_int, default=5, help="grouped CV folds")
    learn.add_argument("--coverage", type=_float, default=0.9, help="interval coverage")
    learn.add_argument("--journal", type=Path, help="validate's journal (default as validate)")
    learn.add_argument("--fresh", action="store_true", help="score everything again")
    learn.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_param_option(learn, "polycrystal_average=bruggeman")
    learn.set_defaults(handler=_learn)


def _add_param_option(group: Any, example: str) -> None:
    """--param KEY=VALUE (repeatable): any ScreeningParameters field."""
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any ScreeningParameters field, e.g. --param {example}; --param help (or "
        f"`{PROG} params`) lists them all",
    )


#: Options with a flag of their own: ScreeningParameters field -> (flag, value parser).
_PHYSICS_FLAGS: dict[str, tuple[str, Any]] = {
    "ion": ("--ion", None),
    "temperature_K": ("--temperature", _float),
    "grid_spacing_A": ("--grid", _float),
    "potential": ("--potential", None),
    "elastic": ("--elastic", None),
}


def _add_physics_options(group: Any) -> None:
    """Add the options of :data:`_PHYSICS_FLAGS`, from ScreeningParameters' fields."""
    from iondrag.screening.parameters import ScreeningParameters

    for name, (flag, parse) in _PHYSICS_FLAGS.items():
        _add_field_option(group, flag, ScreeningParameters, name, parse=parse)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _add_field_option(
    group: Any,
    flag: str,
    model: Any,
    name: str,
    *,
    parse: Any = None,
    flag_only: bool = False,
    note: str = "",
) -> None:
    """Add ``flag`` for the field ``name`` of a pydantic ``model``: its meaning, unit, default.

    The default stays None (the model's own default applies when the flag is absent), so
    the model is the one place that defines it; ``flag_only`` makes a boolean a switch.
    """
    from iondrag.screening.parameters import field_summary

    text = field_summary(model, name) + (f"; {note}" if note else "")
    text = text.replace("%", "%%")
    if flag_only:
        group.add_argument(flag, dest=name, action="store_const", const=True, help=text)
        return
    choices = _literal_choices(model.model_fields[name].annotation)
    group.add_argument(flag, dest=name, type=parse, choices=choices, default=None, help=text)


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """Return the values of a ``Literal[...]`` annotation (None for any other type)."""
    import typing

    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None


def _model_values(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """Return the fields of ``model`` the command line set (absent: the model's default)."""
    return {
        name: value
        for name in model.model_fields
        if (value := getattr(args, name, None)) is not None
    }


def _require_ml_extra(parameters: Any) -> None:
    """Refuse, in one line, a CHGNet option without the ml extra (before any work).

    Raises
    ------
    iondrag.screening.universal.MissingMLExtraError
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

    from iondrag.screening.universal import MissingMLExtraError

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
    from iondrag.workflows.jobs import resolve_db_path

    return resolve_db_path(value)


def _parameters_or_usage(**values: Any) -> Any:
    from pydantic import ValidationError

    from iondrag.screening.parameters import ScreeningParameters

    try:
        return ScreeningParameters(**values)
    except ValidationError as error:
        raise UsageError(_one_line(error)) from error


def _physics_parameters(args: argparse.Namespace, **extra: Any) -> Any:
    """ScreeningParameters from the physics flags of screen and validate.

    ``--param KEY=VALUE`` is applied last, so it wins over the dedicated flags.
    """
    from iondrag.screening.parameters import ScreeningParameters

    physics: dict[str, Any] = {**_model_values(args, ScreeningParameters), **extra}
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


class _Bar:
    """Progress on stderr: a tqdm bar on a terminal, else a plain line every tenth.

    ``update(done, total, prior)``: ``prior`` of the ``done`` items were not computed now
    (reused, already finished), so the rate counts only the others.
    """

    def __init__(self, desc: str, unit: str = "cand", *, stream: Any = None) -> None:
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._bar: Any = None
        self._last: tuple[int, int] | None = None
        self._printed = -1

    def update(self, done: int, total: int, prior: int = 0) -> None:
        done = min(done, total)
        if self._last == (done, total):
            return
        self._last = (done, total)
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    initial=prior,
                    desc=self.desc,
                    unit=self.unit,
                    file=self.stream,
                    dynamic_ncols=True,
                    leave=True,
                )
            self._bar.initial = min(prior, done)
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
            return
        step = max(1, total // 10)
        if done == total or done - self._printed >= step or self._printed < 0:
            self._printed = done
            reused = f" ({prior} reused or already finished)" if prior else ""
            print(f"{self.desc}: {done}/{total} {self.unit}{reused}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Progress:
    """A progress bar fed by polling the ranking database for the run's rows."""

    def __init__(
        self, db_path: Path, run_id: str, *, enabled: bool, since_utc: str | None = None
    ) -> None:
        self.db_path = db_path
        self.run_id = run_id
        self.enabled = enabled
        self.since_utc = since_utc or ""
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

    def _poll(self, conn: Any) -> tuple[int | None, int, int]:
        run = conn.execute(
            "SELECT n_candidates FROM runs WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        done, prior = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(reused_from_run_id IS NOT NULL OR written_utc < ?), 0)"
            " FROM results WHERE run_id = ?",
            (self.since_utc, self.run_id),
        ).fetchone()
        return (None if run is None else run[0]), int(done), int(prior)

    def _loop(self) -> None:
        import sqlite3

        bar = _Bar("screening")
        try:
            conn = sqlite3.connect(self.db_path, timeout=30)
        except sqlite3.Error:
            return
        try:
            with conn:
                while True:
                    stopping = self._stop.wait(0.5)
                    try:
                        total, done, prior = self._poll(conn)
                    except sqlite3.Error:
                        total, done, prior = None, 0, 0
                    if total is not None:
                        bar.update(done, total, prior)
                    if stopping:
                        break
        finally:
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
    if _wants_param_help(args):
        print(_params_text())
        return 0
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
        "band_gap_min_eV": args.min_band_gap,
        "band_gap_max_eV": args.max_band_gap,
        "exclude_elements": args.exclude_elements,
        "formula": args.formula,
        "material_ids": args.material_ids,
    }
    mp_options = {k: v for k, v in mp_options.items() if v is not None}
    cache_options = args.refresh_cache or args.mp_cache_max_age_days is not None
    if (mp_options or cache_options) and source != "mp":
        raise UsageError(
            "the Materials Project filters (--elements, --chemsys, --max-ehull, --max-sites, "
            "--max-candidates, --min/max-band-gap, --exclude-elements, --formula, "
            "--material-ids), --refresh-cache and --mp-cache-max-age-days need --source mp"
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
    model = _load_learned(args.model, parameters)  # a bad model file fails before the run
    if model is None and args.rank_by == "learned":
        raise UsageError("--rank-by learned needs a model (--model MODEL)")
    if source == "mp":
        from pydantic import ValidationError

        from iondrag.adapters.sources.mp import MPQuery

        try:
            MPQuery(**mp_options)
        except ValidationError as error:
            raise UsageError(_one_line(error)) from error
    if source == "cif":
        path = Path(args.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"CIF path does not exist: {path}")

    from contextlib import closing

    from iondrag.adapters import database

    _import_jobflow_without_matplotlib()
    from iondrag.workflows.makers import ScreenMaker

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
    run_settings = ScreenRun(
        **{**_model_values(args, ScreenRun), "workers": workers, "db_path": str(db_path)}
    )
    maker = ScreenMaker(parameters=parameters, run=run_settings)
    options: dict[str, Any] | None = mp_options if source == "mp" else None
    if source == "mp" and args.refresh_cache:
        options = {**mp_options, "refresh": True}  # not part of the run id
    if source == "mp" and args.mp_cache_max_age_days is not None:
        options = {**(options or {}), "cache_max_age_days": args.mp_cache_max_age_days}  # idem
    if ids is not None:
        options = {"ids": ids}
    flow = maker.make(source, args.path, options=options, run_id=args.run_id)
    run_id = args.run_id or maker.run_id(source, args.path, options=options)

    from iondrag.adapters.stores import default_job_store
    from iondrag.workflows.managers import run_in_process
    from iondrag.workflows.parallel import abort_pools, prestart

    store = _open_job_store(default_job_store)
    # workers import the science while the candidates load; never more than can be busy
    # (one candidate is scored in this process: spawning workers would only compete with it)
    prestart(min(maker.run.workers, _most_candidates(source, args.path, ids)))
    since = database.utc_now()
    try:
        with _Progress(db_path, run_id, enabled=not args.quiet, since_utc=since):
            run_in_process(flow, store, log=bool(getattr(args, "debug", False)))
    except BaseException as error:
        # the run stays "running" otherwise: say how it ended (a rerun resumes it all the same)
        _mark_run_ended(db_path, run_id, "interrupted" if _is_interrupt(error) else "failed")
        raise
    finally:
        abort_pools()  # nothing is in flight any more: do not wait for idle workers

    from iondrag.workflows.ranking import RANKING_LEGEND, format_ranking, records

    with closing(database.connect(db_path)) as conn:
        ranking = database.read_ranking(conn, run_id)
        failures = database.failure_counts(conn, run_id)
        run = database.get_run(conn, run_id) or {}
        now = _invocation_counts(conn, run_id, since)
    if model is not None:
        from iondrag.workflows.learn import annotate_run, format_ranking_learned, rank_by_learned

        annotate_run(db_path, run_id, model)
        with closing(database.connect(db_path)) as conn:
            ranking = database.read_ranking(conn, run_id)
        if args.rank_by == "learned":
            ranking = rank_by_learned(ranking)
        format_ranking = format_ranking_learned
        if not args.quiet:
            _announce(model, args.model)
    if args.json:
        _write_json(args.json, records(ranking))
    if not args.quiet:
        print(format_ranking(ranking, run_settings.top_n))
        if (ranking["status"] == "ok").any():
            print(RANKING_LEGEND)
        failed = _failed_lines(ranking)
        if failed:
            print()
            print(failed)
        print()
        print(_summary(run_id, run, failures, db_path, now))
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

    from iondrag.adapters import database

    try:
        with closing(database.connect(db_path)) as conn:
            database.mark_run_ended(conn, run_id, status)
    except Exception:  # the database itself may be what failed
        pass


def _open_ranking_database(path: Path) -> None:
    """Open (and create) the ranking database now, or refuse in one line saying what to do.

    Raises
    ------
    iondrag.adapters.database.RankingDatabaseError
        Not SQLite, not iondrag's, or it cannot be created or written here.
    """
    import sqlite3
    from contextlib import closing

    from iondrag.adapters import database

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

    from iondrag.screening.settings import get_settings

    store = factory()
    try:
        store.connect()
        store.close()
    except (sqlite3.Error, OSError) as error:
        from iondrag.adapters.stores import JobStoreFullError

        if isinstance(error, JobStoreFullError):
            raise  # its own line: the file, the full disk, what to do
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
        from iondrag.adapters.sources.cif import find_cif_files

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
    from iondrag.screening.settings import get_settings
    from iondrag.workflows.parallel import worker_cap

    budget = parameters.memory_budget_MB or get_settings().memory_budget_MB
    asked = requested or _default_workers()
    workers, reasons = worker_cap(asked, n_candidates=n_candidates, memory_budget_MB=budget)
    if requested is not None and workers < requested and not quiet:
        _print_error(f"{PROG}: using {workers} workers, not {requested} ({'; '.join(reasons)})")
    return workers


def _import_jobflow_without_matplotlib() -> None:
    """Import jobflow without matplotlib, which jobflow.utils.graph loads only to plot flows.

    A screen never plots its flow; matplotlib takes about 0.15 s to import. Elsewhere in the
    process matplotlib imports as usual (only jobflow's flow plotting is then unavailable).
    """
    if "matplotlib" in sys.modules or "jobflow.utils.graph" in sys.modules:
        return
    sys.modules["matplotlib"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import jobflow.utils.graph  # noqa: F401
    except ImportError:
        pass
    finally:
        if sys.modules.get("matplotlib", 0) is None:
            del sys.modules["matplotlib"]


def _most_candidates(source: str, path: str | None, ids: Sequence[str] | None) -> int:
    """Return an upper bound of the candidates a screen scores, when known cheaply."""
    if ids is not None:
        return len(ids)
    if source == "cif" and path is not None and Path(path).expanduser().is_file():
        return 1
    return sys.maxsize


def _summary(
    run_id: str,
    run: dict[str, Any],
    failures: dict[str, int],
    db_path: Path,
    now: dict[str, int] | None = None,
) -> str:
    """Return the closing lines of a screen: what this invocation did, where the rows are.

    ``now``: counts of this invocation (``scored``, ``reused``, ``earlier``) from
    :func:`_invocation_counts`; a rerun with nothing to do then says so.
    """
    n_failed = (run.get("n_failed") or 0) + (run.get("n_error") or 0)
    causes = ", ".join(f"{cause} {n}" for cause, n in failures.items())
    failed = f"{n_failed} failed" + (f" ({causes})" if causes else "")
    if now is None:
        head = (
            f"run {run_id}: {run.get('n_candidates')} candidates, {run.get('n_ok') or 0} "
            f"scored, {failed}; {run.get('n_reused') or 0} reused from earlier runs"
        )
    elif now["scored"] == 0 and now["reused"] == 0:
        head = (
            f"run {run_id}: {run.get('n_candidates')} candidates, nothing to do: all "
            f"{now['earlier']} already finished in this run ({run.get('n_ok') or 0} ok, "
            f"{failed}); none computed now"
        )
    else:
        head = (
            f"run {run_id}: {run.get('n_candidates')} candidates, {run.get('n_ok') or 0} "
            f"scored, {failed}; now: {now['scored']} computed, {now['reused']} reused from "
            f"earlier runs, {now['earlier']} already finished in this run"
        )
    lines = [
        head,
        f"ranking database: {db_path}",
        f'  {PROG} query "SELECT candidate_id, formula, sigma_S_per_cm FROM results '
        f"WHERE run_id = '{run_id}' ORDER BY sigma_S_per_cm DESC LIMIT 10\" --db {db_path}",
    ]
    return "\n".join(lines)


def _invocation_counts(conn: Any, run_id: str, since_utc: str) -> dict[str, int]:
    """Rows of ``run_id`` computed now, reused now, and finished before ``since_utc``."""
    scored, reused, earlier = conn.execute(
        "SELECT COALESCE(SUM(written_utc >= ? AND reused_from_run_id IS NULL), 0), "
        "COALESCE(SUM(written_utc >= ? AND reused_from_run_id IS NOT NULL), 0), "
        "COALESCE(SUM(written_utc < ?), 0) FROM results WHERE run_id = ?",
        (since_utc, since_utc, since_utc, run_id),
    ).fetchone()
    return {"scored": int(scored), "reused": int(reused), "earlier": int(earlier)}


def _failed_lines(ranking: pd.DataFrame, limit: int = 20) -> str:
    """Return the candidates that were not scored, one line each with its cause."""
    failed = ranking[ranking["status"] != "ok"]
    if failed.empty:
        return ""
    lines = [f"not scored ({len(failed)}):"]
    for row in failed.head(limit).itertuples(index=False):
        error = " ".join(str(getattr(row, "error", "") or "").split())
        name = str(row.candidate_id)
        if not error.startswith(name):
            error = f"{name}: {error}"
        cause = getattr(row, "error_cause", None)
        lines.append(f"  {error}" + (f" [{cause}]" if cause and cause not in error else ""))
    if len(failed) > limit:
        lines.append(
            f'  ... and {len(failed) - limit} more: {PROG} query "SELECT candidate_id, error '
            "FROM results WHERE status != 'ok' AND run_id = '...'\""
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# query
# --------------------------------------------------------------------------------------------


def _query(args: argparse.Namespace) -> int:
    from iondrag.adapters.database import run_query

    frame = run_query(_db_path(args.db), args.sql, max_rows=args.max_rows)
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        from iondrag.workflows.ranking import records

        print(json.dumps(records(frame), indent=1))
    elif frame.empty:
        print("(no rows)" if len(frame.columns) else "(no result)")
    else:
        print(_table(frame))
    cut = int(frame.attrs.get("rows_cut", 0))
    if cut:
        print(
            f"({cut} more row{'s' if cut > 1 else ''} not printed: --max-rows {args.max_rows})",
            file=sys.stderr,
        )
    return 0


def _table(frame: pd.DataFrame) -> str:
    import pandas as pd

    def cell(value: Any, limit: int | None) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "NULL"
        if isinstance(value, float):
            return f"{value:.6g}"
        text = " ".join(str(value).split())
        return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."

    shown = frame.copy()
    for name in shown.columns:
        # messages and descriptions are read whole; other long text (JSON) is cut
        whole = str(name).endswith(("error", "description", "warnings_summary"))
        shown[name] = [cell(v, None if whole else 60) for v in frame[name]]
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
    """Format a 3x3 matrix; entries below 1e-9 of the largest print as 0 (numerical noise)."""
    if not rows:
        return indent + "-"
    largest = max((abs(x) for row in rows for x in row), default=0.0)
    floor = largest * 1e-9

    def entry(x: float) -> str:
        return f"{0.0 if abs(x) < floor else x: .3e}".replace(" 0.000e+00", " 0        ")

    return "\n".join(indent + "  ".join(entry(x) for x in row).rstrip() for row in rows)


def _principal(rows: list[list[float]] | None) -> str:
    if not rows:
        return "-"
    import numpy as np

    matrix = np.asarray(rows, dtype=float)
    values = np.sort(np.linalg.eigvalsh(0.5 * (matrix + matrix.T)))[::-1]
    return ", ".join(_fmt(float(v)) for v in values)


def _show_text(run_id: str, doc: CandidateResult, parameters: dict[str, Any] | None = None) -> str:
    lines = [
        f"candidate   {doc.candidate_id}  ({doc.formula or '?'}, source {doc.source}, "
        f"mobile ion {doc.ion or '?'})",
        f"run         {run_id}   status {doc.status}   T = {doc.temperature_K:g} K",
    ]
    if doc.status != "ok":
        error = doc.error or "-"
        cause = f" [{doc.error_cause}]" if doc.error_cause and doc.error_cause not in error else ""
        lines.append(f"error       {error}{cause}")
        return "\n".join(lines)
    average = (parameters or {}).get("polycrystal_average", "harmonic")
    dim = f"{doc.dimensionality}D" if doc.dimensionality is not None else "-"
    lines += [
        "barriers    (the ranking uses none of them directly: it is by the headline sigma)",
        f"  E_1D      {_fmt(doc.barrier_1d_eV, 'eV')}  1D percolation barrier (barrier_eV): "
        "lowest energy above min U at which the ion's region spans the crystal",
        f"  E_2D/E_3D {_fmt(doc.barrier_2d_eV, 'eV')} / {_fmt(doc.barrier_3d_eV, 'eV')}  the "
        f"same in 2 and 3 directions; dimensionality {dim}",
        f"  path      {_fmt(doc.path_barrier_eV, 'eV')}  max - min of U along the relaxed "
        "minimum-energy path of the E_1D channel (path_barrier_eV)",
    ]
    if doc.activation_energy_eV is not None:
        lines.append(
            f"  Ea        {_fmt(doc.activation_energy_eV, 'eV')}  Arrhenius activation energy "
            "of the headline sigma (activation_energy_eV)"
        )
    lines += [
        "conductivity, two estimates",
        f"  headline  sigma {_fmt(doc.sigma_S_per_cm, 'S/cm')} (log10 "
        f"{_fmt(doc.log10_sigma_S_per_cm)}), ranks the table (sigma_S_per_cm): "
        f"{doc.headline_method} estimate, {average} polycrystal average over the directions "
        "opening at E_1D, E_2D, E_3D",
        "  tensor    single-crystal sigma (S/cm; sigma_xx/yy/zz_S_per_cm): shape from the 3D "
        "homogenisation on the grid"
        + (
            ""
            if doc.headline_method == "homogenised"
            else ", scaled so its largest principal value is the channel's path value"
        ),
        _matrix(doc.sigma_tensor_S_per_cm, "            "),
        f"            principal values {_principal(doc.sigma_tensor_S_per_cm)}; anisotropy "
        f"{_fmt(doc.anisotropy_ratio)}",
        f"  others    log10 sigma: path {_fmt(doc.log10_sigma_path_S_per_cm)}, path with "
        f"channel entropy {_fmt(doc.log10_sigma_path_entropic_S_per_cm)}, 3D homogenised "
        f"{_fmt(doc.log10_sigma_homogenised_S_per_cm)}",
        "diffusion tensor (m^2/s), 3D homogenised",
        _matrix(doc.diffusion_tensor_m2_per_s, "            "),
        f"drag        t.gamma.t at saddle {_fmt(doc.drag_saddle_kg_per_s, 'kg/s')} (friction on "
        f"the ion along its path, t the path's direction); floor "
        f"{_fmt(doc.drag_floor_kg_per_s, 'kg/s')}; elastic data: {doc.elastic_source or '-'}",
        "Lambda (s^3/kg): the framework's elastic response (Christoffel equation of the elastic "
        "tensor) that turns the curvature H of U into the drag gamma = H Lambda H",
        _matrix(doc.lambda_s3_per_kg, "            "),
        f"carriers    {doc.carrier_mechanism or '-'}: fraction {_fmt(doc.carrier_fraction)} of "
        f"the ions (sublattice vacancies {_fmt(doc.sublattice_vacancy_fraction)}, Frenkel pair "
        f"E_F {_fmt(doc.frenkel_energy_eV, 'eV')}, extrinsic level as parameters); density "
        f"{_fmt(doc.carrier_density_per_m3, '1/m^3')} of "
        f"{_fmt(doc.mobile_ion_density_per_m3, '1/m^3')}",
        f"shared      sites shared with framework cations: {doc.shared_site_treatment or '-'}"
        + (
            f"; arrangement factor 10^{doc.log10_arrangement_factor:.2f} (spread "
            f"{_fmt(doc.arrangement_spread_log10)} decades)"
            if doc.log10_arrangement_factor is not None
            else ""
        ),
        f"dynamics    Kramers factor {_fmt(doc.kramers_factor)}; reduced friction "
        f"{_fmt(doc.reduced_friction)} ({doc.damping_regime or '-'}); barrier frequency "
        f"{_fmt(doc.barrier_frequency_rad_per_s, 'rad/s')}",
    ]
    if doc.activation_energy_eV is not None:
        lines.append(
            f"arrhenius   Ea {_fmt(doc.activation_energy_eV, 'eV')} (of the headline); prefactor "
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
    if doc.band_gap_eV is not None:
        lines.append(f"band gap    {_fmt(doc.band_gap_eV, 'eV')} (from the source)")
    if doc.likely_electronic_conductor:
        lines.append(
            f"electronic  likely an electronic or mixed conductor, not an electrolyte: "
            f"{doc.electronic_conductor_reason} (iondrag.screening.electronic)"
        )
    if doc.warnings:
        lines.append("warnings    " + "; ".join(doc.warnings))
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    from contextlib import closing

    from iondrag.adapters import database

    db_path = _db_path(args.db)
    with closing(database.connect(db_path, read_only=True)) as conn:
        run_id, doc, candidate = database.load_document(conn, args.candidate_id, args.run_id)
        run = database.get_run(conn, run_id) or {}
    try:
        parameters = json.loads(run.get("parameters_json") or "{}")
    except ValueError:
        parameters = {}
    print(_show_text(run_id, doc, parameters))
    if args.png:
        note = _plot_png(args.png, doc, candidate, run.get("parameters_json"))
        print(f"plot        {args.png}" + (f" ({note})" if note else ""))
    return 0


def _plot_png(
    out: Path, doc: CandidateResult, candidate: Candidate | None, parameters_json: str | None
) -> str:
    """U and the drag along the path and a slice of U (iondrag.workflows.plots); returns a note."""
    from iondrag.workflows.plots import plot_candidate

    return plot_candidate(out, doc, candidate, parameters_json)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    if _wants_param_help(args):
        print(_params_text())
        return 0
    parameters = _physics_parameters(args)
    _require_ml_extra(parameters)
    for path, what in ((args.cifs, "CIF folder"), (args.table, "table")):
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{what} does not exist: {path}")
    try:
        from iondrag.workflows.validate import run_validation
    except ImportError as error:
        raise RuntimeError(f"iondrag validate is not available: {error}") from error
    from iondrag.screening.settings import get_settings

    cifs = Path(args.cifs).expanduser()
    model = _load_learned(args.model, parameters)
    bar = None if args.quiet else _Bar("validating", unit="struct")
    try:
        report = run_validation(
            cifs,
            Path(args.table).expanduser(),
            parameters=parameters,
            workers=args.workers or _default_workers(),
            json_out=None if model else args.json,
            png_out=None if model else args.png,
            limit=args.limit,
            progress=False,
            prepare_candidate=_elastic_preparation(parameters),
            journal=args.journal or get_settings().validation_journal_path(cifs),
            reuse_journal=not args.fresh,
            on_progress=None if bar is None else bar.update,
            fold=args.fold,
        )
    finally:
        if bar is not None:
            bar.close()
    if model is not None:
        from iondrag.screening.metrics import evaluate_records
        from iondrag.workflows.learn import add_learned_to_records, in_sample_note
        from iondrag.workflows.plots import plot_parity

        _announce(model, args.model)
        note = in_sample_note(model, Path(args.table).expanduser())
        if note:
            print(f"{PROG}: warning: {note}", file=sys.stderr)
        add_learned_to_records(report.per_structure, cifs, model)
        report.metrics = evaluate_records(
            report.per_structure, temperature_K=parameters.temperature_K
        )
        if args.json:
            report.write_json(args.json)
        if args.png:
            plot_parity(report, args.png)
    print(report.summary_text())
    return 0


def _load_learned(value: str | None, parameters: Any) -> Any:
    """Return the learned model of ``--model`` (default: the shipped one; ``none``: None)."""
    from iondrag.workflows.learn import ModelFileError, load_model, resolve_model

    path = resolve_model(value)
    if path is None:
        return None
    try:
        return load_model(path, parameters)
    except ModelFileError as error:
        if value is not None:
            raise
        # the shipped model no longer fits this iondrag: the physics still runs
        print(f"{PROG}: warning: default learned model not used: {error}", file=sys.stderr)
        return None


def _announce(model: Any, value: str | None) -> None:
    """Say in one line (stderr) which learned model was used, and any warning."""
    from iondrag.workflows.learn import describe

    print(f"{PROG}: {describe(model, default=value is None)}", file=sys.stderr)


def _learn(args: argparse.Namespace) -> int:
    parameters = _physics_parameters(args)
    for path, what in ((args.cifs, "CIF folder"), (args.table, "table")):
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{what} does not exist: {path}")
    if not 0.0 < args.coverage < 1.0:
        raise UsageError(f"--coverage must lie between 0 and 1, got {args.coverage}")
    from iondrag.screening.settings import get_settings
    from iondrag.workflows.learn import run_learn, summary_text

    cifs = Path(args.cifs).expanduser()
    meta = run_learn(
        cifs,
        Path(args.table).expanduser(),
        Path(args.out).expanduser(),
        parameters=parameters,
        workers=args.workers or _default_workers(),
        journal=args.journal or get_settings().validation_journal_path(cifs),
        reuse_journal=not args.fresh,
        kind=args.estimator,
        rows_used=args.rows,
        n_splits=args.folds,
        coverage=args.coverage,
        limit=args.limit,
        progress=not args.quiet,
    )
    print(summary_text(meta, Path(args.out).expanduser()))
    return 0


def _elastic_preparation(parameters: Any) -> Any:
    """Return the candidate preparation of ``validate`` (CHGNet elastic tensors or None)."""
    if parameters.elastic != "chgnet":
        return None
    from iondrag.workflows.ml import candidate_with_chgnet_elastic

    return candidate_with_chgnet_elastic


# --------------------------------------------------------------------------------------------
# params
# --------------------------------------------------------------------------------------------

#: ScreeningParameters fields that have a dedicated option of their own.
_DEDICATED_FLAGS: dict[str, str] = {
    **{name: flag for name, (flag, _) in _PHYSICS_FLAGS.items()},
    "arrhenius_temperatures_K": "--arrhenius",
}


def _params_text() -> str:
    import textwrap

    from iondrag.screening.parameters import parameter_table

    lines = [
        "Physics parameters: --param KEY=VALUE in `iondrag screen` and `iondrag validate` "
        "(repeatable; wins over the dedicated options; VALUE is JSON where it parses, e.g. "
        "true, 0.3, [300,400]). Fields of ScreeningParameters, also "
        "ScreenMaker.from_options(KEY=...).",
        "",
    ]
    for row in parameter_table():
        facts = [row["type"]]
        if row["unit"]:
            facts.insert(0, row["unit"])
        if row["bounds"]:
            facts.append(row["bounds"])
        flag = _DEDICATED_FLAGS.get(row["key"])
        lines.append(
            f"{row['key']} = {row['default']}  ({'; '.join(facts)})"
            + (f"  [also {flag}]" if flag else "")
        )
        lines += textwrap.wrap(
            row["description"], width=92, initial_indent="    ", subsequent_indent="    "
        )
    return "\n".join(lines)


def _params(args: argparse.Namespace) -> int:
    if args.format == "json":
        from iondrag.screening.parameters import parameter_table

        print(json.dumps(parameter_table(), indent=1, default=str))
    else:
        print(_params_text())
    return 0


def _wants_param_help(args: argparse.Namespace) -> bool:
    return any(item.strip().lower() in ("help", "?") for item in getattr(args, "param", []))


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``iondrag``; return the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from iondrag.screening import __version__

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

    from iondrag.screening.errors import IondragError

    if isinstance(error, IondragError | OSError | sqlite3.Error | ImportError | ValueError):
        return True
    return type(error).__name__ in ("ValidationError", "RuntimeError")


if __name__ == "__main__":
    sys.exit(main())
