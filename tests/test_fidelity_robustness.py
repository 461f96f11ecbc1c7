"""The fidelity measures on non-flat images with a known answer (zc.world.fidelity.PERTURBATIONS): the
robust path (the default above 64 px) keeps the flat-world answer on flat renders and holds where the
flat-world path breaks; where both break is stored in benchmarks/results/cpu/fidelity_robustness.txt."""
import pytest
import torch

from zc.study import zoo
from zc.world import conditions, fidelity, shapes


@pytest.fixture(scope="module", params=[64, 128])
def renders(request):
    size = request.param
    test = zoo.test_set("outline", 16, size)
    return test.scenes, shapes.render(test.scenes, size)


def scores(x, scenes, robust):
    return conditions.measure(x, scenes, robust=robust)


def test_the_robust_path_keeps_the_flat_world_answers(renders):
    scenes, truth = renders
    a, b = scores(truth, scenes, False), scores(truth, scenes, True)
    for k in ("shape_iou", "kind_accuracy", "keypoint_accuracy", "colour_accuracy"):
        assert abs(a[k] - b[k]) <= 0.01, (k, a[k], b[k])


@pytest.mark.parametrize("name, strength", [("lighting", 0.4), ("noise", 0.1)])
def test_the_robust_path_holds_where_the_flat_world_one_breaks(renders, name, strength):
    scenes, truth = renders
    x = fidelity.PERTURBATIONS[name](truth, strength, torch.Generator().manual_seed(0))
    flat = scores(truth, scenes, True)
    robust, plain = scores(x, scenes, True), scores(x, scenes, False)
    for k in ("shape_iou", "keypoint_accuracy"):
        assert abs(robust[k] - flat[k]) <= 0.05, (k, robust[k], flat[k])
    assert min(plain[k] - flat[k] for k in ("shape_iou", "keypoint_accuracy")) < -0.2  # the old path broke


def test_the_default_path_follows_the_image_size():
    assert not conditions.robust_for(torch.zeros(1, 3, 64, 64))  # TinySD: every stored result's measure
    assert conditions.robust_for(torch.zeros(1, 3, 512, 512))  # SD 1.5


@pytest.mark.parametrize("name", list(fidelity.PERTURBATIONS))
def test_perturbations_keep_shape_and_range_and_grow_with_strength(renders, name):
    _, truth = renders
    fn = fidelity.PERTURBATIONS[name]
    weak, strong = (fn(truth, s, torch.Generator().manual_seed(0)) for s in (0.05, 0.8))
    assert weak.shape == truth.shape and 0 <= weak.min() and weak.max() <= 1
    assert (weak - truth).abs().mean() < (strong - truth).abs().mean()
