"""Every shared option, defined once (rio style) and reused by every command.

Options (``Annotated`` aliases to use as parameter types):

- :func:`output_option` ``-o/--output FILE|DIR`` where to write, with a command's own help
- ``Overwrite``    ``--overwrite``            replace an existing output (refused otherwise)
- ``CreationOpts`` ``--co KEY=VALUE``         GDAL creation options, repeatable
- ``Nodata``       ``--nodata V``             override the input's nodata value (``nan`` ok)
- ``Device``       ``--device cpu|cuda|auto`` where models run
- ``Json``         ``--json``                 machine-readable summary on stdout
- ``JsonLines``    ``--json``                 predict/predict-height: one JSON line per input, in order, + totals
- ``Seed``         ``--seed N``               random seed (runs are deterministic for a seed)
- ``Workers``      ``--workers N``            parallel workers (0 = in the main process)
- ``Cog``          ``--cog``                  copy raster outputs to Cloud Optimized GeoTIFF
- ``Compress``     ``--compress CODEC``       height outputs: zstd (default), deflate, lerc_zstd
- ``MaxZError``    ``--max-z-error M``        lerc_zstd: largest height error in metres
- ``Precision``    ``--precision fp32|bf16|fp16`` autocast precision (the one enum)
- ``Bands``        ``--bands B,G,R``          image bands to use, 1-based (rsgeo.io.bands)
- ``LabelMap``     ``--label-map FROM:TO``    recode mask values to class ids, repeatable
- ``MaxPixels``    ``--max-pixels N``         refuse larger rasters (rsgeo.io.limits)

Path values (:func:`path_values`, also run by ``main``): ``-`` (stdin/stdout) is refused,
but where an option's metavar is :data:`FILE_OR_STDOUT` (``evaluate -o -`` prints); a
trailing ``/`` names a folder: refused where the metavar is :data:`FILE`, on a path that is
a file, and noted (:func:`as_folder`) where it is :data:`FILE_OR_DIR`.

Every float option of every command is finite: :func:`finite_floats` (run on the built
command by ``rsgeo.cli.app.main``) refuses nan and +-inf with exit 2, naming the option.

Option groups (one parameter of a dataclass type, expanded into its options by
:func:`with_groups`, shown under their own heading in ``--help``):

- :class:`RasterOutput` ``--compress --max-z-error --co --overwrite`` (raster writers)
- :class:`Compute`      ``--device --precision`` (commands that run a model)

Callbacks return typed values: ``--nodata`` a float or None; ``--bands`` a tuple of
1-based band indexes or None; ``--max-pixels`` also sets the process-wide budget; ``--co``
is checked as given (typer keeps list options lists) and
:attr:`RasterOutput.creation_options` is the ``{KEY: value}`` dict. :func:`emit` is the
``--json``/table epilogue.

This module imports only typer and rsgeo.jsonout (rich when printing; the --bands and
--max-pixels callbacks import their rsgeo.io module when the option is given), so
``rsgeo --help`` stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, get_args, get_origin, get_type_hints

import typer

from rsgeo.errors import InputError
from rsgeo.jsonout import dumps


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Codec(str, Enum):
    """Compression of height outputs (see ``rsgeo.io.writer.codec_co``)."""

    zstd = "zstd"
    deflate = "deflate"
    lerc_zstd = "lerc_zstd"


class Precision(str, Enum):
    """Autocast precision: training takes all three (fp16: CUDA only), predict-height fp32
    and bf16 (torch backend)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _parse_nodata(value) -> Optional[float]:
    if value is None or isinstance(value, float):
        return value
    try:
        v = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number (use e.g. -9999 or nan)") from None
    return v if not math.isnan(v) else float("nan")


def parse_co(values) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> ``{"KEY": "VALUE"}`` (keys upper-cased, as GDAL reads them)."""
    out: dict[str, str] = {}
    for item in values or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key.strip().upper()] = value.strip()
    return out


def _check_co(values: Optional[list[str]]) -> list[str]:
    parse_co(values)  # typer turns a list option's value back into a list: check, keep
    return values or []


def output_option(help: str, takes: str, *, optional: bool = False):
    """``-o/--output PATH`` with a command's own help (``optional``: may be omitted);
    ``takes`` (:data:`FILE`, :data:`DIR`, :data:`FILE_OR_DIR` or :data:`FILE_OR_STDOUT`) is
    its metavar and what :func:`path_values` checks."""
    return Annotated[Optional[Path] if optional else Path,
                     typer.Option("-o", "--output", metavar=takes, help=help)]


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
CreationOpts = Annotated[
    Optional[list[str]],
    typer.Option("--co", metavar="KEY=VALUE", callback=_check_co,
                 help="GDAL creation option for raster outputs (repeatable), "
                      "e.g. --co ZLEVEL=6 --co BLOCKXSIZE=512."),
]
Nodata = Annotated[
    Optional[str],
    typer.Option("--nodata", metavar="V", callback=_parse_nodata,
                 help="Override the input nodata value (number or nan)."),
]
Device = Annotated[
    DeviceChoice,
    typer.Option("--device", help="Where models run: auto picks CUDA when available."),
]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
JsonLines = Annotated[bool, typer.Option(
    "--json", help="Print JSON Lines on stdout: one object per input, in input order, as "
                   "soon as its outputs are written, each naming its `input` (change: PRE, and "
                   "POST as `post`) and `output`, with seconds, mpx, mpx_per_s, tiles, task, "
                   "device, backend and the task's results; then one with the totals "
                   "(\"total\": true); read with e.g. `jq` or `json.tool --json-lines`.")]
SEED_MAX = 2**32 - 1  # numpy's np.random.seed (pretrain) takes [0, 2**32)
Seed = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed.")]
Workers = Annotated[int, typer.Option("--workers", min=0, help="Parallel workers.")]
Cog = Annotated[bool, typer.Option("--cog", help="Write Cloud Optimized GeoTIFF (copy).")]
SkipExisting = Annotated[bool, typer.Option(
    "--skip-existing", help="Leave outputs that exist (finished by an earlier run of the same "
                            "model) and predict the rest: an interrupted folder run resumes.")]
Compress = Annotated[
    Optional[Codec],
    typer.Option("--compress", help="Height output codec: zstd (default; lossless), deflate "
                                    "(lossless, most portable), lerc_zstd (lossy within "
                                    "--max-z-error, several times smaller)."),
]
MaxZError = Annotated[
    Optional[float],
    typer.Option("--max-z-error", min=0.0, metavar="M",
                 help="lerc_zstd: largest height error in metres (default 0.01)."),
]

Scale = Annotated[
    str,
    typer.Option("--scale", metavar="MODE",
                 help="Image values -> the 0-255 training scale: percentile (2-98 % stretch "
                      "of images wider than 8 bits), bitdepth, none, or MIN,MAX. Prepare and "
                      "predict use the same rule. Height bands (DSM / nDSM models) are "
                      "read in metres, never stretched."),
]

Surface = Annotated[
    Optional[Path],
    typer.Option("--dsm", metavar="FILE|DIR",
                 help="Models of RGB + DSM (or RGB + nDSM): the height raster in metres, "
                      "of the kind the model was trained on (a folder: one raster of each "
                      "input's file name); resampled onto the image's grid if it differs."),
]


def nodata_value(value) -> Optional[float]:
    """The float of a ``--nodata`` value (None when not given; the option's callback
    already gives a float, so this is the identity on it); a bad string (a library caller)
    is an InputError naming --nodata."""
    try:
        return _parse_nodata(value)
    except typer.BadParameter as e:
        raise InputError(f"--nodata: {e.message}") from None


# ---- option groups --------------------------------------------------------------------

def in_panel(name: str, alias):
    """``alias`` (an ``Annotated`` option) shown under the help heading ``name``."""
    info = copy.copy(alias.__metadata__[0])
    info.rich_help_panel = name
    return Annotated[alias.__origin__, info]


@dataclasses.dataclass(frozen=True)
class RasterOutput:
    """Raster output options: ``--compress --max-z-error --co --overwrite``."""

    compress: in_panel("Raster output", Compress) = None
    max_z_error: in_panel("Raster output", MaxZError) = None
    co: in_panel("Raster output", CreationOpts) = None
    overwrite: in_panel("Raster output", Overwrite) = False

    @property
    def codec(self) -> Optional[str]:
        """``--compress`` as a string (None: the writer's default)."""
        return self.compress.value if self.compress else None

    @property
    def creation_options(self) -> dict[str, str]:
        """``--co`` as ``{KEY: value}``."""
        return parse_co(self.co)


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where and how a model runs: ``--device --precision``."""

    device: in_panel("Compute", Device) = DeviceChoice.auto
    precision: in_panel("Compute", Annotated[
        Precision, typer.Option("--precision", help="Autocast precision: fp32, bf16 (CUDA, or "
                                                    "CPUs with AMX / AVX512-BF16), fp16 "
                                                    "(training on CUDA only).")]) = Precision.fp32


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How a model is swept over a raster: ``--tile --overlap --batch-size --backend --gsd``
    (predict, predict-height)."""

    tile: in_panel("Tiling", Annotated[Optional[int], typer.Option(
        "--tile", min=16, help="Tile size px (default: the model's).")]) = None
    overlap: in_panel("Tiling", Annotated[Optional[int], typer.Option(
        "--overlap", min=0, help="Tile overlap px (default: the model's; classification 0).")]) = None
    batch_size: in_panel("Tiling", Annotated[Optional[int], typer.Option(
        "--batch-size", min=1,
        help="Tiles per model call (default: from the tile and free GPU memory).")]) = None
    backend: in_panel("Tiling", Annotated[Optional[Backend], typer.Option(
        "--backend", help="Default: onnx for .onnx, torch for .ckpt.")]) = None
    gsd: in_panel("Tiling", Annotated[str, typer.Option(
        "--gsd", help="Ground sampling distance the model runs at: auto (the model's training "
                      "GSD; inputs more than 5 % off are resampled to it and back), native "
                      "(never resample), or metres per pixel.")]) = "auto"

    def kwargs(self) -> dict:
        """The library's keywords (``tile, overlap, batch_size, backend, gsd``)."""
        return {"tile": self.tile, "overlap": self.overlap, "batch_size": self.batch_size,
                "backend": self.backend.value if self.backend else None, "gsd": self.gsd}


GROUPS = (RasterOutput, Compute, Tiling)


def with_groups(func: Callable) -> Callable:
    """Expand each parameter typed with an option group (:data:`GROUPS`) into the group's
    options; the command receives one instance of the group.

    Use below ``@app.command``::

        @app.command("x")
        @with_groups
        def x(..., out: RasterOutput = RasterOutput()): ...
    """
    hints = get_type_hints(func, include_extras=True)
    params, groups = [], {}
    for p in inspect.signature(func).parameters.values():
        group = hints.get(p.name)
        if group in GROUPS:
            fields = dataclasses.fields(group)
            g_hints = get_type_hints(group, include_extras=True)
            groups[p.name] = (group, [f.name for f in fields])
            params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                         default=f.default, annotation=g_hints[f.name])
                       for f in fields]
        else:
            params.append(p.replace(annotation=hints.get(p.name, p.annotation),
                                    kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(func)
    def command(**kwargs):
        for name, (group, names) in groups.items():
            kwargs[name] = group(**{n: kwargs.pop(n) for n in names})
        return func(**kwargs)

    del command.__wrapped__  # typer reads the expanded signature below, not func's
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


# ---- the --json / table epilogue ------------------------------------------------------

def emit(summary, as_json: bool, human: Callable[[], None] | str | None = None) -> None:
    """Print ``summary`` as one JSON document on one line (``--json``: JSON Lines friendly,
    as every command prints it), else ``human``: a line of text or a function that prints
    tables (see :func:`print_table`)."""
    if as_json:
        typer.echo(dumps(summary))
    elif callable(human):
        human()
    elif human is not None:
        typer.echo(human)


def print_table(title: str, columns, rows) -> None:
    """A rich table on stdout: ``columns`` (the first left-aligned, the others right) and
    ``rows`` of cells (printed with ``str``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)


# --- imagery and limits (issue 14): --bands, --label-map, --max-pixels ---------------------

def _parse_bands(value):
    """``"3,2,1"`` -> ``(3, 2, 1)`` (None when not given); bad text is an InputError naming
    --bands (rsgeo.io.bands.parse_bands, the one rule every command shares)."""
    if value is None or isinstance(value, tuple):
        return value
    from rsgeo.io.bands import parse_bands  # lazy: keeps `rsgeo --help` free of library imports

    return parse_bands(value)


Bands = Annotated[
    Optional[str],
    typer.Option("--bands", metavar="B,G,R", callback=_parse_bands,
                 help="Image bands to use, 1-based in order (GDAL style): 1,2,3 takes RGB "
                      "from RGBA or RGBN, 3,2,1 reads BGR. Default: RGBA -> RGB with alpha "
                      "as valid mask; 1 band (panchromatic) replicated with a warning."),
]


def _check_label_map(values: Optional[list[str]]) -> list[str]:
    for item in values or []:
        for pair in item.split(","):
            a, sep, b = pair.partition(":")
            if not sep or not a.strip().lstrip("-").isdigit() or not b.strip().isdigit():
                raise typer.BadParameter(f"{pair!r} is not FROM:TO (integer mask value -> "
                                         "class id), e.g. 255:1")
    return values or []


LabelMap = Annotated[
    Optional[list[str]],
    typer.Option("--label-map", metavar="FROM:TO", callback=_check_label_map,
                 help="Recode mask values to class ids before anything else, repeatable or "
                      "comma-separated, e.g. --label-map 0:0,255:1 keeps a 0/255 building "
                      "mask's buildings (255 otherwise means ignore)."),
]


def _set_max_pixels(value: Optional[int]) -> Optional[int]:
    """Set the process-wide budget for this command (reset to the default when not given,
    so one in-process run never leaks its budget into the next)."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be a positive pixel count, got {value}")
    from rsgeo.io import limits  # lazy: keeps `rsgeo --help` free of library imports

    limits.set_max_pixels(value)
    return value


MaxPixels = Annotated[
    Optional[int],
    typer.Option("--max-pixels", metavar="N", callback=_set_max_pixels,
                 help="Refuse rasters (inputs, resampled grids, outputs) larger than N "
                      "pixels (width x height). Default: RAM bytes / 4, i.e. one float32 "
                      "band of the raster fits in memory; env RSGEO_MAX_PIXELS."),
]


# --- float options: finite only ---------------------------------------------------------

def _check_finite(callback):
    """``callback`` (or none) behind a check that every value of the float option is finite."""
    def check(ctx, param, value):
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise typer.BadParameter(f"must be a finite number, got {v}", ctx, param)
        return value if callback is None else callback(ctx, param, value)

    return check


def is_float_option(param) -> bool:
    """Whether a built click parameter takes floats (one or a list)."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:  # typer releases that convert with click's own types
        return getattr(getattr(param, "type", None), "name", "") in ("float", "float range")
    ann = desc.annotation
    return ann is float or (desc.is_list and float in getattr(ann, "__args__", ()))


def finite_floats(command) -> None:
    """Make every float option of ``command`` and its subcommands (those of registered
    methods and tasks included) refuse nan and +-inf with exit 2: no float option means
    anything by them (``--nodata nan`` is a text option and keeps its nan)."""
    for cmd in (command, *getattr(command, "commands", {}).values()):
        for p in cmd.params:
            if is_float_option(p):
                p.callback = _check_finite(p.callback)


def plural(n: int, word: str) -> str:
    """``"1 tile"``, ``"3 tiles"``: a count and its noun, for human-readable lines."""
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- empty values: refused ----------------------------------------------------------------

def _refuse_empty(param, process_value):
    """``process_value`` behind a check that no value given on the command line is ``""``."""
    def process(ctx, value):
        source = ctx.get_parameter_source(param.name)
        given = value if isinstance(value, (list, tuple)) else (value,)
        if getattr(source, "name", "") == "COMMANDLINE" and any(v == "" for v in given):
            raise typer.BadParameter("must not be empty (an unset shell variable?)", ctx, param)
        return process_value(ctx, value)

    return process


def no_empty_values(command) -> None:
    """Make every option and argument of ``command`` and its subcommands refuse an empty
    string given on the command line, exit 2 naming it: typer turns ``-o ""`` into the path
    ``.`` (``synth -o "$OUT"`` with OUT unset wrote into the current folder) and most text
    options took ``""`` as "not given". Options whose default is ``""`` keep it."""
    for cmd in (command, *getattr(command, "commands", {}).values()):
        for p in cmd.params:
            if p.default != "":
                p.process_value = _refuse_empty(p, p.process_value)


# --- names that are not UTF-8: refused ------------------------------------------------------

def shown(text: str) -> str:
    """``text`` printable: bytes that are not UTF-8 (surrogate escapes) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def not_utf8(text: str) -> bool:
    """Whether ``text`` (an argument, a file name) holds bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


NOT_UTF8 = ("not valid UTF-8 (text in another encoding, e.g. a Latin-1 file name), which GDAL "
            "and the vector drivers cannot handle; use UTF-8 (rename files with e.g. "
            "convmv -f latin1 -t utf8)")


def _refuse_not_utf8(param, process_value):
    """``process_value`` behind a check that every value given is valid UTF-8."""
    def process(ctx, value):
        given = value if isinstance(value, (list, tuple)) else (value,)
        bad = next((v for v in given if isinstance(v, str) and not_utf8(v)), None)
        if bad is not None:
            raise typer.BadParameter(f"'{shown(bad)}' is {NOT_UTF8}", ctx, param)
        return process_value(ctx, value)

    return process


def utf8_values(command) -> None:
    """Make every option and argument of ``command`` and its subcommands refuse a value that
    is not valid UTF-8, exit 2 naming it: a Latin-1 file name (``caf\\xe9.tif`` from an old
    archive) reaches Python as surrogate escapes, and rasterio, pyogrio and the writers
    failed on it with a UnicodeEncodeError (exit 1, as an internal failure)."""
    for cmd in (command, *getattr(command, "commands", {}).values()):
        for p in cmd.params:
            p.process_value = _refuse_not_utf8(p, p.process_value)


# --- path values: '-' and a trailing '/' ---------------------------------------------------

FILE, DIR, FILE_OR_DIR = "FILE", "DIR", "FILE|DIR"  # what a path option takes (its metavar)
# vector formats in help texts: what rsgeo.io.vector.DRIVERS writes (by extension) and reads
VECTOR_OUT = ".gpkg, .geojson or .json, .geojsonl or .geojsons (GeoJSON sequence), .parquet or .fgb"
VECTOR_IN = "any OGR format, .shp included, or GeoParquet named .parquet"
FILE_OR_STDOUT = "FILE|-"  # a report file, or '-': stdout
SEPARATORS = tuple(s for s in {"/", os.sep, os.altsep} if s)
_GIVEN = "rsgeo.paths"  # ctx.meta key: {parameter name: "folder" | "stdout"}


def base_type(param):
    """The Python type behind a built click parameter (Optional/list unwrapped); works
    across typer versions."""
    desc = getattr(param, "type_descriptor", None)
    ann = getattr(desc, "annotation", None)
    if ann is None:  # older typer: click ParamType
        t = getattr(param, "type", None)
        return getattr(t, "enum", None) or (Path if type(t).__name__ == "Path" else None)
    while get_args(ann) and get_origin(ann) is not Annotated:
        args = [a for a in get_args(ann) if a is not type(None)]
        ann = args[0] if args else None
    return ann


def _check_path(value: str, kind, ctx, param) -> None:
    """One path as typed: ``-`` and a trailing separator (see :func:`path_values`)."""
    noun = {FILE: "a file", FILE_OR_STDOUT: "a file", DIR: "a folder"}.get(kind,
                                                                          "a file or folder")
    if value == "-":
        if kind != FILE_OR_STDOUT:
            raise typer.BadParameter(f"'-' (stdin/stdout) is not supported; name {noun}",
                                     ctx, param)
        ctx.meta.setdefault(_GIVEN, {})[param.name] = "stdout"
    bare = value.rstrip("".join(SEPARATORS))
    if value == bare or not bare:  # no trailing separator, or the root folder itself
        return
    if kind in (FILE, FILE_OR_STDOUT):
        raise typer.BadParameter(f"'{shown(value)}' ends in '{value[-1]}', which names a "
                                 f"folder; this option takes a file (e.g. {shown(bare)}/"
                                 "NAME, or drop the '/')", ctx, param)
    if os.path.isfile(bare):
        raise typer.BadParameter(f"'{shown(value)}' ends in '{value[-1]}', which names a "
                                 f"folder, but {shown(bare)} is a file", ctx, param)
    if kind == FILE_OR_DIR:
        ctx.meta.setdefault(_GIVEN, {})[param.name] = "folder"


def _path_checked(param, kind, process_value):
    """``process_value`` behind :func:`_check_path` on every value typed (not defaults)."""
    def process(ctx, value):
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, str):
                _check_path(v, kind, ctx, param)
        return process_value(ctx, value)

    return process


def path_values(command) -> None:
    """Make every path option and argument of ``command`` and its subcommands check the
    text typed, before typer turns it into a ``Path`` (which drops a trailing ``/``):

    - ``-`` is refused, exit 2 naming the option: rsgeo reads no stdin and writes no data
      to stdout (``evaluate -o -`` wrote a file named ``-``, ``synth -o -`` a folder); an
      option whose metavar is :data:`FILE_OR_STDOUT` takes it (:func:`to_stdout`).
    - a trailing separator names a folder (``evaluate -o dir/`` wrote a FILE ``dir``): on
      an option that takes a file (metavar :data:`FILE`), or a path that is an existing
      file, it is refused, exit 2; on an option that takes either (:data:`FILE_OR_DIR`:
      predict's ``-o``) it means the folder (:func:`as_folder`).
    """
    for cmd in (command, *getattr(command, "commands", {}).values()):
        for p in cmd.params:
            if base_type(p) is Path:
                p.process_value = _path_checked(p, getattr(p, "metavar", None),
                                                p.process_value)


def as_folder(ctx, name: str) -> bool:
    """Whether the :data:`FILE_OR_DIR` parameter ``name`` was typed with a trailing ``/``."""
    return ctx.meta.get(_GIVEN, {}).get(name) == "folder"


def to_stdout(ctx, name: str) -> bool:
    """Whether the :data:`FILE_OR_STDOUT` parameter ``name`` was typed as ``-``."""
    return ctx.meta.get(_GIVEN, {}).get(name) == "stdout"
