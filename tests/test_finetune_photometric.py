"""``finetune(photometric=S)``: per-sample colour jitter and blur of the labelled inputs,
in training only, seeded by the batch's sample seeds."""

import torch

from rsgeo.finetune.photometric import photometric
from rsgeo.finetune.tasks import TaskModule
from rsgeo.tasks.bundle import build_task_model


def _module(strength: float) -> TaskModule:
    torch.manual_seed(0)
    net = build_task_model({"task": "height", "backbone": "vit-tiny-2", "in_chans": 3,
                            "img_size": 32, "head_features": 16})
    return TaskModule(net, "height", photometric=strength)


def _batch() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"x": torch.randn(4, 3, 32, 32, generator=g),
            "target": torch.rand(4, 1, 32, 32, generator=g) * 10,
            "seed": torch.tensor([11, 12, 13, 14])}


def test_jitter_changes_training_loss_only_and_is_seeded():
    plain, jit = _module(0.0), _module(0.4)
    batch = _batch()
    x = batch["x"].clone()
    loss0 = plain(batch)[0]
    loss1 = jit(batch)[0]
    assert torch.equal(batch["x"], x)                     # the caller's batch is not touched
    assert not torch.isclose(loss0, loss1)
    torch.testing.assert_close(jit(_batch())[0], loss1)   # same seeds, same jitter
    other = {**_batch(), "seed": torch.tensor([21, 22, 23, 24])}
    assert not torch.isclose(jit(other)[0], loss1)
    jit.eval(), plain.eval()
    torch.testing.assert_close(jit(_batch())[0], plain(_batch())[0])   # evaluation: none


def test_strength_scales_the_jitter():
    x = torch.randn(64, 3, 16, 16)
    weak = photometric(x, torch.Generator().manual_seed(0), p_blur=0.0, strength=0.1)
    strong = photometric(x, torch.Generator().manual_seed(0), p_blur=0.0, strength=0.4)
    shift = lambda y: (y.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs().mean()  # noqa: E731
    assert shift(strong) > 2.5 * shift(weak) > 0


def test_cli_option_reaches_the_run(tmp_path, cli):
    assert cli("synth", "-o", tmp_path / "city", "--size", 128)[0] == 0
    code, _, err = cli("prepare", tmp_path / "city", "-o", tmp_path / "chips", "--size", 64,
                       "--stride", 64)
    assert code == 0, err
    code, _, err = cli("finetune", tmp_path / "chips", "--task", "height", "--backbone",
                       "vit-tiny-2", "--steps", 1, "--batch-size", 2, "--photometric", 0.3,
                       "-o", tmp_path / "run")
    assert code == 0, err
    assert "photometric: 0.3" in (tmp_path / "run" / "config.yaml").read_text()
    from rsgeo.tasks.bundle import load_task_model
    assert load_task_model(tmp_path / "run" / "best.ckpt")[2]["tile"] == 128   # 2 x 64 px crop
    code, _, err = cli("finetune", tmp_path / "chips", "--task", "height", "--photometric", -1,
                       "-o", tmp_path / "bad")
    assert code == 2


def test_recommended_tile_is_twice_the_crop_up_to_256():
    from rsgeo.finetune import recommended_tile

    assert recommended_tile(32) == (64, 8)
    assert recommended_tile(64) == (128, 16)
    assert recommended_tile(128) == (256, 32)
    assert recommended_tile(256) == (256, 32)
    assert recommended_tile(512) == (512, 64)
