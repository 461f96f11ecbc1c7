import csv

import pytest
import torch

from zc import ablations
from zc.fill50k import Fill50k, disc_masks
from zc import metrics


def test_prompt_settings():
    p = ["red circle with blue background"]
    assert ablations.prompt_setting(p, "none") == [""]
    assert ablations.prompt_setting(p, "insufficient") == ["circle"]
    assert ablations.prompt_setting(p, "conflicting") == ["red square with blue background"]
    assert ablations.prompt_setting(p, "perfect") == p
    with pytest.raises(ValueError, match="prompt setting"):
        ablations.prompt_setting(p, "loud")


def test_shape_regions_need_no_colour_names():
    ds = Fill50k.generate(16, seed=2, split="test")
    truth = ds.targets.float() / 255
    iou = metrics.iou(ablations.shape_regions(truth), disc_masks(ds.sources))
    assert iou.mean() > 0.9
    blank = torch.ones_like(truth) * 0.5
    assert metrics.iou(ablations.shape_regions(blank), disc_masks(ds.sources)).max() == 0


def test_runner_writes_a_row_per_run_and_resumes(tmp_path, monkeypatch):
    micro = (dict(steps=2, batch=2, n_train=8, eval_every=0, eval_n=2, checkpoint_every=100, device="cpu"),
             [ablations.Run("ControlNet", "architecture", {}), ablations.Run("lite", "architecture", {"architecture": "lite"})])
    monkeypatch.setattr(ablations, "runs_for", lambda preset: micro)
    calls = []
    real_train = ablations.train
    monkeypatch.setattr(ablations, "train", lambda cfg, pipe=None: calls.append(cfg.architecture) or real_train(cfg, pipe=pipe))
    table = ablations.run_all("ci", str(tmp_path), seeds=(0,), n_test=2)
    rows = list(csv.DictReader(open(table)))
    assert [r["name"] for r in rows] == ["ControlNet", "lite"]
    assert all(0 <= float(r[s]) <= 1 for r in rows for s in ablations.PROMPTS)
    ablations.run_all("ci", str(tmp_path), seeds=(0, 1), n_test=2)  # seed 0 is done: only seed 1 trains
    assert calls == ["controlnet", "lite", "controlnet", "lite"]
    assert len(list(csv.DictReader(open(table)))) == 4


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        ablations.runs_for("gpu")
