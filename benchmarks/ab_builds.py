"""Is build B slower than build A? Both builds' clipprompt._C are loaded side by side in ONE process and the same
workloads run alternately (A B B A ...), one thread, so machine load hits both alike. Prints min and median ms.

    python benchmarks/ab_builds.py BASE_TREE NEW_TREE [--rounds 21]

BASE_TREE / NEW_TREE: source trees with a built extension (python setup.py build_ext --inplace).
Workloads: ClipTokenizer (word cache on and off) and WordPieceTokenizer over the 10,070 dev captions; jieba_lcut and
segment_batch(lang="zh") over STS-B zh dev (both columns); FlatIPIndex.search (50000 x 512, k = 10, nq = 1, 16, 1024).
"""
import argparse
import glob
import importlib.machinery
import importlib.util
import os
import statistics
import time

import numpy as np
from _bench import captions, cpu_name, stsb_rows, utc_now


def load(tree: str, name: str):
    so = glob.glob(os.path.join(tree, "clipprompt", "_C*.so"))[0]
    loader = importlib.machinery.ExtensionFileLoader(name + "._C", so)
    spec = importlib.util.spec_from_file_location(name + "._C", so, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def workloads(C, caps, zh, X, Qs):
    C.set_num_threads(1)
    tok, tok0, wp = C.ClipTokenizer(), C.ClipTokenizer(cache_size=0), C.WordPieceTokenizer()
    C.segment("我爱北京", "zh")
    ix = C.FlatIPIndex(X.shape[1])
    ix.add(X)
    w = {
        "ClipTokenizer 10K captions": lambda: tok(caps),
        "ClipTokenizer(cache_size=0) 10K captions": lambda: tok0(caps),
        "WordPieceTokenizer 10K captions": lambda: wp(caps),
        "jieba_lcut 6000 zh sentences": lambda: [C.jieba_lcut(s) for s in zh],
        "segment_batch zh 6000 sentences": lambda: C.segment_batch(zh, "zh"),
    }
    for Q in Qs:
        w[f"FlatIPIndex.search 50000x512 nq={len(Q)}"] = lambda Q=Q: ix.search(Q, 10)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    caps = captions()
    zh = [r[0] for r in stsb_rows("zh")] + [r[1] for r in stsb_rows("zh")]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50000, 512)).astype(np.float32)
    Qs = [rng.standard_normal((nq, 512)).astype(np.float32) for nq in (1, 16, 1024)]
    w = {"base": workloads(load(args.base, "cp_ab_base"), caps, zh, X, Qs),
         "new": workloads(load(args.new, "cp_ab_new"), caps, zh, X, Qs)}
    res = {k: {"base": [], "new": []} for k in w["base"]}
    for r in range(args.rounds):
        for k in res:
            for tag in ("base", "new") if r % 2 == 0 else ("new", "base"):
                t = time.perf_counter()
                w[tag][k]()
                res[k][tag].append((time.perf_counter() - t) * 1e3)
    print(f"# ab_builds | {utc_now()} | {cpu_name()}, {os.cpu_count()} CPUs | load {os.getloadavg()[0]:.1f} | "
          f"1 thread | {args.rounds} alternating rounds | base {args.base} | new {args.new}")
    print("| workload | base min ms | base median ms | new min ms | new median ms | new/base min | new/base median |")
    print("|---|---|---|---|---|---|---|")
    for k, v in res.items():
        a, b = v["base"], v["new"]
        print(f"| {k} | {min(a):.1f} | {statistics.median(a):.1f} | {min(b):.1f} | {statistics.median(b):.1f} | "
              f"{min(b) / min(a):.3f} | {statistics.median(b) / statistics.median(a):.3f} |")


if __name__ == "__main__":
    main()
