import json

import pytest
import torch
from PIL import Image

from zc.world import metrics, shapes
from zc.world.fidelity import condition_fidelity, convergence_step, prompt_colours
from zc.world.pairs import PairedData, disc_masks


def test_generation_is_deterministic_and_normalised():
    a, b = PairedData.generate(8, seed=1), PairedData.generate(8, seed=1)
    assert torch.equal(a.targets, b.targets) and a.prompts == b.prompts
    assert not torch.equal(a.targets, PairedData.generate(8, seed=2).targets)
    item = a[0]
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1 and item["pixel_values"].min() < -0.01
    assert item["conditioning"].min() == 0 and item["conditioning"].max() == 1
    assert all(p.endswith(" background") and " circle with " in p for p in a.prompts)
    assert PairedData.generate(2, size=128).targets.shape == (2, 3, 128, 128)


def test_train_and_test_splits_never_share_a_colour_pair():
    tr, te = PairedData.generate(500, seed=0), PairedData.generate(200, seed=0, split="test")
    assert not set(tr.prompts) & set(te.prompts)
    assert shapes.held_out_pair(te.scenes.fill, te.scenes.bg).all()


def test_original_format_round_trip(tmp_path):
    ds = PairedData.generate(6, seed=3)
    ds.save(tmp_path)
    first = json.loads((tmp_path / "prompt.json").read_text().splitlines()[0])
    assert first == {"source": "source/0.png", "target": "target/0.png", "prompt": ds.prompts[0]}
    back = PairedData.load(tmp_path)
    assert torch.equal(back.targets, ds.targets) and torch.equal(back.sources, ds.sources) and back.prompts == ds.prompts
    assert len(PairedData.load(tmp_path, limit=2)) == 2


def test_diffusers_column_layout():
    ds = PairedData.generate(3, seed=4)
    rows = [{"image": Image.fromarray(ds.targets[i].permute(1, 2, 0).numpy()),
             "conditioning_image": Image.fromarray(ds.sources[i].permute(1, 2, 0).numpy()).convert("L"),  # grey works too
             "text": ds.prompts[i]} for i in range(3)]
    back = PairedData.from_columns(rows)
    assert torch.equal(back.targets, ds.targets) and torch.equal(back.sources, ds.sources)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt.json"):
        PairedData.load(tmp_path)
    (tmp_path / "prompt.json").write_text('{"source": "source/0.png"}\n')
    with pytest.raises(ValueError, match="line 1"):
        PairedData.load(tmp_path)
    (tmp_path / "prompt.json").write_text('{"source": "s.png", "target": "t.png", "prompt": "x"}\n')
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PairedData.load(tmp_path)
    with pytest.raises(ValueError, match="differ in size"):
        PairedData.from_columns([{"image": Image.new("RGB", (8, 8)), "conditioning_image": Image.new("RGB", (4, 4)), "text": "x"}])


def test_disc_from_outline_matches_the_circle():
    ds = PairedData.generate(32, seed=5)
    assert metrics.iou(disc_masks(ds.sources), shapes.coverage(ds.scenes, 64) > 0.5).mean() > 0.95


def test_fidelity_of_ground_truth_and_of_misplaced_circles():
    ds = PairedData.generate(16, seed=6, split="test")
    truth = (ds.targets.float() / 255)
    good = condition_fidelity(truth, ds)
    assert good["shape_iou"] > 0.9 and good["background_accuracy"] > 0.99
    moved = condition_fidelity(truth.flip(-1).flip(-2), ds)  # right colours, wrong place
    assert moved["shape_iou"] < 0.5 and moved["fill_accuracy"] > 0.85


def test_prompt_colours():
    fill, bg = prompt_colours(["burly wood circle with orange background"])
    torch.testing.assert_close(fill[0], torch.tensor([222, 184, 135]) / 255)
    torch.testing.assert_close(bg[0], torch.tensor([255, 165, 0]) / 255)
    with pytest.raises(ValueError, match="not '<colour> <shape> with <colour> background'"):
        prompt_colours(["a circle"])
    with pytest.raises(ValueError, match="unknown colour"):
        prompt_colours(["plaid circle with red background"])


def test_convergence_step_is_relative_to_the_baseline_and_the_final_score():
    h = [{"step": s, "shape_iou": v} for s, v in [(100, 0.1), (200, 0.75), (300, 0.5), (400, 0.8), (500, 0.9)]]
    # baseline 0.1, final 0.9: the bar is 0.1 + 0.7 * 0.8 = 0.66; step 200 reaches it but 300 falls back
    assert convergence_step(h, "shape_iou", baseline=0.1) == 400
    assert convergence_step(h, "shape_iou", baseline=0.1, fraction=0.95) == 500
    assert convergence_step(h, "shape_iou", baseline=0.85) is None  # never rose 0.1 above the baseline
    assert convergence_step([], "shape_iou", baseline=0.1) is None
