"""One network for several spatial conditions: stacked condition images ("a+b") and condition dropout."""
import pytest
import torch
from diffusers import ControlNetModel

import zc
from zc import train as zt
from zc.world import conditions, shapes
from zc.world.pairs import PairedData


def test_a_stack_is_its_members_images_along_the_channels():
    scenes = shapes.sample_scenes(3, torch.Generator().manual_seed(0), kinds=shapes.KINDS)
    scenes.seed = torch.arange(3)
    both = conditions.draw("keypoints+scribble", scenes, 64)
    assert both.shape == (3, 6, 64, 64)
    assert torch.equal(both[:, :3], conditions.draw("keypoints", scenes, 64))
    assert torch.equal(both[:, 3:], conditions.draw("scribble", scenes, 64))
    assert conditions.members("keypoints+scribble") == ["keypoints", "scribble"]
    assert conditions.get("keypoints+scribble").score == "keypoint_accuracy"  # the first member's
    assert PairedData.generate(4, condition="outline+lowres").conditions().shape == (4, 6, 64, 64)


@pytest.mark.parametrize("bad, match", [("outline+outline", "distinct"), ("keypoints+palette", "IP-Adapter"),
                                        ("outline+nope", "unknown condition")])
def test_bad_stacks_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        conditions.get(bad)


def test_condition_dropout_blanks_whole_members_independently():
    cond = torch.rand(4000, 6, 2, 2) + 0.1  # never zero by itself
    same = zt.drop_conditions(cond, 0.0, torch.Generator().manual_seed(0))
    assert same is cond
    out = zt.drop_conditions(cond, 0.3, torch.Generator().manual_seed(0))
    gone = (out == 0).flatten(2).all(-1)  # (B, C): a channel blanked whole
    assert torch.equal(gone[:, 0], gone[:, 2]) and torch.equal(gone[:, 3], gone[:, 5])  # member by member
    share = gone[:, [0, 3]].float().mean(0)
    assert (share - 0.3).abs().max() < 0.03  # each member with probability p
    both = (gone[:, 0] & gone[:, 3]).float().mean()
    assert abs(both - 0.09) < 0.02  # independently
    assert torch.equal(out[~gone], cond[~gone])  # the rest untouched


def test_one_network_for_two_conditions_trains_and_loads_in_diffusers(tmp_path):
    pipe = zc.load_sd()
    r = zt.train(zt.TrainConfig(out=str(tmp_path), steps=3, batch=2, n_train=8, eval_every=3, eval_n=2,
                                eval_steps=2, device="cpu", condition="outline+keypoints", condition_dropout=0.5),
                 pipe=pipe)
    assert r.module.config.conditioning_channels == 6
    theirs = ControlNetModel.from_pretrained(r.folder)
    assert theirs.config.conditioning_channels == 6
    assert any("shape_iou" in h for h in r.history)


def test_one_network_rows_score_each_subset_on_every_members_measure():
    from zc.study import zoo

    pipe = zc.load_sd()
    cn = zc.ControlNet.for_pipeline(pipe, conditioning_channels=6).eval()
    rows = zoo.one_network(pipe, cn, "outline+keypoints", given=[["outline"], ["outline", "keypoints"]], n=2, steps=2)
    assert [r["given"] for r in rows] == ["outline", "outline+keypoints"]
    assert all({"shape_iou", "keypoint_accuracy"} <= set(r) for r in rows)
    with pytest.raises(ValueError, match="not in the stack"):
        zoo.one_network(pipe, cn, "outline+keypoints", given=[["scribble"]], n=2, steps=2)


def test_disagreeing_conditions_are_scored_against_both_places():
    from zc.study import zoo

    pipe = zc.load_sd()
    one = zc.ControlNet.for_pipeline(pipe, conditioning_channels=6).eval()
    two = [zc.ControlNet.for_pipeline(pipe).eval() for _ in range(2)]
    rows, images, mirrored = zoo.disagreeing(pipe, networks={"apart": (two, "separate"), "one": (one, "stack")},
                                             n=2, steps=2)
    assert [r["design"] for r in rows] == ["apart", "one"] and images["one"].shape == (2, 3, 64, 64)
    assert all(0 <= r["iou_first"] <= 1 and 0 <= r["iou_second"] <= 1 for r in rows)
    scenes = zoo.test_set("keypoints", 2, 64).scenes
    assert torch.allclose(mirrored.center[:, 0], 1 - scenes.center[:, 0])
    with pytest.raises(ValueError, match="separate' or 'stack"):
        zoo.disagreeing(pipe, networks={"x": (one, "both")}, n=2, steps=2)


def test_the_one_network_and_the_separate_controlnets_see_the_same_scenes_and_pair():
    """A stacked network whose encoder reads only the keypoints slot with the keypoints ControlNet's
    weights is that ControlNet: zoo.together gives it the same scenes, condition image and noise as the
    separate path, so every per-scene measure matches exactly, alone and with the other slot given."""
    from zc.study import zoo

    pipe = zc.load_sd()
    kp = zoo.load("keypoints")
    one = zc.ControlNet.for_pipeline(pipe, conditioning_channels=6).eval()
    state = kp.state_dict()
    w = state["controlnet_cond_embedding.conv_in.weight"]  # (C, 3, 3, 3): the keypoints' slot
    state["controlnet_cond_embedding.conv_in.weight"] = torch.cat([torch.zeros_like(w), w], 1)
    one.load_state_dict(state)
    stack = "outline+keypoints"
    apart = zoo.together(pipe, [["keypoints"]], None, stack, n=4, steps=3)
    mine = zoo.together(pipe, [["keypoints"], ["outline", "keypoints"]], one, stack, n=4, steps=3, prompt="empty")
    assert [r["given"] for r in mine] == ["keypoints", "outline+keypoints"]
    for r in mine:
        assert r["per_item"] == apart[0]["per_item"] and set(r["per_item"]) == {"shape_iou", "keypoint_accuracy"}
    pair = zoo.together(pipe, [["outline", "keypoints"]], None, stack, n=4, steps=3, prompt="full")
    assert pair[0]["prompt"] == "full" and len(pair[0]["per_item"]["shape_iou"]) == 4
    with pytest.raises(ValueError, match="channels"):
        zoo.together(pipe, [["keypoints"]], one, zoo.SPATIAL, n=2, steps=2)
    with pytest.raises(ValueError, match="prompt"):
        zoo.together(pipe, [["keypoints"]], one, stack, n=2, steps=2, prompt="some")
    with pytest.raises(ValueError, match="not in the stack"):
        zoo.together(pipe, [[]], one, stack, n=2, steps=2)


def test_two_conditions_go_in_their_slots_of_a_bigger_stack():
    from zc.study import zoo

    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    x = zoo._in_stack(zoo.SPATIAL, {"keypoints": a, "scribble": b})  # outline silhouette lowres scribble keypoints
    assert x.shape == (2, 15, 8, 8)
    assert torch.equal(x[:, 12:], a) and torch.equal(x[:, 9:12], b) and not x[:, :9].any()
    with pytest.raises(ValueError, match="not in the stack"):
        zoo._in_stack("outline+keypoints", {"scribble": a})
    pipe = zc.load_sd()
    one = zc.ControlNet.for_pipeline(pipe, conditioning_channels=15).eval()
    rows, images, _ = zoo.disagreeing(pipe, networks={"one": (one, "stack")}, n=2, steps=2, stack=zoo.SPATIAL)
    assert rows[0]["design"] == "one" and images["one"].shape == (2, 3, 64, 64)


def test_the_one_network_benchmark_pairs_by_scene_and_names_each_measure_once():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "one_network.py"
    spec = importlib.util.spec_from_file_location("one_network", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(given, iou):
        return {"given": given, "prompt": "empty", "shape_iou": sum(iou) / len(iou), "per_item": {"shape_iou": iou}}

    rows = bench.compare([row("silhouette+scribble", [0.5, 0.7, 0.9])], [row("silhouette+scribble", [0.4, 0.5, 0.6])])
    assert len(rows) == 1 and rows[0]["measure"] == "shape_iou"  # two members, one measure: one row
    assert rows[0]["diff"] == pytest.approx(0.2) and rows[0]["low"] < 0.2 < rows[0]["high"]
    assert rows[0]["one"] == pytest.approx(0.7) and rows[0]["separate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="do not pair"):
        bench.compare([row("outline", [1.0])], [row("scribble", [1.0])])


# The shipped one network against the separately trained ControlNets, each condition alone (condition dropout
# is what lets it read one member with the others zeroed). Stated from the stored 64-scene benchmark
# (benchmarks/results/cpu/zoo/one_network.txt, empty prompt): dense conditions within 0.03 of their own
# ControlNets, the keypoints 0.11 behind [-0.21, -0.01]. Dense conditions on 16 scenes within ONE_NETWORK_MARGIN;
# the keypoints on the benchmark's 64 scenes within ONE_NETWORK_SPARSE_MARGIN (first run on 16 scenes, the keypoints
# scored 0.44 vs 0.75: a rate on 16 scenes moves by about +-0.22, more than the margin, so it takes the 64 scenes).
# A network that ignored a member (TinySD alone scores ~0.1 shape IoU / 0.0 keypoint accuracy) fails both.
ONE_NETWORK_MARGIN = 0.1
ONE_NETWORK_SPARSE_MARGIN = 0.25


@pytest.mark.parametrize("name, n, margin", [("outline", 16, ONE_NETWORK_MARGIN), ("scribble", 16, ONE_NETWORK_MARGIN),
                                             ("keypoints", 64, ONE_NETWORK_SPARSE_MARGIN)])
def test_the_shipped_one_network_given_one_condition_is_near_its_own_controlnet(name, n, margin):
    from zc.study import zoo

    pipe = zc.load_sd()
    one = zc.ControlNet.from_pretrained(zoo.one_network_folder()).eval()
    (ours,), (apart,) = zoo.together(pipe, [[name]], one, n=n), zoo.together(pipe, [[name]], None, n=n)
    key = conditions.get(name).score
    assert ours[key] >= apart[key] - margin, (ours[key], apart[key])
    assert ours[key] > 0.4, ours[key]  # and it controls
