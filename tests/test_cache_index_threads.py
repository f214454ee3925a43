"""8 Python threads hammering one PromptCache and one FlatIPIndex (get_or_encode / put / get / search, plus a
writer adding and removing rows) get exactly the results a serial run gets."""
import threading
import zlib

import numpy as np
from conftest import read_lines

import clipprompt as cp

DIM = 48
BLOCK = (77, 256)  # 19,712 floats: large enough for the copies that run with the GIL released


class DetEncoder:
    """Deterministic and thread-safe: a text's vector depends only on the text."""

    fingerprint = "det-v1"

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    @staticmethod
    def vector(text, shape=(DIM,)):
        return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(shape).astype(np.float32)

    def encode(self, texts, hidden=False):
        with self.lock:
            self.calls += 1
        return np.stack([self.vector(t, BLOCK if hidden else (DIM,)) for t in texts])


def make_plan(tid, texts, iters=30):
    rng = np.random.default_rng(1000 + tid)
    plan = []
    for it in range(iters):
        op = it % 4
        if op == 0:
            plan.append(("goe", [texts[i] for i in rng.integers(0, len(texts), 12)]))
        elif op == 1:
            t = texts[int(rng.integers(0, len(texts)))]
            plan.append(("putget", t))
        elif op == 2:
            plan.append(("search", rng.random((1 if it % 8 == 2 else 64, DIM)).astype(np.float32)))
        else:
            plan.append(("hidden", [texts[i] for i in rng.integers(0, 40, 3)]))
    return plan


def run_plan(plan, cache, index, enc):
    out = []
    for op, arg in plan:
        if op == "goe":
            out.append(cache.get_or_encode(enc, arg))
        elif op == "putget":
            v = DetEncoder.vector("other:" + arg)
            cache.put("other-model", arg, v)
            got = cache.get("other-model", arg)
            # under eviction pressure the entry may already be gone; never another model's vector
            out.append(v if got is None else got)
        elif op == "search":
            out.append(index.search(arg, 10))
        else:
            out.append(cache.get_or_encode(enc, arg, kind="hidden:-1", hidden=True))
    return out


def test_threads_match_serial():
    texts = read_lines("captions/coco_dev_caps.txt")[:200]
    rng = np.random.default_rng(0)
    base = rng.random((3000, DIM)).astype(np.float32) + 0.01  # positive: every score > 0

    def fresh():
        index = cp.FlatIPIndex(DIM)
        index.add(base)
        return cp.PromptCache(capacity_bytes=3 << 20), index

    plans = [make_plan(t, texts) for t in range(8)]
    cache, index = fresh()
    enc = DetEncoder()
    serial = [run_plan(p, cache, index, enc) for p in plans]

    cache, index = fresh()
    enc = DetEncoder()
    results = [None] * 8
    errors = []
    start = threading.Barrier(9)
    stop = threading.Event()

    def worker(t):
        try:
            start.wait()
            results[t] = run_plan(plans[t], cache, index, enc)
        except BaseException as e:
            errors.append(e)

    def writer():
        # rows with score exactly 0 for positive queries: they never enter a top-10 over `base`
        start.wait()
        i = 0
        while not stop.is_set():
            ids = np.arange(10**6 + 50 * i, 10**6 + 50 * (i + 1))
            index.add(np.zeros((50, DIM), np.float32), ids=ids)
            if i % 2:
                index.remove_ids(ids)
            i += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    w = threading.Thread(target=writer)
    for th in [*threads, w]:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    w.join()
    assert not errors, errors
    for t in range(8):
        for (op, _), a, b in zip(plans[t], serial[t], results[t]):
            if op == "search":
                np.testing.assert_array_equal(a[0], b[0])
                np.testing.assert_array_equal(a[1], b[1])
            else:
                np.testing.assert_array_equal(a, b)
    s = cache.stats()
    lookups = sum(12 if op == "goe" else 3 if op == "hidden" else 1 for p in plans for op, _ in p if op != "search")
    assert s["hits"] + s["misses"] == lookups
    assert s["bytes"] <= s["capacity_bytes"] and s["evictions"] > 0
