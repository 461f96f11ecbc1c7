"""T2I-Adapter (zc/controls/t2i_adapter.py, diffusers' T2IAdapter): sized for an SD, sampled as diffusers'
StableDiffusionAdapterPipeline samples it (same images), run once per generation, trained by zc.train."""
import pytest
import torch
from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

import zc
from zc.controls import t2i_adapter
from zc.sample import sample
from zc.world.pairs import PairedData


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def adapter_for(pipe, seed=0):
    return t2i_adapter.for_pipeline(pipe, num_res_blocks=1, seed=seed).eval()


def test_sampler_matches_diffusers_adapter_pipeline(pipe):
    adapter = adapter_for(pipe)
    data = PairedData.generate(2, seed=1, split="test")
    cond = data.conditions()
    kw = dict(num_inference_steps=6, guidance_scale=5.0)
    ours = sample(pipe, [(adapter, cond, 0.7)], data.prompts, generator=torch.Generator().manual_seed(0), **kw)
    ref = StableDiffusionAdapterPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                         unet=pipe.unet, adapter=adapter, scheduler=pipe.scheduler,
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    theirs = ref(data.prompts, image=cond, adapter_conditioning_scale=0.7, output_type="np",
                 generator=torch.Generator().manual_seed(0), **kw).images  # (B, H, W, 3): this pipeline's "pt" is too
    theirs = torch.from_numpy(theirs).permute(0, 3, 1, 2)
    assert (ours - theirs).abs().max() < 1e-5
    plain = sample(pipe, None, data.prompts, None, generator=torch.Generator().manual_seed(0), **kw)
    assert (ours - plain).abs().max() > 0.05  # the adapter changes the picture


def test_the_adapter_runs_once_per_generation_not_once_per_step(pipe):
    adapter = adapter_for(pipe)
    calls = []
    hook = adapter.register_forward_hook(lambda *a: calls.append(1))
    data = PairedData.generate(2, seed=2, split="test")
    sample(pipe, [(adapter, data.conditions())], data.prompts, num_inference_steps=5)
    hook.remove()
    assert len(calls) == 1  # a ControlNet runs 5 times here (once per step)


def test_an_untrained_adapter_already_changes_the_unet_unlike_a_zero_initialised_controlnet(pipe):
    """No zero init: at step 0 the adapter's features move the UNet's prediction by a measurable amount."""
    adapter = adapter_for(pipe)
    data = PairedData.generate(4, seed=3, split="test")
    z = torch.randn(4, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    with torch.no_grad():
        plain = pipe.unet(z, 500, encoder_hidden_states=text).sample
        adapted = t2i_adapter.AdapterConditioned(pipe.unet, adapter)(z, 500, text, data.conditions())
        controlled = zc.ControlledUNet(pipe.unet, zc.ControlNet.for_pipeline(pipe))(z, 500, text, data.conditions())
    change = ((adapted - plain).norm() / plain.norm()).item()
    assert change > 0.05, change  # relative change of the prediction at init
    assert torch.equal(controlled, plain)  # the ControlNet's zero convs: exactly nothing


def test_an_adapter_for_another_unet_is_refused(pipe):
    sd15_sized = T2IAdapter(channels=[320, 640, 1280, 1280], num_res_blocks=1, downscale_factor=8)
    with pytest.raises(ValueError, match="for_pipeline"):
        sample(pipe, [(sd15_sized, torch.zeros(1, 3, 64, 64))], ["a"], num_inference_steps=2)
    with pytest.raises(ValueError, match="pair"):
        sample(pipe, [(adapter_for(pipe),)], ["a"], num_inference_steps=2)
    with pytest.raises(ValueError, match="T2I-Adapter has none"):  # refused by name, not dropped
        sample(pipe, [(adapter_for(pipe), torch.zeros(1, 3, 64, 64))], ["a"], num_inference_steps=2,
               conditioning_scale=0.5)


def test_for_sd15_it_is_the_released_adapters_layout():
    """SD 1.5's UNet (three cross-attention blocks, then a plain one without downsampler): diffusers'
    full_adapter, channels 320/640/1280/1280, condition unshuffled by 8, as TencentARC's SD 1.5 adapters."""
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():  # the config's defaults filled in, no weights
        unet = UNet2DConditionModel.from_config(zc.sd.SD15_UNET)
    sd15 = SimpleNamespace(unet=unet, vae_scale_factor=8)
    a = t2i_adapter.for_pipeline(sd15, num_res_blocks=1)
    assert (a.config.adapter_type, list(a.config.channels), a.config.downscale_factor) == \
        ("full_adapter", [320, 640, 1280, 1280], 8)
    assert t2i_adapter.intrablock_shapes(sd15.unet, 64) == [(320, 64), (640, 32), (1280, 16), (1280, 8)]
