import csv
import dataclasses
from pathlib import Path

import pytest
import torch

import zc
from zc.study import ablations, stats, sweep_report
from zc.world import metrics, shapes
from zc.world.fidelity import shape_regions
from zc.world.pairs import PairedData, disc_masks


def test_prompt_settings():
    p = ["red circle with blue background"]
    assert ablations.prompt_setting(p, "none") == [""]
    assert ablations.prompt_setting(p, "insufficient") == ["circle"]
    assert ablations.prompt_setting(p, "conflicting") == ["red square with blue background"]
    assert ablations.prompt_setting(p, "perfect") == p
    with pytest.raises(ValueError, match="prompt setting"):
        ablations.prompt_setting(p, "loud")


def test_shape_regions_need_no_colour_names():
    ds = PairedData.generate(16, seed=2, split="test")
    truth = ds.targets.float() / 255
    iou = metrics.iou(shape_regions(truth), disc_masks(ds.sources))
    assert iou.mean() > 0.9
    blank = torch.ones_like(truth) * 0.5
    assert metrics.iou(shape_regions(blank), disc_masks(ds.sources)).max() == 0


def test_runner_writes_a_row_per_run_and_resumes(tmp_path, monkeypatch):
    micro = (dict(steps=2, batch=2, n_train=8, eval_every=0, eval_n=2, checkpoint_every=100, device="cpu"),
             [ablations.Run("ControlNet", "architecture", {}), ablations.Run("lite", "architecture", {"architecture": "lite"}),
              ablations.Run("unlocked", "speed", {"sd_locked": False})])
    monkeypatch.setattr(ablations, "runs_for", lambda preset: micro)
    calls = []
    real_train = ablations.train
    monkeypatch.setattr(ablations, "train", lambda cfg, pipe=None: calls.append(cfg.architecture) or real_train(cfg, pipe=pipe))
    alone = []  # the seeds forgetting() measured the SD alone for
    real_forgetting = ablations.forgetting
    monkeypatch.setattr(ablations, "forgetting", lambda pipe, *a, **k: alone.append((k["seed"], k["n"], k["steps"])) or real_forgetting(pipe, *a, **k))
    small = dict(n_test=2, sample_steps=2, n_forget=4)  # the sizes reach every measurement
    table = ablations.run_all("ci", str(tmp_path), seeds=(0, 1), names=["ControlNet", "lite"], **small)
    rows = list(csv.DictReader(open(table)))
    assert [(r["name"], r["seed"]) for r in rows] == [("ControlNet", "0"), ("lite", "0"), ("ControlNet", "1"), ("lite", "1")]
    # the untouched SD alone is measured once per seed and shared by that seed's locked runs
    assert alone == [(0, 4, 2), (1, 4, 2)] and rows[0]["base_kind_accuracy"] == rows[1]["base_kind_accuracy"]
    assert all(0 <= float(r[s]) <= 1 for r in rows for s in stats.SETTINGS)
    ablations.run_all("ci", str(tmp_path), seeds=(0, 1), **small)  # the finished rows are skipped
    assert calls == ["controlnet", "lite"] * 2 + ["controlnet"] * 2  # then only the unlocked runs train
    assert alone == [(0, 4, 2), (1, 4, 2)] * 2  # an SD that trained is measured after its own run
    assert len(list(csv.DictReader(open(table)))) == 6
    caches = sorted(p.name for p in tmp_path.glob("cache_*"))  # the runs of a seed share one latent cache
    assert caches == ["cache_outline_8_seed0", "cache_outline_8_seed1"]
    assert not any((p / "cache").exists() for p in tmp_path.glob("outline_*"))


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        ablations.runs_for("gpu")


def test_runner_writes_fidelity_curves(tmp_path, monkeypatch):
    micro = (dict(steps=2, batch=2, n_train=8, eval_every=2, eval_n=2, eval_steps=2, checkpoint_every=100, device="cpu"),
             [ablations.Run("ControlNet", "reference", {})])
    monkeypatch.setattr(ablations, "runs_for", lambda preset: micro)
    ablations.run_all("ci", str(tmp_path), seeds=(3,), n_test=2, sample_steps=2, n_forget=4)
    curves = stats.read_csv(tmp_path / "curves.csv")
    assert [(c["name"], c["seed"], c["step"]) for c in curves] == [("ControlNet", 3, 1), ("ControlNet", 3, 2)]  # early + regular
    row = stats.read_csv(tmp_path / "results.csv")[0]
    assert 0 < row["sec_per_step"] * row["steps"] <= row["train_seconds"]  # steps alone, without encoding/evals


def test_shading_score_sees_the_shaded_style():
    ds = PairedData.generate(32, seed=4, split="test")
    flat = shapes.render(ds.scenes, ds.size)
    shaded = shapes.render(ds.scenes, ds.size, style="shaded")
    assert ablations.shading_score(shaded).mean() > 0.25
    assert ablations.shading_score(flat).abs().mean() < 0.03
    assert ablations.shading_score(shaded.flip(2)).mean() < -0.25  # lit from below
    with pytest.raises(ValueError, match="style"):
        shapes.render(ds.scenes, ds.size, style="sketchy")


def test_summarize_means_and_stds_over_seeds():
    rows = [{"name": "a", "group": "g", "seed": s, "none": v, "insufficient": v, "conflicting": v, "perfect": 2 * v,
             "sec_per_step": 1.0} for s, v in ((0, 0.2), (1, 0.4), (2, 0.9))]
    (s,) = stats.summarize(rows)
    assert s["seeds"] == 3
    assert s["none"] == pytest.approx(0.5) and s["perfect"] == pytest.approx(1.0)
    assert s["none_std"] == pytest.approx(torch.tensor([0.2, 0.4, 0.9]).std().item())
    assert "a" in sweep_report.format_table([s])


def test_guidance_and_transfer_tables(tmp_path):
    import zc

    pipe = zc.load_sd("tinysd")
    cn = zc.ControlNet.for_pipeline(pipe).eval()  # zero convolutions: no effect yet
    test = PairedData.generate(2, seed=5, split="test")
    rows = ablations.guidance_table(pipe, cn, test, seeds=(0, 1), steps=2)
    assert {(r["mode"], r["prompt"]) for r in rows} == {(m, p) for m in ablations.GUIDANCE for p in ("none", "perfect")}
    assert all(0 <= r["shape_iou"] <= 1 and r["seeds"] == 2 for r in rows)
    for r in rows:  # the mean of the per-seed values, and a 95% t half-width over them
        assert len(r["shape_iou_by_seed"]) == 2 and r["shape_iou"] == pytest.approx(sum(r["shape_iou_by_seed"]) / 2)
        assert r["shape_iou_ci"] >= 0
    rows, images = ablations.transfer_table({"a": pipe}, cn, test, steps=2)
    without, with_ = rows
    assert (without["controlnet"], with_["controlnet"]) == ("none", "ControlNet")
    assert torch.equal(images["a", "none"], images["a", "ControlNet"])  # an untrained ControlNet changes nothing
    assert without["shape_iou"] == with_["shape_iou"] and without["shading"] == with_["shading"]


def test_baselines_for_the_locked_copy(tmp_path):
    """ControlNet from scratch (same network, random weights) and the whole UNet fine-tuned with the
    condition concatenated to its input (SD depth-to-image's way)."""
    import zc
    from zc import train as zt
    from zc.controls.variants import ConcatConditioned
    from zc.sample import sample

    pipe = zc.load_sd()
    copied, scratch = zc.ControlNet.for_pipeline(pipe), zc.ControlNet.for_pipeline(pipe, copy=False)
    a, b = copied.state_dict(), scratch.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert torch.equal(a["down_blocks.0.resnets.0.conv1.weight"], pipe.unet.state_dict()["down_blocks.0.resnets.0.conv1.weight"])
    assert not torch.equal(a["down_blocks.0.resnets.0.conv1.weight"], b["down_blocks.0.resnets.0.conv1.weight"])
    assert zc.zero_conv.is_zero(scratch.controlnet_mid_block)  # still a harmless start

    test = PairedData.generate(2, seed=8, split="test")
    model = ConcatConditioned(zc.load_sd().unet)
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    text = torch.randn(2, 16, 64)
    with torch.no_grad():
        plain = model.unet(z, t, encoder_hidden_states=text).sample
        assert torch.equal(model(z, t, text, test.conditions()), plain)  # zero-initialised input weights
    with pytest.raises(ValueError, match="has none"):
        sample(pipe, model, test.prompts, test.conditions(), guess_mode=True)
    with pytest.raises(ValueError, match="fine-tuned its own UNet"):
        sample(pipe, model, test.prompts, test.conditions(), num_inference_steps=2)

    fresh = zc.load_sd()
    base = ablations.forgetting(fresh, n=4, steps=4)
    kw = dict(steps=2, batch=2, n_train=8, eval_every=2, eval_n=2, eval_steps=2, device="cpu")
    r = zt.train(zt.TrainConfig(out=str(tmp_path / "concat"), architecture="concat", **kw), pipe=fresh)
    assert isinstance(r.module, ConcatConditioned) and (tmp_path / "concat" / "controlnet" / "unet").is_dir()
    assert not torch.equal(fresh.unet.state_dict()["up_blocks.0.resnets.0.conv1.weight"],
                           zc.load_sd().unet.state_dict()["up_blocks.0.resnets.0.conv1.weight"])  # the UNet trained
    after = ablations.forgetting(fresh, r.module, n=4, steps=4)
    assert set(after) == {"base_kind_accuracy", "base_colour_accuracy"} and all(0 <= v <= 1 for v in after.values())
    locked = zt.train(zt.TrainConfig(out=str(tmp_path / "cn"), **kw), pipe=zc.load_sd())
    assert ablations.forgetting(zc.load_sd(), locked.module, n=4, steps=4) == base  # the locked SD forgot nothing


def test_sample_efficiency_from_curves():
    def curve(name, seed, pts):
        return [{"condition": "keypoints", "name": name, "seed": seed, "step": s, "score": v} for s, v in pts]

    fast = [(100, 0.1), (200, 0.8), (1000, 0.9)]
    slow = [(100, 0.1), (200, 0.2), (500, 0.75), (1000, 0.9)]
    never = [(100, 0.1), (1000, 0.3)]
    c = curve("ControlNet", 0, fast) + curve("ControlNet", 1, fast) + curve("lite", 0, slow) + curve("lite", 1, slow)
    c += curve("direct", 0, never) + curve("direct", 1, never)
    eff = {r["name"]: r for r in stats.sample_efficiency(c, "keypoints")}
    assert eff["ControlNet"]["steps_to"] == 200 and eff["lite"]["steps_to"] == 500 and eff["direct"]["steps_to"] is None
    assert eff["ControlNet"]["auc"] > eff["lite"]["auc"] > eff["direct"]["auc"]
    assert eff["direct"]["reached"] == "0/2" and eff["ControlNet"]["bar"] == pytest.approx(0.72)


def test_merge_sweeps_never_mixes_two_sweeps_within_a_condition():
    old = [{"name": "ControlNet", "seed": 0, "perfect": 0.8}, {"name": "ControlNet", "seed": 1, "perfect": 0.7},
           {"name": "1k pairs", "seed": 0, "perfect": 0.6}]  # an older CSV: no condition column (outline)
    newer_scribble = [{"condition": "scribble", "name": "ControlNet", "seed": 0, "perfect": 0.3}]
    rows = stats.merge_sweeps(old, newer_scribble)
    assert rows[:1] == newer_scribble and rows[1:] == old  # newer first; outline untouched by a scribble sweep
    newer_outline = [{"condition": "outline", "name": "ControlNet", "seed": 0, "perfect": 0.9}]
    rows = stats.merge_sweeps(old, newer_scribble + newer_outline)
    assert rows == newer_scribble + newer_outline  # the older outline rows, 1k pairs too, are superseded


def test_conflict_geometry_tells_the_prompts_kind_from_the_outlines():
    ds = PairedData.generate(16, seed=3, split="test")  # circles
    sc = ds.scenes
    squares = ablations.conflicting_scenes(sc)  # the prompt's square at each outline's place and size
    assert (squares.kind == shapes.KINDS.index("square")).all()
    obeys_prompt = ablations.conflict_geometry(shapes.render(squares), sc)
    obeys_outline = ablations.conflict_geometry(shapes.render(sc), sc)
    assert obeys_prompt["prompt_kind_share"] == 1 and obeys_outline["prompt_kind_share"] == 0
    assert obeys_prompt["iou"] == pytest.approx(obeys_prompt["iou_same_radius"], abs=0.04)
    assert obeys_prompt["iou"] == pytest.approx(obeys_prompt["iou_same_area"], abs=0.02)  # the square it drew
    assert obeys_prompt["iou"] < 0.82 and obeys_outline["iou"] > 0.9
    assert obeys_prompt["area_ratio"] < 0.9 < obeys_outline["area_ratio"]
    bigger = dataclasses.replace(squares, radius=squares.radius * 1.15)  # obeys the kind, not the size
    assert ablations.conflict_geometry(shapes.render(bigger), sc)["area_ratio"] > obeys_prompt["area_ratio"] + 0.2


def test_references_bracket_the_sweep_scores():
    """The no-control baseline (SD alone, per run seed and prompt setting) and the ceiling (the
    training renders scored by the same measure) on the sweep's held-out scenes."""
    rows = ablations.references("keypoints", seeds=(0, 1), n_test=4, steps=2)
    by = {(r["name"], r["seed"]): r for r in rows}
    assert set(by) == {(n, s) for n in (ablations.NO_CONTROL, ablations.CEILING) for s in (0, 1)}
    ceiling = by[ablations.CEILING, 0]
    assert {ceiling[p] for p in stats.SETTINGS} == {1.0}  # the renders hit both keypoints
    assert all(0 <= by[ablations.NO_CONTROL, 0][p] < 1.0 for p in stats.SETTINGS)
    summary = stats.summarize(rows, stats.SETTINGS)  # the chapter's table reads them like runs
    assert [s["name"] for s in summary] == [ablations.NO_CONTROL, ablations.CEILING]


def test_successors_side_by_side_one_row_per_design_condition_and_seed(tmp_path, monkeypatch):
    """Chapter 13's chain on a micro sweep: the runner trains every successor of the cpu preset on a dense
    and a sparse condition and writes one row each with every column; the side-by-side joins them with
    the speed rows; benchmarks/successors.py finds each trained module and composes the two of a design."""
    import importlib.util

    from zc import designs
    from zc.study import side_by_side

    base, runs = ablations.runs_for("cpu")
    successors = [r for r in runs if r.group in ("reference", "successors")]
    assert [r.name for r in successors] == side_by_side.SUCCESSORS
    micro = {"steps": 2, "batch": 2, "n_train": 8, "eval_every": 2, "eval_n": 2, "eval_steps": 2,
             "checkpoint_every": 100, "device": "cpu"}
    monkeypatch.setattr(ablations, "runs_for", lambda preset: (micro, successors))
    for condition in ("outline", "keypoints"):
        table = ablations.run_all("cpu", str(tmp_path), seeds=(0,), n_test=2, condition=condition, sample_steps=2)
    rows = stats.read_csv(table)
    assert sorted((r["condition"], r["name"]) for r in rows) == sorted(
        (c, n) for c in ("outline", "keypoints") for n in side_by_side.SUCCESSORS)
    for r in rows:
        assert {"sec_per_step", "train_seconds", "base_colour_accuracy", *stats.SETTINGS} <= set(r)
        assert r["score"] == ("shape_iou" if r["condition"] == "outline" else "keypoint_accuracy")
    speed = [{"design": n, "params": 1000 * (i + 1), "pct_unet": 1.0, "train_s": 0.1 * (i + 1), "image_s": 0.2}
             for i, n in enumerate(side_by_side.SUCCESSORS)]
    side = side_by_side.side_by_side(rows, speed)
    assert [r["design"] for r in side] == side_by_side.SUCCESSORS
    assert side[1]["train_x"] == pytest.approx(2.0) and set(side[0]["scores"]) == {"outline", "keypoints"}
    assert "keypoints" in side_by_side.format_side_by_side(side)
    spec = importlib.util.spec_from_file_location("successors", Path(__file__).parent.parent / "benchmarks" / "successors.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pipe = zc.load_sd()
    test = PairedData.generate(2, seed=777, split="test")
    for name in side_by_side.SUCCESSORS:
        mods = {c: designs.load(name, bench.module_folder([tmp_path], c, name, 0)) for c in ("outline", "keypoints")}
        out = side_by_side.composition(pipe, mods, test, steps=2)
        assert set(out) == {"outline alone", "keypoints alone", "both"}
    with pytest.raises(FileNotFoundError, match="successors_sweep.sh"):
        bench.module_folder([tmp_path], "outline", "T2I-Adapter", 5)
