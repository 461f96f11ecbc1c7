"""The drawing widget without a browser: strokes become the condition, release generates, and bad
canvases get a message instead of a traceback."""
import math

import numpy as np
import pytest
import torch

import zc
from zc.study import zoo
from zc.study.widgets import SCALE, DrawCondition, condition_from_canvas
from zc.world import metrics, shapes
from zc.world.conditions import shape_regions

COLOUR_NEAR = 0.3  # the pickers' colours: mean RGB distance of the controlled image's fill and background under this
COLOUR_MARGIN = 0.3  # ... and below the uncontrolled image's by this


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def circle(cx, cy, r, n=40):
    return [(cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n + 1)]


def disc(cx, cy, r, size=64):
    scene = shapes.Scenes(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([[cx, cy]]),
                          torch.tensor([r]))
    return shapes.coverage(scene, size) > 0.5


def test_condition_from_canvas_checks_its_input():
    with pytest.raises(ValueError, match="nothing is drawn"):
        condition_from_canvas(np.zeros((320, 320, 4), np.uint8), 64)
    with pytest.raises(ValueError, match="320x200 px.*square canvas"):
        condition_from_canvas(np.full((200, 320, 4), 255, np.uint8), 64)
    with pytest.raises(ValueError, match="no image"):
        condition_from_canvas(None, 64)
    img = np.zeros((320, 320, 4), np.uint8)
    img[:160, :, :] = 255  # top half white, opaque
    c = condition_from_canvas(img, 64)
    assert c.shape == (1, 3, 64, 64) and c[0, :, :32].min() == 1 and c[0, :, 32:].max() == 0


def test_drawing_an_outline_fills_it(pipe):
    w = DrawCondition(pipe, prompt="red circle with white background")
    w.run()  # nothing drawn yet: a message, no exception
    assert "nothing is drawn" in w.status.value and w.images is None
    px = 64 * SCALE
    pts = [(x * px, y * px) for x, y in circle(0.45, 0.55, 0.25)]
    w._on_down(*pts[0])
    for p in pts[1:]:
        w._on_move(*p)
    w._on_up(*pts[-1])  # release: generates
    assert w.images is not None and w.images.shape == (2, 3, 64, 64) and "done in" in w.status.value
    assert w.progress.value == w.progress.max == 2 * w.steps  # the bar followed every sampler step
    cond = condition_from_canvas(np.asarray(w.pixels), 64)
    assert (cond[0].mean(0) > 0.5).sum() > 100  # the drawn ring
    target = disc(0.45, 0.55, 0.25)
    off, on = (metrics.iou(shape_regions(x[None]), target[None]).item() for x in w.images)
    assert on > 0.6 and on > off + 0.3, (off, on)
    red = torch.tensor([[1.0, 0.0, 0.0]])
    fill, _ = metrics.colour_accuracy(w.images[1:], red, torch.ones(1, 3), blob=target[None])
    assert fill.item() > 0.5  # filled in the prompt's colour


def test_keypoints_take_two_clicks(pipe):
    w = DrawCondition(pipe)
    w.kind.value = "keypoints"
    px = 64 * SCALE
    w._on_down(0.5 * px, 0.5 * px)
    w._on_up(0.5 * px, 0.5 * px)
    assert w.images is None  # one point is not a condition yet
    w._on_down(0.5 * px, 0.3 * px)
    w._on_up(0.5 * px, 0.3 * px)
    assert w.images is not None
    c = condition_from_canvas(np.asarray(w.pixels), 64)[0]
    assert c[0, 32, 32] > 0.9 and c[1, 32, 32] < 0.1 and c[1, 19, 32] > 0.9  # red centre, green top


def test_keypoints_with_the_pickers_colours(pipe):
    """Two clicks place the shape, the palette IP-Adapter paints it near the pickers' colours (empty prompt).
    Gold comes out yellow (0.16 away in RGB), which colour_accuracy's NEAR threshold counts as wrong, so
    this reads mean colour distances: the controlled image's shape and background are near the picked
    colours, the uncontrolled image's are not."""
    from zc.study.widgets import palette_image

    w = DrawCondition(pipe)
    assert w.ip_adapter is not None and not w.with_colours.disabled  # the shipped one fits TinySD
    w.kind.value = "keypoints"
    w.fill_colour.value, w.bg_colour.value = "#ffd700", "#000080"  # gold on navy
    w.with_colours.value = True
    px = 64 * SCALE
    for x, y in ((0.35, 0.6), (0.35, 0.4)):
        w._on_down(x * px, y * px)
        w._on_up(x * px, y * px)
    assert w.images is not None
    pal = palette_image("#ffd700", "#000080", 64)
    assert pal.shape == (1, 3, 64, 64) and torch.allclose(pal[0, :, 0, 0], torch.tensor([1.0, 215 / 255, 0.0]))
    gold, navy = pal[0, :, 0, 0], pal[0, :, 0, -1]

    def distances(x):  # the drawn shape's mean colour to gold, the rest's to navy (RGB distance)
        shape = shape_regions(x[None])[0]
        return ((x[:, shape].mean(1) - gold).norm().item(), (x[:, ~shape].mean(1) - navy).norm().item())

    (off_fill, off_bg), (on_fill, on_bg) = distances(w.images[0]), distances(w.images[1])
    assert on_fill < COLOUR_NEAR and on_bg < COLOUR_NEAR, (on_fill, on_bg)
    assert off_fill > on_fill + COLOUR_MARGIN and off_bg > on_bg + COLOUR_MARGIN, (off_fill, off_bg, on_fill, on_bg)
    centre = metrics.centroids(shape_regions(w.images[1:]))[0]
    assert (centre - torch.tensor([0.35, 0.6])).norm() < 0.1  # and where the keypoints put it
    # the keypoints ControlNet trained with the adapter attached, at the settings chosen for it
    t = zoo.TUNED["trained with"]
    assert "keypoints" in w.trained_with and w.ip_adapter.processors[0].scale == [t["ip_scale"]]
    assert (w.scale.value, w.guidance.value) == (t["conditioning_scale"], t["guidance_scale"])


def test_ticking_colours_moves_the_sliders_to_each_designs_settings(pipe):
    w = DrawCondition(pipe)
    w.kind.value = "outline"  # no ControlNet trained with the adapter: the separate pair's settings
    w.with_colours.value = True
    t = zoo.TUNED["separate"]
    assert (w.scale.value, w.guidance.value) == (t["conditioning_scale"], t["guidance_scale"])
    w.kind.value = "keypoints"
    t = zoo.TUNED["trained with"]
    assert (w.scale.value, w.guidance.value) == (t["conditioning_scale"], t["guidance_scale"])
    w.with_colours.value = False
    assert (w.scale.value, w.guidance.value) == (1.0, 5.0)
    w.scale.value = 0.7
    w.kind.value = "scribble"  # unticked, a new condition leaves the user's slider alone
    assert w.scale.value == 0.7
