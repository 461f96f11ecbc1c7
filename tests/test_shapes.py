import pytest
import torch

from zc.world import metrics, shapes


def test_css_colours_as_words():
    names = shapes.colour_names()
    assert len(names) == 148
    assert "burly wood" in names and "light golden rod yellow" in names and "orange" in names


def test_splits_never_overlap_and_keep_contrast():
    g = torch.Generator().manual_seed(0)
    train = shapes.sample_scenes(2000, g, split="train")
    test = shapes.sample_scenes(500, g, split="test")
    assert not shapes.held_out_pair(train.fill, train.bg).any()
    assert shapes.held_out_pair(test.fill, test.bg).all()
    t = shapes.colour_table()
    assert ((t[train.fill] - t[train.bg]).norm(dim=1) >= shapes.MIN_CONTRAST).all()
    with pytest.raises(ValueError, match="split"):
        shapes.sample_scenes(1, g, split="val")


def test_render_places_the_shape_where_the_scene_says():
    g = torch.Generator().manual_seed(1)
    s = shapes.sample_scenes(64, g)
    im = shapes.render(s, 64)
    t = shapes.colour_table()
    masks = metrics.shape_masks(im, t[s.fill], t[s.bg])
    c = metrics.centroids(masks)
    circles = s.kind == shapes.KINDS.index("circle")
    assert (c[circles] - s.center[circles]).abs().max() < 0.02  # triangles' centroids sit lower by design
    fill_acc, bg_acc = metrics.colour_accuracy(im, t[s.fill], t[s.bg])
    # ground truth scores ~0.93 on fill: anti-aliased edge pixels join the blob but are near neither colour
    assert fill_acc.mean() > 0.9 and bg_acc.mean() > 0.99


def test_area_of_each_kind_matches_its_formula():
    n = 4
    s = shapes.Scenes(kind=torch.arange(n), fill=torch.zeros(n, dtype=torch.long), bg=torch.ones(n, dtype=torch.long),
                      center=torch.full((n, 2), 0.5), radius=torch.full((n,), 0.25))
    area = shapes.coverage(s, 256).mean(dim=(1, 2))
    r = 0.25
    expected = torch.tensor([3.14159 * r**2, (1.6 * r) ** 2, 3 * 3**0.5 / 4 * r**2, (1.5 * r) ** 2])
    torch.testing.assert_close(area, expected, rtol=0.01, atol=0.0)


def test_outline_is_a_thin_ring():
    s = shapes.Scenes(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([[0.5, 0.5]]), torch.tensor([0.25]))
    ring = shapes.coverage(s, 64, outline=2.0)[0]
    assert abs(ring.sum().item() - 2 * 3.14159 * 0.25 * 64 * 2) < 10  # circumference x width, in pixels
    assert ring[32, 32] == 0  # hollow
