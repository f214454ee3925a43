"""The layer rules of csrc/ (and kernels/), checked on every build (setup.py) and by tests/test_layers.py.

Layers, lowest first (a layer may include its own headers and those of the layers it lists, nothing else):

    base    status/errors, hashing, UTF-8, JSON, string map, file persistence     -> (nothing)
    text    normalize, mojibake, segment, jieba, mecab, BPE, WordPiece, SP      -> base
    model   safetensors, weights, ops, encoder descriptions, the CPU runner      -> base
    store   prompt cache, flat index                                             -> base
    device  CUDA runners and the device context (csrc/device + kernels/)         -> base, model (not the CPU
                                                                                     runner), store, kernels
    py      the CPython binding                                                  -> everything

Also: no include cycle between any two files, and every quoted include names its layer ("base/cp_json.h"), except
a file's own folder-mates in kernels/ and py/ (which may be included by bare name).

    python csrc/tools/check_layers.py        prints every violation; exit status 1 when there is one
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALLOWED = {
    "base": {"base"},
    "text": {"base", "text"},
    "model": {"base", "model"},
    "store": {"base", "store"},
    "device": {"base", "model", "store", "device", "kernels"},
    "kernels": {"base", "model", "kernels"},
    "py": {"base", "text", "model", "store", "device", "kernels", "py"},
}
# Headers a layer may not include although their layer is allowed: the device layer never reaches into the CPU
# runner (it shares descriptions, weights and input checks with it through model/cp_encoder.h only).
FORBIDDEN = {
    "device": {"model/cp_runner_cpu.h"},
    "kernels": {"model/cp_runner_cpu.h"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    parts = rel.split("/")
    if parts[0] == "kernels":
        return "kernels"
    if parts[0] == "csrc" and len(parts) >= 3 and parts[1] in ALLOWED:
        return parts[1]
    return None


def sources(root=ROOT):
    pats = ["csrc/*/*.c", "csrc/*/*.h", "csrc/*/*.inc", "kernels/*.cu", "kernels/*.cuh", "kernels/*.h"]
    out = []
    for p in pats:
        out += sorted(glob.glob(os.path.join(root, p)))
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in out]


def resolve(rel, inc, root=ROOT):
    """The repository-relative file a quoted include names, or None when it does not exist."""
    here = os.path.dirname(rel)
    for cand in (os.path.join("csrc", inc), inc, os.path.join(here, inc)):
        cand = os.path.normpath(cand).replace(os.sep, "/")
        if os.path.exists(os.path.join(root, cand)):
            return cand
    return None


def check(root=ROOT):
    """Every violation in the tree at `root`, as readable lines (empty when the rules hold)."""
    errors = []
    graph = {}
    files = sources(root)
    loose = glob.glob(os.path.join(root, "csrc", "*.[ch]"))
    for f in loose:
        errors.append("%s: a source file outside every layer folder" % os.path.relpath(f, root))
    for rel in files:
        layer = layer_of(rel)
        if layer is None:
            errors.append("%s: unknown layer folder" % rel)
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        graph[rel] = []
        for inc in INCLUDE.findall(text):
            target = resolve(rel, inc, root)
            if target is None:
                errors.append("%s: includes \"%s\", which does not exist" % (rel, inc))
                continue
            graph[rel].append(target)
            tl = layer_of(target)
            if "/" not in inc and layer not in ("kernels", "py") and not inc.endswith(".inc"):
                errors.append("%s: include \"%s\" must name its layer (\"%s/%s\")" % (rel, inc, tl, inc))
            if ".." in inc.split("/"):
                errors.append("%s: include \"%s\" climbs out of its folder; name the layer instead" % (rel, inc))
            if tl not in ALLOWED[layer]:
                errors.append("%s (layer %s) includes %s (layer %s): a lower layer never includes a higher one"
                              % (rel, layer, target, tl))
            short = target[len("csrc/"):] if target.startswith("csrc/") else target
            if short in FORBIDDEN.get(layer, ()):
                errors.append("%s (layer %s) includes %s: forbidden for this layer" % (rel, layer, short))
    # include cycles (file level)
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                errors.append("include cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return errors


def main():
    errors = check()
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
