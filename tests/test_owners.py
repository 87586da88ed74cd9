"""One owner per small rule (issue #15): F1, metres per degree, device, colours, option
groups, class files, scene gathering."""

import json
import math
from typing import Annotated

import numpy as np
import pytest
import typer
from affine import Affine
from rasterio.crs import CRS

from rsgeo.cli.options import (Compute, Json, RasterOutput, emit, nodata_value, parse_co,
                               with_groups)
from rsgeo.data.sources import gather_scenes, synth_classes
from rsgeo.device import resolve_device
from rsgeo.errors import InputError
from rsgeo.io.labels import read_classes
from rsgeo.io.raster import (METRES_PER_DEGREE, Grid, ground_gsd, ground_res, pixel_area_m2,
                             work_grid)
from rsgeo.metrics.counts import precision_recall_f1
from rsgeo.synth import LANDCOVER, write_scenes
from rsgeo.viz import DAMAGE_COLORS, LANDCOVER_COLORS, colorize_classes, colorize_heights


def test_precision_recall_f1_scalars_and_arrays():
    assert precision_recall_f1(2, 1, 1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    p, r, f1 = precision_recall_f1(3, 1, 5)
    assert (p, r) == (0.75, 0.375) and f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 5))
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)       # undefined -> 0
    assert precision_recall_f1(0, 4, 0) == (0.0, 0.0, 0.0)
    assert all(isinstance(v, float) for v in precision_recall_f1(1, 2, 3))
    p, r, f1 = precision_recall_f1(np.array([2, 0, 5]), np.array([1, 0, 0]), np.array([1, 3, 0]))
    assert p.tolist() == pytest.approx([2 / 3, 0.0, 1.0]) and r.tolist() == pytest.approx([2 / 3, 0, 1])
    assert f1.tolist() == pytest.approx([2 / 3, 0.0, 1.0])


def test_metres_per_degree_is_the_wgs84_mean_great_circle():
    assert METRES_PER_DEGREE == pytest.approx(2 * math.pi * 6371008.8 / 360)
    assert 111_190 < METRES_PER_DEGREE < 111_200


def _geo_grid(lat: float, res: float = 1e-5) -> Grid:
    return Grid(CRS.from_epsg(4326), Affine(res, 0, 10.0, 0, -res, lat + 50 * res), 100, 100)


@pytest.mark.parametrize("lat", [0.0, 43.6, 60.0])
def test_ground_gsd_and_pixel_area_agree_in_a_geographic_crs(lat):
    g = _geo_grid(lat)
    gsd, area = ground_gsd(g), pixel_area_m2(g)
    assert area == pytest.approx(gsd ** 2, rel=1e-9)    # one constant, one model of the earth
    assert gsd == pytest.approx(1e-5 * METRES_PER_DEGREE * math.sqrt(math.cos(math.radians(lat))),
                                rel=1e-6)


def test_projected_ground_gsd_and_work_grid():
    g = Grid(CRS.from_epsg(32633), Affine(0.5, 0, 5e5, 0, -0.5, 4.1e6), 200, 100)
    assert ground_gsd(g) == 0.5 and pixel_area_m2(g) == 0.25
    w = work_grid(g, 0.5, 1.0)
    assert (w.width, w.height, w.res, w.bounds) == (100, 50, (1.0, 1.0), g.bounds)


def test_work_grid_keeps_rotation_and_makes_pixels_square_on_the_ground():
    th = math.radians(30)
    rotated = Grid(CRS.from_epsg(32631), Affine(0.25 * math.cos(th), 0.25 * math.sin(th), 5e5,
                                                0.25 * math.sin(th), -0.25 * math.cos(th), 4.8e6),
                   512, 512)
    w = work_grid(rotated, ground_gsd(rotated), 0.5)
    corners = lambda g: [v for c in ((0, 0), (g.width, 0), (0, g.height), (g.width, g.height))
                         for v in g.transform * c]
    assert (w.width, w.height) == (256, 256) and w.res == pytest.approx((0.5, 0.5))
    assert corners(w) == pytest.approx(corners(rotated))  # the same area, still rotated
    oblong = Grid(CRS.from_epsg(32631), Affine(0.25, 0, 5e5, 0, -0.5, 4.8e6), 400, 200)
    w = work_grid(oblong, ground_gsd(oblong), 0.5)
    assert (w.width, w.height, w.res, w.bounds) == (200, 200, (0.5, 0.5), oblong.bounds)
    g = _geo_grid(60.0)  # 1e-5 degrees: 0.56 m north-south, half that east-west at 60 N
    w = work_grid(g, ground_gsd(g), 0.5)
    assert ground_res(w) == pytest.approx((0.5, 0.5), rel=0.02)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    import torch

    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.cuda
def test_resolve_device_takes_the_local_rank(monkeypatch):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=False) == torch.device("cuda")


def test_colour_maps():
    lc = np.array([[0, 1], [8, 200]], np.uint8)
    rgb = colorize_classes(lc)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == LANDCOVER_COLORS[1] and tuple(rgb[1, 1]) == (0, 0, 0)
    dmg = colorize_classes(np.array([[4, 255]], np.uint8), DAMAGE_COLORS)
    assert tuple(dmg[0, 0]) == DAMAGE_COLORS[4][:3]
    h = colorize_heights(np.array([[0.0, 5.0, 10.0, np.nan]]), vmax=10)
    assert h.shape == (1, 4, 3) and (h[0, 0] == h[0, 3]).all() and not (h[0, 0] == h[0, 2]).all()


def test_read_classes_json_and_lines(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"1": "roof", "2": "road"}))
    (tmp_path / "b.txt").write_text("# id,name\n1,roof\n2\n")
    (tmp_path / "c.txt").write_text('{"3": "tree"}')     # JSON under another suffix
    (tmp_path / "d.json").write_text(json.dumps({"0": "bg", "1": {"name": "roof", "values": [255]}}))
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "bad.txt").write_text("roof,1\n")
    assert read_classes(tmp_path / "a.json") == ({1: "roof", 2: "road"}, None)
    assert read_classes(tmp_path / "b.txt") == ({1: "roof", 2: "2"}, None)
    assert read_classes(tmp_path / "c.txt") == ({3: "tree"}, None)
    assert read_classes(tmp_path / "d.json") == ({0: "bg", 1: "roof"}, {255: 1})
    # --label-map wins over the file's values; without a file only the map
    assert read_classes(tmp_path / "d.json", ["255:0"]) == ({0: "bg", 1: "roof"}, {255: 0})
    assert read_classes(tmp_path / "b.txt", ["7:2"]) == ({1: "roof", 2: "2"}, {7: 2})
    assert read_classes(None, ["0:0,255:1"]) == (None, {0: 0, 255: 1})
    assert read_classes(None) == (None, None)
    for name, msg in (("bad.json", "integer ids"), ("bad.txt", "integer ids"),
                      ("none.json", "no such")):
        with pytest.raises(InputError, match=msg):
            read_classes(tmp_path / name)


def test_gather_scenes_and_synth_classes(tmp_path):
    write_scenes(tmp_path / "s", size=96, scenes=1, seed=0)
    assert synth_classes(tmp_path / "s") == dict(LANDCOVER)
    assert len(gather_scenes(tmp_path / "s")) == 1
    one = gather_scenes(rgb=tmp_path / "x.tif", dsm=tmp_path / "d.tif")[0]
    assert (one.source, one.dsm.name) == ("x", "d.tif")
    dsm_only = gather_scenes(dsm=tmp_path / "d.tif", ndsm=None)[0]    # DSM-only scene
    assert (dsm_only.source, dsm_only.rgb, dsm_only.reference.name) == ("d", None, "d.tif")
    with pytest.raises(InputError, match="exactly one"):
        gather_scenes(tmp_path / "s", rgb=tmp_path / "x.tif")
    with pytest.raises(InputError, match="exactly one"):
        gather_scenes()


def test_option_groups_reach_the_command_as_one_typed_value(capsys):
    seen = {}
    app = typer.Typer()

    @app.command()
    @with_groups
    def cmd(name: Annotated[str, typer.Argument()], out: RasterOutput = RasterOutput(),
            compute: Compute = Compute(), json_out: Json = False):
        seen.update(name=name, out=out, compute=compute, json_out=json_out)

    @app.command()
    def other():  # two commands: typer keeps sub-command names
        pass

    app(["cmd", "a", "--co", "zlevel=3", "--compress", "deflate", "--device", "cpu",
         "--precision", "bf16", "--overwrite", "--json"], standalone_mode=False)
    out, compute = seen["out"], seen["compute"]
    assert isinstance(out, RasterOutput) and isinstance(compute, Compute)
    assert out.creation_options == {"ZLEVEL": "3"} and out.codec == "deflate" and out.overwrite
    assert (compute.device.value, compute.precision.value, seen["json_out"]) == ("cpu", "bf16", True)
    app(["cmd", "b"], standalone_mode=False)
    assert seen["out"].creation_options == {} and not seen["out"].overwrite
    assert seen["out"].codec is None and seen["out"].max_z_error is None
    assert seen["compute"] == Compute()
    app(["cmd", "--help"], standalone_mode=False)
    text = capsys.readouterr().out
    assert "Raster output" in text and "Compute" in text
    with pytest.raises(typer.BadParameter):
        parse_co(["noequals"])


def test_emit_and_typed_nodata(capsys):
    emit({"a": 1.5, "b": float("nan")}, True)
    emit({"a": 1}, False, "human line")
    emit({"a": 1}, False, lambda: print("from a function"))
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[0]) == {"a": 1.5, "b": None} and out[1:] == ["human line", "from a function"]
    assert nodata_value("-9999") == -9999.0 and math.isnan(nodata_value("nan"))
    assert nodata_value(None) is None and nodata_value(0.0) == 0.0


def test_typed_callbacks_refuse_bad_values_in_one_line(tmp_path, cli):
    cases = [(["prepare", "--rgb", tmp_path / "x.tif", "--split", "a,b"], "--split"),
             (["prepare", "--rgb", tmp_path / "x.tif", "--bands", "1,2"], "--bands"),
             (["prepare", "--rgb", tmp_path / "x.tif", "--bands", "0,1,2"], "1-based"),
             (["predict-height", tmp_path / "x.tif", "-m", tmp_path / "m.onnx", "-o",
               tmp_path / "h.tif", "--nodata", "abc"], "--nodata"),
             (["damage-map", tmp_path / "a.tif", tmp_path / "b.tif", "--co", "ZLEVEL"],
              "KEY=VALUE")]
    for args, msg in cases:
        code, _, err = cli(*args, "-o", tmp_path / "out") if args[0] == "prepare" else cli(*args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
