"""Encoders from checkpoints users have (rsgeo.models.external): each layout written from a
randomly initialised model and loaded back, adapted to grid and bands, or refused."""

import argparse
import json

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from rsgeo.errors import InputError
from rsgeo.models.backbones import build_encoder
from rsgeo.models.external import open_external, report_lines
from rsgeo.models.weight_fit import adapt_bands


def tiny_vit(img=64, patch=16, depth=4, dim=192, heads=3, **kw):
    torch.manual_seed(0)
    m = VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth,
                          num_heads=heads, num_classes=0, **kw)
    with torch.no_grad():  # no zero/one parameters: every remapped tensor is distinct
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


def sd(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def to_hf(state, dinov2=False):
    """timm ViT names -> Hugging Face ViTModel (or Dinov2Model) names, q/k/v split."""
    out = {"embeddings.cls_token": state["cls_token"],
           "embeddings.position_embeddings": state["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    blk = {"norm1": "norm1" if dinov2 else "layernorm_before",
           "norm2": "norm2" if dinov2 else "layernorm_after",
           "attn.proj": "attention.output.dense",
           "mlp.fc1": "mlp.fc1" if dinov2 else "intermediate.dense",
           "mlp.fc2": "mlp.fc2" if dinov2 else "output.dense",
           "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
    for k, v in state.items():
        if not k.startswith("blocks."):
            continue
        _, i, rest = k.split(".", 2)
        pre = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), v.chunk(3)):
                out[f"{pre}attention.attention.{name}.{kind}"] = part
            continue
        mod = next(m for m in blk if rest.startswith(m + ".") or rest == m)
        out[pre + blk[mod] + rest[len(mod):]] = v
    return out


def test_timm_state_dict_pth_and_safetensors_load_unchanged(tmp_path):
    from safetensors.torch import save_file

    src = tiny_vit()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd(src).items()}}, tmp_path / "a.pth")
    save_file(sd(src), str(tmp_path / "a.safetensors"))
    for name in ("a.pth", "a.safetensors"):
        enc, meta = open_external(tmp_path / name, None, 3, 64)
        rep = meta["load_report"]
        assert meta["backbone"] == "vit-tiny-4" and rep["backbone_inferred"]
        assert rep["loaded"] == rep["total"] == len(src.state_dict()) and not rep["adapted"]
        for k in ("patch_embed.proj.weight", "blocks.3.attn.qkv.weight", "pos_embed", "cls_token"):
            torch.testing.assert_close(enc.state_dict()[k], src.state_dict()[k], rtol=0, atol=0)


def test_huggingface_vit_folder(tmp_path):
    from safetensors.torch import save_file

    src = tiny_vit()
    hf = tmp_path / "hf"
    hf.mkdir()
    state = {f"vit.{k}": v for k, v in to_hf(sd(src)).items()}
    state["classifier.weight"] = torch.zeros(10, 192)
    save_file(state, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({
        "model_type": "vit", "hidden_size": 192, "num_hidden_layers": 4,
        "num_attention_heads": 3, "patch_size": 16, "image_size": 64, "num_channels": 3}))
    enc, meta = open_external(hf, None, 3, 64)
    assert meta["load_report"]["layout"] == "huggingface"
    for k in ("blocks.2.attn.qkv.weight", "blocks.2.attn.qkv.bias", "blocks.1.mlp.fc2.weight",
              "blocks.0.norm2.bias", "norm.weight", "patch_embed.proj.weight"):
        torch.testing.assert_close(enc.state_dict()[k], src.state_dict()[k], rtol=0, atol=0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), src(x))
    assert "classifier.weight" in meta["load_report"]["dropped"]
    # config.json heads that no known backbone has: ask for --backbone
    (hf / "config.json").write_text(json.dumps({"hidden_size": 192, "num_hidden_layers": 4,
                                                "num_attention_heads": 4}))
    with pytest.raises(InputError, match="--backbone"):
        open_external(hf, None, 3, 64)


def test_huggingface_dinov2_with_layer_scale_folds_exactly(tmp_path):
    src = tiny_vit(init_values=0.5)
    with torch.no_grad():
        for b in src.blocks:
            b.ls1.gamma.uniform_(0.1, 2.0), b.ls2.gamma.uniform_(0.1, 2.0)
    hf = tmp_path / "dino"
    hf.mkdir()
    state = to_hf(sd(src), dinov2=True)
    state["embeddings.mask_token"] = torch.zeros(1, 192)
    torch.save(state, hf / "pytorch_model.bin")
    (hf / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 192,
                                                "num_hidden_layers": 4, "num_attention_heads": 3}))
    enc, meta = open_external(hf, None, 3, 64)  # vit-tiny-4 has no LayerScale: folded
    assert any("LayerScale folded" in n for n in meta["load_report"]["adapted"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), src(x), rtol=1e-4, atol=1e-5)


def test_mae_checkpoint_drops_the_decoder(tmp_path):
    src = tiny_vit()
    state = sd(src)
    state.update({"mask_token": torch.zeros(1, 1, 64), "decoder_embed.weight": torch.zeros(64, 192),
                  "decoder_pos_embed": torch.zeros(1, 17, 64),
                  "decoder_blocks.0.attn.qkv.weight": torch.zeros(192, 64),
                  "decoder_norm.weight": torch.ones(64), "decoder_pred.weight": torch.zeros(768, 64)})
    torch.save({"model": state, "epoch": 799, "args": argparse.Namespace(lr=1.5e-4)},
               tmp_path / "mae.pth")
    enc, meta = open_external(tmp_path / "mae.pth", None, 3, 64)
    rep = meta["load_report"]
    assert rep["layout"] == "mae" and "5 decoder tensors" in rep["dropped"]
    assert "mask_token" in rep["dropped"] and rep["loaded"] == rep["total"]
    torch.testing.assert_close(enc.state_dict()["blocks.1.attn.proj.weight"],
                               src.state_dict()["blocks.1.attn.proj.weight"], rtol=0, atol=0)
    text = "\n".join(report_lines(rep))
    assert "loaded 54/54 tensors" in text and "decoder" in text


def dinov2_state(src, registers=0):
    """facebookresearch/dinov2 names: pos_embed [1, 1 + N, D], register_tokens, mask_token."""
    state = sd(src)
    state["mask_token"] = torch.zeros(1, 192)
    if registers:
        state["register_tokens"] = torch.randn(1, registers, 192)
    return state


def test_dinov2_pos_embed_is_interpolated_to_the_grid_in_use(tmp_path):
    src = tiny_vit(img=96, init_values=1.0)  # 6 x 6 grid
    state = dinov2_state(src)
    const = torch.full((1, 36, 192), 0.25)
    state["pos_embed"] = torch.cat([torch.full((1, 1, 192), -3.0), const], 1)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "d.pth")
    enc, meta = open_external(tmp_path / "d.pth", None, 3, 64)  # 4 x 4 grid
    pos = enc.state_dict()["pos_embed"]
    assert pos.shape == (1, 1 + 16, 192)
    torch.testing.assert_close(pos[:, 1:], torch.full((1, 16, 192), 0.25))  # constant stays
    assert torch.all(pos[:, 0] == -3.0)                                     # cls entry kept
    assert meta["load_report"]["layout"] == "dinov2"
    assert "pos_embed grid 6x6 -> 4x4 (bicubic)" in meta["load_report"]["adapted"]
    enc, _ = open_external(tmp_path / "d.pth", None, 3, 128)  # and up to 8 x 8
    assert enc.state_dict()["pos_embed"].shape == (1, 65, 192)


def test_dinov2_with_registers_and_14px_patches(tmp_path):
    src = tiny_vit(img=56, patch=14, init_values=1.0)  # 4 x 4 grid of 14-px patches
    torch.save(dinov2_state(src, registers=4), tmp_path / "reg.pth")
    enc, meta = open_external(tmp_path / "reg.pth", None, 3, 64)
    rep = meta["load_report"]
    assert enc.state_dict()["patch_embed.proj.weight"].shape[-1] == 16
    assert "patch 14 -> 16 px (resampled)" in rep["adapted"]
    assert "reg_token (4 registers)" in rep["dropped"]
    torch.testing.assert_close(enc.state_dict()["cls_token"], src.state_dict()["cls_token"])
    with pytest.raises(InputError, match="dividing 32"):
        open_external(tmp_path / "reg.pth", "vit_small_patch14_dinov2", 3, 64)


def test_band_count_adaptation(tmp_path):
    src = tiny_vit()
    torch.save(sd(src), tmp_path / "a.pth")
    w = src.state_dict()["patch_embed.proj.weight"]
    enc4, meta = open_external(tmp_path / "a.pth", None, 4, 64)
    w4 = enc4.state_dict()["patch_embed.proj.weight"]
    assert w4.shape == (192, 4, 16, 16)
    torch.testing.assert_close(w4[:, :3], w, rtol=0, atol=0)          # RGB filters copied
    torch.testing.assert_close(w4[:, 3], w.mean(1) / 4)               # extra: mean RGB / C
    assert "patch embedding 3 -> 4 bands" in meta["load_report"]["adapted"]
    enc1, _ = open_external(tmp_path / "a.pth", None, 1, 64)
    torch.testing.assert_close(enc1.state_dict()["patch_embed.proj.weight"][:, 0], w.sum(1))
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():  # a grey image: the 1-band encoder answers like the RGB one
        torch.testing.assert_close(enc1(grey), src(grey.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-4)
    assert adapt_bands(torch.ones(2, 3, 1, 1), 2).shape == (2, 2, 1, 1)


def test_no_qkv_bias_swin_and_rsgeo_run_folders(tmp_path):
    from rsgeo.models.backbones import save_encoder
    from rsgeo.models.external import open_encoder

    src = tiny_vit(qkv_bias=False)
    torch.save(sd(src), tmp_path / "nobias.pth")
    enc, meta = open_external(tmp_path / "nobias.pth", None, 3, 64)
    assert "qkv bias absent, set to 0 (4 blocks)" in meta["load_report"]["adapted"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), src(x))
    swin = build_encoder("swin-tiny-2", 3, 64)
    torch.save(sd(swin), tmp_path / "swin.pth")
    with pytest.raises(InputError, match="pass --backbone NAME"):
        open_external(tmp_path / "swin.pth", None, 3, 64)
    enc, meta = open_external(tmp_path / "swin.pth", "swin-tiny-2", 1, 64)
    assert meta["load_report"]["loaded"] == meta["load_report"]["total"]
    torch.testing.assert_close(enc.state_dict()["layers.1.blocks.0.attn.qkv.weight"],
                               swin.state_dict()["layers.1.blocks.0.attn.qkv.weight"])
    run = tmp_path / "pretrain_run"
    run.mkdir()
    save_encoder(build_encoder("vit-tiny-4", 3, 64), run / "encoder.safetensors",
                 {"backbone": "vit-tiny-4", "in_chans": 3, "img_size": 64})
    enc, meta = open_encoder(run, None, "rgb", 64)  # the run folder: rsgeo's own files
    assert "load_report" not in meta and meta["backbone"] == "vit-tiny-4"
    with pytest.raises(InputError, match="needs 1"):
        open_encoder(run / "encoder.safetensors", None, "dsm", 64)


def test_wrong_architecture_is_a_one_line_error(tmp_path):
    torch.save(sd(build_encoder("vit-tiny-2", 3, 64)), tmp_path / "small.pth")
    with pytest.raises(InputError) as e:
        open_external(tmp_path / "small.pth", "vit-tiny-4", 3, 64)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "small.pth"))
    assert "does not fit backbone vit-tiny-4" in msg and "shape mismatch" in msg
    assert "96" in msg and "192" in msg and "missing (blocks.2." in msg
    torch.save({"weight": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(InputError, match="no ViT patch embedding"):
        open_external(tmp_path / "junk.pth", None, 3, 64)
    odd = tiny_vit(dim=64, depth=3, heads=2)
    torch.save(sd(odd), tmp_path / "odd.pth")
    with pytest.raises(InputError, match="cannot infer a backbone .* embed dim 64, depth 3"):
        open_external(tmp_path / "odd.pth", None, 3, 64)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"not a checkpoint \(not a torch file\)"):
        open_external(tmp_path / "bad.pth", None, 3, 64)


@pytest.fixture(scope="module")
def chips():
    from tests.test_finetune import SynthChips

    return SynthChips(n_scenes=1, size=128)


def test_finetune_rgb_dsm_from_one_external_rgb_encoder(chips, tmp_path):
    from rsgeo.finetune import finetune
    from rsgeo.tasks.bundle import load_task_model

    src = tiny_vit()
    torch.save({"model": sd(src)}, tmp_path / "a.pth")
    s = finetune(chips, "height", tmp_path / "run", encoder=str(tmp_path / "a.pth"),
                 inputs="rgb+dsm", steps=1, batch_size=2, head_features=16, freeze_encoder=True)
    assert s["config"]["in_chans"] == 4 and s["config"]["split"] is None
    assert s["config"]["backbone"] == "vit-tiny-4"
    assert s["encoder_report"]["adapted"] == ["patch embedding 3 -> 4 bands"]
    net, *_ = load_task_model(tmp_path / "run" / "best.ckpt")
    w = net.encoder.encoders[0].state_dict()["patch_embed.proj.weight"]
    torch.testing.assert_close(w[:, :3], src.state_dict()["patch_embed.proj.weight"])


def test_finetune_from_a_timm_backbone_and_uncached_timm_weights(chips, tmp_path, monkeypatch):
    import timm

    from rsgeo.finetune import finetune

    s = finetune(chips, "height", tmp_path / "t", backbone="timm:vit_tiny_patch16_224",
                 steps=2, batch_size=2, head_features=16)
    assert s["config"]["backbone"] == "timm:vit_tiny_patch16_224" and s["step"] == 2
    create = timm.create_model

    def offline(name, pretrained=False, **kw):  # no network in tests: as with an empty cache
        if pretrained:
            raise RuntimeError("cannot reach the hub")
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(InputError, match="local cache"):
        finetune(chips, "height", tmp_path / "u", encoder="timm:vit_tiny_patch16_224", steps=1)


def test_cli_finetune_with_an_external_encoder(tmp_path, cli):
    from rsgeo.cli.app import COMMANDS

    if "prepare" not in COMMANDS:
        pytest.skip("rsgeo prepare not in yet")
    assert cli("synth", "-o", tmp_path / "city", "--size", 128, "--scenes", 2)[0] == 0
    code, _, err = cli("prepare", tmp_path / "city", "-o", tmp_path / "chips", "--size", 64,
                       "--stride", 64)
    assert code == 0, err
    src = tiny_vit(img=96, init_values=1.0)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in dinov2_state(src, 4).items()}},
               tmp_path / "dino.pth")
    code, out, err = cli("finetune", tmp_path / "chips", "--task", "height", "--encoder",
                         tmp_path / "dino.pth", "--steps", 2, "--batch-size", 2,
                         "-o", tmp_path / "run", "--json")
    assert code == 0, err
    rep = json.loads(out)["encoder_report"]
    assert rep["layout"] == "dinov2" and rep["backbone"] == "vit-tiny-4"
    assert "loaded 54/54 tensors" in err and "pos_embed grid 6x6 -> 4x4" in err
    assert "encoder_report:" in (tmp_path / "run" / "config.yaml").read_text()
    code, _, err = cli("finetune", tmp_path / "chips", "--task", "height", "--encoder",
                       tmp_path / "dino.pth", "--backbone", "vit-tiny-2", "-o", tmp_path / "bad")
    assert code == 2 and "does not fit backbone vit-tiny-2" in err
    assert len([l for l in err.splitlines() if l.strip()]) == 1


def refuse_network(monkeypatch) -> list:
    """Every connection attempt is recorded and refused (the list of attempts is returned)."""
    import socket

    tried = []

    def refuse(*args, **kw):
        tried.append(args[:2])
        raise OSError("no network in tests")

    for obj, name in ((socket, "create_connection"), (socket, "getaddrinfo"),
                      (socket.socket, "connect")):
        monkeypatch.setattr(obj, name, refuse)
    return tried


def test_uncached_timm_weights_fail_at_once_offline(cli, tmp_path, monkeypatch):
    """`--encoder timm:NAME` with weights not cached: huggingface_hub retried huggingface.co
    for ~52 s on a machine without internet, then a vague error. Now the lookup runs in
    offline mode (nothing is downloaded at run time): exit 2 at once, one line saying
    where the weights must be; no connection is even tried."""
    import os

    import huggingface_hub.constants as hub
    import timm

    from tests.test_catalogue import _chips

    _chips(tmp_path / "chips")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # surely uncached
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tried = refuse_network(monkeypatch)
    seen, create = [], timm.create_model

    def spy(name, pretrained=False, **kw):
        if pretrained:
            seen.append((os.environ.get("HF_HUB_OFFLINE"), hub.is_offline_mode()))
        return create(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", spy)
    code, _, err = cli("finetune", tmp_path / "chips", "--task", "height", "--encoder",
                       "timm:vit_tiny_patch16_224", "-o", tmp_path / "run", "--steps", 1,
                       "--batch-size", 2)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "timm:vit_tiny_patch16_224: pretrained weights not in the local cache" in err
    assert "--encoder PATH" in err
    assert seen == [("1", True)] and tried == []
    assert not hub.is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ   # restored
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="timm has no pretrained weights"):   # never random
        from rsgeo.models.backbones import timm_pretrained

        timm_pretrained("timm:vit_small_patch16_18x2_224", num_classes=0)


def test_cached_timm_weights_still_load_offline(tmp_path, monkeypatch):
    """Weights in the Hugging Face cache (the layout a download leaves) load offline."""
    import huggingface_hub.constants as hub
    import timm
    from safetensors.torch import save_file

    from rsgeo.models.backbones import timm_pretrained

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    repo_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(src.state_dict(), repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    tried = refuse_network(monkeypatch)
    enc = timm_pretrained("timm:vit_tiny_patch16_224", num_classes=0, img_size=64,
                          dynamic_img_size=True)
    key = "blocks.0.attn.qkv.weight"
    torch.testing.assert_close(enc.state_dict()[key], src.state_dict()[key])
    assert tried == []
