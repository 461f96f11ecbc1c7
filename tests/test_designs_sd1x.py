"""Every design on an SD1.x that is not TinySD (the 'mini' stand-in: four levels, two layers a block,
13 residuals, VAE x8 at 128 px, ε-prediction): nothing may assume TinySD's sizes."""
import pytest
import torch
import torch.nn.functional as F

import zc
from zc import designs
from zc import train as zt
from zc.sample import sample
from zc.sd import build_sd15_standin
from zc.world.pairs import PairedData


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return build_sd15_standin(tmp_path_factory.mktemp("sd") / "mini", scale="mini", dtype=torch.float32)


@pytest.mark.parametrize("name", [n for n, d in designs.DESIGNS.items() if d.backbone == "unet"
                                  and n not in ("T2I-Adapter", "UNet fine-tuned, concat")])
def test_each_design_trains_a_step_and_samples_on_an_sd_that_is_not_tinysd(mini, name):
    pipe = zc.load_sd(mini)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # 128
    data = PairedData.generate(2, size=size, seed=1)
    module, model = zt.build(zt.TrainConfig(architecture=designs.get(name).architecture), pipe, 3)
    z = torch.randn(2, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    F.mse_loss(model(z, torch.tensor([10, 900]), text, data.conditions()), z).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    x = sample(pipe, prompts=data.prompts, num_inference_steps=2, **designs.sample_kwargs(module.eval(),
                                                                                           data.conditions()))
    assert x.shape == (2, 3, size, size) and torch.isfinite(x).all()


def test_a_t2i_adapter_that_no_diffusers_layout_fits_is_refused_by_name(mini):
    """The mini UNet starts with a plain DownBlock2D and has four levels: neither SD 1.5's adapter layout
    nor SDXL's fits its block outputs, and zc says so rather than adding features of the wrong size."""
    with pytest.raises(ValueError, match="neither of diffusers' T2I-Adapter layouts fits"):
        zt.build(zt.TrainConfig(architecture="t2i-adapter"), zc.load_sd(mini), 3)


def test_the_canvas_offers_only_the_controlnets_that_fit_this_sd(mini):
    """Chapter 8's canvas on an SD whose UNet no shipped (TinySD) ControlNet fits: by default it says so
    instead of loading one that fails at the first drawing; given one that fits, it offers that one."""
    from zc.study.widgets import DrawCondition

    pipe = zc.load_sd(mini)
    with pytest.raises(ValueError, match="no ControlNet for this SD"):
        DrawCondition(pipe)
    canvas = DrawCondition(pipe, {"outline": zc.ControlNet.for_pipeline(pipe)})
    assert list(canvas.controlnets) == ["outline"] and canvas.kind.value == "outline"
    assert len(DrawCondition(zc.load_sd()).controlnets) >= 2  # on TinySD the shipped zoo fits
