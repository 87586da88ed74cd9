"""What README.md and CONTRIBUTING.md say about the code is what the code does.

``tests/test_readme.py`` runs the README's commands; this file checks its prose, fast (no
subprocess, no torch: the CLI's click parameters via ``typer.main.get_command``, module
constants and classes read with ``ast``):

- every option the README gives a command (in code blocks, in ``rsgeo CMD ...`` or
  ``CMD --opt`` code spans, and as a bare ``--opt`` span in that command's section) exists
  on that command, and every value it gives a choice option is one of its choices;
- every other ``--opt`` span names an option of some command or benchmark script;
- the defaults, limits, exit codes and file names the README states equal the code's;
- every ``rsgeo.x.y`` name in README.md and CONTRIBUTING.md exists, and links resolve;
- CONTRIBUTING.md's task and method fields, fixtures and markers are the code's.

Each test lists every offender.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
OPTION = re.compile(r"^(--?[A-Za-z][\w-]*\*?)(?:=.*)?$")
GLOBAL = re.compile(r"^(-v+|-q+|--verbose|--quiet|--version|-h|--help)$")

# (section commands, option) -> why a bare `--opt` span there names another command's option
ELSEWHERE = {
    (("finetune", "export", "predict-height"), "--classes"): "prepare's, for the dataset",
    (("predict",), "--modalities"): "finetune's: what the model was trained on",
    (("predict",), "--randomize"): "benchmarks/footprints_real.py's option",
    (("prepare",), "-m"): "damage-map's, footprints' and building-heights' model option",
    (("building-heights",), "-units"): "gdal_edit.py's option",
    (("building-heights",), "-scale"): "gdal_edit.py's option",
}


# ---- the CLI -----------------------------------------------------------------------------

@cache
def commands() -> dict:
    from rsgeo.cli.app import app

    return dict(typer.main.get_command(app).commands)


def options(cmd: str) -> dict[str, object]:
    """``{"--opt": click parameter}`` of ``cmd``, every spelling (``-o``, ``--no-x``)."""
    return {o: p for p in commands()[cmd].params for o in (*p.opts, *p.secondary_opts)
            if o.startswith("-")}


def has_option(cmd: str, opt: str) -> bool:
    if GLOBAL.match(opt):
        return True
    if opt.endswith("*"):  # `--decoder-*`
        return any(o.startswith(opt[:-1]) for o in options(cmd))
    return opt in options(cmd)


def module_ast(rel: str) -> ast.Module:
    return ast.parse((ROOT / rel).read_text())


def constant(rel: str, name: str):
    """The value of the module-level constant ``name`` in ``rel`` (literals and arithmetic)."""
    for node in module_ast(rel).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            code = compile(ast.Expression(node.value), rel, "eval")
            return eval(code, {"__builtins__": {}, "dict": dict})
    raise AssertionError(f"{rel} defines no constant {name}")


@cache
def values(cmd: str, opt: str) -> tuple[str, ...] | None:
    """The values ``cmd``'s ``opt`` takes: its choices, or for text options checked by the
    library the registry's names; None when any value goes."""
    p = options(cmd)[opt]
    desc = getattr(p, "type_descriptor", None)
    if desc is not None and desc.is_choice:
        return tuple(getattr(c, "value", c) for c in desc.choices)
    from rsgeo import tasks

    registry = {"task": tasks.task_names, "head": tasks.all_heads,
                "modalities": lambda: tuple(tasks.INPUTS)}
    if cmd == "finetune" and p.name in registry:
        return tuple(registry[p.name]())
    if cmd == "finetune" and p.name == "style":
        return constant("rsgeo/train/style.py", "STYLES")
    if cmd == "prepare" and p.name == "ndsm_dtype":
        return constant("rsgeo/data/prepare.py", "HEIGHT_DTYPES")
    return None


def benchmark_options(scripts=None) -> set[str]:
    """The argparse options of ``benchmarks/*.py`` (of ``scripts`` when given)."""
    out = set()
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if scripts is None or path.name in scripts:
            out |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", path.read_text()))
    return out


# ---- the README, split -------------------------------------------------------------------

def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of fenced and indented code blocks, continuation lines joined."""
    out, fence, prev_blank, in_indented = [], False, True, False
    for no, line in enumerate(text.splitlines(), 1):
        if out and out[-1][1].endswith("\\") and (fence or in_indented):
            out[-1] = (out[-1][0], out[-1][1][:-1] + " " + line.strip())
            continue
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        in_indented = not fence and line.startswith("    ") and (prev_blank or in_indented)
        if fence or in_indented:
            out.append((no, line.strip()))
        prev_blank = not line.strip()
    return out


def prose(text: str) -> str:
    """``text`` with its code blocks blanked (line numbers kept)."""
    lines = text.splitlines()
    for no, _ in code_lines(text):
        lines[no - 1] = ""
    fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fence = not fence
            lines[i] = ""
        elif fence:
            lines[i] = ""
    return "\n".join(lines)


def spans(text: str) -> list[tuple[int, str]]:
    """(line number, text) of the inline code spans of ``text``'s prose (spans may break
    across one line; a line break inside reads as a space)."""
    body = prose(text)
    return [(body.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", body) if "\n\n" not in m.group(1)]


def sections(text: str) -> list[tuple[int, str, int]]:
    """(first line, heading, level) of every heading outside code blocks."""
    body = prose(text).splitlines()
    return [(no, line.lstrip("#").strip(), len(line) - len(line.lstrip("#")))
            for no, line in enumerate(body, 1) if re.match(r"#{1,6} ", line)]


def context(no: int) -> tuple[str, tuple[str, ...]]:
    """What a bare ``--opt`` span on README line ``no`` belongs to: ``("commands", names)``
    in a ``### `rsgeo CMD``` section, ``("scripts", files)`` in a subsection about
    ``benchmarks/`` scripts, else ``("any", ())``."""
    kind, names = "any", ()
    for start, heading, level in sections(README):
        if start > no:
            break
        cmds = tuple(re.findall(r"`rsgeo ([a-z-]+)`", heading))
        scripts = tuple(re.findall(r"`benchmarks/([\w.]+\.py)`", heading))
        if level <= 3:
            kind, names = ("commands", cmds) if cmds else ("any", ())
        if level >= 3 and scripts:
            kind, names = "scripts", scripts
    return kind, names


def command_uses(text: str) -> list[tuple[str, str, str | None]]:
    """(command, option, the value after it) of every ``rsgeo CMD ...`` in ``text`` (a shell
    line: cut at comments and pipes)."""
    out = []
    for piece in re.split(r"\||&&|;", text.split(" #")[0]):
        words = piece.split()
        for i, w in enumerate(words[:-1]):
            if w == "rsgeo" and words[i + 1] in commands():
                cmd, rest = words[i + 1], words[i + 2:]
                for j, token in enumerate(rest):
                    m = OPTION.match(token)
                    if m:
                        nxt = rest[j + 1] if j + 1 < len(rest) else None
                        out.append((cmd, m.group(1), nxt))
    return out


def readme_command_uses() -> list[tuple[int, str, str, str | None]]:
    """Every option given to a command: code lines, ``rsgeo CMD ...`` spans and
    ``CMD --opt ...`` spans (a command name, then an option)."""
    found = [(no, *use) for no, line in code_lines(README) for use in command_uses(line)]
    names = "|".join(map(re.escape, sorted(commands(), key=len, reverse=True)))
    for no, span in spans(README):
        if re.match(rf"({names}) -", span):
            span = "rsgeo " + span
        found += [(no, *use) for use in command_uses(span)]
    return found


# ---- options and values ------------------------------------------------------------------

def test_readme_command_lines_use_real_options():
    uses = readme_command_uses()
    assert len(uses) > 150, "the extractor lost the README's commands"
    bad = [f"README.md:{no}: rsgeo {cmd} has no {opt}" for no, cmd, opt, _ in uses
           if not has_option(cmd, opt)]
    assert not bad, "\n".join(bad)


def test_readme_command_lines_give_valid_values():
    bad = []
    for no, cmd, opt, value in readme_command_uses():
        if not has_option(cmd, opt) or GLOBAL.match(opt) or opt.endswith("*"):
            continue
        allowed = values(cmd, opt)
        if allowed and value and re.fullmatch(r"[a-z0-9_+|]+", value):
            wrong = [v for v in value.split("|") if v not in allowed]
            if wrong:
                bad.append(f"README.md:{no}: rsgeo {cmd} {opt} {value}: {', '.join(wrong)} "
                           f"is not one of {', '.join(allowed)}")
    assert not bad, "\n".join(bad)


def bare_option_spans() -> list[tuple[int, list[tuple[str, str | None]]]]:
    """(line, [(option, value)]) of spans that start with an option: `--opt`, `-m MODEL`,
    `-o/--output`, `--device cpu|cuda|auto`."""
    out = []
    for no, span in spans(README):
        words = span.replace("/", " ").split() if span.startswith("-") else []
        if not words or not OPTION.match(words[0]) or words[0] == "-":
            continue
        opts = [(OPTION.match(w).group(1), words[i + 1] if i + 1 < len(words) else None)
                for i, w in enumerate(words) if OPTION.match(w)]
        out.append((no, opts))
    return out


def test_readme_options_in_prose_exist():
    """A bare `--opt` span in a command's section is that command's option (or listed in
    :data:`ELSEWHERE` with the reason); in a section about benchmark scripts, theirs;
    anywhere else, some command's or some benchmark script's."""
    anywhere = {o for c in commands() for o in options(c)} | benchmark_options()
    bad = []
    for no, opts in bare_option_spans():
        kind, names = context(no)
        for opt, _ in opts:
            if GLOBAL.match(opt):
                continue
            if kind == "commands":
                ok = any(has_option(c, opt) for c in names) or (names, opt) in ELSEWHERE
            elif kind == "scripts":
                ok = opt in benchmark_options(names) or opt in anywhere
            else:
                ok = opt in anywhere or any(has_option(c, opt) for c in commands())
            if not ok:
                bad.append(f"README.md:{no}: {opt} ({kind}: {', '.join(names) or 'any'})")
    assert not bad, "\n".join(bad)


def test_readme_choice_lists_in_prose_are_the_cli_choices():
    """`--opt a|b|c` (and `--opt value`) in prose: each value is a choice of that option on
    a command of the section (anywhere else: on some command that has the option)."""
    bad = []
    for no, opts in bare_option_spans():
        kind, names = context(no)
        cmds = names if kind == "commands" else tuple(commands())
        for opt, value in opts:
            have = [c for c in cmds if has_option(c, opt) and not opt.endswith("*")
                    and not GLOBAL.match(opt)]
            if not have or not value or not re.fullmatch(r"[a-z0-9_+|]+", value):
                continue
            allowed = [values(c, opt) for c in have]
            if any(a is None for a in allowed):
                continue
            wrong = [v for v in value.split("|") if not any(v in a for a in allowed)]
            if wrong:
                bad.append(f"README.md:{no}: {opt} {value}: {', '.join(wrong)} not in "
                           f"{' / '.join(', '.join(a) for a in allowed)}")
    assert not bad, "\n".join(bad)


def test_every_command_is_in_the_commands_table():
    table = set(re.findall(r"^\| `rsgeo ([a-z-]+)` \|", README, re.MULTILINE))
    assert table == set(commands()), (table ^ set(commands()))


def test_the_extractors_see_what_they_should():
    """Guards against an extractor silently finding nothing."""
    uses = {(c, o) for _, c, o, _ in readme_command_uses()}
    assert {("synth", "--randomize"), ("evaluate", "-o"), ("finetune", "--encoder"),
            ("damage-map", "--buildings"), ("building-heights", "--prefix")} <= uses
    assert context(README.splitlines().index("### `rsgeo damage-map`: which buildings lost "
                                             "height, and how much") + 5) == \
        ("commands", ("damage-map",))
    bare = {o for _, opts in bare_option_spans() for o, _ in opts}
    assert len(bare) > 100 and {"--decoder-*", "--device", "-o", "--output"} <= bare


# ---- stated defaults, limits, exit codes ------------------------------------------------

def flat(text: str) -> str:
    return " ".join(text.split())


# (command, option, what the README says, the default)
DEFAULTS = [
    ("synth", "--destroyed", None, 0.3),
    ("prepare", "--size", "(`--size`/`--stride`, default 224", 224),
    ("prepare", "--dedup-distance", "within `--dedup-distance` bits, default 4", 4),
    ("predict", "--threshold", "`>= --threshold`, default 0.5", 0.5),
    ("footprints", "--threshold", "building where `>= --threshold`, default 0.5", 0.5),
    ("footprints", "--regularise", "Regularisation (default on;", True),
    ("damage-map", "--min-height", "exceeds `--min-height` (2.5 m)", 2.5),
    ("damage-map", "--grades", "(default `minor:10%,major:35%,destroyed:70%`",
     "minor:10%,major:35%,destroyed:70%"),
    ("damage-map", "--max-height", "heights above `--max-height` (1,000 m)", 1000.0),
    ("damage-map", "--event", "(`--event earthquake` 3 m", "earthquake"),
    ("evaluate", "--max-height", "exceeds `--max-height` (1,000 m)", 1000.0),
    ("evaluate", "--protocol", "`--protocol rsgeo` (default", "rsgeo"),
    ("finetune", "--style", "(`--style`, default `both`", "both"),
    ("finetune", "--encoder", None, "random"),
    ("predict-height", "--scale", "`--scale` (default `percentile`", "percentile"),
    ("predict", "--scale", None, "percentile"),
    ("prepare", "--scale", None, "percentile"),
]

# (file, constant[, key], what the README says, the value)
CONSTANTS = [
    ("rsgeo/__init__.py", "__version__", "`TIFFTAG_SOFTWARE=rsgeo 0.1.0`", "0.1.0"),
    ("rsgeo/synth/scene.py", "MIN_GSD", "GSD in [0.05, 10] m/px", 0.05),
    ("rsgeo/synth/scene.py", "MAX_GSD", "GSD in [0.05, 10] m/px", 10.0),
    ("rsgeo/synth/scene.py", "CRS_EPSG", "EPSG:32631", 32631),
    (("rsgeo/synth/domain.py", "RANGES", "gsd"), "GSD (0.2–1.0 m)", (0.2, 1.0)),
    (("rsgeo/synth/domain.py", "RANGES", "jpeg_quality"), "(quality 30–95, or none)", (30, 95)),
    (("rsgeo/synth/domain.py", "RANGES", "sun_elevation"), "elevation 25–75°", (25.0, 75.0)),
    (("rsgeo/synth/trees.py", "TREE_RANGES", "radius_hi"), "crown radius up to 3.5–9 m",
     (3.5, 9.0)),
    (("rsgeo/synth/trees.py", "TREE_RANGES", "height_hi"), "heights up to 9–22 m", (9.0, 22.0)),
    ("rsgeo/data/prepare.py", "LABEL_KEEP_BYTES", "up to 256 MiB", 256 * 2 ** 20),
    ("rsgeo/train/threads.py", "SPINCOUNT", "(`GOMP_SPINCOUNT=10000`", "10000"),
    (("rsgeo/damage/__init__.py", "EVENTS", "earthquake"), "(`--event earthquake` 3 m", 3.0),
    (("rsgeo/damage/__init__.py", "EVENTS", "wildfire"), "`wildfire` 1 m", 1.0),
    ("rsgeo/io/heights.py", "ABSOLUTE_P2_M", "when 98% of the heights are above 5 m", 5.0),
    ("rsgeo/io/heights.py", "SAMPLE_PIXELS", "(about 4 Mpx decoded", 4_000_000),
    ("rsgeo/footprints/regularise.py", "MIN_IOU", "(IoU < 0.75)", 0.75),
    ("rsgeo/io/writer.py", "HEIGHT_CODEC", "| `zstd` (default) |", "zstd"),
    ("rsgeo/io/writer.py", "MAX_Z_ERROR", "within `--max-z-error` (default 0.01 m)", 0.01),
    ("rsgeo/io/writer.py", "BLOCK", "tiled GeoTIFF (256 px blocks", 256),
    ("rsgeo/infer/batching.py", "MAX_BATCH", "(at most 256 tiles)", 256),
    (("rsgeo/demo.py", "QUICK", "pretrain_steps"), "(pretrain 100 steps,", 100),
    (("rsgeo/demo.py", "QUICK", "finetune_steps"), "fine-tune 250 steps on 50 chips", 250),
    (("rsgeo/demo.py", "QUICK", "train_size"), "fine-tune 250 steps on 50 chips", 50),
    (("rsgeo/demo.py", "FULL", "pretrain_steps"), "pretrain 600 steps", 600),
    (("rsgeo/demo.py", "FULL", "finetune_steps"), "fine-tune 800 steps on 200 chips", 800),
    (("rsgeo/demo.py", "FULL", "train_size"), "fine-tune 800 steps on 200 chips", 200),
    (("rsgeo/demo.py", "PRETRAIN", "lr"), "`rsgeo/demo.py`: lr 1e-3,", 1e-3),
    (("rsgeo/demo.py", "PRETRAIN", "warmup"), "10 % warm-up, 75 % masking", 0.1),
    (("rsgeo/demo.py", "PRETRAIN", "mask_ratio"), "10 % warm-up, 75 % masking", 0.75),
    (("rsgeo/demo.py", "PRETRAIN", "decoder_dim"), "a 128-wide 2-block decoder", 128),
    (("rsgeo/demo.py", "PRETRAIN", "decoder_depth"), "a 128-wide 2-block decoder", 2),
]

# (command, option, what the README says, what the option's --help says)
HELPS = [
    ("finetune", "--lr", "the head learns at `--lr` (default 1e-4)", "default 1e-4"),
    ("finetune", "--val-every", "(default: about ten times a run; 0: only at the end)",
     "about 10 a run"),
    ("footprints", "--tolerance", "(metres, default one pixel)", "default one pixel"),
    ("predict", "--max-z-error", "(default 0.01 m)", "default 0.01"),
]


def test_readme_defaults_are_the_cli_defaults():
    text, bad = flat(README), []
    for cmd, opt, said, default in DEFAULTS:
        if said is not None and flat(said) not in text:
            bad.append(f"README no longer says {said!r} (update this table with it)")
        real = options(cmd)[opt].default
        real = getattr(real, "value", real)
        if real != default:
            bad.append(f"rsgeo {cmd} {opt}: default {real!r}, README {default!r} ({said})")
    for cmd, opt, said, helped in HELPS:
        if flat(said) not in text:
            bad.append(f"README no longer says {said!r} (update this table with it)")
        if helped not in flat(options(cmd)[opt].help or ""):
            bad.append(f"rsgeo {cmd} {opt} --help does not say {helped!r} ({said})")
    assert not bad, "\n".join(bad)


def test_readme_numbers_are_the_code_constants():
    text, bad = flat(README), []
    for *where, said, expected in CONSTANTS:
        rel, name, *key = where[0] if isinstance(where[0], tuple) else where
        real = constant(rel, name)
        for k in key:
            real = real[k]
        if flat(said) not in text:
            bad.append(f"README no longer says {said!r} (update this table with it)")
        if real != expected:
            bad.append(f"{rel} {name}{key or ''} = {real!r}, README: {said!r}")
    assert not bad, "\n".join(bad)


def test_mask_ratio_bounds():
    p = options("pretrain")["--mask-ratio"]
    assert "`--mask-ratio` (0.01-0.99)" in flat(README)
    assert (p.min, p.max) == (0.01, 0.99)


def test_default_batch_sizes():
    """The README: "about 1 Mpx and at most 8 tiles on CPU (4 tiles of 512 px, 8 of 256)",
    ONNX Runtime on CUDA "16 tiles of 512 px or the same area (at most 64 tiles)"."""
    from types import SimpleNamespace

    from rsgeo.infer.batching import auto_batch_size, cpu_batch_size

    text = flat(README)
    assert "about 1 Mpx and at most 8 tiles on CPU (4 tiles of 512 px, 8 of 256)" in text
    assert [cpu_batch_size(t) for t in (1024, 512, 256, 128)] == [1, 4, 8, 8]
    assert "16 tiles of 512 px or the same area (at most 64 tiles)" in text
    ort_cuda = SimpleNamespace(device="cuda")  # no `forward`: ONNX Runtime
    assert [auto_batch_size(ort_cuda, t, 3) for t in (1024, 512, 256, 128)] == [4, 16, 64, 64]


def test_small_rasters_are_striped():
    """The README: "a raster under 256 px on a side is striped"."""
    from affine import Affine

    from rsgeo.io.raster import Grid
    from rsgeo.io.writer import gtiff_profile

    assert "a raster under 256 px on a side is striped" in flat(README)
    for side, tiled in ((255, False), (256, True)):
        profile = gtiff_profile(Grid(None, Affine(1, 0, 0, 0, -1, 0), 300, side), 1,
                                "float32", None)
        assert profile["tiled"] is tiled


def test_max_pixels_option_is_on_the_commands_named():
    said = re.search(r"the option is on ([a-z, -]+) and ([a-z-]+);", flat(README))
    named = set(said.group(1).split(", ")) | {said.group(2)}
    assert named == {c for c in commands() if "--max-pixels" in options(c)}


def test_every_task_has_a_writer_as_contributing_says():
    """CONTRIBUTING: predict writes through `WRITERS`, one entry per task (step 4)."""
    assert "add its name to `WRITERS` in `rsgeo/infer/writers.py`" in flat(CONTRIBUTING)
    writers = next(n.value for n in module_ast("rsgeo/infer/writers.py").body
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "WRITERS")
    from rsgeo.tasks import task_names

    assert {ast.literal_eval(k) for k in writers.keys} == set(task_names())


def test_readme_exit_codes():
    from rsgeo.cli.app import SIGPIPE_EXIT
    from rsgeo.errors import InputError, RsgeoError, Terminated

    text = flat(README)
    assert "Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage" in text
    assert (RsgeoError.exit_code, InputError.exit_code) == (1, 2)
    assert "141, silently" in text and SIGPIPE_EXIT == 141
    assert "143 (SIGTERM) or 130 (SIGINT" in text and Terminated.exit_code == 143


def test_empty_values_refused_but_for_building_heights_prefix():
    """The README: empty values are refused for every option "but `building-heights
    --prefix`"; an option keeps "" only when it is its default."""
    assert "refused for every option and argument but `building-heights --prefix`" in flat(README)
    keep = [(c, p.name) for c, cmd in commands().items() for p in cmd.params if p.default == ""]
    assert keep == [("building-heights", "prefix")]


# ---- file names -----------------------------------------------------------------------------

def section_text(text: str, heading_start: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_start))
    end = next((i for i in range(start + 1, len(lines))
                if re.match(r"#{1,3} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def test_synth_files_are_the_files_synth_writes():
    said = set(re.findall(r"`(_[a-z_]+\.(?:tif|gpkg|json))`",
                          section_text(README, "### `rsgeo synth`")))
    written = {"_" + s for s in constant("rsgeo/synth/write.py", "SUFFIXES")}
    assert said == written, (said ^ written)


def writer_suffixes() -> dict[str, str]:
    """task -> the ``<stem>SUFFIX`` name a writer gives in an output folder."""
    out = {}
    for node in ast.walk(module_ast("rsgeo/infer/writers.py")):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple) and \
                isinstance(node.targets[0], ast.Tuple) and \
                [getattr(t, "id", None) for t in node.targets[0].elts][:2] == ["task", "suffix"]:
            task, suffix = (ast.literal_eval(e) for e in node.value.elts[:2])
            out[task] = suffix
    return out


def test_predict_output_names():
    """Height and segmentation models write ``<stem><suffix>`` into an output folder (a
    change model writes one pair's mask to ``-o``), each beside its ``_probabilit*`` sibling."""
    suffixes = writer_suffixes()
    assert set(suffixes) == {"height", "segmentation", "change", "classification"}
    source = (ROOT / "rsgeo/infer/writers.py").read_text()
    siblings = set(re.findall(r"sibling\(path, \"(_\w+\.tif)\"\)", source))
    assert siblings == {"_probabilities.tif", "_probability.tif"}
    missing = [f"<stem>{suffixes[t]}" for t in ("height", "segmentation")
               if f"`<stem>{suffixes[t]}`" not in README]
    missing += [s for s in siblings if f"`{s}`" not in README]
    said = {"`<stem>_classes_probabilities.tif` in folder runs",
            "`classes_probabilities.tif` for `-o classes.tif`",
            "`change_probability.tif` for `-o change.tif`"}
    missing += [s for s in said if s not in flat(README)]
    assert not missing, missing


# (what the README names, the file that writes it, the text there that names it)
FILES = [
    ("`OUT_loss.tif`", "rsgeo/damage/sweep.py", '_loss{out.suffix}'),
    ("pre_ndsm_damage.tif/.gpkg", "rsgeo/damage/__init__.py", '_damage.tif"'),
    ("`OUT.tif.aux.xml`", "rsgeo/io/atomic.py", '".aux.xml"'),
    ("`report.html`/`report.png` and `summary.json`", "rsgeo/demo.py", '"summary.json"'),
    ("`report.html`/`report.png`", "rsgeo/demo.py", '"report.png"'),
    ("(`building_heights.gpkg`,", "rsgeo/demo.py", '"building_heights.gpkg"'),
    ("is `RUN/best.ckpt`, with `val_preview.png`", "rsgeo/finetune/__init__.py",
     '"val_preview.png"'),
    ("The run folder holds `config.yaml`, `metrics.jsonl`", "rsgeo/train/engine.py",
     '"config.yaml"'),
    ("`checkpoints/last.pt`", "rsgeo/train/engine.py", '"checkpoints" / "last.pt"'),
    ("`previews/*.png`", "rsgeo/train/engine.py", '"previews"'),
    ("go to `stats.json`", "rsgeo/data/prepare.py", '"stats.json"'),
    ("carry a `.rsgeo.json` marker", "rsgeo/io/atomic.py", '".rsgeo.json"'),
    ("(fusedmim: `encoder_rgb.*`, `encoder_dsm.*`)", "rsgeo/methods/fusedmim.py",
     '"encoder_dsm"'),
    ('`{"format": "rsgeo-task", "version": 1,', "rsgeo/tasks/bundle.py",
     '{"format": FORMAT, "version": 1,'),
    ('`{"format": "rsgeo-task",', "rsgeo/tasks/bundle.py", 'FORMAT = "rsgeo-task"'),
]


def test_file_names_the_readme_gives_are_written():
    text, bad = flat(README), []
    for said, rel, code in FILES:
        if flat(said) not in text:
            bad.append(f"README no longer says {said!r} (update this table with it)")
        if code not in (ROOT / rel).read_text():
            bad.append(f"{rel} does not write {said} (no {code!r} in it)")
    assert not bad, "\n".join(bad)


def test_onnx_metadata_keys():
    """The keys `rsgeo export` adds to the checkpoint's meta are the ones the README lists."""
    call = next(n for n in ast.walk(module_ast("rsgeo/infer/export.py"))
                if isinstance(n, ast.Call) and ast.unparse(n.func) == "props.update")
    said = re.search(r"`metadata_props`, plus (.*?), so an `.onnx`", flat(README)).group(1)
    listed = set(re.findall(r"(?:^|, | and )`(\w+)`", re.sub(r" \([^)]*\)", "", said)))
    assert listed == {k.arg for k in call.keywords}
    fmt = next(k.value for k in call.keywords if k.arg == "format")
    assert f"`format` (`{ast.literal_eval(fmt.args[0])}`)" in said


# ---- names and links in README.md and CONTRIBUTING.md ------------------------------------

def defines(rel_parts: list[str], rest: list[str]) -> bool | None:
    """Whether the module at ``rel_parts`` defines ``rest[0]`` (and class attribute
    ``rest[1]``); None when there is no such module."""
    base = ROOT.joinpath(*rel_parts)
    path = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
    if path is None:
        return None
    if not rest:
        return True
    tree = ast.parse(path.read_text())
    names, classes = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                classes[node.name] = {getattr(n, "name", getattr(getattr(n, "target", None),
                                                                 "id", None)) for n in node.body}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {e.id for e in ast.walk(t) if isinstance(e, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if rest[0] not in names:
        return False
    return len(rest) == 1 or rest[1] in classes.get(rest[0], {rest[1]})


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        found = defines(parts[:i], parts[i:])
        if found is not None:
            return found
    return False


@pytest.mark.parametrize("doc", ["README.md", "CONTRIBUTING.md"])
def test_rsgeo_names_exist(doc):
    text = (ROOT / doc).read_text()
    names = set(re.findall(r"(?<![\w./-])rsgeo(?:\.[A-Za-z_]\w*)+", text))
    examples = {"rsgeo.methods.denoise"}  # CONTRIBUTING's example of a new method
    files = {"rsgeo.bash", "rsgeo.fish"}   # completion scripts
    bad = sorted(n for n in names - examples - files if not resolves(n))
    assert len(names) > 10 and not bad, bad


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", "CONTRIBUTING.md", "completions/README.md"])
def test_links_resolve(doc):
    path = ROOT / doc
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md":
            text = dest.read_text()
            anchors = {slug(h) for _, h, _ in sections(text)} | set(
                re.findall(r"<a id=\"([\w-]+)\"", text))
            if anchor not in anchors:
                bad.append(target)
    assert not bad, bad


# ---- CONTRIBUTING.md ------------------------------------------------------------------------

def dataclass_fields(rel: str, cls: str) -> list[str]:
    node = next(n for n in module_ast(rel).body if isinstance(n, ast.ClassDef) and n.name == cls)
    return [n.target.id for n in node.body if isinstance(n, ast.AnnAssign)]


def test_contributing_task_spec_fields():
    """Every TaskSpec field is described in "Adding a task" (a new one too), and the Writer
    and Layer fields it names are theirs."""
    part = section_text(CONTRIBUTING, "## Adding a task")
    said = set(re.findall(r"`(\w+)", part))
    missing = [f for f in dataclass_fields("rsgeo/tasks/spec.py", "TaskSpec") if f not in said]
    assert not missing, f"TaskSpec fields CONTRIBUTING.md does not describe: {missing}"
    writer = re.search(r"`Writer\(([\w, ]+)\)`", part).group(1).split(", ")
    assert writer == dataclass_fields("rsgeo/tasks/spec.py", "Writer")
    layer = set(dataclass_fields("rsgeo/tasks/spec.py", "Layer"))
    assert {"dtype", "units", "nodata", "per_class", "optional"} <= layer
    inputs = set(re.search(r"from `rsgeo.tasks.INPUTS` \(([^)]*)\)", flat(part)).group(1)
                 .replace("`", "").split(", "))
    assert inputs == set(constant("rsgeo/tasks/spec.py", "INPUTS"))


def test_contributing_method_fields():
    part = section_text(CONTRIBUTING, "## Adding a pretraining method")
    table = re.findall(r"^   \| `(\w+)` \|", part, re.MULTILINE)
    assert sorted(table) == sorted(dataclass_fields("rsgeo/methods/registry.py", "Method"))
    sig = re.search(r"`option\(([^)]*)\)`", part).group(1)
    assert sig == "default, help, min=, max=, cli="
    node = next(n for n in module_ast("rsgeo/methods/registry.py").body
                if isinstance(n, ast.FunctionDef) and n.name == "option")
    assert [a.arg for a in node.args.args + node.args.kwonlyargs] == \
        ["default", "help", "min", "max", "cli"]


def test_contributing_fixtures_and_markers():
    tree = module_ast("tests/conftest.py")
    fixtures = {n.name: ast.unparse(n.decorator_list[0]) for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.decorator_list
                and "fixture" in ast.unparse(n.decorator_list[0])}
    tests_part = section_text(CONTRIBUTING, "## Tests")
    shared = re.findall(r"^\| `(\w+)` \|", tests_part, re.MULTILINE)
    markers = {"slow", "realdata", "cuda"}
    shared_fixtures = [n for n in shared if n not in markers]
    assert shared_fixtures == ["synth_city", "synth_chips", "pretrained_encoder",
                               "height_bundle", "height_onnx"]
    bad = [n for n in shared_fixtures if "session" not in fixtures.get(n, "")]
    per_test = ["raster_factory", "cli", "rng", "private_copy", "realdata"]
    bad += [n for n in per_test if n not in fixtures or f"`{n}" not in tests_part]
    assert not bad, bad
    toml = (ROOT / "pyproject.toml").read_text()
    declared = set(re.findall(r"^\s*\"(\w+):", toml.split("markers = [")[1].split("]")[0], re.MULTILINE))
    assert markers == declared
    assert {m for m in shared if m in markers} == markers


# ---- vector formats ----------------------------------------------------------------------

# a list of extensions: `.a`, `.b` or `.c` (a note in parentheses may follow an item)
_EXT = r"`?(?<![\w.])\.[a-z]+\b`?"
EXT_LIST = re.compile(rf"{_EXT}(?:\s*\([^()]*\))?(?:\s*(?:,|/|\bor\b|\band\b)\s*{_EXT}"
                      rf"(?:\s*\([^()]*\))?)+")


def extension_lists(text: str) -> list[tuple[str, set[str]]]:
    """``(the list as written, its extensions)`` of every list of two or more extensions in
    ``text`` that names ``.fgb`` or ``.gpkg`` (the vector formats)."""
    out = []
    for m in EXT_LIST.finditer(flat(text)):
        exts = set(re.findall(r"(?<![\w.])(\.[a-z]+)\b", re.sub(r"\([^()]*\)", "", m.group())))
        if exts & {".fgb", ".gpkg"}:
            out.append((m.group(), exts))
    return out


def help_texts() -> list[str]:
    """Every command's help and every option's help."""
    return [t for c in commands().values()
            for t in (c.help, *(getattr(p, "help", None) for p in c.params)) if t]


def test_vector_format_lists_are_the_writers_tables():
    """Every list of vector formats in README.md and in ``--help`` is the vector writer's
    extension table (``rsgeo.io.vector.DRIVERS``: footprints, building-heights,
    damage-map --footprints) or the classification table writer's (``TABLE_SUFFIXES``)."""
    vector = set(constant("rsgeo/io/vector.py", "DRIVERS"))
    tables = set(constant("rsgeo/infer/writers.py", "TABLE_SUFFIXES"))
    lists = extension_lists(README) + [x for t in help_texts() for x in extension_lists(t)]
    bad = [f"{said!r}: {sorted(exts)} is neither {sorted(vector)} (vector writer) nor "
           f"{sorted(tables)} (classification tables)"
           for said, exts in lists if exts not in (vector, tables)]
    assert not bad, "\n".join(bad)
    said = [exts for _, exts in extension_lists(README)]  # the extractor sees them
    assert said.count(vector) >= 2 and said.count(tables) >= 1, said
