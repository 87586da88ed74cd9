"""A pretraining method declared and registered here, in the test, reaches the whole CLI.

The toy method (add noise, reconstruct the clean pixels from the encoder's feature map)
is one class plus one ``register(Method(...))``; no rsgeo file names it. It must show up
in ``rsgeo pretrain --help`` with its option, train through ``rsgeo pretrain``, get its
learning rate from its own base lr, and vanish again when unregistered.
"""

import json
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from rsgeo.cli.app import app
from rsgeo.methods import Method, names, option, register, single_encoder, unregister
from rsgeo.methods.base import PretrainMethod
from rsgeo.methods.decoders import PixelShuffleDecoder
from rsgeo.methods.tokens import encode_masked
from rsgeo.models.backbones import encoder_stride, load_encoder, out_channels
from rsgeo.train.logging import read_metrics
from test_pretrain_cli import write_chips

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}   # rich help on one line per option


class Denoise(PretrainMethod):
    """Add Gaussian noise, reconstruct the clean image (L1) from the last feature map."""

    name = "toydenoise"

    def __init__(self, encoder, in_chans: int, modality: str = "rgb", *, noise: float):
        super().__init__()
        self.encoder, self.modalities, self.noise = encoder, (modality,), noise
        self.decoder = PixelShuffleDecoder(out_channels(encoder)[-1], encoder_stride(encoder),
                                           in_chans)

    def run(self, batch: dict):
        x = batch[self.modalities[0]]
        noisy = x + self.noise * torch.randn_like(x)
        return x, noisy, self.decoder(encode_masked(self.encoder, noisy, None, None))

    def forward(self, batch: dict):
        x, _, rec = self.run(batch)
        return (rec - x).abs().mean(), {"noise": torch.tensor(self.noise)}

    def preview(self, batch: dict) -> dict:
        x, noisy, rec = self.run({k: v[:1] for k, v in batch.items() if torch.is_tensor(v)})
        return {self.modalities[0]: {"input": x[0], "masked": noisy[0], "reconstruction": rec[0]}}


@dataclass
class DenoiseOptions:
    noise: float = option(0.3, "Std of the noise added to the input.", min=0.0)


TOY = Method("toydenoise", "add noise, rebuild the clean pixels, L1", DenoiseOptions, blr=2e-4,
             build=single_encoder(Denoise))


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister(TOY.name)


def help_text() -> str:
    result = CliRunner().invoke(app, ["pretrain", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def test_registered_method_is_in_help_and_gone_after(toy):
    text = help_text()
    assert "toydenoise" in text and "add noise, rebuild the clean pixels" in text
    line = next(ln for ln in text.splitlines() if "--noise" in ln)
    assert "toydenoise: Std of the noise added to the input (default 0.3)." in line
    assert "--mask-ratio" in text                       # the built-in methods are still there
    unregister(toy.name)
    text = help_text()
    assert "toydenoise" not in text and "--noise" not in text
    assert "toydenoise" not in names()


def test_registered_method_trains_through_the_cli(toy, tmp_path):
    chips = write_chips(tmp_path / "chips")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "pretrain", str(chips), "--method", "toydenoise", "--backbone", "vit-tiny-2",
        "-o", str(run), "--steps", "2", "--batch-size", "4", "--noise", "0.5",
        "--log-every", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] == 2 and summary["lr"] == pytest.approx(2e-4 * (4 / 256) ** 0.5)
    assert summary["lr_rule"] == ("base 0.0002 x sqrt(4/256) (square-root rule below 256)")
    assert summary["config"]["method"] == "toydenoise" and summary["config"]["noise"] == 0.5
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["noise"] == pytest.approx(0.5) for r in records)
    _, meta = load_encoder(summary["encoders"]["encoder"])
    assert meta["method"] == "toydenoise" and meta["method_options"] == {"noise": 0.5}


def test_registered_options_are_checked(toy, cli, tmp_path):
    chips = write_chips(tmp_path / "chips")
    base = ["pretrain", chips, "--backbone", "vit-tiny-2", "--steps", "1", "--batch-size", "4"]
    code, _, err = cli(*base, "--method", "toydenoise", "--noise", "-1", "-o", tmp_path / "a")
    assert code == 2 and "--noise" in err                           # below its minimum
    code, _, err = cli(*base, "--method", "mae", "--noise", "0.5", "-o", tmp_path / "b")
    assert code == 2 and "--method mae does not take noise" in err
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: toydenoise\nnoise: lots\n")
    code, _, err = cli(*base, "--config", cfg, "-o", tmp_path / "c")
    assert code == 2 and "--noise 'lots': not a float" in err


def test_register_refuses_clashes(toy):
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)

    @dataclass
    class Clash:
        noise: int = option(1, "An int where toydenoise has a float.")

    with pytest.raises(ValueError, match="noise"):
        register(Method("clash", "x", Clash, blr=1e-4, build=single_encoder(Denoise)))
    assert "clash" not in names()
