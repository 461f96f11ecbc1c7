"""The transformer ControlNet (zc/controls/mmdit_controlnet.py) against diffusers' SD3ControlNetModel, on a
small SD3Transformer2DModel built from a config (no SD3 weights exist here): the same weights both ways,
the same residuals, exactly the base alone at step 0, and the block-to-residual map the base applies."""
import warnings

import pytest
import torch
from diffusers import SD3ControlNetModel, SD3Transformer2DModel

from zc.controls.mmdit_controlnet import MMDiTControlNet, residual_index, used_residuals

BASE = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
            pos_embed_max_size=8)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return SD3Transformer2DModel(**BASE).eval()


def inputs(seed=1, extra=0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                controlnet_cond=torch.randn(2, 4 + extra, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                pooled_projections=torch.randn(2, 8, generator=g), timestep=torch.tensor([10.0, 700.0]))


def _wake(net, seed):  # the zero layers as after some training
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in [*net.controlnet_blocks, net.pos_embed_input]:
            for p in m.parameters():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_equal_to_diffusers_both_ways(base, depth, tmp_path):
    ours = MMDiTControlNet.from_transformer(base, num_layers=depth).eval()
    ref = SD3ControlNetModel.from_transformer(base, num_layers=depth, num_extra_conditioning_channels=0).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())  # the same copy, zeros
    _wake(ours, depth)
    ref.load_state_dict(ours.state_dict())  # ours into diffusers' class ...
    with torch.no_grad():
        mine, theirs = ours(**inputs()), ref(**inputs()).controlnet_block_samples
    assert len(mine) == depth and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    ref.save_pretrained(tmp_path)  # ... and diffusers' folder back into ours
    back = MMDiTControlNet.from_pretrained(tmp_path).eval()
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in back.state_dict().items())


def test_at_step_zero_the_base_runs_as_alone_and_the_control_then_enters(base):
    ours = MMDiTControlNet.from_transformer(base, num_layers=2).eval()
    x = inputs()
    kw = {k: x[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")}
    with torch.no_grad():
        alone = base(**kw).sample
        assert torch.equal(base(**kw, block_controlnet_hidden_states=ours(**x)).sample, alone)
        _wake(ours, 3)
        moved = base(**kw, block_controlnet_hidden_states=ours(**x)).sample
    assert (moved - alone).abs().max() > 1e-3


def test_residual_map_and_bad_input(base):
    # SD3-medium: 24 blocks; a 12-block copy feeds each residual to two blocks; 4 blocks: six each
    assert [residual_index(j, 24, 12) for j in range(4)] == [0, 0, 1, 1]
    assert [residual_index(j, 24, 4) for j in (0, 5, 6, 23)] == [0, 0, 1, 3]
    with pytest.raises(ValueError, match="it must have 1 to 4"):
        MMDiTControlNet.from_transformer(base, num_layers=5)  # deeper than its base
    ours = MMDiTControlNet.from_transformer(base, num_layers=1)
    bad = {**inputs(), "controlnet_cond": torch.zeros(2, 4, 16, 16)}
    with pytest.raises(ValueError, match="encode the control image at the image's size"):
        ours(**bad)


def test_a_copy_of_every_block_copies_the_last_ones_image_half(base):
    """The base's last block keeps no text tokens, so its copy's text half starts fresh (diffusers' own
    from_transformer stops there with a size mismatch); the image half is copied."""
    with pytest.warns(UserWarning, match="the base adds only its first 3 residuals"):
        ours = MMDiTControlNet.from_transformer(base, num_layers=4)
    last, copy = base.transformer_blocks[-1].state_dict(), ours.transformer_blocks[-1].state_dict()
    shared = [k for k in copy if k in last and copy[k].shape == last[k].shape]
    assert shared and all(torch.equal(copy[k], last[k]) for k in shared)
    assert any(k.startswith("ff_context") for k in copy) and not any(k.startswith("ff_context") for k in last)
    x = inputs()
    kw = {k: x[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")}
    with torch.no_grad():
        assert torch.equal(base(**kw, block_controlnet_hidden_states=ours(**x)).sample, base(**kw).sample)


def test_an_sd35_style_base_with_qk_norm_and_dual_attention_is_copied_as_diffusers_copies_it(tmp_path):
    torch.manual_seed(0)
    base = SD3Transformer2DModel(**BASE, qk_norm="rms_norm", dual_attention_layers=(0, 1)).eval()
    ours = MMDiTControlNet.from_transformer(base, num_layers=3).eval()
    ref = SD3ControlNetModel.from_transformer(base, num_layers=3, num_extra_conditioning_channels=0).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    _wake(ours, 4)
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ours(**inputs()), ref(**inputs()).controlnet_block_samples))


@pytest.mark.parametrize("depth", [2, 4])
def test_the_base_adds_every_residual_but_the_last_blocks(base, depth):
    """SD3 adds no residual at its last block (it keeps no text tokens): a copy of half the base has every
    residual added, a copy of all four blocks has its last one wasted (used_residuals says which)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MMDiTControlNet.from_transformer(base, num_layers=depth).eval()
    x = inputs()
    kw = {k: x[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")}
    with torch.no_grad():
        res = ours(**x)
        moved = []
        for i in range(depth):  # only residual i non-zero: does the output move?
            one = [r + 1.0 if k == i else torch.zeros_like(r) for k, r in enumerate(res)]
            moved.append(bool((base(**kw, block_controlnet_hidden_states=one).sample
                               - base(**kw).sample).abs().max() > 0))
    assert moved == [i < used_residuals(4, depth) for i in range(depth)]
    assert used_residuals(4, depth) == {2: 2, 4: 3}[depth]


def test_a_config_without_force_zeros_reads_as_instantx_and_is_refused(base, tmp_path):
    """diffusers reads a config that omits force_zeros_for_pooled_projection as True (InstantX's convention: zero
    pooled text); zc saves False, and a ControlNet of the other convention is refused by name."""
    import json

    from zc.controls.mmdit_controlnet import ControlledMMDiT

    MMDiTControlNet.from_transformer(base, num_layers=2).save_pretrained(tmp_path)
    ours = MMDiTControlNet.from_pretrained(tmp_path)
    assert ours.config.force_zeros_for_pooled_projection is False
    ControlledMMDiT(base, ours)  # accepted
    config = json.loads((tmp_path / "config.json").read_text())
    del config["force_zeros_for_pooled_projection"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    theirs = MMDiTControlNet.from_pretrained(tmp_path)
    assert theirs.config.force_zeros_for_pooled_projection is True
    assert SD3ControlNetModel.from_pretrained(tmp_path).config.force_zeros_for_pooled_projection is True
    with pytest.raises(ValueError, match="InstantX"):
        ControlledMMDiT(base, theirs)
