"""`pip install` of the built wheel, into a fresh virtual environment that already holds torch (as a GPU
student's environment holds its CUDA torch): the dependencies come with it, the shipped weights and
stored results are found from the installed package, and a chapter runs there under nbmake."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, cwd, timeout=900):
    # bytecode written on first import (installed without --compile-bytecode: torch's ~20 s of compiling is
    # paid only for the modules the three processes below import, once)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ZC_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"))}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def installer() -> list[str]:
    """uv beside this Python (`make` installs it), as `uv pip install`; pip where there is none. uv reads no
    pip configuration: pip's local wheel store (where this project's machines keep the CPU torch) is passed."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.is_file():
        return [sys.executable, "-m", "pip", "install", "-q"]
    links = os.environ.get("PIP_FIND_LINKS") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True).stdout.strip()
    return [str(uv), "pip", "install", "-q", *(["--find-links", links] if links else [])]


def test_wheel_installs_with_its_dependencies_and_runs_a_chapter(tmp_path):
    uv = Path(sys.executable).with_name("uv")
    build = ([uv, "build", "--wheel", "-q", "-o"] if uv.is_file() else [sys.executable, "-m", "pip", "wheel", "--no-deps",
                                                                          "-q", "-w"])
    run([*build, tmp_path / "dist", ROOT], cwd=tmp_path)  # the same setuptools build either way
    wheel = next((tmp_path / "dist").glob("zc-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    torch_version = torch.__version__.split("+")[0]
    # into the empty venv: the torch already there (as a GPU student's CUDA torch), the wheel and nbmake; every
    # other package comes from the wheel's own metadata (uv resolves it from its cache in seconds, as pip would
    # from the index in minutes), so a dependency missing there fails the probe or the chapter below
    run([*installer(), "--python", py, f"torch=={torch_version}", wheel, "nbmake"], cwd=tmp_path)
    assert run([py, "-c", "import torch; print(torch.__version__)"], cwd=tmp_path).strip() == torch.__version__

    probe = (
        "import torch, zc\n"
        "from zc.world.pairs import PairedData\n"
        "from zc.resources import RESULTS\n"
        "from zc.sample import sample\n"
        "pipe = zc.load_sd()\n"
        "cn = zc.ControlNet.from_pretrained(zc.sd.FILL50K_CONTROLNET)\n"
        "test = PairedData.generate(2, seed=1, split='test')\n"
        "x = sample(pipe, cn, test.prompts, test.conditions(), num_inference_steps=4,\n"
        "           generator=torch.Generator().manual_seed(0))\n"
        "print(zc.__file__, RESULTS, list(x.shape), float(x.std()), sep='|')\n"
    )
    where, results, shape, spread = run([py, "-c", probe], cwd=tmp_path).strip().split("|")
    assert Path(where).is_relative_to(venv) and Path(results).is_relative_to(venv), (where, results)
    assert shape == "[2, 3, 64, 64]" and float(spread) > 0.05  # images, not blanks

    chapter = tmp_path / "chapter"
    chapter.mkdir()
    shutil.copy(ROOT / "notebooks" / "11_full_scale.ipynb", chapter)  # reads stored benchmark results
    run([py, "-m", "pytest", "--nbmake", chapter, "-q", "-p", "no:cacheprovider"], cwd=chapter)
