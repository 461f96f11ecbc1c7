"""zc on an SD3 base (chapter 14) against diffusers' own pipelines, on a tiny SD3 built from configs (no SD3
weights exist here): zc's sampler gives StableDiffusion3Pipeline's images, and with the transformer
ControlNet StableDiffusion3ControlNetPipeline's (our weights loaded in diffusers' SD3ControlNetModel);
zc.train's loop trains each SD3 design, resumes exactly, and refuses a design made for the other base."""
import pytest
import torch
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3ControlNetModel, SD3Transformer2DModel,
                       StableDiffusion3ControlNetPipeline, StableDiffusion3Pipeline)
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

import zc
from zc import sd3
from zc.controls.mmdit_controlnet import MMDiTControlNet
from zc.resources import WEIGHTS
from zc.sample import sample
from zc.train import TrainConfig, build, train


def tiny_sd3(seed=0):
    torch.manual_seed(seed)
    tok = CLIPTokenizer.from_pretrained(WEIGHTS / "tinysd" / "tokenizer")
    text = dict(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=tok.model_max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                projection_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=4, shift_factor=0.1, scaling_factor=1.3)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16,
                                        pooled_projection_dim=16, out_channels=4, pos_embed_max_size=8)
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=vae.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**text)).eval(), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)).eval(), tokenizer_2=tok,
        text_encoder_3=None, tokenizer_3=None)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd3")
    tiny_sd3().save_pretrained(folder)
    with pytest.raises(ValueError, match="is an SD3"):
        zc.load_sd(folder)
    return sd3.load_base(folder)  # either kind: here an SD3


PROMPTS = ["red circle with blue background", "green square with white background"]
CALL = dict(num_inference_steps=4, guidance_scale=4.0, max_sequence_length=sd3.T5_TOKENS, output_type="pt")


def test_zc_sampler_gives_the_sd3_pipelines_images(pipe):
    ref = pipe(PROMPTS, height=32, width=32, generator=torch.Generator().manual_seed(3), **CALL).images
    ours = sample(pipe, None, PROMPTS, num_inference_steps=4, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(3))
    assert ours.shape == ref.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=0)


def test_zc_sampler_with_the_transformer_controlnet_gives_the_controlnet_pipelines_images(pipe, tmp_path):
    net = MMDiTControlNet.from_transformer(pipe.transformer, num_layers=2).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the zero layers as after some training
        for m in [*net.controlnet_blocks, net.pos_embed_input]:
            for p in m.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    net.save_pretrained(tmp_path)
    ref_pipe = StableDiffusion3ControlNetPipeline(**pipe.components, controlnet=SD3ControlNetModel.from_pretrained(
        tmp_path).eval())
    control = (torch.rand(2, 3, 32, 32, generator=g) > 0.5).float()
    torch.manual_seed(7)  # the pipeline draws the control's VAE latents from the global RNG; zc draws them so too
    # the pipeline takes a tensor as the VAE reads it, in [-1, 1] (a PIL image it would scale itself); zc: [0, 1]
    ref = ref_pipe(PROMPTS, control_image=control * 2 - 1, controlnet_conditioning_scale=0.8, height=32, width=32,
                   generator=torch.Generator().manual_seed(3), **CALL).images
    torch.manual_seed(7)
    ours = sample(pipe, [(net, control, 0.8)], PROMPTS, num_inference_steps=4, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(3))
    alone = sample(pipe, None, PROMPTS, num_inference_steps=4, guidance_scale=4.0,
                   generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=0)
    assert (ours - alone).abs().max() > 1e-3  # the control changed the images


SD3_DESIGNS = [n for n, d in zc.designs.DESIGNS.items() if d.backbone == "transformer"]


@pytest.mark.parametrize("name", SD3_DESIGNS)
def test_each_sd3_design_starts_as_the_base_alone_exactly_when_the_registry_says_so(pipe, name):
    d = zc.designs.get(name)
    g = torch.Generator().manual_seed(0)
    z, cond = torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    text = sd3.encode_text(pipe, PROMPTS)
    tokens, pooled = sd3.unpack_text(text, 16)
    c = sd3.to_latents(pipe.vae, cond * 2 - 1, mean=True) if d.control_input == "latents" else cond
    t = torch.tensor([300.0, 800.0])
    with torch.no_grad():
        alone = pipe.transformer(z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=t).sample
        module, model = build(TrainConfig(architecture=d.architecture, copy_depth=2), pipe)
        controlled = model(z, t, text, c)
    assert (torch.equal(controlled, alone)) == d.zero_init
    assert zc.designs.of(module) == d


def test_a_design_for_the_other_base_is_refused(pipe, tmp_path):
    with pytest.raises(ValueError, match="controls an SD 1.x"):  # the UNet ControlNet given an SD3
        train(TrainConfig.preset("tiny", out=str(tmp_path / "a")), pipe=pipe)
    with pytest.raises(ValueError, match="controls an SD3"):
        train(TrainConfig.preset("tiny", architecture="mmdit", out=str(tmp_path / "b")))
    net = MMDiTControlNet.from_transformer(pipe.transformer, num_layers=1)
    with pytest.raises(ValueError, match="controls an SD3"):
        sample(zc.load_sd(), [(net, torch.zeros(1, 3, 64, 64))], ["x"], num_inference_steps=1)
    with pytest.raises(ValueError, match="give one"):
        sample(pipe, [(net, torch.zeros(2, 3, 16, 16))], PROMPTS, num_inference_steps=1)


@pytest.mark.parametrize("arch", ["mmdit", "mmdit-pixel", "mmdit-concat"])
def test_each_sd3_design_trains_and_resumes_exactly(pipe, arch, tmp_path):
    kw = dict(architecture=arch, copy_depth=2, steps=4, n_train=16, batch=4, eval_every=0, checkpoint_every=2)
    whole = train(TrainConfig.preset("tiny", out=str(tmp_path / "whole"), **kw), pipe=pipe)
    assert train(TrainConfig.preset("tiny", out=str(tmp_path / "split"), **kw), stop_after=2, pipe=pipe) is None
    split = train(TrainConfig.preset("tiny", out=str(tmp_path / "split"), **kw), pipe=pipe)
    a, b = whole.module.state_dict(), split.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in split.history]
    # the zero-initialised layers trained away from zero: the per-block Linears, or the widened input's new channels
    start = a["pos_embed.proj.weight"][:, 4:] if arch == "mmdit-concat" else a["controlnet_blocks.0.weight"]
    assert start.abs().max() > 0
    back = zc.designs.load(zc.designs.by_architecture(arch).name, whole.folder)
    assert all(torch.equal(v, a[k]) for k, v in back.state_dict().items())


def test_the_sd3_standin_trains_each_design_a_step_and_samples(tmp_path):
    """The 'mini' stand-in (16 latent channels, VAE x8 at 128 px, qk_norm, dual attention, 77 tokens, shift 3):
    nothing in zc may assume TinySD3's sizes."""
    from zc.sd3 import build_sd3_standin

    mini = sd3.load_base(build_sd3_standin(tmp_path / "mini", scale="mini", dtype=torch.float32))
    assert sd3.image_size(mini) == 128 and sd3.t5_tokens(mini) == 256
    text = sd3.text_features(mini, PROMPTS)  # SD3-medium's layout: 77 CLIP + 256 T5 tokens + pooled, joint width
    kept = sd3.compact_text(mini, text)  # what a latent cache stores: the 77 CLIP tokens + pooled, CLIP's width
    assert kept.shape[1] == 78 and kept.numel() * 4 < text.numel() and torch.equal(sd3.expand_text(mini, kept), text)
    for name in SD3_DESIGNS:
        r = train(TrainConfig.preset("tiny", architecture=zc.designs.get(name).architecture, steps=1, n_train=4,
                                     batch=2, eval_every=1, eval_n=2, eval_steps=2, out=str(tmp_path / name)), pipe=mini)
        assert r.folder.is_dir() and any("shape_iou" in h for h in r.history)


def test_the_flow_objectives_velocity_and_diffusers_sample_target():
    """zc's flow loss is SD3's, on the velocity; flow_target="sample" is diffusers' SD3 scripts' default
    (precondition_outputs=1): the loss on the implied z_0, which is the velocity's loss weighted by t²."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from zc.train import Batch, objective

    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(4, 4, 8, 8, generator=g), torch.zeros(4, 3, 8), torch.zeros(4, 3, 8, 8), None)
    w = torch.randn(4, 8, 8, generator=g)
    model = lambda z, t, text, c: z * w  # noqa: E731  (any prediction will do)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    v_loss, d = objective(model, sched, batch, torch.Generator().manual_seed(1))
    x_loss, d2 = objective(model, sched, batch, torch.Generator().manual_seed(1), flow_target="sample")
    assert torch.equal(d.noisy, d2.noisy) and torch.equal(d.t, d2.t)
    sigma = (d.t / 1000).view(-1, 1, 1, 1)
    noise = (d.noisy - (1 - sigma) * batch.latents) / sigma  # what flow_draw drew
    target = noise - batch.latents
    torch.testing.assert_close(v_loss, ((d.pred - target) ** 2).mean())
    torch.testing.assert_close(x_loss, (sigma**2 * (d.pred - target) ** 2).mean())


def test_the_flow_draws_shift_is_the_schedulers():
    """flow_draw's time shift s·t / (1 + (s − 1) t) is FlowMatchEulerDiscreteScheduler's own (SD3: s = 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    plain, shifted = FlowMatchEulerDiscreteScheduler(shift=1.0), FlowMatchEulerDiscreteScheduler(shift=3.0)
    u = plain.sigmas[:-1]  # the unshifted times
    ours = 3.0 * u / (1 + 2.0 * u)
    torch.testing.assert_close(ours, shifted.sigmas[:-1])
    g1, g3 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    z = torch.zeros(64, 4, 2, 2)
    _, t1, _ = sd3.flow_draw(z, g1, shift=1.0)
    _, t3, _ = sd3.flow_draw(z, g3, shift=3.0)
    torch.testing.assert_close(t3 / 1000, 3.0 * (t1 / 1000) / (1 + 2.0 * (t1 / 1000)))
    assert t1.dtype == torch.float32 and sd3.flow_draw(z.bfloat16(), g1)[1].dtype == torch.float32


def test_the_latent_cache_stores_sd3_text_without_its_zero_padding(pipe, tmp_path):
    """The T5 slot (no T5 loaded: zeros) and the columns padding CLIP's width are not stored, and come back exactly;
    text with anything non-zero there is refused, and a cache made by the zc that stored the padding too."""
    import json

    from zc.latent_cache import LatentCache
    from zc.world.pairs import PairedData

    data = PairedData.generate(6, size=sd3.image_size(pipe), seed=3)
    cache = LatentCache(tmp_path / "c", data, pipe, "cpu", torch.float32, batch=4)
    full = sd3.text_features(pipe, data.prompts)  # (6, 16 CLIP + 16 T5 + 1, 24)
    n_clip = pipe.tokenizer.model_max_length  # CLIP's width 8 + 8 = 16, padded to the joint width 24
    assert full.shape[1:] == (n_clip + sd3.t5_tokens(pipe) + 1, 24) and cache.text.shape[1:] == (n_clip + 1, 16)
    torch.testing.assert_close(cache.text_for(cache.prompt_ids, "cpu"), full, rtol=0, atol=1e-6)
    bad = full.clone()
    bad[:, n_clip, 0] = 1.0  # a T5 token that is not zero
    with pytest.raises(ValueError, match="outside its CLIP tokens"):
        sd3.compact_text(pipe, bad)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    del meta["text"]  # what the zc before this change wrote
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stored an SD3's text with its zero padding"):
        LatentCache(tmp_path / "c", data, pipe, "cpu", torch.float32, batch=4)
