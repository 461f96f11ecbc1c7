"""zc.ControlNet against diffusers' ControlNetModel (minGPT-style parity), and the paper's
zero-convolution facts."""
import json

import pytest
import torch
from conftest import inputs
from diffusers import ControlNetModel

import zc
from zc.zero_conv import is_zero, randomize_

TOL = dict(atol=1e-6, rtol=1e-5)


def pair(unet, seed=3, global_pool=False):
    """A zc ControlNet and a diffusers ControlNetModel holding the same, fully random, weights."""
    ours = zc.ControlNet.from_unet(unet, global_pool_conditions=global_pool)
    randomize_(ours.controlnet_down_blocks, generator=torch.Generator().manual_seed(seed))
    randomize_(ours.controlnet_mid_block, generator=torch.Generator().manual_seed(seed + 1))
    randomize_(ours.controlnet_cond_embedding, std=0.1, generator=torch.Generator().manual_seed(seed + 2))
    ref = ControlNetModel.from_unet(unet)
    ref.register_to_config(global_pool_conditions=global_pool)  # from_unet has no argument for it
    ref.load_state_dict(ours.state_dict())
    return ours.eval(), ref.eval()


def unet_out(unet, x, down, mid):
    return unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


@pytest.mark.parametrize("guess_mode", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.6])
@pytest.mark.parametrize("global_pool", [False, True])
@torch.no_grad()
def test_parity_with_diffusers(unet, guess_mode, scale, global_pool):
    ours, ref = pair(unet, global_pool=global_pool)
    x = inputs()
    d1, m1 = ours(**x, conditioning_scale=scale, guess_mode=guess_mode)
    d2, m2 = ref(**x, conditioning_scale=scale, guess_mode=guess_mode, return_dict=False)
    assert len(d1) == len(d2) == ours.num_residuals - 1
    assert m1.abs().max() > 1e-3  # random zero convs: the residuals are not trivially zero
    for a, b in zip(d1, d2):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(m1, m2, **TOL)
    if global_pool:  # one vector per residual and sample: the condition says nothing about where
        assert all(d.shape[-2:] == (1, 1) for d in d1) and m1.shape[-2:] == (1, 1)
    torch.testing.assert_close(unet_out(unet, x, d1, m1), unet_out(unet, x, d2, m2), **TOL)
    # and zc's one-call controlled UNet gives the same noise prediction
    eps = zc.ControlledUNet(unet, ours)(**x, conditioning_scale=scale, guess_mode=guess_mode)
    torch.testing.assert_close(eps, unet_out(unet, x, d2, m2), **TOL)


@torch.no_grad()
def test_per_residual_scales(unet):
    ours, ref = pair(unet)
    x = inputs()
    scales = torch.linspace(0.2, 1.3, ours.num_residuals).tolist()
    d1, m1 = ours(**x, conditioning_scale=scales)
    d2, m2 = ref(**x, return_dict=False)
    for a, b, s in zip(d1, d2, scales):
        torch.testing.assert_close(a, b * s, **TOL)
    torch.testing.assert_close(m1, m2 * scales[-1], **TOL)
    with pytest.raises(ValueError, match="one per residual"):
        ours(**x, conditioning_scale=[1.0, 2.0])


@pytest.mark.parametrize("global_pool", [False, True])
@torch.no_grad()
def test_round_trip_through_diffusers(unet, tmp_path, global_pool):
    ours, _ = pair(unet, global_pool=global_pool)
    ours.save_pretrained(tmp_path / "zc")
    ref = ControlNetModel.from_pretrained(tmp_path / "zc")  # diffusers reads zc's folder
    ref.save_pretrained(tmp_path / "diffusers")
    back = zc.ControlNet.from_pretrained(tmp_path / "diffusers")  # zc reads diffusers' folder
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
        assert torch.equal(v, back.state_dict()[k]), k
    assert not any(p.is_meta for p in back.parameters())
    assert ref.config.global_pool_conditions == back.config.global_pool_conditions == global_pool
    x = inputs()
    for a, b in zip(ours(**x)[0], back(**x)[0]):
        assert torch.equal(a, b)


@torch.no_grad()
def test_zero_init_leaves_the_locked_model_unchanged(unet):
    cn = zc.ControlNet.from_unet(unet)
    assert is_zero(cn.controlnet_down_blocks) and is_zero(cn.controlnet_mid_block)
    assert is_zero(cn.controlnet_cond_embedding.conv_out)
    x = inputs()
    plain = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"]).sample
    for cond in (x["controlnet_cond"], torch.rand_like(x["controlnet_cond"]) * 100):
        controlled = zc.ControlledUNet(unet, cn)(**{**x, "controlnet_cond": cond})
        assert torch.equal(controlled, plain)


def test_gradients_first_step_and_after(unet):
    cn = zc.ControlNet.from_unet(unet)
    model = zc.ControlledUNet(unet, cn)
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3))
    x = inputs()
    target = torch.randn_like(x["sample"])

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(**x), target)
        loss.backward()
        return loss

    step()
    zero_convs = {id(p) for m in (cn.controlnet_down_blocks, cn.controlnet_mid_block) for p in m.parameters()}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cn.controlnet_mid_block.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cn.controlnet_down_blocks.parameters())
    upstream = [(n, p) for n, p in cn.named_parameters() if id(p) not in zero_convs]
    assert upstream
    for n, p in upstream:  # dy/dx = w = 0: nothing behind a zero conv learns on step one
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, n
    assert all(p.grad is None for p in unet.parameters())  # locked SD
    opt.step()
    step()  # now the zero convs are non-zero and gradient flows into the trainable copy
    copy_grads = [p.grad.abs().sum() for n, p in cn.named_parameters()
                  if n.startswith(("down_blocks", "mid_block")) and p.grad is not None]
    assert copy_grads and sum(copy_grads) > 0
    assert all(p.grad is None for p in unet.parameters())


def test_copy_of_a_locked_unet_is_trainable(unet):
    unet.requires_grad_(False)
    cn = zc.ControlNet.from_unet(unet)
    assert all(p.requires_grad for p in cn.parameters())
    assert not any(p.requires_grad for p in unet.parameters())
    assert cn.down_blocks[0].resnets[0].conv1.weight is not unet.down_blocks[0].resnets[0].conv1.weight


def test_sd_unlocked_trains_the_decoder(unet):
    cn = zc.ControlNet.from_unet(unet)
    model = zc.ControlledUNet(unet, cn, sd_locked=False)
    groups = model.param_groups(lr=1e-5, decoder_lr=2e-6)
    assert [g["lr"] for g in groups] == [1e-5, 2e-6]
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("up_blocks", "conv_norm_out", "conv_out")) for n in names)


def test_only_mid_control_sends_only_the_middle_residual(unet):
    cn = zc.ControlNet.from_unet(unet, only_mid_control=True)
    randomize_(cn.controlnet_mid_block)
    randomize_(cn.controlnet_down_blocks)
    down, mid = cn(**inputs())
    assert all(torch.count_nonzero(d) == 0 for d in down) and mid.abs().sum() > 0


@pytest.mark.parametrize("architecture", ["lite", "direct"])
def test_ablation_variants_start_as_identity_and_learn(unet, architecture, tmp_path):
    cn = zc.ControlNet.from_unet(unet, architecture=architecture)
    x = inputs()
    d, m = cn(**x)
    assert all(torch.count_nonzero(a) == 0 for a in d) and torch.count_nonzero(m) == 0
    assert [a.shape for a in d] == [a.shape for a in zc.ControlNet.from_unet(unet)(**x)[0]]
    model = zc.ControlledUNet(unet, cn)
    opt = torch.optim.AdamW(model.param_groups(lr=1e-2))
    for _ in range(2):
        opt.zero_grad()
        model(**x).square().mean().backward()
        opt.step()
    assert not is_zero(cn.controlnet_mid_block)
    cn.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["zc"]["architecture"] == architecture
    back = zc.ControlNet.from_pretrained(tmp_path)
    assert type(back) is type(cn)
    with torch.no_grad():
        torch.testing.assert_close(back(**x)[1], cn(**x)[1])


@torch.no_grad()
def test_gaussian_init_perturbs_the_locked_model(unet):
    cn = zc.ControlNet.from_unet(unet, zero_conv_init="gaussian")
    assert not is_zero(cn.controlnet_mid_block)
    x = inputs()
    plain = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"]).sample
    assert (zc.ControlledUNet(unet, cn)(**x) - plain).abs().max() > 1e-3


@torch.no_grad()
def test_multi_controlnet_sums_residuals(unet):
    a, _ = pair(unet, seed=5)
    b, _ = pair(unet, seed=9)
    x = inputs()
    c2 = torch.rand_like(x["controlnet_cond"])
    multi = zc.MultiControlNet([a, b])
    down, mid = multi(x["sample"], x["timestep"], x["encoder_hidden_states"], [x["controlnet_cond"], c2], [0.5, 2.0])
    da, ma = a(**x, conditioning_scale=0.5)
    db, mb = b(**{**x, "controlnet_cond": c2}, conditioning_scale=2.0)
    torch.testing.assert_close(mid, ma + mb)
    for s, p, q in zip(down, da, db):
        torch.testing.assert_close(s, p + q)
    eps = zc.ControlledUNet(unet, [a, b])(x["sample"], x["timestep"], x["encoder_hidden_states"],
                                          [x["controlnet_cond"], c2], [0.5, 2.0])
    torch.testing.assert_close(eps, unet_out(unet, x, down, mid))
    with pytest.raises(ValueError, match="list of 2 condition images"):
        multi(x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"])


def test_parameter_count_matches_diffusers_for_sd15_shape():
    """The SD1.5-shaped ControlNet has diffusers' parameter count (paper: ≈361M), built on meta."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel(cross_attention_dim=768)  # SD1.5's config is diffusers' default + 768
        ours = zc.ControlNet.from_unet(unet)
        ref = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    assert 355e6 < n < 365e6


def test_bgr_channel_order_is_refused_with_the_fix_named(unet):
    cfg = zc.ControlNet.from_unet(unet).config.to_diffusers()
    with pytest.raises(ValueError, match="rgb channel order only"):
        zc.controlnet.ControlNetConfig.from_diffusers({**cfg, "controlnet_conditioning_channel_order": "bgr"})
    assert zc.controlnet.ControlNetConfig.from_diffusers({**cfg, "global_pool_conditions": True}).global_pool_conditions
