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


ALONGSIDE = [n for n, d in designs.DESIGNS.items() if d.sample_arg != "controlnet"]  # not a ControlNet


@pytest.mark.parametrize("name", ALONGSIDE)
def test_zc_train_trains_the_module_alone_and_saves_what_its_class_loads(name, tmp_path):
    """T2I-Adapter, ControlNeXt, XS, IP-Adapter: only the module trains (the UNet stays locked), it is
    evaluated through designs.sample_kwargs, and its folder loads back (T2I: into diffusers' class)."""
    d = designs.get(name)
    pipe = zc.load_sd()
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cfg = zt.TrainConfig.preset("tiny", architecture=d.architecture, steps=3, eval_every=3, device="cpu",
                                out=str(tmp_path))
    torch.manual_seed(cfg.seed)  # as zc.train seeds before it builds
    fresh = zt.build(cfg, zc.load_sd())[0].state_dict()  # the run's own init
    r = zt.train(cfg, pipe=pipe)
    assert designs.of(r.controlnet) == d and r.folder.name == d.architecture
    assert any(not torch.equal(v, fresh[k]) for k, v in r.controlnet.state_dict().items())  # trained
    assert all(torch.equal(v, unet_before[k]) for k, v in pipe.unet.state_dict().items())  # the UNet is locked
    loaded = type(r.controlnet).from_pretrained(r.folder)
    assert all(torch.equal(v, r.controlnet.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history if "loss" in h)
    assert any("shape_iou" in h for h in r.history)
