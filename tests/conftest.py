"""Shared fixtures and the marker rules (CONTRIBUTING.md, "Tests").

Per test: small georeferenced rasters made on the fly, the CLI runner, realdata.
Per test run (session scope, so once per xdist worker, and only if a test asks): the synthetic
city, its prepared chips, a pretrained encoder, a fine-tuned height bundle and its ONNX export.
Session artifacts are shared: a test that changes files copies them first (``private_copy``);
their teardown fails the run if a test changed them anyway.

Markers: ``realdata`` is added here to every test that uses the ``realdata`` fixture; ``cuda``
tests are skipped here when torch sees no CUDA device; ``slow`` is set by hand on tests that take
more than about 5 s on two idle cores (``make test-fast`` leaves them out).
"""

from __future__ import annotations

import json
import os

# Before anything loads torch: OpenMP threads sleep while they wait (rsgeo.train.threads);
# spinning threads make tests on a shared 2-core machine many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# Each test process (xdist worker) trains with its share of the cores, pinned: by default
# rsgeo leaves cores it finds busy alone (rsgeo.train.threads.busy_cores), which would make a
# run and its resumed twin differ in thread count, and so in the last bits, with the load.
from rsgeo.train.threads import available_cores  # noqa: E402  (torch-free)

os.environ.setdefault("RSGEO_NUM_THREADS", str(max(
    1, available_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))

import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
UTM = CRS.from_epsg(32633)


def make_raster(path, data, *, crs=UTM, transform=None, nodata=None, gsd=0.5,
                origin=(500000.0, 4100000.0)):
    """Write ``data`` (bands, h, w) or (h, w) as a GeoTIFF and return its path."""
    arr = data if data.ndim == 3 else data[None]
    if transform is None:
        transform = Affine(gsd, 0, origin[0], 0, -gsd, origin[1])
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype=arr.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(arr)
    return Path(path)


def write_chip_dataset(root, arrays: dict, *, classes: dict | None = None,
                       gsd: float | None = None) -> Path:
    """A chip folder in the documented format (docs/chip-dataset.md), one source ``city``.

    ``arrays``: modality -> ``[N, C, H, W]`` (``labels``: ``[N, H, W]``) array, saved as that
    source's shards; ``hog`` (if given) is stored but not listed as a modality. ``stats.json``
    gets the per-band mean/std of ``rgb`` and (NaN-aware) ``dsm``; every chip is a kept
    ``train`` chip. Returns ``root``.
    """
    import pandas as pd  # lazy: only the tests that write chips pay for it

    root = Path(root)
    shard = root / "shards" / "city"
    shard.mkdir(parents=True)
    for name, arr in arrays.items():
        np.save(shard / f"{name}.npy", arr)
    n, size = arrays["rgb"].shape[0], arrays["rgb"].shape[-1]
    stats = {}
    for m in ("rgb", "dsm"):
        if m in arrays:
            a = arrays[m].astype(np.float64)
            stats[m] = {"mean": np.nanmean(a, (0, 2, 3)).tolist(),
                        "std": np.nanstd(a, (0, 2, 3)).tolist(),
                        "count": int(np.isfinite(a[:, 0]).sum())}
    (root / "stats.json").write_text(json.dumps({"sources": {"city": stats}}))
    info = {"format": "rsgeo-chips", "version": 1, "chip_size": size,
            **({"gsd": gsd} if gsd is not None else {}),
            **({"hog_patch": 16} if "hog" in arrays else {}),
            "modalities": [m for m in arrays if m != "hog"], "classes": classes,
            "sources": ["city"]}
    (root / "dataset.json").write_text(json.dumps(info))
    rows = [dict(chip_id=f"city_{i}", source="city", split="train", scene="city.tif",
                 row_off=0, col_off=i * size, height=size, width=size, minx=0.0, miny=0.0,
                 maxx=1.0, maxy=1.0, crs="EPSG:32633", nodata_fraction=0.0, hash=i,
                 status="kept", index=i) for i in range(n)]
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


@pytest.fixture
def raster_factory(tmp_path):
    counter = {"n": 0}

    def factory(data, name=None, **kw):
        counter["n"] += 1
        return make_raster(tmp_path / (name or f"r{counter['n']}.tif"), data, **kw)

    return factory


def signal_when(cmd, ready, *, cwd, env, sig=None, timeout=120):
    """Run ``cmd`` (a list) as a process and send it ``sig`` (default SIGTERM) as soon as
    ``ready()`` holds or it has exited; returns (exit code, stdout, stderr). The process is
    killed if it outlives the test."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and not ready():
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM if sig is None else sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


@pytest.fixture
def cli(capsys):
    """Run ``rsgeo ARGS`` in-process; returns (exit_code, stdout, stderr)."""
    from rsgeo.cli.app import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def realdata():
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata not present")
    return REALDATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# The longest files, longest first, are collected first, so that under xdist's --dist loadfile
# they run beside the many short files instead of alone at the end (README commands 288 s and
# the quick demo 179 s on the slow CI machine; the others 20-100 s each, measured one file at
# a time on the development machine at load 2-4).
LONGEST_FIRST = ("test_readme.py", "test_demo.py", "test_ddp.py", "test_export.py",
                 "test_methods.py", "test_low_label.py", "test_preemption.py", "test_examples.py")


def pytest_configure(config):
    """Keep the collection order under ``--dist loadfile``: pytest-xdist (3.6 and later, by
    default) hands out the files with the most tests first, which put the longest files,
    all with 2-8 tests, last: ``test_readme.py`` started when the rest was done and ran
    alone on one worker, the other idle (minutes of the run)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)  # before `-m` selects, so `-m "not realdata"` sees the marker
def pytest_collection_modifyitems(config, items):
    """``realdata`` on every test using the fixture; ``cuda`` tests skipped without CUDA;
    the files of :data:`LONGEST_FIRST` first, in its order (a stable sort: the same order on
    every worker)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    cuda = []
    for item in items:
        if "realdata" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
        if item.get_closest_marker("cuda") is not None:
            cuda.append(item)
    if cuda:
        import torch  # lazy: only runs that collect a cuda test pay for importing torch

        if not torch.cuda.is_available():
            for item in cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))


# ---- artifacts built once per test run (per xdist worker), only when a test asks --------------

class City(NamedTuple):
    """``rsgeo synth`` output: ``folder`` and, per scene, ``write_scenes``' dict of file paths
    (pre_rgb, post_rgb, pre_ndsm, post_ndsm, dsm, landcover, change, footprints, ...)."""

    folder: Path
    scenes: list


def _snapshot(root: Path) -> list:
    """(relative path, size, mtime) of every file under ``root``: what a test may not change."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*") if p.is_file())


def _unchanged(root: Path, before: list, name: str) -> None:
    if _snapshot(root) != before:
        pytest.fail(f"a test changed the shared `{name}` files under {root}; copy them first "
                    f"(the private_copy fixture)", pytrace=False)


@pytest.fixture(scope="session")
def synth_city(tmp_path_factory):
    """Two 256 x 256 px synthetic scenes at 0.5 m (seeds 0 and 1, style mid, 30 % destroyed)."""
    from rsgeo.synth import write_scenes  # lazy: heavy (torch, rasterio); paid only on request

    folder = tmp_path_factory.mktemp("shared") / "city"
    city = City(folder, write_scenes(folder, size=256, gsd=0.5, scenes=2, seed=0))
    before = _snapshot(folder)
    yield city
    _unchanged(folder, before, "synth_city")


@pytest.fixture(scope="session")
def synth_chips(synth_city, tmp_path_factory):
    """``synth_city`` prepared into 64-px chips (rgb, post_rgb, dsm, ndsm, labels, change, hog;
    32 chips, 90/10 train/val split, land-cover class names): the chip folder's Path."""
    from rsgeo.data.prepare import prepare  # lazy: heavy (torch, rasterio); paid only on request
    from rsgeo.data.sources import from_synth_dir
    from rsgeo.synth import LANDCOVER

    chips = tmp_path_factory.mktemp("shared") / "chips"
    prepare(from_synth_dir(synth_city.folder), chips, size=64, classes=dict(LANDCOVER), seed=0)
    before = _snapshot(chips)
    yield chips
    _unchanged(chips, before, "synth_chips")


@pytest.fixture(scope="session")
def pretrained_encoder(synth_chips, tmp_path_factory):
    """A vit-tiny-2 encoder pretrained with MAE for 4 steps on ``synth_chips``: the summary
    ``rsgeo.pretrain.pretrain`` returns (``run_dir``, ``encoders["encoder"]``, ``config``)."""
    from rsgeo.pretrain import pretrain  # lazy: heavy (torch, rasterio); paid only on request

    run = tmp_path_factory.mktemp("shared") / "pretrain"
    summary = pretrain(synth_chips, "mae", "vit-tiny-2", run, steps=4, batch_size=8, seed=0,
                       log_every=1, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    before = _snapshot(run)
    yield summary
    _unchanged(run, before, "pretrained_encoder")


@pytest.fixture(scope="session")
def height_bundle(synth_chips, pretrained_encoder, tmp_path_factory):
    """A height model fine-tuned for 4 steps from ``pretrained_encoder`` (DPT head, 16
    features): the Path of its ``best.ckpt`` bundle (the run folder is its parent)."""
    from rsgeo.finetune import finetune  # lazy: heavy (torch, rasterio); paid only on request

    run = tmp_path_factory.mktemp("shared") / "finetune"
    encoder = pretrained_encoder["encoders"]["encoder"]
    summary = finetune(synth_chips, "height", run, encoder=encoder, steps=4, batch_size=8,
                       head_features=16, seed=0, log_every=1)
    before = _snapshot(run)
    yield Path(summary["checkpoint"])
    _unchanged(run, before, "height_bundle")


@pytest.fixture(scope="session")
def height_onnx(height_bundle, tmp_path_factory):
    """``height_bundle`` exported by ``rsgeo.infer.export.export_onnx`` (parity-checked): Path."""
    from rsgeo.infer.export import export_onnx  # lazy: heavy (torch, onnx); paid on request

    folder = tmp_path_factory.mktemp("shared")
    export_onnx(height_bundle, folder / "height.onnx")
    before = _snapshot(folder)
    yield folder / "height.onnx"
    _unchanged(folder, before, "height_onnx")


@pytest.fixture
def private_copy(tmp_path):
    """``private_copy(path)``: a copy of a shared file or folder under this test's tmp_path."""
    def copy(src):
        src = Path(src)
        dst = tmp_path / "copies" / src.name
        dst.parent.mkdir(exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst

    return copy
