"""zc's layers, read from its own imports (every import, at module level or inside a function):

    base      training_utils, resources                   nothing of zc
    world     zc/world/: scenes, conditions, data, measures   base
    core      the paper's ControlNet, training, sampling, SDs, the design registry   world, base
    controls  zc/controls/: the other designs              core, world, base
    study     zc/study/: statistics, sweeps, claims, zoo    everything below

An import upwards, or a cycle between modules, fails here with the modules named. The package's
__init__ (the public face, which imports the controls so that they register) is the one exception."""
import ast
from pathlib import Path

import pytest

import zc
from zc import designs

ZC = Path(zc.__file__).parent
BASE = {"zc.training_utils", "zc.resources"}
RANK = {"base": 0, "world": 1, "core": 2, "controls": 3, "study": 4}


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANK else "core"


def modules() -> dict[str, Path]:
    out = {}
    for f in ZC.rglob("*.py"):
        rel = f.relative_to(ZC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The zc modules `name` imports (relative or absolute, anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from zc.world import conditions": the module conditions
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_goes_up_a_layer():
    wrong = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, deps in graph().items() for b in sorted(deps)
             if a != "zc" and layer(b) != "base" and RANK[layer(b)] > RANK[layer(a)]
             and not b.endswith(("world", "controls", "study"))]  # a subpackage's own __init__ is its docstring
    assert not wrong, "imports against the layer rule (study -> controls -> core -> world -> base):\n" + "\n".join(wrong)


def test_no_import_cycle():
    g = {a: deps for a, deps in graph().items() if a != "zc"}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layer_test_sees_a_violation_and_a_cycle(monkeypatch):
    """The two tests above can fail: a core module that imports the study, and two that import each other."""
    g = graph()
    assert "zc.world.shapes" in g["zc.world.conditions"]  # it reads function-level and package imports alike
    assert "zc.designs" in g["zc.controls.t2i_adapter"]
    bad = {**g, "zc.sample": g["zc.sample"] | {"zc.study.stats"}, "zc.world.shapes": {"zc.world.conditions"}}
    monkeypatch.setattr(__import__(__name__), "graph", lambda: bad)
    with pytest.raises(AssertionError, match=r"zc.sample \(core\) imports zc.study.stats \(study\)"):
        test_no_import_goes_up_a_layer()
    with pytest.raises(AssertionError, match=r"zc\.world\.(shapes|conditions) -> zc\.world\.(shapes|conditions) -> "):
        test_no_import_cycle()


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_too_long_to_read_in_one_sitting(name):
    n = len(modules()[name].read_text().splitlines())
    assert n <= 450, f"{name} has {n} lines: split it by what it is about"


def test_every_design_is_registered_once_in_table_order():
    assert list(designs.DESIGNS)[:4] == ["ControlNet", "ControlNet-lite", "condition added directly",
                                         "UNet fine-tuned, concat"]  # the paper's, then chapter 10's baselines
    for d in designs.DESIGNS.values():
        assert designs.by_architecture(d.architecture) is d and issubclass(d.enter, designs.Entry)


def test_the_chapters_import_only_public_names():
    """Every `from zc... import name` in a chapter names a subpackage or module, or is in its module's __all__."""
    import importlib.util
    import json
    import re

    wrong = []
    for nb in sorted((ZC.parent / "notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        for module, names in re.findall(r"^\s*from (zc[\w.]*) import ([\w, ]+)", code, flags=re.M):
            mod = importlib.import_module(module)
            for name in (n.split(" as ")[0].strip() for n in names.split(",")):
                is_module = importlib.util.find_spec(f"{module}.{name}") is not None if hasattr(mod, "__path__") else False
                if not is_module and name not in getattr(mod, "__all__", ()):
                    wrong.append(f"{nb.name}: from {module} import {name}")
    assert not wrong, "chapters import names their modules do not make public (__all__):\n" + "\n".join(wrong)


def _code_strings(path: Path) -> set[str]:
    """Every string constant in a module's code (docstrings left out: they may name anything)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs}


def design_names_outside_home(files: dict[str, Path]) -> list[str]:
    """(file, name) where a design's name or architecture is written outside zc/designs.py and the
    design's own modules (the one that registers it, the one that defines its class)."""
    texts = {name: path.read_text() for name, path in files.items()}
    strings = {name: _code_strings(path) for name, path in files.items() if name != "zc"}  # the public face
    found = []
    for d in designs.DESIGNS.values():
        registers = f'"{d.name}", "{d.architecture}"'  # designs.Design(name, architecture, ...) in its module
        home = {"zc.designs", d.module.__module__, *(n for n, t in texts.items() if registers in t)}
        words = {d.name} | ({d.architecture} if d.name != designs.REFERENCE else set())  # "controlnet" is a folder too
        found += [f"{name}: {w!r}" for name, s in strings.items() if name not in home for w in words & s]
    return sorted(found)


def test_a_designs_name_is_written_only_in_the_registry_and_its_own_module():
    """Train, sample, the sweep, the claims and the side-by-side find designs through zc.designs only."""
    assert design_names_outside_home(modules()) == []


def test_the_name_test_sees_a_design_named_elsewhere(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text('"""T2I-Adapter in a docstring is fine."""\nROWS = ["T2I-Adapter"]\n')
    assert design_names_outside_home({"zc.study.stray": stray}) == ["zc.study.stray: 'T2I-Adapter'"]
