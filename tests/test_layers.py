"""The layer rules of csrc/ (csrc/tools/check_layers.py; setup.py runs the same check and refuses to build on a
violation) and the Python package's import graph (no cycles)."""
import ast
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("check_layers", os.path.join(ROOT, "csrc", "tools", "check_layers.py"))
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)


def test_tree_obeys_the_layer_rules():
    assert check_layers.check() == []


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("files, expect", [
    ({"csrc/base/a.h": '#include "text/b.h"\n', "csrc/text/b.h": ""}, "a lower layer never includes a higher one"),
    ({"csrc/text/a.h": '#include "model/b.h"\n', "csrc/model/b.h": ""}, "a lower layer never includes a higher one"),
    ({"csrc/store/a.c": '#include "device/b.h"\n', "csrc/device/b.h": ""}, "a lower layer never includes a higher"),
    ({"csrc/device/a.c": '#include "model/cp_runner_cpu.h"\n', "csrc/model/cp_runner_cpu.h": ""}, "forbidden"),
    ({"kernels/k.cu": '#include "store/b.h"\n', "csrc/store/b.h": ""}, "a lower layer never includes a higher one"),
    ({"csrc/text/a.h": '#include "text/b.h"\n', "csrc/text/b.h": '#include "text/a.h"\n'}, "include cycle"),
    ({"csrc/text/a.c": '#include "b.h"\n', "csrc/text/b.h": ""}, "must name its layer"),
    ({"csrc/py/a.c": '#include "../base/b.h"\n', "csrc/base/b.h": ""}, "climbs out of its folder"),
    ({"csrc/loose.c": ""}, "outside every layer folder"),
    ({"csrc/base/a.c": '#include "base/missing.h"\n'}, "does not exist"),
])
def test_checker_catches_each_kind_of_violation(tmp_path, files, expect):
    errors = check_layers.check(_tree(tmp_path, files))
    assert any(expect in e for e in errors), errors


def test_setup_refuses_to_build_a_tree_that_breaks_the_rules(tmp_path):
    """setup.py calls the checker before compiling anything."""
    src = Path(os.path.join(ROOT, "setup.py")).read_text()
    assert "check_layers" in src and "sys.exit" in src


def _imports(path, pkg):
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith(pkg + "."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(pkg + "."):
                    out.add(a.name.split(".")[1])
    return out


def test_python_package_has_no_import_cycle():
    pkg = os.path.join(ROOT, "clipprompt")
    mods = {f[:-3] for f in os.listdir(pkg) if f.endswith(".py")} - {"__init__", "__main__"}
    graph = {m: sorted((_imports(os.path.join(pkg, m + ".py"), "clipprompt") & mods) - {m}) for m in mods}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m):], m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, cycles
