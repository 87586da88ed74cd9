"""torchrun --nproc_per_node 2 on CPU (gloo) trains like one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import sys, torch
    from rsgeo.pretrain import pretrain

    class Tiny(torch.utils.data.Dataset):
        modalities = ("rgb", "dsm")
        def __init__(self, n=16, size=64):
            g = torch.Generator().manual_seed(0)
            self.rgb = torch.randn(n, 3, size, size, generator=g).cumsum(-1) / 8
            self.dsm = self.rgb.mean(1, keepdim=True)
        def __len__(self):
            return len(self.rgb)
        def __getitem__(self, i):
            return {"rgb": self.rgb[i], "dsm": self.dsm[i]}

    method, backbone, out = sys.argv[1:4]
    extra = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2) if method == "mae" else {}
    pretrain(Tiny(), method, backbone, out, steps=4, batch_size=8, lr=2e-3, log_every=1,
             ckpt_every=2, warmup=1, device="cpu", **extra)
''')


def run(args, tmp_path, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    p = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]


def losses(run_dir, key="loss"):
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", [("mae", "vit-tiny-2"), ("fusedmim", "vit-tiny-2")])
def test_two_processes_match_one(tmp_path, method, backbone):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    run([sys.executable, str(script), method, backbone, str(tmp_path / "one")], tmp_path)
    run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), method, backbone,
         str(tmp_path / "two")], tmp_path)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=2e-4, abs=1e-6)
    if method == "fusedmim":  # the logged terms are averaged over ranks too
        for key in ("l_mim", "l_infonce"):
            assert losses(tmp_path / "two", key) == pytest.approx(losses(tmp_path / "one", key), rel=2e-4)
    assert (tmp_path / "two" / "checkpoints" / "last.pt").is_file()
    meta = json.loads(next((tmp_path / "two").glob("encoder*.json")).read_text())
    assert meta["backbone"] == backbone and meta["steps"] == 4
