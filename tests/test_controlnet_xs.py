"""The ControlNet-XS-style control (zc/controls/controlnet_xs.py): exactly the SD at init, information both
ways at every block, its size, sampling and training through zc."""
import pytest
import torch

import zc
from zc.controlled_unet import HookedConditioned
from zc.controls.controlnet_xs import ControlNetXS
from zc.sample import sample
from zc.world.pairs import PairedData


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def _inputs(pipe, n=2, seed=1):
    data = PairedData.generate(n, seed=seed, split="test")
    z = torch.randn(n, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(seed))
    return data, z, pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]


def _wake(convs, seed):  # zero convolutions as after some training
    g = torch.Generator().manual_seed(seed)
    for m in convs:
        m.weight.data = torch.randn(m.weight.shape, generator=g) * 0.05


def test_information_flows_both_ways_at_every_block(pipe):
    xs = ControlNetXS.for_pipeline(pipe).eval()
    data, z, text = _inputs(pipe)
    calls = []
    hooks = [b.register_forward_hook(lambda m, a, o: calls.append(type(m).__name__)) for b in [*xs.blocks, xs.mid_block]]
    model = HookedConditioned(pipe.unet, xs)
    with torch.no_grad():
        alone = pipe.unet(z, 300, encoder_hidden_states=text).sample
        assert torch.equal(model(z, 300, text, data.conditions()), alone)  # zero convs: exactly the SD
        _wake([*xs.ctrl_to_base, *xs.base_to_ctrl, xs.controlnet_cond_embedding.conv_out], 0)
        both = model(z, 300, text, data.conditions())
        _wake(xs.base_to_ctrl, 1)  # another base -> control path: the output moves, so the control reads the base
        other_read = model(z, 300, text, data.conditions())
        for m in xs.ctrl_to_base:
            m.weight.data.zero_()  # no control -> base path: back to the SD alone
        silent = model(z, 300, text, data.conditions())
    for h in hooks:
        h.remove()
    assert calls[: len(xs.blocks) + 1] == [type(b).__name__ for b in xs.blocks] + ["UNetMidBlock2DCrossAttn"]
    assert (both - alone).abs().max() > 1e-4 and (other_read - both).abs().max() > 1e-5
    assert torch.equal(silent, alone)


def test_sampling_at_init_is_the_sd_alone_and_inputs_are_checked(pipe):
    xs = ControlNetXS.for_pipeline(pipe).eval()
    data = PairedData.generate(2, seed=2, split="test")
    kw = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    plain = sample(pipe, None, data.prompts, None, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    assert torch.equal(sample(pipe, [(xs, data.conditions())], data.prompts, **kw), plain)
    with pytest.raises(ValueError, match="pair"):
        sample(pipe, [(xs, None)], data.prompts, num_inference_steps=2)


def test_it_is_a_few_percent_of_the_unet_at_sd15_size():
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(zc.sd.SD15_UNET)
        xs = ControlNetXS.for_pipeline(SimpleNamespace(unet=unet, vae_scale_factor=8))
    n, total = sum(p.numel() for p in xs.parameters()), sum(p.numel() for p in unet.parameters())
    assert n < 0.05 * total, n / total  # the paper: 1.6%; a ControlNet: 42%
    assert [type(b).__name__ for b in xs.blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]


def test_the_controls_skips_reach_the_decoder_one_per_resnet(pipe):
    xs = ControlNetXS.for_pipeline(pipe).eval()
    resnets = [r for up in pipe.unet.up_blocks for r in up.resnets]
    assert len(xs.ctrl_to_decoder) == len(resnets)
    data, z, text = _inputs(pipe)
    model = HookedConditioned(pipe.unet, xs)
    with torch.no_grad():
        alone = pipe.unet(z, 300, encoder_hidden_states=text).sample
        _wake([xs.controlnet_cond_embedding.conv_out, *xs.ctrl_to_decoder], 2)  # only the decoder path open
        moved = model(z, 300, text, data.conditions())
    assert (moved - alone).abs().max() > 1e-4  # the control reaches the base through its decoder alone
    for r in resnets:  # and the hooks are gone after the call
        assert not r._forward_pre_hooks


def test_a_decoder_it_was_not_built_for_is_refused(pipe):
    from types import SimpleNamespace

    xs = ControlNetXS.for_pipeline(pipe)
    other = SimpleNamespace(**{**pipe.unet.config, "layers_per_block": 2})
    wrong = ControlNetXS(tuple(other.down_block_types), tuple(other.block_out_channels), 2,
                         downsamples=(True, True, False))
    assert len(wrong.ctrl_to_decoder) != len(xs.ctrl_to_decoder)
    data, z, text = _inputs(pipe)
    with pytest.raises(ValueError, match="decoder resnets"):
        HookedConditioned(pipe.unet, wrong)(z, 300, text, data.conditions())
    assert not any(b._forward_pre_hooks for b in pipe.unet.down_blocks)  # nothing left attached


def test_its_blocks_are_the_papers_share_of_the_unet_at_sd15_size():
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(zc.sd.SD15_UNET)
        xs = ControlNetXS.for_pipeline(SimpleNamespace(unet=unet, vae_scale_factor=8))
    hint = sum(p.numel() for p in xs.controlnet_cond_embedding.parameters())
    blocks = sum(p.numel() for p in xs.parameters()) - hint
    total = sum(p.numel() for p in unet.parameters())
    assert 0.01 < blocks / total < 0.025, blocks / total  # the paper's smallest: 14M of 860M, 1.6%
