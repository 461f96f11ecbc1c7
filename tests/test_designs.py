"""The registry of designs (zc/designs.py): each one's "starts as the SD alone" is measured, not
assumed, and one evaluation path (designs.sample_kwargs) samples every kind of trained module."""
import pytest
import torch

import zc
from zc import designs
from zc import train as zt
from zc.fill50k import Fill50k
from zc.sample import sample


@pytest.mark.parametrize("name", list(designs.DESIGNS))
def test_each_design_starts_as_the_sd_alone_exactly_when_the_registry_says_so(name):
    d = designs.get(name)
    pipe = zc.load_sd()  # fresh: concat widens the UNet's input
    data = Fill50k.generate(2, seed=5, split="test")
    z = torch.randn(2, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    with torch.no_grad():
        alone = pipe.unet(z, 400, encoder_hidden_states=text).sample
        module, model = zt.build(zt.TrainConfig(architecture=d.architecture), pipe)
        controlled = model(z, 400, text, data.conditions())
    change = ((controlled - alone).norm() / alone.norm()).item()
    assert (change == 0.0) == d.zero_init, f"{name}: relative change at init {change:.3g}"
    assert designs.of(module).architecture == d.architecture or d.sample_arg == "controlnet"


def test_one_call_samples_any_design_and_unknown_names_are_refused():
    pipe = zc.load_sd()
    data = Fill50k.generate(2, seed=6, split="test")
    for name in ("T2I-Adapter", "ControlNeXt-style", "IP-Adapter"):
        module, _ = zt.build(zt.TrainConfig(architecture=designs.get(name).architecture), pipe)
        kw = designs.sample_kwargs(module.eval(), data.conditions())
        assert kw[designs.get(name).sample_arg] is module and kw["controlnet"] is None
        x = sample(pipe, prompts=data.prompts, num_inference_steps=2, **kw)
        assert x.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown design 'XS'.*T2I-Adapter"):
        designs.get("XS")
    assert "once per image" in designs.table()
