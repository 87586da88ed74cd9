"""torchrun --nproc_per_node 2 on CPU (gloo) trains like one process with the same global batch."""

import json
import os
import runpy
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


def run_here(script, args, monkeypatch):
    """The one-process reference: ``script`` run as ``__main__`` in this process (which has
    torch and rsgeo imported already) instead of a new one (4-10 s of imports on 2 cores);
    the same code, the same ``RSGEO_NUM_THREADS`` as the torchrun ranks inherit."""
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    runpy.run_path(str(script), run_name="__main__")


def losses(run_dir, key="loss"):
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", [("mae", "vit-tiny-2"), ("fusedmim", "vit-tiny-2")])
def test_two_processes_match_one(tmp_path, method, backbone, monkeypatch):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    run_here(script, [method, backbone, tmp_path / "one"], monkeypatch)
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


VIEW_SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    from rsgeo.data.dataset import ChipDataset
    from rsgeo.methods.masking import random_masking, uniform
    from rsgeo.train.augment import PretrainView
    from rsgeo.train.config import TrainConfig
    from rsgeo.train.engine import Trainer

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(())), []
        def forward(self, batch):
            x = batch["rgb"]
            _, mask, _ = random_masking(uniform(batch, 4, 0, x), 1)
            for k in range(len(x)):
                self.seen.append([int(batch["seed"][k]), float(x[k].double().sum()),
                                  mask[k].tolist(), batch["hog"][k].tolist()])
            return (self.w * x.mean()) ** 2, {}

    chips, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    view = PretrainView(ChipDataset(chips, modalities=("rgb", "hog")), ("rgb",), crop=32, seed=5)
    model = Recorder()
    Trainer(model, view, TrainConfig(steps=4, batch_size=4, lr=1e-3, workers=workers, warmup=0,
                                     device="cpu", log_every=1, ckpt_every=100), out).fit()
    with open(os.path.join(out, f"seen{os.environ.get('RANK', 0)}.json"), "w") as f:
        json.dump(model.seen, f)
''')


@pytest.mark.slow
def test_two_processes_see_the_same_chip_views_and_masks(tmp_path, monkeypatch):
    """ChipDataset through the whole-batch loader: crops, flips, HOG and masks of every
    sample are those of one process, under torchrun with a worker per rank."""
    from tests.test_loader import write_chips

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    chips = write_chips(tmp_path / "chips")
    script = tmp_path / "views.py"
    script.write_text(VIEW_SCRIPT)
    run_here(script, [chips, tmp_path / "one", 0], monkeypatch)
    run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(chips),
         str(tmp_path / "two"), "1"], tmp_path)
    one = json.loads((tmp_path / "one" / "seen0.json").read_text())
    two = [s for r in (0, 1) for s in json.loads((tmp_path / "two" / f"seen{r}.json").read_text())]
    assert len(one) == 16 and len({s[0] for s in one}) == 16
    assert sorted(two) == sorted(one)


NO_ROOM_SCRIPT = textwrap.dedent('''
    import errno, os, sys, torch
    from rsgeo.cli.app import main

    if os.environ["RANK"] == "0":   # rank 0's disk is full when it saves the checkpoint
        def no_room(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        torch.save = no_room
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.slow
def test_a_failed_checkpoint_save_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0 could not save (disk full) while rank 1 went on to the barrier after the save:
    it waited there for a rank that had gone, until gloo noticed (or forever, on NCCL) and
    then printed a second, misleading line ("Connection closed by peer"). Now every rank
    stops at once, non-zero, and only rank 0's one line is printed."""
    import numpy as np

    from tests.conftest import write_chip_dataset

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    rgb = np.random.default_rng(0).integers(0, 255, (16, 3, 32, 32), dtype=np.uint8)
    write_chip_dataset(tmp_path / "chips", {"rgb": rgb})
    script = tmp_path / "train.py"
    script.write_text(NO_ROOM_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script),
                        "pretrain", "chips", "--method", "mae", "--backbone", "vit-tiny-2",
                        "--decoder-dim", "32", "--decoder-depth", "1", "--decoder-heads", "2",
                        "--steps", "4", "--ckpt-every", "2", "--batch-size", "8",
                        "--device", "cpu", "-o", "run"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    said = [line for line in p.stderr.splitlines() if line.startswith("rsgeo:")]
    assert len(said) == 1, p.stderr[-3000:]
    assert said[0].startswith("rsgeo: error: ") and "no space left on device" in said[0]
    assert "no checkpoint was saved yet" in said[0]
    assert "Connection closed by peer" not in p.stderr and "[rank" not in p.stderr
