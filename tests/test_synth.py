import json

import numpy as np
import pytest
import rasterio
from rasterio import features

from rsgeo.errors import InputError
from rsgeo.io.vector import read_vector
from rsgeo.synth import generate_scene, write_scenes
from rsgeo.train.config import TrainConfig


@pytest.fixture(scope="module")
def scene():
    return generate_scene(256, 0.5, "mid", 0.3, seed=3)


def test_deterministic_for_a_seed(scene):
    again = generate_scene(256, 0.5, "mid", 0.3, seed=3)
    for name in ("pre_rgb", "post_rgb", "dsm", "dtm", "pre_ndsm", "post_ndsm", "landcover", "change"):
        assert getattr(scene, name).tobytes() == getattr(again, name).tobytes(), name
    assert scene.footprints.equals(again.footprints)
    other = generate_scene(256, 0.5, "mid", 0.3, seed=4)
    assert other.pre_rgb.tobytes() != scene.pre_rgb.tobytes()


def test_shapes_units_and_classes(scene):
    assert scene.pre_rgb.shape == (3, 256, 256) and scene.pre_rgb.dtype == np.uint8
    assert scene.pre_ndsm.dtype == np.float32 and scene.pre_ndsm.min() >= 0
    np.testing.assert_allclose(scene.dsm, scene.dtm + scene.pre_ndsm, atol=1e-4)
    assert set(np.unique(scene.landcover)) <= set(range(1, 9))
    assert {4, 8} <= set(np.unique(scene.landcover))           # roads and buildings at least
    assert scene.grid.res == (0.5, 0.5) and scene.grid.crs.to_epsg() == 32631


def test_footprint_heights_match_ndsm(scene):
    fp = scene.footprints
    assert len(fp) > 5 and fp.crs == scene.grid.crs
    ids = features.rasterize(zip(fp.geometry, fp["id"]), out_shape=scene.pre_ndsm.shape,
                             transform=scene.grid.transform, dtype="int32")
    checked = 0
    for row in fp.itertuples():
        inside = scene.pre_ndsm[ids == row.id]
        if inside.size > 20:
            assert abs(inside.max() - row.height_m) < 0.5, row.id
            checked += 1
    assert checked > 5
    assert set(fp["roof"]) <= {"flat", "gable", "hip"}


def test_damage_grades_and_change_mask():
    s = generate_scene(384, 0.5, "mid", 0.4, seed=1)
    fp = s.footprints
    share = (fp["damage"] == "destroyed").mean()
    assert abs(share - 0.4) < 0.05
    assert set(fp["damage"]) <= {"none", "minor", "major", "destroyed"}
    gone = fp[fp["damage"] == "destroyed"]
    assert (gone["post_height_m"] <= 2.0).all() and (gone["height_m"] > 2.5).all()
    intact = fp[fp["damage"] == "none"]
    assert np.allclose(intact["post_height_m"], intact["height_m"])
    major = fp[fp["damage"] == "major"]   # partial collapse: a good part of the height is gone
    assert len(major) and (major["post_height_m"] <= 0.75 * major["height_m"] + 0.01).all()
    minor = fp[fp["damage"] == "minor"]   # a roof patch, at most 1.5 m lower
    assert len(minor) and (minor["post_height_m"] >= minor["height_m"] - 1.51).all()
    # change mask covers destroyed and major buildings, not intact ones
    ids = s.building_ids
    grade = np.array(["none"] + list(fp["damage"]), dtype=object)[ids]
    assert (s.change[(grade == "destroyed") | (grade == "major")] == 1).all()
    assert (s.change[(grade == "none") | (grade == "minor")] == 0).all()
    assert generate_scene(128, 0.5, "low", 0.0, seed=0).change.sum() == 0


@pytest.mark.parametrize("style", ["low", "mid", "high"])
def test_scene_smaller_than_a_block_is_not_all_road(style):
    # a 32 m scene lies inside one block: it must show that block, not only asphalt
    classes = [set(np.unique(generate_scene(64, 0.5, style, 0.3, seed=s).landcover))
               for s in range(4)]
    assert all(c != {4} for c in classes)
    assert sum(8 in c for c in classes) >= (0 if style == "low" else 2)


def test_grid_follows_gsd_and_coarse_gsd_is_refused():
    s = generate_scene(96, 2.0, "high", 0.3, seed=5)
    t = s.grid.transform
    assert (t.a, t.e, t.b, t.d) == (2.0, -2.0, 0.0, 0.0) and s.grid.width == s.grid.height == 96
    assert s.meta["transform"] == list(t)[:6] and len(s.footprints) > 3
    with pytest.raises(InputError, match="--gsd"):
        generate_scene(96, 25.0)


def test_write_scenes_files_and_georeferencing(tmp_path):
    paths = write_scenes(tmp_path, size=128, gsd=0.3, style="low", scenes=2, seed=7, preview=True)
    assert len(paths) == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    for stem in ("city_007", "city_008"):
        for suf in ("pre_rgb.tif", "post_rgb.tif", "pre_ndsm.tif", "post_ndsm.tif", "dsm.tif",
                    "dtm.tif", "landcover.tif", "change.tif", "footprints.gpkg", "scene.json",
                    "preview.png"):
            assert f"{stem}_{suf}" in names
    assert not [n for n in names if ".tmp-" in n]
    with rasterio.open(tmp_path / "city_007_pre_ndsm.tif") as ds:
        assert ds.crs.to_epsg() == 32631 and ds.res == (0.3, 0.3) and ds.nodata == -9999
        assert ds.units[0] == "metre"
    with rasterio.open(tmp_path / "city_007_landcover.tif") as ds:
        assert ds.colormap(1)[8][:3] == (222, 31, 7)
    with rasterio.open(tmp_path / "city_007_dsm.tif") as dsm, \
            rasterio.open(tmp_path / "city_007_dtm.tif") as dtm:
        assert dsm.nodata == -9999 and (dsm.read(1) >= dtm.read(1)).all()
        raster_crs = dsm.crs
    fp = read_vector(tmp_path / "city_007_footprints.gpkg")
    assert fp.crs == raster_crs and {"id", "height_m", "roof", "damage"} <= set(fp.columns)
    meta = json.loads((tmp_path / "city_007_scene.json").read_text())
    assert meta["seed"] == 7 and meta["gsd"] == 0.3 and meta["files"]["dsm"] == "city_007_dsm.tif"


def test_overwrite_guard_and_bad_options(tmp_path, cli):
    code, out, err = cli("synth", "-o", tmp_path, "--size", 96)
    assert code == 0 and "city_000" in out
    before = (tmp_path / "city_000_pre_rgb.tif").read_bytes()
    code, _, err = cli("synth", "-o", tmp_path, "--size", 96, "--seed", 0)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "city_000_pre_rgb.tif").read_bytes() == before
    assert cli("synth", "-o", tmp_path, "--size", 96, "--overwrite")[0] == 0
    for bad in (["--size", 10], ["--gsd", 0], ["--gsd", 50], ["--destroyed", 1.5],
                ["--destroyed", -0.1], ["--style", "x"], ["--scenes", 0]):
        code, _, err = cli("synth", "-o", tmp_path / "new", *bad)
        assert code == 2, bad
    with pytest.raises(InputError):
        generate_scene(32)


def test_a_negative_seed_is_refused_before_anything_is_created(tmp_path, cli):
    """synth --seed -1 failed with exit 1 (numpy: expected non-negative integer) and left an
    empty OUTPUT folder; every --seed takes [0, 2**32) (pretrain's np.random.seed range)."""
    for seed in (-1, 2**32):
        code, out, err = cli("synth", "-o", tmp_path / "city", "--size", 64, "--seed", seed)
        assert code == 2 and "--seed" in err and len(err.strip().splitlines()) == 1, err
    for cmd in (["prepare", "--rgb", tmp_path / "x.tif"], ["demo"], ["pretrain", tmp_path],
                ["finetune", tmp_path]):
        code, _, err = cli(*cmd, "-o", tmp_path / "out", "--seed", -1)
        assert code == 2 and "--seed" in err and len(err.strip().splitlines()) == 1, (cmd, err)
    with pytest.raises(InputError, match="--seed"):  # the library too, before the folder
        write_scenes(tmp_path / "lib", size=64, seed=-1)
    with pytest.raises(InputError, match="--seed"):  # a YAML config's seed
        TrainConfig(seed=-1)
    assert not list(tmp_path.iterdir())
    # outputs are checked before the folder is made (a file in its path was exit 1)
    (tmp_path / "f").write_text("x")
    code, _, err = cli("synth", "-o", tmp_path / "f" / "city", "--size", 64)
    assert code == 2 and "is a file" in err, err


def test_scenes_without_footprints_prepare_from_the_folder(tmp_path):
    from rsgeo.data.sources import from_synth_dir
    from rsgeo.synth.write import write_scenes

    paths = write_scenes(tmp_path, size=96, footprints=False)
    assert "footprints" not in paths[0] and not list(tmp_path.glob("*.gpkg"))
    (scene,) = from_synth_dir(tmp_path)
    assert scene.footprints is None and scene.rgb.exists()
