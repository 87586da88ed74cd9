"""Backbone adapters: names, 4 feature maps, safetensors + JSON round trip."""

import json

import pytest
import torch

from rsgeo.errors import InputError
from rsgeo.models.backbones import (build_encoder, encoder_features, encoder_stride, load_encoder,
                                    out_channels, resize_encoder, save_encoder)


@pytest.mark.parametrize("name,bands,shapes", [
    ("vit-tiny-4", 3, [(192, 4, 4)] * 4),
    ("swin-tiny-2", 1, [(32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]),
])
def test_four_feature_maps(name, bands, shapes):
    enc = build_encoder(name, in_chans=bands, img_size=64)
    feats = encoder_features(enc, torch.rand(2, bands, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == shapes
    assert [f.shape[0] for f in feats] == [2] * 4
    assert out_channels(enc) == [s[0] for s in shapes]
    # another multiple of the stride works too (dynamic image size)
    s = encoder_stride(enc)
    assert encoder_features(enc, torch.rand(1, bands, 2 * s, 3 * s))[-1].shape[-2:] == (
        (2, 3) if name.startswith("vit") else (2 * s // 32, 3 * s // 32))


def test_vit_tiny_4_is_the_named_configuration():
    enc = build_encoder("vit-tiny-4")
    assert (enc.embed_dim, len(enc.blocks), enc.blocks[0].attn.num_heads) == (192, 4, 3)
    assert enc.patch_embed.patch_size == (16, 16)


def test_timm_names_work_with_any_band_count():
    enc = build_encoder("vit_tiny_patch16_224", in_chans=1, img_size=32)
    assert enc.patch_embed.proj.in_channels == 1


def test_unknown_names_list_close_matches():
    with pytest.raises(InputError, match="close matches: vit-tiny-4"):
        build_encoder("vit-tiny4")
    with pytest.raises(InputError, match="swin_tiny_patch4_window7_224"):
        build_encoder("swin_tiny_patch4")
    with pytest.raises(InputError, match="rsgeo adapts"):
        build_encoder("swinv2_tiny_window8_256")


def test_save_and_load_round_trip(tmp_path):
    enc = build_encoder("swin-tiny-2", in_chans=1, img_size=64)
    meta = {"backbone": "swin-tiny-2", "in_chans": 1, "img_size": 64, "bands": ["dsm"],
            "mean": [12.0], "std": [4.0], "method": "fusedmim"}
    st, js = save_encoder(enc, tmp_path / "dsm", meta)
    assert st.name == "dsm.safetensors" and js.name == "dsm.json"
    side = json.loads(js.read_text())
    assert side["patch_size"] == 4 and side["stride"] == 32 and side["method"] == "fusedmim"
    enc2, meta2 = load_encoder(st)
    x = torch.rand(1, 1, 64, 64)
    enc.eval(), enc2.eval()
    assert torch.equal(enc.forward_features(x), enc2.forward_features(x))
    assert meta2["bands"] == ["dsm"]


def test_load_errors_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_encoder(tmp_path / "nothing.safetensors")
    enc = build_encoder("vit-tiny-2", img_size=32)
    st, js = save_encoder(enc, tmp_path / "e.safetensors",
                          {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32})
    js.write_text(json.dumps({"backbone": "vit-tiny-4", "in_chans": 3, "img_size": 32}))
    with pytest.raises(InputError, match="do not fit vit-tiny-4"):
        load_encoder(st)


def test_resize_encoder_bakes_the_dynamic_position_resampling(synth_chips, tmp_path):
    """An encoder written for 64 px (4x4 grid) and fine-tuned on 32 px crops: rebuilt for 32
    px with its position grid resampled once, it computes what the 64 px encoder computes
    on 32 px inputs (timm resamples on the fly), and the task checkpoint fine-tuning writes
    (config img_size 32) loads back."""
    from rsgeo.finetune import finetune
    from rsgeo.tasks.bundle import load_task_model

    torch.manual_seed(0)
    enc = build_encoder("vit-tiny-2", 3, 64).eval()
    meta = {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64}
    small, m = resize_encoder(enc, meta, 32)
    assert m["img_size"] == 32 and m["pretrain_img_size"] == 64
    assert tuple(small.pos_embed.shape) == (1, 1 + 4, 96)          # class token + 2x2 grid
    torch.testing.assert_close(small.pos_embed[:, 0], enc.pos_embed[:, 0])
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(small.eval()(x), enc(x))
    assert resize_encoder(enc, meta, 64)[0] is enc                  # same size: unchanged
    save_encoder(enc, tmp_path / "enc.safetensors", meta)
    s = finetune(synth_chips, "height", tmp_path / "ft", encoder=str(tmp_path / "enc.safetensors"),
                 steps=1, batch_size=2, crop=32, head_features=8, val_every=0)
    net, cfg, _ = load_task_model(s["checkpoint"])
    assert cfg["img_size"] == 32 and tuple(net.encoder.encoders[0].pos_embed.shape) == (1, 5, 96)
