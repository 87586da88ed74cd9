import pytest
import torch

from rsgeo.models.heads import ChangeHead, DPTHead, LinearHead, UperNetHead
from rsgeo.tasks.bundle import build_task_model


def feats(channels, strides, h, w, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h // s, w // s, generator=g) for c, s in zip(channels, strides)]


VIT = ([96] * 4, [16] * 4)            # a ViT: 4 blocks, all at stride 16
SWIN = ([32, 64, 128, 256], [4, 8, 16, 32])


@pytest.mark.parametrize("channels,strides", [VIT, SWIN])
def test_dpt_height_is_full_resolution_and_non_negative(channels, strides):
    head = DPTHead(channels, strides, features=16)
    with torch.no_grad():
        head.out[-1].bias.fill_(-100.0)         # the last conv alone would be very negative
        y = head(feats(channels, strides, 64, 96))
    assert y.shape == (2, 1, 64, 96)
    assert (y >= 0).all() and (y == 0).all()
    seg = DPTHead(channels, strides, features=16, out_channels=5, relu_out=False)
    with torch.no_grad():
        seg.out[-1].bias.fill_(-100.0)
        z = seg(feats(channels, strides, 64, 96))
    assert z.shape == (2, 5, 64, 96) and (z < 0).all()   # logits are not clamped


@pytest.mark.parametrize("channels,strides", [VIT, SWIN])
def test_upernet_logits_and_small_maps(channels, strides):
    head = UperNetHead(channels, strides, num_classes=4, features=16)
    assert head(feats(channels, strides, 64, 96)).shape == (2, 4, 64, 96)
    # a 32-px input gives a 1x1 stride-32 map, smaller than every pooling window
    assert head(feats(channels, strides, 32, 32)).shape == (2, 4, 32, 32)


def test_upernet_pooling_windows_do_not_depend_on_the_tile_size():
    """A window-average away from the tile border is the same for a small and a big tile."""
    from rsgeo.models.heads.upernet import pool

    x = torch.randn(1, 3, 12, 12)
    small = pool(x[..., :6, :6], 3)
    big = pool(x, 3)
    torch.testing.assert_close(small, big[..., :2, :2])


def test_change_head_sees_the_difference():
    head = ChangeHead(*VIT, features=16)
    a = feats(*VIT, 64, 64, seed=1)
    b = feats(*VIT, 64, 64, seed=2)
    y = head(a, b)
    assert y.shape == (2, 1, 64, 64)
    (y.sum()).backward()
    assert all(p.grad is not None for p in head.fuse.parameters())
    assert not torch.allclose(head(a, b), head(a, a))     # a change moves the logits
    assert not torch.allclose(head(a, b), head(b, a))     # direction-aware (new vs demolished)


def test_linear_head_pools_then_classifies():
    head = LinearHead(96, 7)
    x = torch.randn(3, 96, 4, 5)
    y = head(x)
    assert y.shape == (3, 7)
    perm = x.flatten(2)[..., torch.randperm(20)].view_as(x)      # pooling ignores layout
    torch.testing.assert_close(head(perm), y)


@pytest.mark.parametrize("task,shape", [("height", (2, 1, 64, 64)),
                                        ("segmentation", (2, 5, 64, 64)),
                                        ("classification", (2, 5)),
                                        ("change", (2, 1, 64, 64))])
def test_task_models_from_config(task, shape):
    cfg = {"task": task, "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
           "head_features": 16, "num_classes": 5}
    net = build_task_model(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net(x, x.flip(-1)) if task == "change" else net(x)
    assert y.shape == shape


def test_height_model_with_land_cover_auxiliary_head():
    cfg = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
           "head_features": 16, "aux_classes": 9}
    net = build_task_model(cfg).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        h, lc = net.forward_all(x)
        torch.testing.assert_close(net(x), h)      # forward (export, predict) = heights only
    assert h.shape == (1, 1, 64, 96) and lc.shape == (1, 9, 64, 96) and (h >= 0).all()


def test_dual_encoder_concatenates_levels():
    cfg = {"task": "segmentation", "backbone": "vit-tiny-2", "in_chans": 4, "img_size": 64,
           "head_features": 16, "num_classes": 3, "split": 3}
    net = build_task_model(cfg)
    assert [e.patch_embed.proj.in_channels for e in net.encoder.encoders] == [3, 1]
    assert net.encoder.channels == [192] * 4
    assert net(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)
