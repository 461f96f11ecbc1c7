"""ControlNet++'s reward on the shapes world (zc/controls/reward.py): the extractor reads the condition back,
the loss reaches the ControlNet, and zc.train fine-tunes a trained ControlNet with it."""
import pytest
import torch

import zc
from zc import train as zt
from zc.controls import reward
from zc.world.pairs import PairedData, disc_masks
from zc.zero_conv import randomize_


def test_the_shipped_segmenter_reads_the_truth_back_and_not_a_moved_shape():
    seg = reward.load_segmenter()
    test = PairedData.generate(32, seed=100, split="test")
    masks, images = disc_masks(test.sources), test.targets.float() / 255
    assert reward.agreement(seg, images, masks).mean() > 0.9  # the ground truth scores near the top
    assert reward.agreement(seg, images, torch.roll(masks, 16, 2)).mean() < 0.4  # a moved outline clearly lower


def test_the_reward_loss_reaches_the_controlnet_through_the_decoder():
    pipe = zc.load_sd()
    cn = zc.ControlNet.for_pipeline(pipe)
    for i, m in enumerate((cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out)):
        randomize_(m, std=0.05, generator=torch.Generator().manual_seed(i))
    model = zc.ControlledUNet(pipe.unet, cn)
    data = PairedData.generate(2, seed=3)
    z = torch.randn(2, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([50, 150])
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    pred = model(z, t, text, data.conditions())
    x0 = reward.predicted_x0(pipe.scheduler, z, pred, t)
    loss = reward.reward_loss(pipe, reward.load_segmenter().requires_grad_(False), x0, disc_masks(data.sources))
    loss.backward()
    grads = [p.grad for p in cn.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    with pytest.raises(ValueError, match="outline condition"):
        reward.condition_masks("keypoints", data.sources)


def test_predicted_x0_inverts_the_forward_process_for_each_prediction_type():
    from diffusers import DDPMScheduler

    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500, 900])
    for kind in ("epsilon", "v_prediction"):
        s = DDPMScheduler(prediction_type=kind)
        noisy = s.add_noise(x0, eps, t)
        pred = eps if kind == "epsilon" else s.get_velocity(x0, eps, t)
        assert torch.allclose(reward.predicted_x0(s, noisy, pred, t), x0, atol=1e-4)


def test_zc_train_fine_tunes_a_trained_controlnet_with_the_reward(tmp_path):
    pipe = zc.load_sd()
    shipped = zc.sd.TINYSD.parent / "fill50k-controlnet"
    cfg = zt.TrainConfig.preset("tiny", init=str(shipped), reward_weight=1.0, reward_t_max=1000, steps=2,
                                eval_every=0, device="cpu", out=str(tmp_path))
    r = zt.train(cfg, pipe=pipe)
    start = zc.ControlNet.from_pretrained(shipped).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in r.module.state_dict().items())
    plain = zt.train(zt.TrainConfig.preset("tiny", init=str(shipped), steps=2, eval_every=0, device="cpu",
                                           out=str(tmp_path / "plain")), pipe=zc.load_sd())
    assert r.history[0]["loss"] > plain.history[0]["loss"]  # the reward term adds to the same batch's loss


def test_the_reward_is_refused_where_it_is_undefined(tmp_path):
    with pytest.raises(ValueError, match="outline condition"):
        zt.train(zt.TrainConfig.preset("tiny", condition="keypoints", reward_weight=1.0, device="cpu",
                                       out=str(tmp_path / "k")), pipe=zc.load_sd())
    with pytest.raises(ValueError, match="condition_dropout"):
        zt.train(zt.TrainConfig.preset("tiny", reward_weight=1.0, condition_dropout=0.5, device="cpu",
                                       out=str(tmp_path / "d")), pipe=zc.load_sd())
