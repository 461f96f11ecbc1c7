"""The ControlNeXt-style branch (zc/controls/controlnext.py): cross normalisation, one injection point, its size
against a ControlNet's, sampling and training through zc."""
import pytest
import torch

import zc
from zc.controlled_unet import HookedConditioned
from zc.controls.controlnext import ControlNeXt, cross_normalise
from zc.sample import sample
from zc.world.pairs import PairedData


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def test_cross_normalisation_gives_the_control_the_main_features_statistics():
    g = torch.Generator().manual_seed(0)
    control, main = torch.randn(3, 8, 4, 4, generator=g) * 5 + 2, torch.randn(3, 8, 4, 4, generator=g) * 0.3 - 1
    out = cross_normalise(control, main)
    for o, m in zip(out, main):
        assert abs(o.mean() - m.mean()) < 1e-5 and abs(o.std() - m.std()) < 1e-4
    # the pattern of the control is kept: a positive affine map of each sample
    assert torch.corrcoef(torch.stack([out[0].flatten(), control[0].flatten()]))[0, 1] > 0.9999


def test_at_init_the_branch_moves_the_unet_and_enters_at_one_point(pipe):
    branch = ControlNeXt.for_pipeline(pipe).eval()
    data = PairedData.generate(4, seed=3, split="test")
    z = torch.randn(4, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    calls = []
    hook = branch.register_forward_hook(lambda m, a, o: calls.append(o.shape))
    with torch.no_grad():
        plain = pipe.unet(z, 500, encoder_hidden_states=text).sample
        moved = HookedConditioned(pipe.unet, branch)(z, 500, text, data.conditions())
    hook.remove()
    # one call per UNet call, with the shape of the first down block's output (TinySD: 32 x 8 x 8)
    assert calls == [torch.Size([4, pipe.unet.config.block_out_channels[0], 8, 8])]
    change = ((moved - plain).norm() / plain.norm()).item()
    assert change > 0.05, change  # no zero init: the control acts from step 0 (a ControlNet: exactly 0)
    with torch.no_grad():  # and leaves nothing behind once detached
        assert torch.equal(pipe.unet(z, 500, encoder_hidden_states=text).sample, plain)


def test_it_is_a_small_fraction_of_a_controlnet_at_sd15_size():
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(zc.sd.SD15_UNET)
    branch = ControlNeXt.for_pipeline(SimpleNamespace(unet=unet, vae_scale_factor=8))
    n = sum(p.numel() for p in branch.parameters())
    assert n < 0.1 * 361_279_120, n  # ControlNeXt's "up to 90% fewer" against SD 1.5's ControlNet
    assert (branch.config.channels, branch.config.temb_channels, branch.config.downsample) == (320, 1280, True)


def test_sampling_runs_the_branch_every_step_and_checks_its_input(pipe):
    branch = ControlNeXt.for_pipeline(pipe).eval()
    data = PairedData.generate(2, seed=4, split="test")
    calls = []
    hook = branch.register_forward_hook(lambda m, a, o: calls.append(o.shape[0]))
    x = sample(pipe, [(branch, data.conditions())], data.prompts, num_inference_steps=3,
               generator=torch.Generator().manual_seed(0))
    hook.remove()
    assert calls == [4, 4, 4]  # every step, both CFG branches
    plain = sample(pipe, None, data.prompts, None, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert (x - plain).abs().max() > 0.05
    with pytest.raises(ValueError, match=r"condition images of ControlNeXt-style must be \(2, 3, 64, 64\)"):
        sample(pipe, [(branch, torch.zeros(2, 3, 32, 32))], data.prompts, num_inference_steps=2)


def test_the_unet_subset_trains_as_increments_and_the_unet_stays_as_loaded(pipe, tmp_path):
    branch = ControlNeXt.for_pipeline(pipe)
    projections = [n for n, m in pipe.unet.named_modules() if n.endswith("to_out.0")]
    assert [t[0] for t in branch.config.tuned] == projections and projections
    assert all(p.abs().max() == 0 for p in branch.increments.parameters())  # ΔW = 0: the loaded UNet at first
    model = HookedConditioned(pipe.unet, branch)
    groups = model.param_groups(2e-4)
    assert [g["lr"] for g in groups] == [2e-4, 2e-5]  # the paper's script: the branch at 10x the UNet's
    assert set(groups[1]["params"]) == set(branch.increments.parameters())
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    data = PairedData.generate(2, seed=5, split="test")
    z = torch.randn(2, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0].detach()
    opt = torch.optim.AdamW(groups)
    for _ in range(2):
        opt.zero_grad()
        model(z, 500, text, data.conditions()).square().mean().backward()
        opt.step()
    assert all(p.abs().max() > 0 for p in branch.increments.parameters())  # every projection moved
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in before.items())  # the UNet's own weights: not
    with torch.no_grad():
        tuned = model(z, 500, text, data.conditions())
        branch.save_pretrained(tmp_path)
        again = HookedConditioned(pipe.unet, ControlNeXt.from_pretrained(tmp_path))(z, 500, text, data.conditions())
        for p in branch.increments.parameters():
            p.zero_()
        untuned = model(z, 500, text, data.conditions())
    assert torch.equal(again, tuned) and (tuned - untuned).abs().max() > 0  # saved with it; and they act
