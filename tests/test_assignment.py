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
         "test_3_controlnet_residuals_equal_the_reference", "test_4_inject_adds_the_residuals_to_the_locked_unet")


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
    return check.setup.__wrapped__()


def outcome(check, setup, blocks) -> dict:
    """Each test of the check on a blocks module: 'pass' or the exception's type."""
    out = {}
    for name in TESTS:
        fn = getattr(check, name)
        args = {"blocks": blocks, "setup": setup}
        try:
            fn(**{k: args[k] for k in inspect.signature(fn).parameters})
            out[name] = "pass"
        except Exception as e:  # noqa: BLE001 - the check's verdict is the exception
            out[name] = type(e).__name__
    return out


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
        assert result[test] != "pass", (test, result)


def test_the_check_refuses_a_blocks_py_that_imports_zc_controlnet(tmp_path):
    path = tmp_path / "blocks.py"
    path.write_text("from zc.controlnet import ControlNet\n" + SOLUTION.read_text())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", str(ROOT / "assignment" / "check.py"), "-k", "test_1"],
                       capture_output=True, text=True, env={**__import__("os").environ, "ZC_ASSIGNMENT": str(path)})
    assert r.returncode != 0 and "must build the blocks itself" in r.stdout
