"""The assignment's automatic check: each TODO of blocks.py against zc's ControlNet (itself equal
to diffusers' bit for bit, tests/test_parity.py), on TinySD with random weights.

    python -m pytest assignment/check.py                               # assignment/blocks.py
    ZC_ASSIGNMENT=path/to/blocks.py python -m pytest assignment/check.py  # a student's file
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
BLOCKS = Path(os.environ.get("ZC_ASSIGNMENT", HERE / "blocks.py"))


@pytest.fixture(scope="module")
def blocks():
    if not BLOCKS.is_file():
        raise FileNotFoundError(f"ZC_ASSIGNMENT={BLOCKS}: no such file; point it at a student's blocks.py")
    source = BLOCKS.read_text()
    banned = re.findall(r"^\s*(?:from|import)\s+zc\.(?:controlnet|zero_conv|controlled_unet|variants)\b.*"
                        r"|^\s*from\s+zc\s+import\s+.*(?:ControlNet|ZeroConv|controlnet|zero_conv).*", source, re.M)
    assert not banned, f"blocks.py must build the blocks itself, not import them: {banned}"
    spec = importlib.util.spec_from_file_location("student_blocks", BLOCKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup():
    import zc
    from zc.zero_conv import randomize_

    pipe = zc.load_sd("tinysd")
    cn = zc.ControlNet.for_pipeline(pipe)
    with torch.no_grad():  # random zero convs and hint encoder: agreement cannot come from zeros
        for i, m in enumerate([cn.controlnet_cond_embedding, *cn.controlnet_down_blocks, cn.controlnet_mid_block]):
            randomize_(m, std=0.05, generator=torch.Generator().manual_seed(i))
    g = torch.Generator().manual_seed(0)
    h = pipe.unet.config.sample_size
    sample = torch.randn(2, pipe.unet.config.in_channels, h, h, generator=g)
    cond = torch.rand(2, 3, h * pipe.vae_scale_factor, h * pipe.vae_scale_factor, generator=g)
    text = torch.randn(2, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, generator=g)
    return pipe, cn.eval(), sample, cond, text


def test_1_zero_conv_starts_at_zero_and_learns(blocks):
    z = blocks.make_zero_conv(8, 16)
    assert isinstance(z, torch.nn.Conv2d) and z.kernel_size == (1, 1) and (z.in_channels, z.out_channels) == (8, 16)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    y = z(x)
    assert y.shape == (2, 16, 5, 5) and torch.equal(y, torch.zeros_like(y)), "a zero conv outputs exact zeros at first"
    y.sum().backward()
    assert z.weight.grad.abs().sum() > 0, "its weight must get a gradient (dy/dw = x)"
    assert torch.equal(x.grad, torch.zeros_like(x)), "and pass none back at step 0 (dy/dx = w = 0)"


def test_2_trainable_copy_starts_as_the_locked_encoder(blocks, setup):
    pipe = setup[0]
    unet = pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    unet.requires_grad_(False)
    copy = blocks.make_trainable_copy(unet)
    assert set(copy.keys()) >= {"conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"}
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        assert copy[name] is not getattr(unet, name), f"{name}: a copy, not the UNet's own module"
        ours, theirs = copy[name].state_dict(), getattr(unet, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert all(p.requires_grad for p in copy.parameters()), "the copy trains"
    with torch.no_grad():
        next(copy["conv_in"].parameters()).add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items()), "changing the copy changed the UNet"


def _student_net(blocks, pipe, cn):
    """The student's pieces with the reference ControlNet's weights."""
    copy = blocks.make_trainable_copy(pipe.unet)
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        copy[name].load_state_dict(getattr(cn, name).state_dict())
    zs = torch.nn.ModuleList(blocks.make_zero_conv(z.in_channels, z.out_channels) for z in cn.controlnet_down_blocks)
    zs.load_state_dict(cn.controlnet_down_blocks.state_dict())
    mid = blocks.make_zero_conv(cn.controlnet_mid_block.in_channels, cn.controlnet_mid_block.out_channels)
    mid.load_state_dict(cn.controlnet_mid_block.state_dict())
    return copy, zs, mid


@torch.no_grad()
def test_3_controlnet_residuals_equal_the_reference(blocks, setup):
    pipe, cn, sample, cond, text = setup
    t = torch.tensor([10, 700])
    copy, zs, mid_z = _student_net(blocks, pipe, cn)
    emb = cn.embed_time(t, sample)
    hint = cn.controlnet_cond_embedding(cond)
    down, mid = blocks.controlnet_residuals(copy, zs, mid_z, hint, sample, emb, text)
    ref_down, ref_mid = cn(sample, t, text, cond)
    assert len(down) == len(ref_down) == cn.num_residuals - 1, "one residual per skip feature"
    for i, (a, b) in enumerate(zip(down, ref_down)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), f"skip residual {i}"
    assert torch.allclose(mid, ref_mid, atol=1e-5), "middle residual"


@torch.no_grad()
def test_4_inject_adds_the_residuals_to_the_locked_unet(blocks, setup):
    from zc.controlled_unet import ControlledUNet

    pipe, cn, sample, cond, text = setup
    t = torch.tensor([10, 700])
    down, mid = cn(sample, t, text, cond)
    ours = blocks.inject(pipe.unet, sample, t, text, down, mid)
    assert torch.allclose(ours, ControlledUNet(pipe.unet, cn)(sample, t, text, cond), atol=1e-5)
    plain = pipe.unet(sample, t, encoder_hidden_states=text).sample
    assert not torch.allclose(ours, plain), "the residuals must change the prediction"
