"""The assignment's automatic check (assignment/check.py) passes on the reference solution and
fails on the skeleton and on typical mistakes, each on the TODO it belongs to."""
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "assignment" / "solution" / "blocks.py"
TESTS = ("test_1_zero_conv_starts_at_zero_and_learns", "test_2_trainable_copy_starts_as_the_locked_encoder",
         "test_3_controlnet_residuals_equal_the_reference", "test_4_inject_adds_the_residuals_to_the_locked_unet",
         "test_5_training_reaches_the_condition_and_the_copy_not_the_unet")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check():
    return load(ROOT / "assignment" / "check.py", "assignment_check")


@pytest.fixture(scope="module")
def setup(check):
    return {layout: check.make_setup(layout) for layout in check.LAYOUTS}  # the two SD1.x layouts it grades on


def outcome(check, setup, blocks) -> dict:
    """Each test of the check on a blocks module, per layout: {(test, layout): 'pass' or the exception's type}."""
    out = {}
    for name in TESTS:
        fn = getattr(check, name)
        for layout, one in setup.items():
            args = {"blocks": blocks, "setup": one}
            try:
                fn(**{k: args[k] for k in inspect.signature(fn).parameters})
                out[name, layout] = "pass"
            except Exception as e:  # noqa: BLE001 - the check's verdict is the exception
                out[name, layout] = type(e).__name__
    return out


def failed(result: dict, test: str) -> bool:
    return any(v != "pass" for (name, _), v in result.items() if name == test)


def test_reference_solution_passes_every_todo(check, setup):
    assert set(outcome(check, setup, load(SOLUTION, "solution_blocks")).values()) == {"pass"}


def test_skeleton_fails_every_todo(check, setup):
    assert set(outcome(check, setup, load(ROOT / "assignment" / "blocks.py", "skeleton_blocks")).values()) \
        == {"NotImplementedError"}


def test_typical_mistakes_fail_where_they_belong(check, setup, tmp_path):
    source = SOLUTION.read_text()
    mistakes = {  # the TODO a mistake must fail, and the edit that makes it
        TESTS[0]: ("    nn.init.zeros_(conv.bias)\n", ""),  # a bias left at its random init
        TESTS[1]: ("copy_module.deepcopy(getattr(unet, name))", "getattr(unet, name)"),  # the UNet's own modules
        TESTS[2]: ("    features = [h]\n", "    features = []\n"),  # conv_in's feature forgotten
        TESTS[3]: ("mid_block_additional_residual=mid", "mid_block_additional_residual=None"),  # no middle residual
    }
    for i, (test, (old, new)) in enumerate(mistakes.items()):
        assert old in source, old
        path = tmp_path / f"mistake{i}.py"
        path.write_text(source.replace(old, new))
        result = outcome(check, setup, load(path, f"mistake{i}"))
        assert failed(result, test), (test, result)


WRONG = {  # solutions that look right and are not, the check they must fail, and the edit that makes each
    "shares the UNet's down blocks (a new list, the same blocks)": (TESTS[1], (
        "copy_module.deepcopy(getattr(unet, name))",
        "(nn.ModuleList(list(unet.down_blocks)) if name == 'down_blocks' else copy_module.deepcopy(getattr(unet, name)))")),
    "unlocks the UNet": (TESTS[1], ("    out = nn.ModuleDict(parts)\n", "    unet.requires_grad_(True)\n    out = nn.ModuleDict(parts)\n")),
    "detaches the condition": (TESTS[4], ("sample) + hint  #", "sample) + hint.detach()  #")),
    "samples the prediction without a graph": (TESTS[4], (
        "    return unet(sample, timestep,", "    with torch.no_grad():\n        return unet(sample, timestep,")),
    "decides cross-attention by position (fits TinySD's layout only)": (TESTS[2], (
        '    for block in copy["down_blocks"]:\n        if getattr(block, "has_cross_attention", False):',
        '    for i, block in enumerate(copy["down_blocks"]):\n        if i > 0:')),
}


@pytest.mark.parametrize("what", list(WRONG))
def test_the_check_fails_each_wrong_solution(check, setup, tmp_path, what):
    test, (old, new) = WRONG[what]
    source = SOLUTION.read_text()
    assert old in source, old
    path = tmp_path / "wrong.py"
    path.write_text(source.replace(old, new))
    result = outcome(check, setup, load(path, "wrong_blocks"))
    assert failed(result, test), (what, result)
    if "position" in what:  # why two layouts: it passes on TinySD's and fails on SD 1.5's
        assert result[test, "tinysd"] == "pass" and result[test, "sd15-layout"] != "pass", result


def test_imports_of_zc_are_found_in_the_syntax_tree_however_written(check):
    for line in ("import zc", "import zc.controlnet as cn", "from zc import ControlNet", "from zc.controls import variants",
                 "import importlib\nm = importlib.import_module('zc.controlnet')", "m = __import__('zc')",
                 "from importlib import import_module"):
        assert check.forbidden_imports(line), line
    assert not check.forbidden_imports(SOLUTION.read_text())
    assert not check.forbidden_imports("# import zc\ns = 'from zc import ControlNet'")  # a comment, a string


def test_the_check_refuses_a_blocks_py_that_imports_zc_controlnet(tmp_path):
    path = tmp_path / "blocks.py"
    path.write_text("import zc\n" + SOLUTION.read_text())  # the whole package, its ControlNet one attribute away
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", str(ROOT / "assignment" / "check.py"), "-k", "test_1"],
                       capture_output=True, text=True, env={**__import__("os").environ, "ZC_ASSIGNMENT": str(path)})
    assert r.returncode != 0 and "must build the blocks itself" in r.stdout
