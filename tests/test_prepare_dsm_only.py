"""DSM-only chips: `prepare --dsm` (or --ndsm) without RGB trains a DSM-input model."""

import json

import numpy as np
import pytest

from rsgeo.data.dataset import ChipDataset
from rsgeo.errors import InputError
from rsgeo.finetune import finetune
from tests.conftest import make_raster


def _dsm_scene(tmp_path):
    yy, xx = np.mgrid[0:128, 0:128]
    dsm = (20 + 0.01 * xx).astype(np.float32)
    lab = np.zeros((128, 128), np.uint8)
    for r, c in ((10, 10), (70, 20), (30, 80), (90, 90)):
        dsm[r:r + 25, c:c + 25] += 8.0
        lab[r:r + 25, c:c + 25] = 1
    dsm[0:5, 0:5] = np.nan
    return (make_raster(tmp_path / "dsm.tif", dsm, nodata=float("nan")),
            make_raster(tmp_path / "lab.tif", lab), dsm)


def test_prepare_dsm_only_and_finetune_on_it(tmp_path, cli):
    dsm, lab, arr = _dsm_scene(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"0": "ground", "1": "building"}))
    code, out, err = cli("prepare", "--dsm", dsm, "--labels", lab, "--classes",
                         tmp_path / "classes.json", "-o", tmp_path / "chips", "--size", 64,
                         "--stride", 32, "--dedup-distance", 0, "--json")
    assert code == 0, err
    s = json.loads(out)["dsm"]
    assert s["kept"] == 9 and "input_bands" not in s
    info = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert set(info["modalities"]) == {"dsm", "labels", "hog"} and info["gsd"] == 0.5
    ds = ChipDataset(tmp_path / "chips", split=None, modalities=("dsm", "labels"))
    first = ds[0]
    np.testing.assert_array_equal(first["dsm"][0, 5:, 5:], arr[5:64, 5:64])
    assert first["chip_id"].startswith("dsm/dsm/0_0")
    r = finetune(tmp_path / "chips", "segmentation", tmp_path / "run", backbone="vit-tiny-2",
                 inputs="dsm", steps=2, batch_size=2, head_features=16)
    assert r["config"]["in_chans"] == 1


def test_prepare_needs_an_image_or_heights(tmp_path, cli):
    _, lab, _ = _dsm_scene(tmp_path)
    code, _, err = cli("prepare", "--labels", lab, "-o", tmp_path / "x")
    assert code == 2 and "--dsm" in err and len(err.strip().splitlines()) == 1, err


def test_pairs_rows_may_be_dsm_only(tmp_path):
    from rsgeo.data.sources import from_pairs

    (tmp_path / "p.csv").write_text("rgb,dsm,source\n,a_dsm.tif,\nb.tif,,\n")
    a, b = from_pairs(tmp_path / "p.csv")
    assert a.rgb is None and a.reference == tmp_path / "a_dsm.tif" and a.source == "a_dsm"
    assert b.reference == tmp_path / "b.tif"
    (tmp_path / "q.csv").write_text("rgb,labels\n,l.tif\n")
    with pytest.raises(InputError, match="no rgb"):
        from_pairs(tmp_path / "q.csv")
