"""The drawing widget in a real browser: JupyterLab on localhost from this venv, Debian's Chromium driven
by playwright. Draw a circle with the mouse, release, and check that the generated image fills it.

Needs /usr/bin/chromium (Debian's `chromium` package; playwright's own browser download does not work
offline). Skipped without it, unless ZC_REQUIRE_BROWSER=1 (as .ci/run sets): then it fails."""
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from zc.world import metrics, shapes
from zc.world.conditions import shape_regions

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ZC_ARTIFACTS", ROOT / "_build" / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "canvas", "metadata": {}, "outputs": [],
               "source": ["from zc.study.widgets import DrawCondition\n",
                          "w = DrawCondition(prompt='red circle with white background')\n", "w"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    import json

    (tmp_path / "canvas.ipynb").write_text(json.dumps(NOTEBOOK))
    port = free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
                             f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_draw_a_circle_in_jupyterlab_and_get_it_filled(lab, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("ZC_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on this machine: apt-get install chromium")
        pytest.skip("no chromium (apt-get install chromium) for the browser test")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(f"{lab}/lab/tree/canvas.ipynb")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel is up
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        canvas = page.locator(".zc-canvas").first
        canvas.wait_for(timeout=120_000)
        box = canvas.bounding_box()
        cx, cy, r = 0.45, 0.55, 0.25  # the circle we draw, in canvas units
        pts = [(box["x"] + box["width"] * (cx + r * math.cos(a)), box["y"] + box["height"] * (cy + r * math.sin(a)))
               for a in np.linspace(0, 2 * math.pi, 48)]
        page.mouse.move(*pts[0])
        page.mouse.down()
        for x, y in pts[1:]:
            page.mouse.move(x, y)
        t0 = time.time()
        page.mouse.up()  # release: the widget generates
        status = page.locator(".zc-status")
        status.filter(has_text="done in").wait_for(timeout=120_000)
        release_to_image = time.time() - t0
        page.screenshot(path=str(ARTIFACTS / "canvas.png"), full_page=True)
        shot = page.locator(".zc-output").screenshot()
        seconds = float(re.search(r"done in ([\d.]+) s", status.inner_text()).group(1))
        browser.close()
    import io

    im = Image.open(io.BytesIO(shot)).convert("RGB")
    half = im.width // 2
    on = torch.from_numpy(np.asarray(im.crop((half, 0, im.width, im.height)).resize((64, 64), Image.BOX),
                                     dtype=np.float32) / 255).permute(2, 0, 1)[None]
    scene = shapes.Scenes(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([[cx, cy]]),
                          torch.tensor([r]))
    drawn_disc = shapes.coverage(scene, 64) > 0.5
    iou = metrics.iou(shape_regions(on), drawn_disc[None]).item()
    fill, _ = metrics.colour_accuracy(on, torch.tensor([[1.0, 0.0, 0.0]]), torch.ones(1, 3), blob=drawn_disc[None])
    print(f"\ncanvas test: shape IoU {iou:.2f}, red fill accuracy {fill.item():.2f}; generation {seconds:.1f} s "
          f"(release to image in the browser {release_to_image:.1f} s); screenshot {ARTIFACTS / 'canvas.png'}")
    assert iou > 0.6, f"the generated shape does not fill the drawn circle (IoU {iou:.2f})"
    assert fill.item() > 0.5, "not filled in the prompt's colour (red)"
