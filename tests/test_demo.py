"""The quick demo end to end: every step, every output file, the report."""

import json

import geopandas as gpd
import pytest
import rasterio


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, cli):
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "-o", out, "--quick", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert [x["step"] for x in s["steps"]] == [
        "synth city", "prepare chips", "pretrain selectivemae", "finetune heights",
        "export ONNX", "predict heights", "damage map", "evaluate", "report"]
    m = s["metrics"]
    assert 0 <= m["height_f1he_1"] <= 1 and 0 <= m["damaged_building_f1"] <= 1
    assert 0 < m["height_mae"] < 20 and m["buildings"] > 5
    for key in ("heights_pre", "heights_post", "damage"):
        with rasterio.open(s["files"][key]) as ds:
            assert ds.crs is not None and ds.width > 0 and ds.read(1).size
    with rasterio.open(s["files"]["heights_pre"]) as ds:
        h = ds.read(1)
        assert ds.nodata == -9999 and h.max() > 1.0          # it predicts some buildings
    fp = gpd.read_file(s["files"]["damage_buildings"])
    assert len(fp) == m["buildings"] and fp.crs is not None and "grade" in fp
    assert (out / "report.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "report.png" in html and "height_f1he_1" in html
    code, _, err = cli("demo", "-o", out, "--quick")
    assert code == 2 and "--overwrite" in err
