"""ViT feature levels through the encoder's final LayerNorm (task config ``feature_norm``)."""

from __future__ import annotations

import torch

from rsgeo.models.backbones import build_encoder, encoder_features
from rsgeo.tasks.bundle import build_task_model, load_task_model, save_task_model

CONFIG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32,
          "head": "dpt", "head_features": 8}


def test_norm_brings_a_large_residual_stream_to_unit_scale():
    torch.manual_seed(0)
    enc = build_encoder("vit-tiny-2", 3, 32).eval()
    with torch.no_grad():  # a pretrained-like residual stream, 20x a fresh one
        enc.patch_embed.proj.weight.mul_(20)
        enc.pos_embed.mul_(20)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = encoder_features(enc, x)
        normed = encoder_features(enc, x, norm=True)
    assert len(normed) == 4 and normed[0].shape == raw[0].shape == (2, 96, 2, 2)
    assert min(f.std().item() for f in raw) > 3
    for f in normed:  # per token: LayerNorm over channels (weight 1, bias 0 when fresh)
        assert torch.allclose(f.mean(1), torch.zeros(()), atol=1e-4)
        assert torch.allclose(f.std(1, unbiased=False), torch.ones(()), atol=1e-2)


def test_config_switches_it_and_old_checkpoints_keep_their_layout(tmp_path):
    assert build_task_model(CONFIG).encoder.norm is False  # checkpoints from before the key
    torch.manual_seed(1)
    net = build_task_model({**CONFIG, "feature_norm": True}).eval()
    assert net.encoder.norm is True
    x = torch.randn(1, 3, 32, 32)
    path = save_task_model(net, {**CONFIG, "feature_norm": True}, {"task": "height"},
                           tmp_path / "m.ckpt")
    back, config, _ = load_task_model(path)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
        net.encoder.norm = False
        assert not torch.allclose(net(x), back(x))
