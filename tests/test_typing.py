"""The typed surface: clipprompt/_C.pyi matches the built extension both ways, the package passes `mypy --strict`,
and `ruff check` finds nothing in clipprompt/, tests/ and benchmarks/ (both tools pinned in requirements-test.txt,
configured in pyproject.toml)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import clipprompt._C as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "clipprompt", "_C.pyi")



def _stub_members(body):
    """Names a class body or module declares: defs, classes, annotated or plain assignments; dunders left out, and
    so are the stub's typing helpers (a leading underscore and not a function: aliases, Protocols, TypedDicts)."""
    out = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("__"):
                out.setdefault(node.name, node)
        elif isinstance(node, ast.ClassDef):
            if not node.name.startswith("_"):
                out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if not node.target.id.startswith("_"):
                out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    out[t.id] = node
    return out


def _module_names(obj):
    return {n for n in dir(obj) if not n.startswith("__")}


def _class_names(cls):
    """Members the class itself defines (not inherited from object / Exception), dunders left out."""
    return {n for n in vars(cls) if not n.startswith("__")}


def _stub():
    return _stub_members(ast.parse(Path(STUB).read_text(encoding="utf-8")).body)


def test_every_export_of_the_extension_is_in_the_stub_and_back():
    stub, mod = _stub(), _module_names(C)
    missing = mod - set(stub)
    assert not missing, f"exported by clipprompt._C but not declared in _C.pyi: {sorted(missing)}"
    extra = set(stub) - mod
    assert not extra, f"declared in _C.pyi but not exported by clipprompt._C: {sorted(extra)}"


def test_every_class_member_is_in_the_stub_and_back():
    stub = _stub()
    for name in sorted(_module_names(C)):
        obj = getattr(C, name)
        if not isinstance(obj, type):
            continue
        node = stub[name]
        assert isinstance(node, ast.ClassDef), f"{name} is a class in the module but not in the stub"
        declared = set(_stub_members(node.body))
        have = _class_names(obj)
        assert have <= declared, f"{name}: members missing from the stub: {sorted(have - declared)}"
        assert declared <= have, f"{name}: stub declares members the class lacks: {sorted(declared - have)}"
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        assert [b.__name__ for b in obj.__bases__] == (bases or ["object"]), f"{name}: bases differ"


def test_stub_check_catches_a_name_the_stub_lacks():
    """The check above can fail: a stub without one export is reported."""
    text = Path(STUB).read_text(encoding="utf-8").replace("def segment_detect(", "def _gone_segment_detect(")
    names = set(_stub_members(ast.parse(text).body))
    assert "segment_detect" in _module_names(C) - names


def _run(args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def test_mypy_strict_passes_on_the_package():
    r = _run([sys.executable, "-m", "mypy", "--strict", "clipprompt"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_ruff_finds_nothing():
    r = _run([sys.executable, "-m", "ruff", "check", "clipprompt", "tests", "benchmarks"])
    assert r.returncode == 0, r.stdout + r.stderr
