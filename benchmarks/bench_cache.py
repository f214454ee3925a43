"""How fast is a PromptCache hit from Python, and how much memory do 1M entries take over their payload?

Latency: get() of a cached 512-d vector and of a [77, 768] block, get_or_encode() of an all-hit batch, against the
hand-rolled alternative people write (a Python OrderedDict LRU: move_to_end + copy) in the same process.
Memory: 1M entries (COCO caption keys, ~50 bytes each) of 512-d and 384-d float32 vectors, each case in a fresh
subprocess: RSS growth and the cache's own byte count vs the payload (n * d * 4), next to a Python dict of ndarrays.

    python benchmarks/bench_cache.py                 # full (needs ~5 GB of RAM)
    python benchmarks/bench_cache.py --entries 200000 --json out.json
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np
from _bench import ROOT, cpu_name, median_time, utc_now

import clipprompt as cp

FP = "clip-vit-b32@0123abcd"


def captions():
    with open(os.path.join(ROOT, "tests", "data", "captions", "coco_dev_caps.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def per_call(fn, n, runs, warmup):
    return median_time(fn, runs, warmup) / n


class DictLRU:
    """The usual hand-rolled prompt cache."""

    def __init__(self):
        self.d = OrderedDict()

    def put(self, fp, text, v, kind="pooled"):
        self.d[(fp, text, kind)] = np.array(v, np.float32)
        self.d.move_to_end((fp, text, kind))

    def get(self, fp, text, kind="pooled"):
        v = self.d.get((fp, text, kind))
        if v is None:
            return None
        self.d.move_to_end((fp, text, kind))
        return v.copy()


def memory_child(kind, n, dim):
    """Runs in a fresh process: fill `n` entries and report RSS growth (bytes)."""
    import psutil

    proc = psutil.Process()
    caps = captions()
    pool = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)
    keys = [f"{caps[i % len(caps)]} #{i}" for i in range(n)]
    key_bytes = sum(len(k.encode()) for k in keys)
    rss0 = proc.memory_info().rss
    t = time.perf_counter()
    if kind == "cache":
        c = cp.PromptCache(capacity_bytes=1 << 40)
        put = c.put
        for i, k in enumerate(keys):
            put(FP, k, pool[i & 4095])
        fill = time.perf_counter() - t
        s = c.stats()
        own, payload = s["bytes"], s["payload_bytes"]
        assert s["entries"] == n
    else:
        c = {}
        for i, k in enumerate(keys):
            c[(FP, k, "pooled")] = pool[i & 4095].copy()
        fill = time.perf_counter() - t
        own, payload = None, n * dim * 4
    rss = proc.memory_info().rss - rss0
    print(json.dumps(dict(kind=kind, n=n, dim=dim, rss=rss, own=own, payload=payload, fill_s=fill,
                          key_bytes=key_bytes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--dims", default="512,384")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        memory_child(args._child[0], int(args._child[1]), int(args._child[2]))
        return

    rows = []
    hdr = (f"# bench_cache — clipprompt {cp.__version__}, numpy {np.__version__}, "
           f"python {platform.python_version()}\n"
           f"# machine: {cpu_name('unknown')}, {os.cpu_count()} logical CPUs; dtype float32; "
           f"date {utc_now()}")
    print(hdr)
    print(f"{'what':<58} | {'shape':<20} | {'median (runs, warm-up)':<24} | {'throughput':<16} | x baseline")
    print("-" * 136)

    def emit(what, shape, med, thr, ratio, unit="us", extra=None, runs=None, warmup=None):
        runs = args.runs if runs is None else runs
        warmup = args.warmup if warmup is None else warmup
        ms = f"{med:9.3f} {unit} ({runs}, {warmup})"
        print(f"{what:<58} | {shape:<20} | {ms:<24} | {thr:<16} | {'' if ratio is None else f'{ratio:.2f}x'}",
              flush=True)
        rows.append(dict(what=what, shape=shape, median=med, unit=unit, throughput=thr, x_baseline=ratio,
                         **(extra or {})))

    caps = captions()
    rng = np.random.default_rng(0)
    texts = caps[:4096]
    N = 100_000
    order = [texts[i] for i in rng.integers(0, len(texts), N)]

    # ---- hit latency: 512-d vectors and [77, 768] blocks
    for shape in ((512,), (77, 768)):
        c, base = cp.PromptCache(capacity_bytes=1 << 31), DictLRU()
        for t in texts:
            v = rng.standard_normal(shape).astype(np.float32)
            c.put(FP, t, v)
            base.put(FP, t, v)
        n = N if len(shape) == 1 else N // 10
        o = order[:n]
        cget, bget = c.get, base.get

        def run_c(o=o, cget=cget):
            for t in o:
                cget(FP, t)

        def run_b(o=o, bget=bget):
            for t in o:
                bget(FP, t)

        def run_loop(o=o):
            for _ in o:
                pass

        loop = per_call(run_loop, n, args.runs, args.warmup)
        tb = per_call(run_b, n, args.runs, args.warmup) - loop
        tc = per_call(run_c, n, args.runs, args.warmup) - loop
        sh = "x".join(map(str, shape))
        emit("get() hit, OrderedDict LRU + copy (baseline)", f"{len(texts)} entries, {sh}", tb * 1e6,
             f"{1 / tb / 1e6:.2f} M get/s", 1.0)
        emit("get() hit, PromptCache", f"{len(texts)} entries, {sh}", tc * 1e6, f"{1 / tc / 1e6:.2f} M get/s", tb / tc)
        assert c.stats()["misses"] == 0

    # ---- get_or_encode: an all-hit batch of 256 and a batch with 25% misses
    class Enc:
        fingerprint = FP

        def encode(self, ts):
            return np.ones((len(ts), 512), np.float32)

    c = cp.PromptCache(capacity_bytes=1 << 31)
    enc = Enc()
    c.get_or_encode(enc, texts)
    batch = texts[:256]

    def goe():
        c.get_or_encode(enc, batch)

    def base_goe():
        out = []
        for t in batch:
            out.append(c.get(FP, t))
        np.stack(out)

    tb = per_call(base_goe, 256, args.runs, args.warmup)
    tc = per_call(goe, 256, args.runs, args.warmup)
    emit("get_or_encode all hits, per text: get() loop + stack (baseline)", "256 x 512", tb * 1e6,
         f"{1 / tb / 1e6:.2f} M text/s", 1.0)
    emit("get_or_encode all hits, per text", "256 x 512", tc * 1e6, f"{1 / tc / 1e6:.2f} M text/s", tb / tc)

    # ---- memory, each in a fresh process
    for dim in (int(v) for v in args.dims.split(",")):
        res = {}
        for kind in ("dict", "cache"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", kind, str(args.entries),
                                  str(dim)], capture_output=True, text=True, check=True)
            res[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        d, m = res["dict"], res["cache"]
        payload = m["payload"]
        shape = f"{args.entries} x {dim}"
        ov_dict = d["rss"] / payload - 1
        ov_rss = m["rss"] / payload - 1
        ov_own = m["own"] / payload - 1
        print(f"# memory {shape}: payload {payload / 2**20:.0f} MiB, keys {m['key_bytes'] / 2**20:.0f} MiB "
              f"({m['key_bytes'] / args.entries:.0f} B/entry)")
        emit("memory: dict of ndarrays, RSS over payload (baseline)", shape, 100 * ov_dict,
             f"{args.entries / d['fill_s'] / 1e6:.2f} M put/s", 1.0, unit="%  ",
             extra=dict(rss=d["rss"], payload=payload), runs=1, warmup=0)
        emit("memory: PromptCache, RSS over payload", shape, 100 * ov_rss,
             f"{args.entries / m['fill_s'] / 1e6:.2f} M put/s", (1 + ov_dict) / (1 + ov_rss), unit="%  ",
             extra=dict(rss=m["rss"], payload=payload), runs=1, warmup=0)
        emit("memory: PromptCache, stats()['bytes'] over payload", shape, 100 * ov_own, "", None, unit="%  ",
             extra=dict(own=m["own"], payload=payload), runs=1, warmup=0)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=hdr, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
