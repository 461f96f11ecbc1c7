"""zc's sampler against diffusers' ControlNet pipeline, and the training loop (resume, NaN)."""
import warnings

import pytest
import torch
from diffusers import (
    ControlNetModel,
    DPMSolverMultistepScheduler,
    StableDiffusionControlNetPipeline,
)

import zc
from zc import train as zt
from zc.sample import sample
from zc.world.pairs import PairedData
from zc.zero_conv import randomize_


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def trained_like(pipe, seed):
    """A ControlNet whose zero convs are non-zero (as after training)."""
    cn = zc.ControlNet.for_pipeline(pipe)
    for i, m in enumerate((cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out)):
        randomize_(m, std=0.05, generator=torch.Generator().manual_seed(seed + i))
    return cn.eval()


def diffusers_pipe(pipe, controlnets, tmp_path, scheduler=None):
    models = []
    for i, cn in enumerate(controlnets):
        cn.save_pretrained(tmp_path / f"cn{i}")
        models.append(ControlNetModel.from_pretrained(tmp_path / f"cn{i}"))
    ref = StableDiffusionControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        controlnet=models[0] if len(models) == 1 else models, scheduler=scheduler or pipe.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


def conditions(n, seed):
    ds = PairedData.generate(n, seed=seed, split="test")
    return ds.prompts, torch.stack([ds[i]["conditioning"] for i in range(n)])


@pytest.mark.parametrize("kw", [{}, {"guess_mode": True},
                                {"conditioning_scale": 0.5, "control_guidance_start": 0.2, "control_guidance_end": 0.8}])
def test_sampler_matches_diffusers_pipeline(pipe, tmp_path, kw):
    cn = zc.ControlNet.from_pretrained(zc.sd.TINYSD.parent / "fill50k-controlnet").eval()  # trained by zc.train
    prompts, cond = conditions(2, 1)
    ours = sample(pipe, cn, prompts, cond, num_inference_steps=8, generator=torch.Generator().manual_seed(0), **kw)
    dkw = {("controlnet_conditioning_scale" if k == "conditioning_scale" else k): v for k, v in kw.items()}
    theirs = diffusers_pipe(pipe, [cn], tmp_path)(prompts, image=cond, num_inference_steps=8, guidance_scale=5.0,
                                                  generator=torch.Generator().manual_seed(0), output_type="pt", **dkw).images
    assert (ours - theirs).abs().max() < 1e-5
    plain = sample(pipe, None, prompts, None, num_inference_steps=8, generator=torch.Generator().manual_seed(0))
    assert (ours - plain).abs().max() > 0.05  # the control changes the picture


def test_two_controlnets_and_another_scheduler_match_diffusers(pipe, tmp_path):
    a, b = trained_like(pipe, 10), trained_like(pipe, 20)
    prompts, c1 = conditions(2, 2)
    _, c2 = conditions(2, 3)
    dpm = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    ours = sample(pipe, [a, b], prompts, [c1, c2], num_inference_steps=6, conditioning_scale=[1.0, 0.5],
                  generator=torch.Generator().manual_seed(0), scheduler=dpm)
    ref = diffusers_pipe(pipe, [a, b], tmp_path, scheduler=DPMSolverMultistepScheduler.from_config(pipe.scheduler.config))
    theirs = ref(prompts, image=[c1, c2], num_inference_steps=6, guidance_scale=5.0, controlnet_conditioning_scale=[1.0, 0.5],
                 generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert (ours - theirs).abs().max() < 1e-5


def pooled_like(pipe, seed):
    """A trained-like ControlNet with global pooling (ControlNet 1.1 shuffle's global_pool_conditions)."""
    cn = zc.ControlNet.for_pipeline(pipe, global_pool_conditions=True)
    for i, m in enumerate((cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out)):
        randomize_(m, std=0.05, generator=torch.Generator().manual_seed(seed + i))
    return cn.eval()


@pytest.mark.parametrize("order", ["pooled alone", "pooled second"])
def test_global_pool_samples_in_guess_mode_like_diffusers(pipe, tmp_path, order):
    # diffusers' pipeline turns guess mode on when its (first) ControlNet pools: zc's sampler must too.
    # (pooled first is left out: diffusers' MultiControlNetModel adds the next residuals in place into the
    # pooled (B, C, 1, 1) ones and raises; zc's sum broadcasts)
    pooled, spatial = pooled_like(pipe, 30), trained_like(pipe, 40)
    prompts, c1 = conditions(2, 5)
    _, c2 = conditions(2, 6)
    nets, conds = {"pooled alone": ([pooled], [c1]), "pooled second": ([spatial, pooled], [c2, c1])}[order]
    kw = dict(num_inference_steps=6, generator=torch.Generator().manual_seed(0))
    ours = sample(pipe, nets, prompts, conds, **kw)  # a list of one is a MultiControlNet of one
    theirs = diffusers_pipe(pipe, nets, tmp_path)(prompts, image=conds if len(nets) > 1 else conds[0],
                                                  guidance_scale=5.0, output_type="pt", **{**kw, "generator": torch.Generator().manual_seed(0)}).images
    assert (ours - theirs).abs().max() < 1e-5


def test_zero_controlnet_leaves_sampling_unchanged_and_cfg_rw_differs(pipe):
    prompts, cond = conditions(2, 4)
    kw = dict(num_inference_steps=6, generator=None)
    fresh = zc.ControlNet.for_pipeline(pipe)
    a = sample(pipe, fresh, prompts, cond, **{**kw, "generator": torch.Generator().manual_seed(0)})
    b = sample(pipe, None, prompts, None, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert torch.equal(a, b)
    cn = trained_like(pipe, 30)
    rw = sample(pipe, cn, prompts, cond, cfg_rw=True, **{**kw, "generator": torch.Generator().manual_seed(0)})
    guess = sample(pipe, cn, prompts, cond, guess_mode=True, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert (rw - guess).abs().max() > 1e-3


def test_sampler_errors(pipe):
    cn = zc.ControlNet.for_pipeline(pipe)
    prompts, cond = conditions(2, 5)
    with pytest.raises(ValueError, match="condition images must be"):
        sample(pipe, cn, prompts, cond[:, :, :32, :32])
    with pytest.raises(ValueError, match="needs condition images"):
        sample(pipe, cn, prompts, None)
    with pytest.raises(ValueError, match="control_guidance_start"):
        sample(pipe, cn, prompts, cond, control_guidance_start=0.9, control_guidance_end=0.1)


@pytest.mark.parametrize("guidance", [1.0, 5.0])  # 5.0: the batch is doubled for CFG inside; the error is not
def test_bad_condition_values_are_refused(pipe, guidance):
    cn = zc.ControlNet.for_pipeline(pipe)
    prompts, cond = conditions(2, 5)
    kw = dict(num_inference_steps=2, guidance_scale=guidance)
    with pytest.raises(ValueError, match=r"must be \(2, 3, 64, 64\).*3 channels.*got \(2, 1, 64, 64\)"):
        sample(pipe, cn, prompts, cond[:, :1], **kw)
    nan = cond.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        sample(pipe, cn, prompts, nan, **kw)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*divide by 255"):
        sample(pipe, cn, prompts, cond * 255, **kw)
    with pytest.raises(ValueError, match=r"2 ControlNet modules need a list of 2 condition batches"):
        sample(pipe, [cn, cn], prompts, [cond], **kw)


def _weights(result):
    return {k: v.clone() for k, v in result.module.state_dict().items()}


def test_training_resumes_to_the_same_weights(pipe, tmp_path):
    cfg = dict(steps=6, batch=2, n_train=16, eval_every=3, eval_n=2, eval_steps=2, checkpoint_every=100, device="cpu")
    straight = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **cfg), pipe=pipe)
    c = zt.TrainConfig(out=str(tmp_path / "b"), **cfg)
    assert zt.train(c, stop_after=4, pipe=pipe) is None  # interrupted after 4 steps (and one evaluation)
    resumed = zt.train(c, pipe=pipe)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history if "loss" in h] == [h["loss"] for h in resumed.history if "loss" in h]
    assert [h["step"] for h in resumed.history if "shape_iou" in h] == [1, 2, 3, 6]  # dense before the first eval_every
    assert not zc.zero_conv.is_zero(resumed.module.controlnet_mid_block)  # it trained
    loaded = zc.ControlNet.from_pretrained(resumed.folder)
    assert all(torch.equal(v, b[k]) for k, v in loaded.state_dict().items())


def test_evaluations_only_at_eval_every_without_the_dense_start(pipe, tmp_path):
    """eval_dense=False (chapter 6's live run, chapter 10's ci preset): only the regular evaluations, and the
    training itself is the dense run's, step for step (an evaluation draws from its own generator)."""
    cfg = dict(steps=6, batch=2, n_train=16, eval_every=3, eval_n=2, eval_steps=2, checkpoint_every=100, device="cpu")
    dense = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **cfg), pipe=pipe)
    sparse = zt.train(zt.TrainConfig(out=str(tmp_path / "b"), eval_dense=False, **cfg), pipe=pipe)
    assert [h["step"] for h in sparse.history if "shape_iou" in h] == [3, 6]
    assert [h["step"] for h in dense.history if "shape_iou" in h] == [1, 2, 3, 6]
    assert [h["loss"] for h in sparse.history if "loss" in h] == [h["loss"] for h in dense.history if "loss" in h]
    a, b = _weights(dense), _weights(sparse)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mixed_precision_checkpointing_and_accumulation_run(pipe, tmp_path):
    import copy

    cfg = zt.TrainConfig(out=str(tmp_path), steps=2, batch=2, n_train=4, eval_every=2, eval_n=2, eval_steps=2,
                         device="cpu", mixed_precision="bf16", gradient_checkpointing=True, grad_accum=2)
    r = zt.train(cfg, pipe=copy.deepcopy(pipe))
    assert all(p.dtype == torch.float32 for p in r.module.parameters())  # the ControlNet stays fp32
    assert all(m.gradient_checkpointing for m in r.module.modules() if hasattr(m, "gradient_checkpointing"))
    assert len([h for h in r.history if "loss" in h]) == 2 and any("shape_iou" in h for h in r.history)


def test_training_stops_on_nan(pipe, tmp_path):
    import copy

    broken = copy.deepcopy(pipe)
    broken.vae.register_to_config(scaling_factor=float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        zt.train(zt.TrainConfig(out=str(tmp_path), steps=2, batch=2, n_train=4, eval_every=0, device="cpu"), pipe=broken)


def test_training_config_errors(pipe, tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        zt.TrainConfig.preset("huge")
    PairedData.generate(2, size=32).save(tmp_path / "data")
    with pytest.raises(ValueError, match="32 px but this SD works at 64 px"):
        zt.train(zt.TrainConfig(out=str(tmp_path / "o"), data=str(tmp_path / "data"), steps=1, device="cpu"), pipe=pipe)


def test_report_to_tensorboard_logs_loss_and_fidelity(pipe, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = zt.TrainConfig(out=str(tmp_path), steps=2, batch=2, n_train=4, eval_every=2, eval_n=2, eval_steps=2,
                         device="cpu", report_to="tensorboard")
    zt.train(cfg, pipe=pipe)
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file in the run folder"
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in acc.Scalars("loss")] == [0, 1]
    assert [e.step for e in acc.Scalars("eval/shape_iou")] == [1, 2]
    with pytest.raises(ValueError, match="unknown tracker"):
        zt.train(zt.TrainConfig(out=str(tmp_path / "x"), steps=1, device="cpu", report_to="tensorbored"), pipe=pipe)


def test_cfg_rw_weights_literal_and_normalised(pipe):
    from zc.sample import cfg_rw_weights

    sd15 = [64] * 4 + [32] * 3 + [16] * 3 + [8] * 3  # SD 1.5's 12 skips + middle, latent sides
    assert cfg_rw_weights(sd15) == [1.0] * 4 + [2.0] * 3 + [4.0] * 3 + [8.0] * 3  # x8 at the middle
    assert cfg_rw_weights(sd15, "normalised")[0] == 1 / 8 and cfg_rw_weights(sd15, "normalised")[-1] == 1.0
    cn = trained_like(pipe, 40)
    prompts, cond = conditions(2, 6)
    run = lambda **kw: sample(pipe, cn, prompts, cond, num_inference_steps=4,  # noqa: E731
                              generator=torch.Generator().manual_seed(0), **kw)
    literal, normalised = run(cfg_rw=True), run(cfg_rw="normalised")
    assert torch.equal(literal, run(cfg_rw="literal")) and (literal - normalised).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cfg_rw must be"):
        run(cfg_rw="loud")


def test_tqdm_disable_hides_every_zc_and_loading_bar(monkeypatch):
    """make book sets TQDM_DISABLE=1: notebook bars (tqdm.auto) ignore it, so zc applies it itself."""
    from diffusers.utils import logging as diffusers_logging

    from zc.training_utils import hide_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert hide_bar() == {} and hide_bar(True) == {"disable": True}
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert hide_bar() == {"disable": True}
    try:
        zc.load_sd()
        assert not diffusers_logging.is_progress_bar_enabled()
    finally:
        diffusers_logging.enable_progress_bar()


def test_condition_share_is_zero_for_an_untrained_controlnet_and_moves_when_it_acts(pipe):
    from zc.train import condition_share

    data = PairedData.generate(4, seed=3, split="test")
    cn = zc.ControlNet.for_pipeline(pipe)  # zero convolutions: the condition cannot change the loss yet
    rows = condition_share(pipe, cn, data, timesteps=(100, 900))
    assert [r["t"] for r in rows] == [100, 900]
    assert all(r["loss"] == r["loss_blank"] and r["share"] == 0 for r in rows)
    with torch.no_grad():  # a ControlNet that acts: the real and the blank condition give other losses
        randomize_(cn, std=0.05, generator=torch.Generator().manual_seed(0))
    rows = condition_share(pipe, cn, data, timesteps=(100, 900))
    assert all(r["loss"] != r["loss_blank"] for r in rows)


def test_non_finite_decoded_images_are_reported_not_clamped_to_black(pipe, monkeypatch):
    """A half-precision overflow shows as NaN images, which clamp() would turn black silently (diffusers #6666)."""
    prompts, cond = conditions(1, 3)
    from types import SimpleNamespace

    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z: SimpleNamespace(sample=decode(z).sample * float("nan")))
    with pytest.warns(UserWarning, match="NaN or inf"):
        sample(pipe, None, prompts, None, num_inference_steps=2)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as seen:  # a finite decode: no such warning
        warnings.simplefilter("always")
        sample(pipe, None, prompts, None, num_inference_steps=2)
    assert not any("NaN or inf" in str(w.message) for w in seen)
