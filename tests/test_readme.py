"""Every command in README.md's code blocks runs as written (slow: a few minutes on 2 cores).

The commands run in order, in one temporary folder, through ``bash`` with this checkout
first on ``PYTHONPATH``; each ``rsgeo`` they call runs ``rsgeo.cli.app.main`` in a fork of one
process that imported torch & co. once (``tests/forkserver.py``; the console script itself
is run by ``tests/test_cli_basics.py``). Commands that name the reader's own files
(``big_ortho.tif``, ``scenes.csv``, ``proposal.csv`` ...) get those files made from the
city the README's first ``rsgeo synth`` line writes (see :func:`stage`); models and all
other inputs come from the README's own earlier commands, and outputs do not collide. The
commands themselves are not changed. The few that cannot run here are in :data:`SKIP`, each with
the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests import forkserver

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^(rsgeo|torchrun|make|bash|jq)\b")

# a substring of the command -> why it does not run in the test suite
SKIP = {
    "make demo": "sets up .venv, then runs `rsgeo demo` (tests/test_demo.py runs the pipeline)",
    "make test": "the test suite itself",
    "torchrun": "several processes, GPUs or machines",
    "vit_base_patch16_224": "ViT-B/16 pretraining sized for a GPU",
    "--steps 20000": "20,000 Swin-T steps: sized for a GPU",
    "--device cuda": "needs a CUDA GPU",
    "rsgeo demo -o demo/ ": "minutes of training; tests/test_demo.py runs `rsgeo demo --quick`",
}


def readme_commands(text: str) -> list[str]:
    """Shell commands of README code blocks: fenced bash/sh/console, and indented blocks."""
    out, fence, prev_blank = [], None, True
    for line in text.splitlines():
        if out and out[-1].endswith("\\"):  # a continued command: join its next line
            out[-1] = out[-1][:-1] + line.strip()
            continue
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is not None:
            cmd = line[2:] if fence == "console" and line.startswith("$ ") else line
            if fence in ("bash", "sh", "console") and COMMAND.match(cmd):
                out.append(cmd)
        elif line.startswith("    ") and COMMAND.match(line[4:]) and (prev_blank or out):
            out.append(line[4:])
        prev_blank = not line.strip()
    return out


def skip_reason(cmd: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in cmd), None)


def stage(work: Path) -> None:
    """The reader's own files the README names (their imagery, surface models, labels,
    reference footprints, probability rasters from elsewhere), made from the synthetic city.
    Models and every other output are made by the README's own commands."""
    import geopandas as gpd
    import numpy as np
    import rasterio

    city = work / "data" / "synth"
    a, b = (lambda k: city / f"city_000_{k}"), (lambda k: city / f"city_001_{k}")
    for dst, src in {"mtp_rgb.tif": b("pre_rgb.tif"), "mtp_dsm.tif": b("dsm.tif"),
                     "big_ortho.tif": a("pre_rgb.tif"), "more.tif": b("pre_rgb.tif"),
                     "tiles/t1.tif": a("post_rgb.tif"), "ortho.tif": a("pre_rgb.tif"), "ortho_ndsm.tif": a("pre_ndsm.tif"),
                     "pre_ndsm.tif": a("pre_ndsm.tif"), "post_ndsm.tif": a("post_ndsm.tif"),
                     "pre.tif": a("pre_ndsm.tif"), "post.tif": a("post_ndsm.tif"),
                     "footprints.gpkg": a("footprints.gpkg"), "pre_dsm.tif": a("dsm.tif"),
                     "dtm.tif": a("dtm.tif"), "lidar_ndsm.tif": a("pre_ndsm.tif"),
                     "preds/c0.tif": a("post_ndsm.tif"), "refs/c0.tif": a("pre_ndsm.tif"),
                     "landcover.tif": a("landcover.tif"), "dsm.tif": b("dsm.tif"),
                     "pre_rgb.tif": a("pre_rgb.tif"), "post_rgb.tif": a("post_rgb.tif"),
                     "reference.gpkg": a("footprints.gpkg")}.items():
        (work / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, work / dst)
    with rasterio.open(a("dtm.tif")) as dtm, rasterio.open(a("post_ndsm.tif")) as post:
        z, h = dtm.read(1), post.read(1)
        profile = dtm.profile
    with rasterio.open(work / "post_dsm.tif", "w", **profile) as dst:
        dst.write(np.where(h == -9999, -9999, z + h).astype(np.float32), 1)
    with rasterio.open(b("landcover.tif")) as lc:  # a 0/255 roof mask for the DSM-only chips
        building = lc.read(1) == 8
        profile = dict(lc.profile, nodata=None)
    with rasterio.open(work / "roofs.tif", "w", **profile) as dst:
        dst.write(np.where(building, 255, 0).astype(np.uint8), 1)
    with rasterio.open(a("landcover.tif")) as lc:  # probabilities from some other classifier
        c = lc.read(1)
        profile = dict(lc.profile, dtype="float32", nodata=None, count=3)
    road, building = (c == 4).astype(np.float32), (c == 8).astype(np.float32)
    bands = np.stack([1 - road - building, road, building]) * 0.8 + 0.1  # background, road, building
    with rasterio.open(work / "seg_probs.tif", "w", **profile) as dst:
        dst.write(bands)
    with rasterio.open(work / "building_prob.tif", "w", **dict(profile, count=1)) as dst:
        dst.write(bands[2], 1)
    (work / "scenes.csv").write_text(f"rgb,ndsm,source\n{b('post_rgb.tif')},{b('post_ndsm.tif')},"
                                     "after\n")
    names = ["bareland", "rangeland", "developed", "road", "trees", "water", "agriculture",
             "buildings"]
    (work / "classes.json").write_text(json.dumps({str(i + 1): n for i, n in enumerate(names)}))
    gpd.read_file(a("footprints.gpkg")).to_file(work / "reference.geojson")
    rows = ["ImageId,BuildingId,PolygonWKT_Pix,Confidence",
            'img1,1,"POLYGON ((0 0, 20 0, 20 20, 0 20, 0 0))",0.9',
            'img1,2,"POLYGON ((40 40, 60 40, 60 60, 40 60, 40 40))",0.8']
    (work / "proposal.csv").write_text("\n".join(rows) + "\n")
    (work / "truth.csv").write_text("\n".join(rows[:2]) + "\n")


def test_readme_commands_are_found():
    cmds = readme_commands((ROOT / "README.md").read_text())
    assert cmds[[c.startswith("rsgeo ") for c in cmds].index(True)].startswith(
        "rsgeo synth -o data/synth"), "stage() runs after this line: it must come first"
    assert len(cmds) > 20
    skipped = [c for c in cmds if skip_reason(c)]
    assert len(skipped) <= 12, skipped              # a small, explained allow-list
    assert not any(c.endswith("\\") for c in cmds)  # continuation lines are joined


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("jq not installed")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    ran, skipped = [], []
    # each `rsgeo` the commands call is a fork of one process that imported torch & co.
    # (tests/forkserver.py): about 25 of them would each spend 4-8 s importing
    with tempfile.TemporaryDirectory(prefix="rsgeo-fs-", dir="/tmp") as sock_dir, \
            forkserver.server(Path(sock_dir), env) as shims:
        env["PATH"] = f"{shims}:{env['PATH']}"
        for cmd in readme_commands((ROOT / "README.md").read_text()):
            why = skip_reason(cmd)
            if why:
                skipped.append(f"{cmd}  [{why}]")
                continue
            t0 = time.perf_counter()
            r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
            ran.append(f"{time.perf_counter() - t0:6.1f} s  {cmd}")
            if cmd.startswith("rsgeo synth -o data/synth"):  # the README's first synth line
                stage(tmp_path)
    print("ran:\n  " + "\n  ".join(ran) + "\nskipped:\n  " + "\n  ".join(skipped))
    assert len(ran) >= 20, ran
