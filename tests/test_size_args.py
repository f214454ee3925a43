"""Every public argument that sizes an output or a batch, swept with huge, zero, negative and non-integer values in a
subprocess under a 4 GiB address-space cap: each call returns a small result or raises a ClipPromptError subclass
(InvalidArgumentError for a bad size) — never another exception, never an allocation the process cannot survive."""
import json
import os
import subprocess
import sys

from conftest import ROOT

SWEEP = r'''
import json, resource, sys
import numpy as np
CAP = 4 << 30
resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))
import clipprompt as cp
from clipprompt import sd
from clipprompt.expand import PromptExpander

VALUES = [10**9, 2**62, 10**30, 0, -1, -(2**63), 2.5, float("nan"), "7", None, True]
mini = cp.MiniLMEncoder.from_pretrained()
tok, wp = cp.ClipTokenizer(), cp.WordPieceTokenizer()
ix = cp.FlatIPIndex(4)
ix.add(np.eye(3, 4, dtype=np.float32))
q = np.ones((2, 4), np.float32)
exp = PromptExpander(["Cat Food", "Cat Beds", "Rain Boots", "Umbrellas"], mini)
pipe = cp.PromptPipeline(mini, strategy="raw")
pipe.add(["a cat", "a dog", "rain"])
CALLS = {
    "FlatIPIndex.search k": lambda v: ix.search(q, v),
    "FlatIPIndex dim": lambda v: cp.FlatIPIndex(v),
    "ClipTokenizer context_length": lambda v: tok(["a photo of a cat"], context_length=v),
    "WordPieceTokenizer max_length": lambda v: wp(["a photo of a cat"], max_length=v),
    "PromptCache capacity_bytes": lambda v: cp.PromptCache(capacity_bytes=v),
    "set_num_threads": lambda v: cp.set_num_threads(v),
    "MiniLMEncoder.encode batch_size": lambda v: mini.encode(["a cat", "a dog"], batch_size=v),
    "PromptPipeline batch_size": lambda v: cp.PromptPipeline(mini, strategy="raw", batch_size=v),
    "PromptPipeline.search k": lambda v: pipe.search(["a cat"], v),
    "PromptExpander.expand top_k": lambda v: exp.expand("kitten bed", top_k=v),
    "PromptExpander.expand max_tokens": lambda v: exp.expand("kitten bed", max_tokens=v),
    "PromptExpander.expand_batch candidates": lambda v: exp.expand_batch(["kitten bed"], candidates=v),
    "sd.chunk_prompt window": lambda v: sd.chunk_prompt("a cat on a mat", window=v),
    "sd.chunk_prompt lookback": lambda v: sd.chunk_prompt("a cat on a mat", lookback=v),
}

def size_of(r):
    if isinstance(r, np.ndarray):
        return r.nbytes
    if isinstance(r, (tuple, list)):
        return sum(size_of(x) for x in r)
    return 0

out = []
for name, fn in CALLS.items():
    for v in VALUES:
        try:
            r = fn(v)
            out.append([name, repr(v), "ok", size_of(r)])
        except cp.ClipPromptError as e:
            out.append([name, repr(v), type(e).__name__, str(e)[:200]])
        except BaseException as e:  # anything else is a failure of the contract
            out.append([name, repr(v), "UNEXPECTED " + type(e).__name__, str(e)[:200]])
    cp.set_num_threads(0)
print(json.dumps(out))
'''


def test_hostile_sizes_under_a_memory_cap():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SWEEP], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]  # killed or crashed: an allocation got through
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [row for row in rows if row[2].startswith("UNEXPECTED")]
    assert not bad, bad
    for name, v, outcome, detail in rows:
        if outcome == "ok":
            assert detail < 64 << 20, (name, v, detail)  # a result, never a giant one
        elif v in ("1000000000", "4611686018427387904", repr(10**30), "2.5", "nan", "'7'", "True"):
            assert outcome == "InvalidArgumentError", (name, v, outcome, detail)
    by = {(n, v): o for n, v, o, _ in rows}
    # the cases the issue names: a huge k on a 3-vector index, a huge context_length
    assert by[("FlatIPIndex.search k", "1000000000")] == "InvalidArgumentError"
    assert by[("ClipTokenizer context_length", "1000000000")] == "InvalidArgumentError"
    # zero / negative sizes: refused where they make no sense, accepted where documented (top_k=0: no phrases,
    # set_num_threads(0): the default, capacity_bytes=0: a cache that keeps nothing)
    assert by[("PromptExpander.expand top_k", "0")] == "ok" and by[("set_num_threads", "0")] == "ok"
    for name in ("FlatIPIndex.search k", "ClipTokenizer context_length", "WordPieceTokenizer max_length",
                 "MiniLMEncoder.encode batch_size", "PromptPipeline batch_size", "PromptPipeline.search k",
                 "sd.chunk_prompt window"):
        assert by[(name, "0")] == by[(name, "-1")] == "InvalidArgumentError", name
