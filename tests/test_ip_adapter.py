"""The global control (zc/controls/ip_adapter.py): unchanged base at init, attach/detach, diffusers' own file and
pipeline, training through zc.train."""
import pytest
import torch
from conftest import UNET_CONFIGS, inputs, make_unet
from diffusers import StableDiffusionPipeline

import zc
from zc import train as zt
from zc.controls.ip_adapter import (
    IPAdapter,
    IPAdapterConditioned,
    cross_attention_names,
)
from zc.sample import sample
from zc.world.pairs import PairedData
from zc.zero_conv import randomize_


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def trained_like(adapter, seed=0):
    """W'_v non-zero, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.processors:
            p.to_v_ip[0].weight.copy_(0.2 * torch.randn(p.to_v_ip[0].weight.shape, generator=g))
    return adapter


def palettes(n, seed=3, size=64):
    ds = PairedData.generate(n, size=size, seed=seed, split="test", condition="palette")
    return ds.prompts, ds.conditions()


def test_init_leaves_the_base_unchanged_and_detaches_cleanly(unet):
    x = inputs()
    plain = unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample
    adapter = IPAdapter.for_unet(unet)
    model = IPAdapterConditioned(unet, adapter)
    with torch.no_grad():
        at_init = model(x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"])
    assert torch.equal(at_init, plain)  # W'_v = 0: exactly nothing added
    with torch.no_grad():
        moved = IPAdapterConditioned(unet, trained_like(adapter))(
            x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"])
        other = IPAdapterConditioned(unet, adapter)(
            x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"].flip(0))
    assert (moved - plain).abs().max() > 1e-3  # a trained adapter acts ...
    assert (moved - other).abs().max() > 1e-4  # ... and reads its condition
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None  # detached again
    assert all(type(p).__name__ != "IPAdapterAttnProcessor2_0" for p in unet.attn_processors.values())
    assert torch.equal(unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample, plain)


def test_the_first_gradient_reaches_the_zero_value_projection(unet):
    x = inputs()
    adapter = IPAdapter.for_unet(unet)
    out = IPAdapterConditioned(unet, adapter)(x["sample"], x["timestep"], x["encoder_hidden_states"],
                                              x["controlnet_cond"])
    out.square().mean().backward()
    assert all(p.to_v_ip[0].weight.grad.abs().sum() > 0 for p in adapter.processors)
    assert all(p.to_k_ip[0].weight.grad.abs().sum() == 0 for p in adapter.processors)  # zero until W'_v moves


def test_another_unet_is_refused_by_name(unet, unet_name):
    other = next(n for n in UNET_CONFIGS if n != unet_name)  # the other layout: other cross-attentions
    adapter = IPAdapter.for_unet(make_unet(other))
    assert len(cross_attention_names(unet)) != len(adapter.processors)
    with pytest.raises(ValueError, match="IPAdapter.for_unet"):
        IPAdapterConditioned(unet, adapter)


def test_save_load_and_diffusers_pipeline_give_the_same_images(pipe, tmp_path):
    adapter = trained_like(IPAdapter.for_unet(pipe.unet), seed=1)
    adapter.save_pretrained(tmp_path / "ipa")
    loaded = IPAdapter.from_pretrained(tmp_path / "ipa")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in adapter.state_dict().items())
    prompts, cond = palettes(2)
    prompts = ["", prompts[1]]
    ref = None
    for i in range(2):  # diffusers' pipelines give every prompt of a call the same image_embeds: one at a time
        kw = dict(num_inference_steps=6, generator=torch.Generator().manual_seed(i))
        ours = sample(pipe, [(loaded, cond[i:i + 1])], prompts[i:i + 1], **kw)
        kw["generator"] = torch.Generator().manual_seed(i)
        plain = sample(pipe, None, prompts[i:i + 1], None, **kw)
        assert (ours - plain).abs().max() > 0.05  # the palette changes the picture
        if ref is None:
            import copy

            ref = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                          unet=copy.deepcopy(pipe.unet), scheduler=pipe.scheduler, safety_checker=None,
                                          feature_extractor=None, image_encoder=None, requires_safety_checker=False)
            ref.set_progress_bar_config(disable=True)
            ref.load_ip_adapter(str(tmp_path / "ipa"), subfolder="", weight_name="ip-adapter.safetensors",
                                image_encoder_folder=None)
        feats = loaded.features(cond[i:i + 1])[:, None]  # (1, 1, D); CFG's unconditional half: zeros (encode_image's)
        kw["generator"] = torch.Generator().manual_seed(i)
        theirs = ref(prompts[i:i + 1], guidance_scale=5.0, output_type="pt",
                     ip_adapter_image_embeds=[torch.cat([torch.zeros_like(feats), feats])], **kw).images
        assert (ours - theirs).abs().max() < 1e-5


def test_sampler_refuses_half_an_ip_adapter(pipe):
    adapter = IPAdapter.for_unet(pipe.unet)
    with pytest.raises(ValueError, match="pair"):
        sample(pipe, [(adapter, None)], [""], num_inference_steps=2)
    with pytest.raises(ValueError, match=r"condition images of IP-Adapter must be \(1, 3"):
        sample(pipe, [(adapter, torch.rand(2, 3, 64, 64))], [""], num_inference_steps=2)
    with pytest.raises(ValueError, match="IP-Adapter has none"):  # guess mode weights residuals: refused, not dropped
        sample(pipe, [(adapter, torch.rand(1, 3, 64, 64))], [""], num_inference_steps=2, guess_mode=True)


def test_from_pretrained_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        IPAdapter.from_pretrained(tmp_path)


def test_training_an_ip_adapter_with_condition_dropout_resumes_exactly(pipe, tmp_path):
    cfg = dict(steps=4, batch=2, n_train=8, eval_every=2, eval_n=2, eval_steps=2, checkpoint_every=100, device="cpu",
               condition="palette", architecture="ip-adapter", condition_dropout=0.5, empty_prompt_prob=1.0)
    straight = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **cfg), pipe=pipe)
    c = zt.TrainConfig(out=str(tmp_path / "b"), **cfg)
    assert zt.train(c, stop_after=3, pipe=pipe) is None
    resumed = zt.train(c, pipe=pipe)
    a, b = straight.module.state_dict(), resumed.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.folder.name == "ip-adapter" and (resumed.folder / "ip-adapter.safetensors").is_file()
    assert all(p.to_v_ip[0].weight.abs().sum() > 0 for p in resumed.module.processors)  # it trained
    assert "colour_accuracy" in [k for h in resumed.history for k in h]
    assert pipe.unet.encoder_hid_proj is None  # the shared pipeline is left as it was


def _nonzero_zero_convs(cn, seed=0):
    """The ControlNet's zero convolutions (hint block's last included) made non-zero, as after training."""
    for i, m in enumerate((cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out)):
        randomize_(m, std=0.1, generator=torch.Generator().manual_seed(seed + i))
    return cn


def test_with_global_splits_the_condition_between_the_controlnet_and_the_adapter(unet):
    """WithGlobal (zc.train --ip-adapter): the first channels reach the ControlNet, the last 3 the adapter.
    With a fresh ControlNet (zero convolutions) it is exactly the adapter alone on the last 3 channels;
    with a fresh adapter (W'_v = 0) exactly the ControlNet alone on the first 3. Only the ControlNet trains."""
    from zc.controlled_unet import ControlledUNet
    from zc.controls.ip_adapter import WithGlobal

    x = inputs()
    local = x["controlnet_cond"]
    red, blue = (torch.tensor(c, dtype=local.dtype)[:, None, None].expand_as(local[0]) for c in ((1, 0, 0), (0, 0, 1)))
    glob = torch.stack([red, blue])  # two flat "palettes" (LayerNorm makes the adapter blind to brightness alone)
    both = torch.cat([local, glob], dim=1)  # (B, 6, H, W)
    args = (x["sample"], x["timestep"], x["encoder_hidden_states"])
    adapter, cn = trained_like(IPAdapter.for_unet(unet)), zc.ControlNet.from_unet(unet)
    with torch.no_grad():
        assert torch.equal(WithGlobal(ControlledUNet(unet, cn), adapter)(*args, both),
                           IPAdapterConditioned(unet, adapter)(*args, glob))
        _nonzero_zero_convs(cn)
        fresh = IPAdapter.for_unet(unet)
        assert torch.equal(WithGlobal(ControlledUNet(unet, cn), fresh)(*args, both), ControlledUNet(unet, cn)(*args, local))
        model = WithGlobal(ControlledUNet(unet, cn), adapter)
        out = model(*args, both)
        assert (out - model(*args, torch.cat([local, glob.flip(0)], 1))).abs().max() > 1e-4  # reads the adapter's part
        assert (out - model(*args, torch.cat([local.flip(0), glob], 1))).abs().max() > 1e-4  # and the ControlNet's
    assert unet.encoder_hid_proj is None  # detached after each call
    trains = {id(p) for g in model.param_groups(1e-4) for p in g["params"]}
    assert trains == {id(p) for p in cn.parameters()}
    assert not any(p.requires_grad for p in adapter.parameters())


def test_training_a_controlnet_beside_a_locked_adapter(pipe, tmp_path):
    """zc.train --ip-adapter: the ControlNet trains on the keypoints, the adapter reads the palette drawn for
    the same scenes and stays exactly as loaded; the evaluations measure colours too. Refused beside an
    adapter-type design, and on a data folder (no scenes to draw the palette from)."""
    adapter = trained_like(IPAdapter.for_unet(pipe.unet), seed=2)
    adapter.save_pretrained(tmp_path / "ipa")
    cfg = dict(steps=3, batch=2, n_train=8, eval_every=3, eval_n=2, eval_steps=2, checkpoint_every=100,
               device="cpu", condition="keypoints", ip_adapter=str(tmp_path / "ipa"), condition_dropout=0.1,
               eval_prompts="empty")
    r = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **cfg), pipe=pipe)
    assert r.folder.name == "controlnet" and isinstance(r.module, zc.ControlNet)
    assert r.module.config.conditioning_channels == 3  # the keypoints only; the palette went to the adapter
    assert any(p.abs().sum() > 0 for p in r.module.controlnet_mid_block.parameters())  # it trained
    again = IPAdapter.from_pretrained(tmp_path / "ipa").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in adapter.state_dict().items())
    last = [h for h in r.history if "colour_accuracy" in h][-1]
    assert "keypoint_accuracy" in last
    assert pipe.unet.encoder_hid_proj is None
    with pytest.raises(ValueError, match="architecture controlnet"):
        zt.train(zt.TrainConfig(out=str(tmp_path / "b"), **{**cfg, "architecture": "t2i-adapter"}), pipe=pipe)
    PairedData.generate(4, seed=1, condition="keypoints").save(tmp_path / "data")
    with pytest.raises(ValueError, match="generated pairs"):
        zt.train(zt.TrainConfig(out=str(tmp_path / "c"), **{**cfg, "data": str(tmp_path / "data")}), pipe=pipe)


def test_the_trained_with_design_equals_diffusers_controlnet_pipeline_with_the_ip_adapter(pipe):
    """Where + which colours as issue #26 ships it: the keypoints ControlNet trained with the palette IP-Adapter,
    at zoo.TUNED's settings, through zc.sample and through diffusers' StableDiffusionControlNetPipeline with
    the adapter loaded from its file (load_ip_adapter) and the palette's features as ip_adapter_image_embeds."""
    import copy

    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from zc.study import zoo
    from zc.world import conditions

    t = zoo.TUNED["trained with"]
    test = zoo.test_set("keypoints", 2)
    keypoints, palette = test.conditions(), conditions.draw("palette", test.scenes, 64)
    adapter = zoo.load_adapter("palette")
    adapter.set_scale(t["ip_scale"])
    cn = zc.ControlNet.from_pretrained(zoo.with_adapter_folder()).eval()
    ref = StableDiffusionControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=copy.deepcopy(pipe.unet),
        controlnet=ControlNetModel.from_pretrained(zoo.with_adapter_folder()), scheduler=pipe.scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.load_ip_adapter(str(zoo.adapter_folder("palette")), subfolder="", weight_name="ip-adapter.safetensors",
                        image_encoder_folder=None)
    ref.set_ip_adapter_scale(t["ip_scale"])
    for i in range(2):  # one image per call: diffusers gives every prompt of a call the same image_embeds
        kw = dict(num_inference_steps=6, guidance_scale=t["guidance_scale"])
        ours = sample(pipe, [(cn, keypoints[i:i + 1]), (adapter, palette[i:i + 1])], [""],
                      conditioning_scale=t["conditioning_scale"], generator=torch.Generator().manual_seed(i), **kw)
        feats = adapter.features(palette[i:i + 1])[:, None]  # (1, 1, D); the unconditional half: zeros
        theirs = ref([""], image=keypoints[i:i + 1], controlnet_conditioning_scale=t["conditioning_scale"],
                     ip_adapter_image_embeds=[torch.cat([torch.zeros_like(feats), feats])], output_type="pt",
                     generator=torch.Generator().manual_seed(i), **kw).images
        assert (ours - theirs).abs().max() < 1e-5
