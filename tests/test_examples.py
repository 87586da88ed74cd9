"""examples/*.sh run as written (small sizes through SIZE/STEPS), with the installed rsgeo."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import forkserver

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(script, *args, cwd, shims=None, **env):
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    full = dict(os.environ, PATH=f"{shims}:{path}" if shims else path, **env)
    return subprocess.run(["bash", str(EXAMPLES / script), *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.sh")))
def test_examples_parse(script):
    subprocess.run(["bash", "-n", str(EXAMPLES / script)], check=True)


@pytest.mark.slow
def test_train_then_damage_pipeline(tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("jq not installed")
    # the scripts' `rsgeo` calls are forks of one warm process (tests/forkserver.py)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryDirectory(prefix="rsgeo-fs-", dir="/tmp") as sock_dir, \
            forkserver.server(Path(sock_dir), env) as shims:
        # no TRAIN_SIZE: the script's own default must fit the chips SIZE gives
        r = _run("train_height_model.sh", tmp_path / "train", cwd=tmp_path, shims=shims,
                 SIZE="256", STEPS="4")
        assert r.returncode == 0, r.stderr[-2000:]
        model = tmp_path / "train" / "height.onnx"
        assert model.is_file()
        r = _run("damage_from_images.sh", model, tmp_path / "dmg", cwd=tmp_path, shims=shims,
                 SIZE="256")
        assert r.returncode == 0, r.stderr[-2000:]
        assert '"by_grade"' in r.stdout and (tmp_path / "dmg" / "damage.gpkg").is_file()
        r = _run("building_heights.sh", model, tmp_path / "bh", cwd=tmp_path, shims=shims,
                 SIZE="256")
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads((tmp_path / "bh" / "buildings.json").read_text())
        assert summary["measured"] > 5 and summary["compare"]["p95"]["n"] == summary["measured"]
    last = json.loads(r.stdout.strip().splitlines()[-1])      # the DSM - DTM: near the truth
    assert last["n"] > 5 and last["mae"] < 1.0
