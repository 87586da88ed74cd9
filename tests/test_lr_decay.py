"""Fine-tuning learning rates: layer-wise decay, encoder scale, linear probe, schedule, resume."""

import json

import pytest
import torch
import yaml
from torch import nn

from rsgeo.errors import InputError
from rsgeo.finetune.lr_decay import (check_layer_decay, encoder_scales, finetune_groups,
                                     layer_ids, lr_rule)
from rsgeo.finetune.tasks import TaskModule
from rsgeo.models.backbones import build_encoder, load_encoder, save_encoder
from rsgeo.tasks.bundle import build_task_model, load_task_model
from rsgeo.train.schedule import WarmupCosine, lr_at

CFG = {"task": "height", "backbone": "vit-tiny-4", "in_chans": 3, "img_size": 32,
       "head": "dpt", "head_features": 8}


def _expected_layer(name: str, depth: int) -> int:
    """MAE's ``get_layer_id_for_vit``, written out for the test."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def test_vit_groups_follow_the_rule_and_the_schedule():
    torch.manual_seed(0)
    module = TaskModule(build_task_model(CFG), "height")
    enc = module.net.encoder.encoders[0]
    ids, depth = layer_ids(enc)
    assert depth == 4 and ids == {n: _expected_layer(n, 4) for n, _ in enc.named_parameters()}
    groups = finetune_groups(module, [enc], 0.05, encoder_lr_scale=0.5, layer_decay=0.75)
    scale_of = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(scale_of) == sum(1 for p in module.parameters())       # every parameter, once
    for name, p in enc.named_parameters():
        scale, wd = scale_of[id(p)]
        assert scale == pytest.approx(0.5 * 0.75 ** (4 + 1 - ids[name])), name
        no_decay = p.ndim <= 1 or name in ("cls_token", "pos_embed")
        assert wd == (0.0 if no_decay else 0.05), name
    assert scale_of[id(enc.pos_embed)][0] == pytest.approx(0.5 * 0.75 ** 5)   # embeddings: F^(L+1)
    assert scale_of[id(enc.blocks[3].mlp.fc1.weight)][0] == pytest.approx(0.5 * 0.75)
    assert scale_of[id(enc.norm.weight)][0] == pytest.approx(0.5)              # final norm
    for p in module.net.head.parameters():                                     # head: full lr
        assert scale_of[id(p)][0] == 1.0
    # the warm-up + cosine schedule scales each group's own rate
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = WarmupCosine(opt, total=10, base_lr=1e-3, warmup=2)
    for _ in range(4):
        sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr_at(4, 10, 1e-3, 2) * g["lr_scale"])
    rule = lr_rule(1e-3, [enc], 0.5, 0.75)
    assert "0.75^(5 - layer)" in rule and "--encoder-lr-scale" in rule


def test_layer_decay_off_keeps_one_encoder_rate_and_any_encoder():
    module = TaskModule(build_task_model(CFG), "height")
    groups = finetune_groups(module, list(module.net.encoder.encoders), 0.05, 0.1, 1.0)
    assert sorted({g["lr_scale"] for g in groups}) == [0.1, 1.0]
    weird = nn.Linear(3, 3)                               # no blocks: fine without decay
    assert set(encoder_scales([weird], 0.3, 1.0).values()) == {(0.3, 0)}
    with pytest.raises(InputError, match="--layer-decay.*Linear"):
        encoder_scales([weird], 1.0, 0.75)


def test_swin_blocks_are_counted_over_stages():
    enc = build_encoder("swin-tiny-2", 3, 64)
    ids, depth = layer_ids(enc)
    assert depth == 8
    assert ids["patch_embed.proj.weight"] == 0 and ids["norm.weight"] == 9
    assert ids["layers.0.blocks.0.attn.qkv.weight"] == 1
    assert ids["layers.1.blocks.1.mlp.fc2.bias"] == 4
    assert ids["layers.2.downsample.reduction.weight"] == 4   # with the block before it
    assert ids["layers.3.blocks.1.norm1.weight"] == 8
    order = [ids[n] for n, _ in enc.named_parameters()]
    assert order == sorted(order)                              # depth order


def test_checks():
    check_layer_decay(1.0, True)
    check_layer_decay(0.65, False)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(InputError, match="--layer-decay"):
            check_layer_decay(bad, False)
    with pytest.raises(InputError, match="--freeze-encoder"):
        check_layer_decay(0.75, True)


def test_cli_layer_decay_run_records_the_rule_and_resumes(synth_chips, tmp_path, cli):
    args = ["finetune", synth_chips, "--task", "height", "--backbone", "vit-tiny-2", "--steps", 2,
            "--batch-size", 2, "--crop", 32, "--layer-decay", 0.75, "--lr", 1e-3, "-o",
            tmp_path / "r"]
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["step"] == 2 and "0.75^(3 - layer)" in s["lr_rule"]
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["extra"]["layer_decay"] == 0.75
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    scales = sorted({g["lr_scale"] for g in ckpt["optimizer"]["param_groups"]})
    assert scales == pytest.approx([0.75 ** 3, 0.75 ** 2, 0.75, 1.0])
    for g in ckpt["optimizer"]["param_groups"]:               # lr at the last step, per group
        assert g["lr"] == pytest.approx(lr_at(2, 2, 1e-3, 0) * g["lr_scale"])
    code, out, err = cli(*args, "--resume")                   # the same run: accepted
    assert code == 0, err
    assert "0.75^(3 - layer)" in out
    code, _, err = cli(*args[:-6], "--layer-decay", 0.9, "--lr", 1e-3, "-o", tmp_path / "r",
                       "--resume")
    assert code == 2 and "layer_decay" in err


def test_freeze_encoder_trains_the_head_only(synth_chips, tmp_path):
    from rsgeo.finetune import finetune

    torch.manual_seed(3)
    save_encoder(build_encoder("vit-tiny-2", 3, 32), tmp_path / "enc.safetensors",
                 {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32})
    s = finetune(synth_chips, "height", tmp_path / "probe", encoder=str(tmp_path / "enc.safetensors"),
                 freeze_encoder=True, steps=2, batch_size=2, crop=32, head_features=8, lr=1e-2,
                 val_every=0)
    assert s["lr_rule"] == "head lr 0.01; encoder frozen"
    net, cfg, _ = load_task_model(s["checkpoint"])
    enc, _ = load_encoder(tmp_path / "enc.safetensors")
    for (k, a), b in zip(net.encoder.encoders[0].state_dict().items(), enc.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)               # the encoder did not move
    torch.manual_seed(0)                                      # the head at step 0 (same seed)
    start = build_task_model(cfg, [enc])
    moved = [not torch.equal(a, b) for a, b in zip(net.head.parameters(), start.head.parameters())]
    assert sum(moved) > len(moved) // 2                       # the head trained


def test_head_steps_freeze_the_encoder_then_train_it(synth_chips, tmp_path, monkeypatch):
    """LP-FT: steps 0 .. head_steps - 1 leave the loaded encoder exactly as it is (no
    gradient, no weight decay) while the head learns; the steps after move the encoder."""
    from rsgeo.finetune import finetune

    torch.manual_seed(3)
    save_encoder(build_encoder("vit-tiny-2", 3, 32), tmp_path / "enc.safetensors",
                 {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32})
    loaded = {k: v.clone() for k, v in load_encoder(tmp_path / "enc.safetensors")[0]
              .state_dict().items()}
    seen = {}                                                  # step -> (encoder, head) before it
    original = TaskModule.set_progress

    def spy(self, step, total):
        original(self, step, total)
        enc = self.net.encoder.encoders[0]
        seen[step] = ({k: v.clone() for k, v in enc.state_dict().items()},
                      [p.clone() for p in self.net.head.parameters()],
                      {p.requires_grad for p in enc.parameters()})

    monkeypatch.setattr(TaskModule, "set_progress", spy)
    s = finetune(synth_chips, "height", tmp_path / "lpft", encoder=str(tmp_path / "enc.safetensors"),
                 head_steps=2, steps=4, batch_size=2, crop=32, head_features=8, lr=1e-2,
                 val_every=0)
    assert sorted(seen) == [0, 1, 2, 3]
    assert seen[0][2] == seen[1][2] == {False} and seen[2][2] == seen[3][2] == {True}
    for k, v in loaded.items():                                # steps 0 and 1: encoder frozen
        torch.testing.assert_close(seen[2][0][k], v, msg=k)
    assert any(not torch.equal(a, b) for a, b in zip(seen[0][1], seen[2][1]))   # head learnt
    net, _, _ = load_task_model(s["checkpoint"])               # steps 2 and 3: encoder trained
    final = net.encoder.encoders[0].state_dict()
    assert any(not torch.equal(final[k], v) for k, v in loaded.items())
    assert s["lr_rule"].startswith("steps 0-1: head only, encoder frozen (--head-steps); then "
                                   "head lr 0.01; encoder lr 0.01")


def test_cli_head_steps_recorded_and_checked(synth_chips, tmp_path, cli):
    args = ["finetune", synth_chips, "--task", "height", "--backbone", "vit-tiny-2", "--steps", 2,
            "--batch-size", 2, "--crop", 32, "--lr", 1e-3]
    code, out, err = cli(*args, "--head-steps", 1, "-o", tmp_path / "r", "--json")
    assert code == 0, err
    assert json.loads(out)["lr_rule"].startswith("steps 0-0: head only")
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["extra"]["head_steps"] == 1
    for bad, words in ((["--head-steps", 2], "below --steps 2"),
                       (["--head-steps", 1, "--freeze-encoder"], "--freeze-encoder")):
        code, _, err = cli(*args, *bad, "-o", tmp_path / "bad")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="must be >= 0"):
        from rsgeo.finetune.lr_decay import check_head_steps
        check_head_steps(-1, False, None)
