"""The original lllyasviel checkpoint layout loads into zc and into diffusers' converter alike."""
import pytest
import torch
from conftest import make_unet
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import save_file

import zc
from zc.original_format import zc_to_original
from zc.zero_conv import randomize_


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_original_checkpoint_loads_like_diffusers(unet, unet_name, tmp_path, suffix):
    src = zc.ControlNet.from_unet(make_unet(unet_name, seed=7))
    randomize_(src, generator=torch.Generator().manual_seed(0))  # every weight differs from `unet`'s
    original = zc_to_original(src.state_dict(), src.config.unet, src.config.conditioning_embedding_out_channels)
    assert "control_model.input_hint_block.14.weight" in original
    assert "control_model.zero_convs.0.0.weight" in original and "control_model.middle_block_out.0.bias" in original
    path = tmp_path / f"control{suffix}"
    if suffix == ".safetensors":
        save_file(original, str(path))
    else:
        torch.save({"state_dict": original}, path)
    ours = zc.ControlNet.from_original(path, unet)
    theirs = convert_controlnet_checkpoint(original, dict(unet.config))
    assert set(theirs) == set(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
        assert torch.equal(v, theirs[k]), k
