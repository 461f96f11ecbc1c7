"""Draw a condition, get an image: a canvas for JupyterLab (ipycanvas + ipywidgets).

    from zc.study.widgets import DrawCondition
    DrawCondition()          # draw an outline with the mouse; release the button to generate

The canvas is the condition at its own resolution (64 px for TinySD) shown 5x larger. The pen draws
what the chosen condition looks like: a thin white line (outline, scribble), a thick one (lowres),
a stroke in the kind's colour (silhouette), two clicks for the two keypoints (centre, then top), or
nothing for the palette (two colour pickers paint it). On release (or with the button) the shipped
ControlNet of that condition samples the prompt twice with the same seed: control off, control on.

Every stroke is drawn twice: on the canvas (what you see) and on a Python-side image (what is
sampled from), so generation never waits for the browser to send pixels back.

The pieces a test or a script can use without a browser: `condition_from_canvas` (canvas pixels ->
condition tensor, with a clear ValueError for an empty or wrongly sized canvas) and `generate`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..controlnet import ControlNet
from ..sd import image_size
from ..world import conditions
from . import zoo

__all__ = ["SCALE", "PEN", "condition_from_canvas", "palette_image", "generate", "png", "DrawCondition"]

SCALE = 5  # screen pixels per condition pixel
PEN = {  # condition -> (pen width in condition pixels, what a click-and-drag draws)
    "outline": (2.0, "white"), "scribble": (2.0, "white"), "lowres": (8.0, "white"), "silhouette": (6.0, "kind"),
    "keypoints": (5.0, "dots"), "palette": (0.0, "colours"),
}


def condition_from_canvas(rgba: np.ndarray, size: int) -> torch.Tensor:
    """(1, 3, size, size) condition in [0, 1] from a canvas's (H, W, 4) uint8 pixels (RGBA, transparent
    = black), averaged down to `size` px. ValueError when the canvas is empty or not a square at
    least `size` px wide."""
    from PIL import Image

    if rgba is None or rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise ValueError(f"the canvas gave no image (got {None if rgba is None else rgba.shape}): draw on it first")
    h, w = rgba.shape[:2]
    if h != w or h < size:
        raise ValueError(f"the canvas is {w}x{h} px but this model's conditions are {size}x{size}: use a square canvas "
                         f"of at least {size} px (DrawCondition makes one of {size * SCALE} px)")
    rgb = rgba[..., :3].astype(np.float32)
    if rgba.shape[2] == 4:
        rgb = rgb * (rgba[..., 3:4].astype(np.float32) / 255)  # transparent pixels are black
    if rgb.max() < 8:
        raise ValueError("nothing is drawn yet: draw the condition on the canvas, then release the mouse")
    small = Image.fromarray(rgb.round().astype(np.uint8)).resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def palette_image(fill: str, background: str, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: the palette condition's layout (conditions.palette_image) from two
    "#rrggbb" colours, what the palette IP-Adapter reads."""
    fill_rgb, bg_rgb = (torch.tensor([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]]) for c in (fill, background))
    return conditions.palette_image(fill_rgb, bg_rgb, size)


def generate(pipe, controlnet, condition: torch.Tensor, prompt: str = "", conditioning_scale: float = 1.0,
             guidance_scale: float = 5.0, seed: int = 0, steps: int = 20, progress=None, ip_adapter=None,
             ip_condition: torch.Tensor | None = None) -> torch.Tensor:
    """(2, 3, H, W): the prompt sampled with the same seed, control off (0) and on (1); with an
    IP-Adapter, "on" also reads its global condition (the colours). progress(done, total) is called
    after every sampler step of both."""
    from ..sample import sample

    g = lambda: torch.Generator().manual_seed(int(seed))  # noqa: E731
    tick = (lambda offset: (lambda i, n: progress(offset + i, 2 * n))) if progress else (lambda offset: None)
    off = sample(pipe, None, [prompt], None, num_inference_steps=steps, guidance_scale=guidance_scale, generator=g(),
                 callback=tick(0))
    controls = [(controlnet, condition.to(pipe.device))]
    if ip_adapter is not None:  # the colours as tokens, beside the ControlNet's residuals
        controls.append((ip_adapter, ip_condition.to(pipe.device)))
    on = sample(pipe, controls, [prompt], num_inference_steps=steps, guidance_scale=guidance_scale,
                conditioning_scale=conditioning_scale, generator=g(), callback=tick(steps))
    return torch.cat([off, on])


def png(images: torch.Tensor, scale: int) -> bytes:
    """Images side by side, each scaled up `scale` times (nearest), as PNG bytes."""
    import io

    from PIL import Image

    row = torch.cat(list(images.clamp(0, 1)), dim=-1)  # (3, H, n*W)
    im = Image.fromarray((row.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(float(v) * 255):02x}" for v in rgb)


class DrawCondition:
    """The widget (display it as the last expression of a cell). `pipe`: an SD pipeline (default
    zc.load_sd()); `controlnets`: {condition: ControlNet} (default: every shipped zoo ControlNet);
    `ip_adapter`: the palette's IP-Adapter (default: the shipped one, where it fits this SD), which
    lets any drawn condition take the fill and background pickers' colours too ("with these colours").
    There, a condition whose ControlNet was trained with that adapter attached (zoo.with_adapter_folder:
    the keypoints) uses that ControlNet, the others the condition's own ControlNet; ticking it moves the
    control and guidance sliders to the settings chosen for that design (zoo.TUNED)."""

    def __init__(self, pipe=None, controlnets: dict | None = None, steps: int = 20, prompt: str = "",
                 ip_adapter="shipped"):
        import ipywidgets as W
        from ipycanvas import Canvas

        from ..sd import load_sd

        self.pipe = pipe or load_sd()
        self.size = image_size(self.pipe)
        self.controlnets = controlnets if controlnets is not None else self._shipped_that_fit()
        self.trained_with = {}  # condition -> its ControlNet trained with the palette IP-Adapter (loaded on use)
        names = list(self.controlnets)
        if not names:
            raise ValueError("no ControlNet for this SD to draw with (the shipped ones are TinySD's): train one "
                             "for it (chapter 6's run, or python -m zc.train --sd <this SD> --condition outline) and "
                             "pass controlnets={'outline': controlnet}")
        self.steps, self.last_seconds, self.images = steps, None, None
        if ip_adapter == "shipped":
            ip_adapter = None
            if (zoo.adapter_folder("palette") / "config.json").is_file():
                ip_adapter = zoo.load_adapter("palette", self.pipe.device)
                try:
                    ip_adapter.check_unet(self.pipe.unet)
                except ValueError:
                    ip_adapter = None  # shipped for TinySD, not for this SD
        self.ip_adapter = ip_adapter
        px = self.size * SCALE
        self.canvas = Canvas(width=px, height=px,
                             layout=W.Layout(width=f"{px}px", height=f"{px}px", border="1px solid #888"))
        self.canvas.add_class("zc-canvas")
        self.kind = W.Dropdown(options=names, value="outline" if "outline" in names else names[0], description="condition")
        wide = {"description_width": "initial"}
        self.shape_kind = W.Dropdown(options=list(conditions.shapes.KINDS), description="silhouette kind", style=wide)
        self.eraser = W.ToggleButtons(options=["pen", "eraser"], value="pen")
        self.clear_button = W.Button(description="clear")
        self.prompt = W.Text(value=prompt, placeholder="empty prompt: the condition alone",
                             description="prompt", layout=W.Layout(width=f"{px}px"))
        self.prompt.add_class("zc-prompt")
        self.scale = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description="control scale", style=wide)
        self.guidance = W.FloatSlider(value=5.0, min=1.0, max=12.0, step=0.5, description="guidance")
        self.seed = W.IntText(value=0, description="seed")
        self.fill_colour = W.ColorPicker(value="#ff4500", description="fill")
        self.bg_colour = W.ColorPicker(value="#87ceeb", description="background")
        self.with_colours = W.Checkbox(value=False, description="with these colours (palette IP-Adapter)",
                                       disabled=self.ip_adapter is None, style=wide)
        self.button = W.Button(description="generate", button_style="primary")
        self.button.add_class("zc-generate")
        blank = torch.full((2, 3, self.size, self.size), 0.9)
        self.output = W.Image(value=png(blank, SCALE), format="png",
                              layout=W.Layout(width=f"{2 * px}px", height=f"{px}px"))
        self.output.add_class("zc-output")
        self.progress = W.IntProgress(value=0, min=0, max=2 * steps, description="sampling",
                                      layout=W.Layout(width=f"{px}px"))
        self.status = W.HTML("draw, then release the mouse to generate")
        self.status.add_class("zc-status")
        self._down, self._last, self._dots = False, None, []
        self.canvas.on_mouse_down(self._on_down)
        self.canvas.on_mouse_move(self._on_move)
        self.canvas.on_mouse_up(self._on_up)
        self.clear_button.on_click(lambda _: self.clear())
        self.button.on_click(lambda _: self.run())
        self.kind.observe(lambda _: self.clear(), names="value")
        for picker in (self.fill_colour, self.bg_colour):
            picker.observe(lambda _: self._paint_palette(), names="value")
        self.with_colours.observe(lambda _: self._tuned_settings(), names="value")
        self.kind.observe(lambda _: self.with_colours.value and self._tuned_settings(), names="value")
        labels = W.HBox([W.HTML(f"<b style='display:inline-block;width:{px}px'>your condition</b>"),
                         W.HTML(f"<b style='display:inline-block;width:{px}px'>control off</b>"),
                         W.HTML("<b>control on</b>")])
        controls = W.VBox([self.kind, self.shape_kind, W.HBox([self.eraser, self.clear_button]), self.fill_colour,
                           self.bg_colour, self.with_colours, self.scale, self.guidance, self.seed, self.button])
        self.widget = W.VBox([self.prompt, labels, W.HBox([self.canvas, self.output]), controls, self.progress,
                              self.status])
        self.clear()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def snapshot(self):
        """The static fallback the book renders: the drawn condition, control off, control on (the
        caller titles it)."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(6.6, 2.4))
        ax[0].imshow(self.pixels)
        for a, img, title in zip(ax[1:], self.images, ("control off", "control on")):
            a.imshow(img.permute(1, 2, 0).cpu())
            a.set_title(title, fontsize=9)
        ax[0].set_title("drawn condition", fontsize=9)
        for a in ax:
            a.axis("off")
        return fig

    # --- drawing --------------------------------------------------------------------------------
    def _pen(self):
        width, what = PEN.get(self.kind.value, (2.0, "white"))
        if self.eraser.value == "eraser":
            return 3 * max(width, 2.0) * SCALE, "black"
        colour = _hex(conditions.KIND_COLOURS[conditions.shapes.KINDS.index(self.shape_kind.value)]) \
            if what == "kind" else "white"
        return width * SCALE, colour

    def clear(self):
        from PIL import Image, ImageDraw

        px = self.canvas.width
        self.pixels = Image.new("RGB", (px, px))  # the condition as drawn, at screen resolution
        self._draw = ImageDraw.Draw(self.pixels)
        self.canvas.clear()
        self.canvas.fill_style = "black"
        self.canvas.fill_rect(0, 0, px, px)
        self._dots = []
        if self.kind.value == "palette":
            self._paint_palette()

    def _paint_palette(self):
        if self.kind.value != "palette":
            return
        px, half = self.canvas.width, self.canvas.width // 2
        for colour, x0, x1 in ((self.fill_colour.value, 0, half), (self.bg_colour.value, half, px)):
            self.canvas.fill_style = colour
            self.canvas.fill_rect(x0, 0, x1 - x0, px)
            self._draw.rectangle([x0, 0, x1 - 1, px - 1], fill=colour)

    def _dot(self, x, y, colour, radius):
        self.canvas.fill_style = colour
        self.canvas.fill_circle(x, y, radius)
        self._draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)

    def _on_down(self, x, y):
        what = PEN.get(self.kind.value, (0, ""))[1]
        if what == "colours":
            return
        if what == "dots" and self.eraser.value == "pen":  # first click: centre (red), second: top (green)
            if len(self._dots) == 2:
                self.clear()
            self._dot(x, y, _hex(conditions.KEYPOINT_COLOURS[len(self._dots)]), 2.5 * SCALE)
            self._dots.append((x, y))
            return
        self._down, self._last = True, (x, y)
        self._stroke(x, y)

    def _on_move(self, x, y):
        if self._down:
            self._stroke(x, y)

    def _stroke(self, x, y):
        width, colour = self._pen()
        self.canvas.stroke_style, self.canvas.line_width, self.canvas.line_cap = colour, width, "round"
        self.canvas.stroke_line(*self._last, x, y)
        self._draw.line([self._last, (x, y)], fill=colour, width=round(width))
        self._dot(x, y, colour, width / 2)  # a round joint, as the canvas draws it
        self._last = (x, y)

    def _on_up(self, x, y):
        was_drawing, self._down = self._down, False
        what = PEN.get(self.kind.value, (0, ""))[1]
        if was_drawing or (what == "dots" and len(self._dots) == 2):
            self.run()

    def _tuned_settings(self):
        """With colours ticked, the control and guidance sliders move to the settings chosen for that design
        on validation scenes (zoo.TUNED); unticked, back to 1 and 5. Either can be moved afterwards."""
        if not self.with_colours.value or self.kind.value == "palette":
            self.scale.value, self.guidance.value = 1.0, 5.0
            return
        t = zoo.TUNED["trained with" if self._trained_with(self.kind.value) else "separate"]
        self.scale.value, self.guidance.value = t["conditioning_scale"], t["guidance_scale"]

    def _trained_with(self, name: str) -> bool:
        """Whether `name` has a ControlNet trained with the palette IP-Adapter attached (the shipped ones are
        TinySD's, as is the adapter: where the adapter does not fit this SD, colours are off anyway)."""
        return self.ip_adapter is not None and (zoo.with_adapter_folder(name) / "config.json").is_file()

    # --- generating ---------------------------------------------------------------------------
    def _shipped_that_fit(self) -> dict:
        """The shipped zoo's ControlNets that fit this SD's UNet (all of them for TinySD, none for another)."""
        fit = {}
        for name in zoo.shipped():
            cn = zoo.load(name, self.pipe.device)
            try:
                cn.check_unet(self.pipe.unet)
            except ValueError:
                continue
            fit[name] = cn
        return fit

    def controlnet(self, name: str, colours: bool = False):
        """`name`'s ControlNet; with colours, the one trained with the palette IP-Adapter where there is one,
        and the adapter's scale λ for the design (zoo.TUNED: chosen with the sliders' settings)."""
        if colours and self._trained_with(name):
            if name not in self.trained_with:
                self.trained_with[name] = ControlNet.from_pretrained(zoo.with_adapter_folder(name)).to(
                    self.pipe.device).eval()
            self.ip_adapter.set_scale(zoo.TUNED["trained with"]["ip_scale"])
            return self.trained_with[name]
        if colours:
            self.ip_adapter.set_scale(zoo.TUNED["separate"]["ip_scale"])
        if name not in self.controlnets:
            self.controlnets[name] = zoo.load(name, self.pipe.device)
        return self.controlnets[name]

    def run(self):
        """Read the canvas, sample with control off and on, show both; errors go to the status line."""
        try:
            cond = condition_from_canvas(np.asarray(self.pixels), self.size)
        except ValueError as e:
            self.status.value = f"<span style='color:#b00'>{e}</span>"
            return None
        self.status.value = f"generating ({self.steps} steps, control off and on)…"
        t0 = time.time()
        self.progress.max = 2 * self.steps

        def show(done, total):
            self.progress.value = done

        colours = self.with_colours.value and self.ip_adapter is not None and self.kind.value != "palette"
        self.images = generate(self.pipe, self.controlnet(self.kind.value, colours), cond, self.prompt.value.strip(),
                               self.scale.value, self.guidance.value, self.seed.value, self.steps, progress=show,
                               ip_adapter=self.ip_adapter if colours else None,
                               ip_condition=palette_image(self.fill_colour.value, self.bg_colour.value, self.size)
                               if colours else None)
        self.last_seconds = time.time() - t0
        self.output.value = png(self.images, SCALE)
        self.status.value = f"done in {self.last_seconds:.1f} s"
        return self.images
