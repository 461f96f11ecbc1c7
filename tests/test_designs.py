"""The registry of designs (zc/designs.py): each one's "starts as the SD alone" is measured, not
assumed, and one evaluation path (designs.sample_kwargs) samples every kind of trained module."""
import copy

import pytest
import torch

import zc
from zc import designs
from zc import train as zt
from zc.sample import sample
from zc.study import side_by_side
from zc.world.pairs import PairedData


UNET = [n for n, d in designs.DESIGNS.items() if d.backbone == "unet"]  # SD3's designs: tests/test_sd3.py


@pytest.mark.parametrize("name", UNET)
def test_each_design_starts_as_the_sd_alone_exactly_when_the_registry_says_so(name):
    d = designs.get(name)
    pipe = zc.load_sd()  # fresh: concat widens the UNet's input
    data = PairedData.generate(2, seed=5, split="test")
    z = torch.randn(2, pipe.unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(data.prompts, "cpu", 1, False)[0]
    with torch.no_grad():
        alone = pipe.unet(z, 400, encoder_hidden_states=text).sample
        module, model = zt.build(zt.TrainConfig(architecture=d.architecture), pipe)
        controlled = model(z, 400, text, data.conditions())
    change = ((controlled - alone).norm() / alone.norm()).item()
    assert (change == 0.0) == d.zero_init, f"{name}: relative change at init {change:.3g}"
    assert designs.of(module) == d


def test_one_call_samples_any_design_and_unknown_names_are_refused():
    pipe = zc.load_sd()
    data = PairedData.generate(2, seed=6, split="test")
    for name in ("T2I-Adapter", "ControlNeXt-style", "IP-Adapter"):
        module, _ = zt.build(zt.TrainConfig(architecture=designs.get(name).architecture), pipe)
        kw = designs.sample_kwargs(module.eval(), data.conditions())
        assert kw["controls"] == [(module, kw["controls"][0][1])] and kw["controls"][0][0] is module
        x = sample(pipe, prompts=data.prompts, num_inference_steps=2, **kw)
        assert x.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown design 'XS'.*T2I-Adapter"):
        designs.get("XS")
    assert "once per image" in designs.table()


ALONGSIDE = [n for n in UNET if not designs.get(n).enter.residuals and not designs.get(n).enter.alone]  # beside the UNet


@pytest.mark.parametrize("name", ALONGSIDE)
def test_zc_train_trains_the_module_alone_and_saves_what_its_class_loads(name, tmp_path):
    """T2I-Adapter, ControlNeXt, XS, IP-Adapter: only the module trains (the UNet stays locked), it is
    evaluated through designs.sample_kwargs, and its folder loads back (T2I: into diffusers' class)."""
    d = designs.get(name)
    pipe = zc.load_sd()
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cfg = zt.TrainConfig.preset("tiny", architecture=d.architecture, steps=3, eval_every=3, device="cpu",
                                out=str(tmp_path))
    torch.manual_seed(cfg.seed)  # as zc.train seeds before it builds
    fresh = zt.build(cfg, zc.load_sd())[0].state_dict()  # the run's own init
    r = zt.train(cfg, pipe=pipe)
    assert designs.of(r.module) == d and r.folder.name == d.architecture
    assert any(not torch.equal(v, fresh[k]) for k, v in r.module.state_dict().items())  # trained
    assert all(torch.equal(v, unet_before[k]) for k, v in pipe.unet.state_dict().items())  # the UNet is locked
    loaded = type(r.module).from_pretrained(r.folder)
    assert all(torch.equal(v, r.module.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history if "loss" in h)
    assert any("shape_iou" in h for h in r.history)


def _perturbed(module, seed):
    """A copy of `module` with every parameter moved by noise: an untrained zero-init module adds nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


@pytest.mark.parametrize("name", ["T2I-Adapter", "ControlNeXt-style", "ControlNet-XS-style"])
def test_two_controls_of_one_design_compose_each_adding_its_own(name):
    """zc.sample with a list of modules of one design: a second module changes the images (it is
    attached), and a second one that adds nothing (scale 0 / a zero-init control) leaves them exactly
    as the first alone; lists of unequal length are refused."""
    pipe = zc.load_sd()
    data = PairedData.generate(2, seed=7, split="test")
    c = data.conditions()
    arch = designs.get(name).architecture
    torch.manual_seed(0)
    a = _perturbed(zt.build(zt.TrainConfig(architecture=arch), pipe)[0], 1)
    b = _perturbed(zt.build(zt.TrainConfig(architecture=arch), pipe)[0], 2)

    def run(modules, conds, **kw):
        return sample(pipe, prompts=data.prompts, num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0), **designs.sample_kwargs(modules, conds), **kw)

    alone = run(a, c)
    both = run([a, b], [c, c])
    assert (both - alone).abs().max() > 1e-3  # the second one is attached
    if name == "T2I-Adapter":  # summed features, each scaled: a x1 + b x0 is a alone, a x0.5 twice is a x1
        scaled = lambda pairs: sample(pipe, pairs, data.prompts, num_inference_steps=3,  # noqa: E731
                                      generator=torch.Generator().manual_seed(0))
        assert torch.allclose(scaled([(a, c, 1.0), (b, c, 0.0)]), alone, atol=1e-6)
        assert torch.allclose(scaled([(a, c, 0.5), (a, c, 0.5)]), alone, atol=1e-5)
    elif name == "ControlNet-XS-style":  # an untrained XS corrects by zero convs: nothing added
        fresh = zt.build(zt.TrainConfig(architecture=arch), pipe)[0].eval()
        assert torch.equal(run([a, fresh], [c, c]), alone)
    else:  # a ControlNeXt branch at scale 0 with no UNet increments adds nothing; its increments alone do
        silent = copy.deepcopy(b)
        silent.register_to_config(scale=0.0)
        assert not torch.equal(run([a, silent], [c, c]), alone)  # the tuned attention outputs still act
        for p in silent.increments.parameters():
            p.data.zero_()
        assert torch.equal(run([a, silent], [c, c]), alone)
    with pytest.raises(ValueError, match="need a list of 2 condition batches"):
        run([a, b], [c])


def test_composition_scores_each_control_alone_and_both_with_their_own_measures(tmp_path):
    pipe = zc.load_sd()
    torch.manual_seed(0)
    mods = {}
    for c in ("outline", "keypoints"):
        m = zt.build(zt.TrainConfig(architecture="controlnext"), pipe)[0]
        m.save_pretrained(tmp_path / c)
        mods[c] = designs.load("ControlNeXt-style", tmp_path / c)
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in mods[c].state_dict().items())
    test = PairedData.generate(2, seed=8, split="test")
    out = side_by_side.composition(pipe, mods, test, steps=2)
    assert set(out) == {"outline alone", "keypoints alone", "both"}
    assert set(out["both"]) == {"shape_iou", "keypoint_accuracy"}
    assert all(0 <= v <= 1 for r in out.values() for v in r.values())
    with pytest.raises(FileNotFoundError, match="--architecture t2i-adapter"):
        designs.load("T2I-Adapter", tmp_path / "nothing")


def test_the_wiring_is_drawn_from_the_unets_config_for_each_successor():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zc.sd import SD15_UNET

    class Config:  # SD 1.5's four levels, without loading it
        block_out_channels = SD15_UNET["block_out_channels"]

    for name in side_by_side.WIRING:
        fig, ax = plt.subplots()
        side_by_side.draw_wiring(name, Config, ax)
        labels = {t.get_text() for t in ax.texts}
        assert {"enc L4", "dec L4", "middle"} <= labels and "enc L5" not in labels, name
        plt.close(fig)
    with pytest.raises(ValueError, match="no wiring drawn for 'IP-Adapter'"):
        side_by_side.draw_wiring("IP-Adapter", Config, plt.subplots()[1])


def test_the_stored_side_by_side_keeps_each_protocol_in_its_own_block():
    """Chapter 13's two tables: the successors with the recheck's rows on draws (3 seeds each on both
    conditions), and chapter 10's baselines with the stored sweep's own ControlNet rows; never mixed."""
    from zc.study.claims import RESULTS

    rows, baselines = side_by_side.stored_rows(RESULTS / "cpu")
    want = [*side_by_side.SUCCESSORS, "condition added directly"]
    assert sorted({r["name"] for r in rows}) == sorted(want)
    for name in want:
        for c in ("outline", "keypoints"):
            assert sorted(r["seed"] for r in rows if r["name"] == name and r["condition"] == c) == [0, 1, 2]
    assert {r["name"] for r in baselines} == set(side_by_side.BASELINES)
    assert [r["condition"] for r in baselines][:1] == ["outline"]  # the successors' conditions come first
    # the two ControlNet references are different runs (draws vs the posterior's mean)
    ref = {(r["condition"], r["seed"]): r["none"] for r in rows if r["name"] == "ControlNet"}
    old = {(r["condition"], r["seed"]): r["none"] for r in baselines if r["name"] == "ControlNet"}
    assert set(ref) <= set(old) and any(ref[k] != old[k] for k in ref)
    speed = [{"design": n, "params": 10**6, "pct_unet": 40.0, "train_s": 0.2, "image_s": 0.2} for n in want]
    text = side_by_side.format_side_by_side(side_by_side.side_by_side(baselines, speed))
    assert max(map(len, text.splitlines())) <= 88  # the book's width, with three conditions
    assert "(not timed)" in text and "scribble" in text and text.count("—") >= 4  # concat: scribble only


def test_t2i_adapters_cubic_timesteps_favour_high_noise_and_the_papers_draw_is_unchanged():
    T, n = 1000, 20_000
    cubic = zt.draw_timesteps(n, T, torch.Generator().manual_seed(0), "cubic")
    uniform = zt.draw_timesteps(n, T, torch.Generator().manual_seed(0))
    assert 0 <= int(cubic.min()) and int(cubic.max()) <= T - 1
    # P(t >= 0.875 T) = (1 - 0.875)^(1/3) = 0.5 for t = (1 - u³) T; 0.125 for uniform t
    assert abs((cubic >= 0.875 * T).float().mean().item() - 0.5) < 0.02
    assert abs((uniform >= 0.875 * T).float().mean().item() - 0.125) < 0.02
    assert torch.equal(uniform, torch.randint(0, T, (n,), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="'uniform' or 'cubic'"):
        zt.draw_timesteps(4, T, torch.Generator(), "cosine")


def test_a_design_hooked_inside_the_blocks_trains_with_checkpointing_asked_for(tmp_path):
    """ControlNeXt's increments and XS's decoder connections hook modules inside the UNet's checkpointed
    blocks; the hooks are gone by backward, so zc leaves the UNet unchecked there and says so (the sd15
    preset asks for checkpointing; chapter 13's live run on a stand-in trains ControlNeXt with it)."""
    cfg = zt.TrainConfig.preset("tiny", architecture="controlnext", steps=2, eval_every=0, device="cpu",
                                gradient_checkpointing=True, out=str(tmp_path))
    with pytest.warns(UserWarning, match="gradient_checkpointing is off for ControlNeXt-style"):
        r = zt.train(cfg, pipe=zc.load_sd())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history if "loss" in h)
    assert designs.get("ControlNet-XS-style").hooks_in_blocks and not designs.get("ControlNet").hooks_in_blocks
