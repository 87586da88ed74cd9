"""Source style transfer (FDA, histogram matching) and its --adapt-to hook in finetune."""

import json

import pytest
import torch

from rsgeo.errors import InputError
from rsgeo.train.style import StyleTransfer, fda, histogram_match, low_band


def _imgs(seed, B=3, C=3, H=32, W=24, scale=255.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g) * scale


def test_fda_beta_zero_is_identity():
    src, tgt = _imgs(0), _imgs(1)
    assert torch.equal(fda(src, tgt, 0.0), src)
    assert not low_band(32, 24, 0.0).any()
    # 0 < beta < 1/min(H, W): only DC (the band means) is swapped
    out = fda(src, tgt, 0.01)
    torch.testing.assert_close(out.mean((2, 3)), tgt.mean((2, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out - out.mean((2, 3), keepdim=True),
                               src - src.mean((2, 3), keepdim=True), rtol=1e-5, atol=1e-3)


def test_fda_swaps_the_low_band_amplitude_only():
    src, tgt = _imgs(2), _imgs(3)
    beta = torch.tensor([0.05, 0.1, 0.2])                 # b = 1, 2, 4 bins (min side 24)
    out = fda(src, tgt, beta)
    assert out.dtype == torch.float32 and out.shape == src.shape
    fo, fs, ft = (torch.fft.fft2(x.double()) for x in (out, src, tgt))
    band = low_band(32, 24, beta)[:, None].expand_as(fo)
    assert band[0, 0].sum() == 9 and band[1, 0].sum() == 25 and band[2, 0].sum() == 81
    torch.testing.assert_close(fo.abs()[band], ft.abs()[band], rtol=1e-4, atol=0.5)
    torch.testing.assert_close(fo.abs()[~band], fs.abs()[~band], rtol=1e-4, atol=0.5)
    # phase kept (where the amplitude is not ~0)
    keep = band & (fs.abs() > 1.0)
    dphi = torch.remainder(fo.angle()[keep] - fs.angle()[keep] + torch.pi, 2 * torch.pi) - torch.pi
    assert dphi.abs().max() < 1e-3
    with pytest.raises(ValueError, match="one size"):
        fda(src, tgt[..., :8], 0.01)


def test_histogram_match_gives_target_quantiles_and_is_monotone():
    src, tgt = _imgs(4, scale=1.0) * 3 - 1, _imgs(5, scale=1.0) ** 2  # normalised-like floats
    out = histogram_match(src, tgt)
    B, C = src.shape[:2]
    torch.testing.assert_close(out.reshape(B, C, -1).sort(-1).values,
                               tgt.reshape(B, C, -1).sort(-1).values)
    s, o = src.reshape(B, C, -1), out.reshape(B, C, -1)
    order = s.argsort(-1)
    assert (o.gather(-1, order).diff(dim=-1) >= 0).all()   # monotone in the source value
    # another size and uint8 data with ties: monotone, equal values stay equal, in range
    u8 = (_imgs(6, B=2, H=16, W=16) // 16).to(torch.uint8)
    ref = _imgs(7, B=2, H=20, W=12).to(torch.uint8)
    m = histogram_match(u8, ref)
    for b in range(2):
        for c in range(3):
            x, y = u8[b, c].flatten(), m[b, c].flatten()
            for v in torch.unique(x):
                assert torch.unique(y[x == v]).numel() == 1
            assert (y[x.argsort()].diff() >= 0).all()
            assert y.min() >= ref[b, c].min() and y.max() <= ref[b, c].max()
    # blend 0 is the source, blend per sample
    torch.testing.assert_close(histogram_match(src, tgt, 0.0), src)
    half = histogram_match(src, tgt, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(half[1], 0.5 * (src[1] + out[1]))


def test_style_transfer_draws_are_seeded_and_per_sample():
    src = _imgs(8, B=8).to(torch.uint8)
    refs = _imgs(9, B=4).to(torch.uint8)
    seeds = torch.arange(8, dtype=torch.int64) * 7919
    st = StyleTransfer("both", p=0.8, beta=0.05)
    a = st(src, refs, seeds)
    assert a.dtype == torch.uint8 and a.shape == src.shape
    assert torch.equal(a, st(src, refs, seeds))            # same seeds, same output
    assert not torch.equal(a, st(src, refs, seeds + 1))
    assert torch.equal(st(src[2:5], refs, seeds[2:5]), a[2:5])   # per sample, not per batch
    assert torch.equal(StyleTransfer("none")(src, refs, seeds), src)
    assert torch.equal(StyleTransfer("fda", p=0.0)(src, refs, seeds), src)
    assert not torch.equal(StyleTransfer("hm", p=1.0)(src, refs, seeds), src)
    changed = (StyleTransfer("fda", p=0.5)(src, refs, seeds) != src).flatten(1).any(1)
    assert 0 < changed.sum() < 8                           # p acts per sample
    # a reference of another size works (resized for FDA)
    assert StyleTransfer("both", p=1.0)(src.float(), refs[..., :16, :16].float(), seeds).shape \
        == src.shape
    with pytest.raises(ValueError, match="style must be"):
        StyleTransfer("cyclegan")


@pytest.mark.cuda
def test_style_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    src = _imgs(10, B=4).to(torch.uint8)
    refs = _imgs(11, B=4).to(torch.uint8)
    seeds = torch.arange(4, dtype=torch.int64)
    st = StyleTransfer("both", p=1.0, beta=0.1)
    out = st(src.cuda(), refs.cuda(), seeds.cuda())
    assert out.is_cuda and out.dtype == torch.uint8
    assert (out.cpu().int() - st(src, refs, seeds).int()).abs().max() <= 1
    torch.testing.assert_close(histogram_match(src.cuda(), refs.cuda()).cpu(),
                               histogram_match(src, refs))


def test_adapt_view_restyles_the_source_before_normalisation():
    from rsgeo.finetune.adapt import AdaptView, split_style

    rest, st = split_style({"tau": 0.9, "style": "hm", "style_p": 1.0, "hm_blend": [1, 1]})
    assert rest == {"tau": 0.9} and st.style == "hm" and st.p == 1.0
    assert split_style({})[1].style == "both"               # RS3DAda's default
    assert split_style({"style": "none"})[1] is None
    with pytest.raises(InputError, match="style"):
        split_style({"style": "cyclegan"})
    with pytest.raises(InputError, match="beta"):
        split_style({"fda_beta": 0.7})

    class Src(torch.utils.data.Dataset):
        def on_device(self, batch):
            batch["x"] = batch.pop("in_rgb").float()
            return batch

    view = AdaptView.__new__(AdaptView)
    view.source, view.style = Src(), st
    view.norm = lambda x, m, sid: x.float()
    src = _imgs(12, B=4, scale=100.0).to(torch.uint8)        # dark source
    tgt = (_imgs(13, B=4, scale=100.0) + 150).to(torch.uint8)  # bright target
    tgt[:, 0] -= torch.arange(4, dtype=torch.uint8).view(4, 1, 1) * 30  # tell chips apart
    batch = {"in_rgb": src.clone(), "x_target": tgt.clone(),
             "x_target_source_id": torch.full((4,), -1), "seed": torch.arange(4)}
    out = view.on_device(batch)
    assert torch.equal(out["x_target"], tgt.float())        # the target is left alone
    mo, mt = out["x"].mean((2, 3)), tgt.float().mean((2, 3))
    for b in range(4):                # each source chip now has one target chip's histogram
        assert (mo[b] - mt).abs().max(1).values.min() < 2.0


@pytest.mark.slow
def test_finetune_adapt_to_with_style(tmp_path, cli):
    """Two training steps through the CLI (--style hm) and the library (fda, none)."""
    from rsgeo.cli.app import COMMANDS
    from rsgeo.finetune import finetune

    if "prepare" not in COMMANDS:
        pytest.skip("rsgeo prepare not in yet")
    assert cli("synth", "-o", tmp_path / "city", "--size", 128, "--scenes", 1)[0] == 0
    code, _, err = cli("prepare", tmp_path / "city", "-o", tmp_path / "chips", "--size", 64,
                       "--stride", 64)
    assert code == 0, err
    code, out, err = cli("finetune", tmp_path / "chips", "--task", "height", "--backbone",
                         "vit-tiny-2", "--steps", 2, "--batch-size", 2, "--adapt-to",
                         tmp_path / "chips", "--style", "hm", "-o", tmp_path / "a", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 2
    assert "style: hm" in (tmp_path / "a" / "config.yaml").read_text()
    s = finetune(tmp_path / "chips", "height", tmp_path / "b", backbone="vit-tiny-2", steps=2,
                 batch_size=2, head_features=16, adapt_to=tmp_path / "chips",
                 adapt={"style": "fda", "fda_beta": 0.09, "style_p": 1.0})
    assert s["step"] == 2
    code, _, err = cli("finetune", tmp_path / "chips", "--task", "height", "--backbone",
                       "vit-tiny-2", "--steps", 1, "--adapt-to", tmp_path / "chips",
                       "--style", "cyclegan", "-o", tmp_path / "c")
    assert code == 2 and "style" in err
