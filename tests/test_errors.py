"""Bad input gets an error that names the problem and the fix."""
import pytest
import torch
from conftest import inputs, make_unet

import zc
from zc.original_format import zc_to_original


@pytest.fixture
def cn():
    return zc.ControlNet.from_unet(make_unet("2level"))


def test_wrong_condition_channels(cn):
    x = inputs()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*conditioning_channels=1"):
        cn(**{**x, "controlnet_cond": x["controlnet_cond"][:, :1]})


def test_condition_size_must_match_latent(cn):
    x = inputs()
    with pytest.raises(ValueError, match=r"must be \(64, 64\) \(latent size x 8\)"):
        cn(**{**x, "controlnet_cond": torch.rand(2, 3, 32, 32)})


def test_condition_encoder_downsampling_must_match_vae(cn):
    small = zc.ControlNet.from_unet(make_unet("2level"), conditioning_embedding_out_channels=(16, 32))
    assert small.controlnet_cond_embedding.downsampling_factor == 2
    x = inputs()  # 64 px condition for 8x8 latents: an 8x VAE
    with pytest.raises(ValueError, match="downsamples by 2"):
        small(**x)
    small(**{**x, "controlnet_cond": torch.rand(2, 3, 16, 16)})  # a 2x 'VAE' works


def test_wrong_unet(cn):
    with pytest.raises(ValueError, match="different UNet.*block_out_channels"):
        zc.ControlledUNet(make_unet("3level"), cn)


def test_wrong_sample_channels(cn):
    x = inputs()
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        cn(**{**x, "sample": torch.randn(2, 3, 8, 8)})


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ControlNet folder"):
        zc.ControlNet.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        zc.ControlNet.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        zc.ControlNet.from_original(tmp_path / "missing.pth", make_unet("2level"))


def test_corrupted_weights(cn, tmp_path):
    cn.save_pretrained(tmp_path)
    w = tmp_path / zc.ControlNet.WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        zc.ControlNet.from_pretrained(tmp_path)
    bad = tmp_path / "control.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        zc.ControlNet.from_original(bad, make_unet("2level"))


def test_only_safetensors_in_folders(cn, tmp_path):
    cn.save_pretrained(tmp_path)
    (tmp_path / zc.ControlNet.WEIGHTS_NAME).rename(tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        zc.ControlNet.from_pretrained(tmp_path)


def test_weights_of_another_shape(cn, tmp_path):
    other = zc.ControlNet.from_unet(make_unet("2level"), conditioning_embedding_out_channels=(16, 32))
    other.save_pretrained(tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["conditioning_embedding_out_channels"] = [16, 32, 96, 256]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit this ControlNet"):
        zc.ControlNet.from_pretrained(tmp_path)


def test_original_checkpoint_with_foreign_keys(cn):
    sd = zc_to_original(cn.state_dict(), cn.config.unet, cn.config.conditioning_embedding_out_channels)
    sd["control_model.something_else.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no place in this ControlNet"):
        zc.ControlNet.from_original(sd, make_unet("2level"))


def test_bad_config_values():
    with pytest.raises(ValueError, match="architecture must be"):
        zc.ControlNet.from_unet(make_unet("2level"), architecture="big")
    with pytest.raises(ValueError, match="zero_conv_init"):
        zc.ControlNet.from_unet(make_unet("2level"), zero_conv_init="ones")


def test_receptive_field_of_sd_hint_block():
    from zc.condition_encoder import ConditionEncoder, receptive_field

    # SD's 8 convs: three at stride 1 before any downsampling... computed by hand: 1+2+2+2+4+4+8+8+16 = 47
    assert receptive_field(ConditionEncoder(320)) == 47
    assert receptive_field(ConditionEncoder(32, block_out_channels=(16,))) == 5


def test_default_hint_channels_follow_the_vae():
    from zc.condition_encoder import ConditionEncoder, default_channels

    assert default_channels(8) == (16, 32, 96, 256)
    assert ConditionEncoder(32, block_out_channels=default_channels(4)).downsampling_factor == 4
    with pytest.raises(ValueError, match="VAE factor"):
        default_channels(6)


def test_malformed_config_json_names_the_file(cn, tmp_path):
    cn.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"block_out_channels": [32, 64],')  # cut off
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        zc.ControlNet.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a ControlNet config"):
        zc.ControlNet.from_pretrained(tmp_path)
