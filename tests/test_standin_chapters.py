"""Every chapter, top to bottom, on an SD1.x that is not TinySD, as a GPU student's ZC_SD runs it (chapter 14:
on an SD3 that is not TinySD3, zc.sd3's "mini" stand-in, as ZC_SD3 runs it).

The model is zc.sd's "mini" stand-in: four UNet levels with two layers each (13 residuals; TinySD
has 7), a VAE of factor 8 at 128 px (TinySD: 4, 64 px), SD 1.5's PNDM scheduler predicting ε
(TinySD: DDIM, v). Its ControlNets come the ways a student's do: chapter 6 trains one into
ZC_RUNS (chapters 7 and 10 find it), and the public SD 1.5 ones are read from a hub cache laid out
as huggingface_hub expects (HF_HUB_OFFLINE: the real loading code, no network). Sizes are the
chapters' own environment variables, small. The chapters run in order: chapter 6's run serves 7.
They run under nbmake in one pytest process of their own (a kernel per chapter, as `make test` runs the
TinySD chapters), with the stand-in's variables in its environment only.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import zc
from zc.sd import build_sd15_standin
from zc.sd3 import build_sd3_standin
from zc.study import checkpoints

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = {"ZC_N": "6", "ZC_SAMPLE_STEPS": "2", "ZC_STEPS": "6", "ZC_PAIRS": "32", "ZC_ABLATION_STEPS": "4",
         "ZC_REHEARSE": "mini", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    sd = build_sd15_standin(root / "mini", scale="mini", dtype=torch.float32)
    variant = build_sd15_standin(root / "mini-finetune", scale="mini", dtype=torch.float32, seed=1)
    checkpoints.standin_hub_cache(root / "hub", zc.load_sd(sd))
    sd3 = build_sd3_standin(root / "mini-sd3", scale="mini", dtype=torch.float32)  # chapter 14's base
    return {"ZC_SD": str(sd), "ZC_SD_VARIANT": str(variant), "HF_HUB_CACHE": str(root / "hub"),
            "ZC_RUNS": str(root / "runs"), "ZC_SD3": str(sd3), "cwd": str(root)}


def outputs(nb) -> str:
    return "\n".join("".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream" and o.get("name") == "stdout")


@pytest.fixture(scope="module")
def executed(standin) -> dict[str, str]:
    """Every chapter on the stand-in, in order, by one pytest process under nbmake (a kernel per chapter, one
    process start instead of twelve): chapter name -> its failure ("" if it passed)."""
    import xml.etree.ElementTree as ET

    cwd = Path(standin["cwd"])
    for path in NOTEBOOKS:  # executed there (nbmake runs a notebook in its folder), 06 before 07 and 09
        shutil.copy(path, cwd / path.name)
    env = {**os.environ, **SMALL, **{k: v for k, v in standin.items() if k != "cwd"}}
    env.pop("ZC_EXECUTED", None)
    junit = cwd / "junit.xml"
    # no second try: the one cell that hung (chapter 7's slider widget, matplotlib drawn inside an ipywidgets
    # Output, jupyter/nbclient#312) is an Image widget now; a cell that times out (none takes 300 s) fails
    r = subprocess.run([sys.executable, "-m", "pytest", *[p.name for p in NOTEBOOKS], "--nbmake", "--overwrite",
                        "--nbmake-timeout=300", "-q", "-p", "no:cacheprovider", "--rootdir", str(cwd),
                        f"--junitxml={junit}"], capture_output=True, text=True, env=env, cwd=cwd)
    if not junit.is_file():
        pytest.fail(f"the stand-in chapters did not run:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = next((p.name for p in NOTEBOOKS if p.name in case.get("name", "") + case.get("classname", "")), None)
        bad = [e for e in case if e.tag in ("failure", "error")]
        results[name] = ("".join((e.get("message") or "") + (e.text or "") for e in bad) or "failed") if bad else ""
    return results


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_on_an_sd_that_is_not_tinysd(path, standin, executed):
    assert path.name in executed, f"{path.name} was not executed: {sorted(k for k in executed if k)}"
    assert not executed[path.name], executed[path.name][-4000:]
    copy = Path(standin["cwd"]) / path.name
    nb = nbformat.read(copy, as_version=4)
    text = outputs(nb)
    if path.stem.startswith("06"):  # trained into the per-model folder that chapters 7 and 10 read
        folder = Path(standin["ZC_RUNS"]) / "mini" / "fill50k-controlnet"
        assert (folder / "controlnet" / "config.json").is_file()
        assert json.loads((folder / "checkpoint" / "state.json").read_text())["step"] == 6
    if path.stem.startswith(("07", "10")):
        assert "the ControlNet chapter 6 trained for this SD" in text, text[:2000]
    if path.stem.startswith("08"):
        assert "outline: the original authors' public SD 1.5 checkpoint" in text
        assert "keypoints: none" in text and "palette: none" in text
    if path.stem.startswith("11"):
        assert "live rehearsal, stand-in 'mini'" in text and "residuals 13" in text
