"""The assignment's automatic check: each TODO of blocks.py against zc's ControlNet (itself equal
to diffusers' bit for bit, tests/test_controlnet.py), with random weights, on two SD1.x layouts:
TinySD's (its first down block has no attention) and SD 1.5's (its last has none), so that a
solution fitted to one layout fails on the other.

What is graded is what the TODOs ask: a zero conv that starts at zero and learns; a copy whose
parameters are its own (no tensor shared with the UNet) while the UNet stays locked; residuals equal
to the reference's; and a backward pass from the noise prediction that reaches the condition
encoder, the copy and the zero convs but not the UNet. blocks.py may not import zc at all (read
from its syntax tree, not matched as text).

    python -m pytest assignment/check.py                               # assignment/blocks.py
    ZC_ASSIGNMENT=path/to/blocks.py python -m pytest assignment/check.py  # a student's file
"""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
BLOCKS = Path(os.environ.get("ZC_ASSIGNMENT", HERE / "blocks.py"))
LAYOUTS = ("tinysd", "sd15-layout")  # TinySD's block types, and SD 1.5's at a few channels


def forbidden_imports(source: str) -> list[str]:
    """What in blocks.py reaches zc (whose ControlNet is the answer) or imports by name at run time."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in ("zc", "importlib")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("zc", "importlib"):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id == "__import__":
            found.append("__import__")
    return found


@pytest.fixture(scope="module")
def blocks():
    if not BLOCKS.is_file():
        raise FileNotFoundError(f"ZC_ASSIGNMENT={BLOCKS}: no such file; point it at a student's blocks.py")
    banned = forbidden_imports(BLOCKS.read_text())
    assert not banned, f"blocks.py must build the blocks itself, not import zc or load modules by name: {banned}"
    spec = importlib.util.spec_from_file_location("student_blocks", BLOCKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_setup(layout: str):
    """(unet, the reference ControlNet with random zero convs and hint encoder, z_t, condition, text)."""
    import zc
    from zc.condition_encoder import default_channels
    from zc.zero_conv import randomize_

    if layout == "tinysd":
        unet, factor = zc.load_sd("tinysd").unet, 4
    elif layout == "sd15-layout":  # SD 1.5's block types and depth, small widths: first down block attends
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        unet, factor = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8), 8
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    unet.requires_grad_(False)
    cn = zc.ControlNet.from_unet(unet, conditioning_embedding_out_channels=default_channels(factor))
    with torch.no_grad():  # random zero convs and hint encoder: agreement cannot come from zeros
        for i, m in enumerate([cn.controlnet_cond_embedding, *cn.controlnet_down_blocks, cn.controlnet_mid_block]):
            randomize_(m, std=0.05, generator=torch.Generator().manual_seed(i))
    g = torch.Generator().manual_seed(0)
    h = unet.config.sample_size
    sample = torch.randn(2, unet.config.in_channels, h, h, generator=g)
    cond = torch.rand(2, 3, h * factor, h * factor, generator=g)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return unet, cn.eval(), sample, cond, text


@pytest.fixture(scope="module", params=LAYOUTS)
def setup(request):
    return make_setup(request.param)


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
    unet = setup[0]
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    copy = blocks.make_trainable_copy(unet)
    assert set(copy.keys()) >= {"conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"}
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        ours, theirs = copy[name].state_dict(), getattr(unet, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    shared = {id(p) for p in unet.parameters()} & {id(p) for p in copy.parameters()}
    storage = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    assert not shared and not any(p.untyped_storage().data_ptr() in storage for p in copy.parameters()), \
        "the copy shares tensors with the UNet: copy every part (conv_in, the blocks inside down_blocks, ...)"
    assert all(p.requires_grad for p in copy.parameters()), "the copy trains"
    assert not any(p.requires_grad for p in unet.parameters()), "the UNet must stay locked (requires_grad False)"
    with torch.no_grad():
        for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
            for p in copy[name].parameters():
                p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items()), "changing the copy changed the UNet"


def _student_net(blocks, unet, cn):
    """The student's pieces with the reference ControlNet's weights."""
    copy = blocks.make_trainable_copy(unet)
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        copy[name].load_state_dict(getattr(cn, name).state_dict())
    zs = torch.nn.ModuleList(blocks.make_zero_conv(z.in_channels, z.out_channels) for z in cn.controlnet_down_blocks)
    zs.load_state_dict(cn.controlnet_down_blocks.state_dict())
    mid = blocks.make_zero_conv(cn.controlnet_mid_block.in_channels, cn.controlnet_mid_block.out_channels)
    mid.load_state_dict(cn.controlnet_mid_block.state_dict())
    return copy, zs, mid


@torch.no_grad()
def test_3_controlnet_residuals_equal_the_reference(blocks, setup):
    unet, cn, sample, cond, text = setup
    t = torch.tensor([10, 700])
    copy, zs, mid_z = _student_net(blocks, unet, cn)
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

    unet, cn, sample, cond, text = setup
    t = torch.tensor([10, 700])
    down, mid = cn(sample, t, text, cond)
    ours = blocks.inject(unet, sample, t, text, down, mid)
    assert torch.allclose(ours, ControlledUNet(unet, cn)(sample, t, text, cond), atol=1e-5)
    plain = unet(sample, t, encoder_hidden_states=text).sample
    assert not torch.allclose(ours, plain), "the residuals must change the prediction"


def test_5_training_reaches_the_condition_and_the_copy_not_the_unet(blocks, setup):
    """One backward pass from the noise prediction, as a training step takes it: every trainable part
    (the condition encoder, the copy, the zero convs) gets a gradient; the locked UNet gets none."""
    import copy as copy_module

    unet, cn, sample, cond, text = setup
    t = torch.tensor([10, 700])
    copy, zs, mid_z = _student_net(blocks, unet, cn)
    encoder = copy_module.deepcopy(cn.controlnet_cond_embedding).requires_grad_(True)
    emb = cn.embed_time(t, sample)
    down, mid = blocks.controlnet_residuals(copy, zs, mid_z, encoder(cond), sample, emb, text)
    pred = blocks.inject(unet, sample, t, text, down, mid)
    assert pred.requires_grad, "no graph reaches the prediction: nothing would train (torch.no_grad? detach?)"
    pred.square().mean().backward()
    for what, module in (("the condition encoder", encoder), ("the copy", copy), ("the zero convs", zs),
                         ("the middle zero conv", mid_z)):
        got = [p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()]
        assert any(got), f"no gradient reaches {what}: is something detached on the way?"
    assert all(p.grad is None for p in unet.parameters()), "the locked UNet got gradients: it must not train"
