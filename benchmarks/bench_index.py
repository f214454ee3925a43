"""How fast is FlatIPIndex next to faiss-cpu IndexFlatIP and NumPy, and how much memory does it take?

Reduced precision: FlatIPIndex float16 / bfloat16 / int8 rows beside faiss IndexScalarQuantizer QT_fp16 / QT_8bit
(trained on the base); ours re-rank bf16 / int8 candidates exactly in float32 (faiss SQ scores are approximate:
"id agreement" with IndexFlatIP is reported per row). faiss gets the same thread count as clipprompt.

Shapes (default): 1,000,000 x 512 and 200,000 x 384 float32 (unit vectors), k = 10, nq = 1, 16, 1024.
Reports search latency (median over --runs after --warmup), add throughput, and bytes per stored vector vs n*d*4
for float32 and float16 storage. Ratios are "x faiss" = faiss time / this time (> 1: faster than faiss).

    python benchmarks/bench_index.py                      # the full run (needs ~8 GB of RAM)
    python benchmarks/bench_index.py --n 100000 --runs 3  # scaled down: every shape gets 100k rows
    python benchmarks/bench_index.py --json out.json
"""
import argparse
import gc
import json
import os
import platform

import numpy as np
from _bench import cpu_name, median_time, utc_now

import clipprompt as cp

DTYPES = ("float32", "float16", "bfloat16", "int8")


def qps(nq, sec):
    v = nq / sec
    return f"{v:,.0f} q/s" if v >= 100 else f"{v:.2f} q/s"


def numpy_search(X, q, k, max_scores=1 << 26):
    """Brute force in NumPy: chunked q @ X.T, argpartition, sort (the usual hand-written baseline)."""
    nq = len(q)
    D = np.empty((nq, k), np.float32)
    I = np.empty((nq, k), np.int64)
    step = max(1, max_scores // len(X))
    for s in range(0, nq, step):
        S = q[s:s + step] @ X.T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        sc = np.take_along_axis(S, part, 1)
        o = np.argsort(-sc, axis=1, kind="stable")
        D[s:s + step] = np.take_along_axis(sc, o, 1)
        I[s:s + step] = np.take_along_axis(part, o, 1)
    return D, I


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1000000x512,200000x384", help="comma-separated NxD")
    ap.add_argument("--n", type=int, default=None, help="override N for every shape (scale down)")
    ap.add_argument("--nq", default="1,16,1024")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = ap.parse_args()

    import faiss

    nth = cp.get_num_threads()
    faiss.omp_set_num_threads(nth)
    rows = []
    hdr = (f"# bench_index — clipprompt {cp.__version__}, faiss {faiss.__version__}, numpy {np.__version__}, "
           f"python {platform.python_version()}\n"
           f"# machine: {cpu_name('unknown')}, {os.cpu_count()} logical CPUs; threads: clipprompt {nth}, "
           f"faiss {faiss.omp_get_max_threads()}; BLAS: {cp.build_info().get('blas')}; "
           f"low-precision ISA (oneDNN, encoders only): {cp.build_info().get('lowp_cpu_isa')}; "
           f"load average {tuple(round(x, 2) for x in os.getloadavg())}\n"
           f"# k={args.k}, runs={args.runs}, warm-up={args.warmup}, queries/base unit-norm float32; "
           f"date {utc_now()}")
    print(hdr)
    print(f"{'what':<34} | {'shape':<16} | {'median ms (runs, warm-up)':<26} | {'throughput':<18} | x faiss")
    print("-" * 112)

    def emit(what, shape, sec, thr, base, extra=None, runs=None, warmup=None):
        ratio = base / sec if base and sec else None
        runs = args.runs if runs is None else runs
        warmup = args.warmup if warmup is None else warmup
        med = f"{sec * 1e3:10.3f} ({runs}, {warmup})" if sec is not None else ""
        print(f"{what:<34} | {shape:<16} | {med:<26} | {thr:<18} | {'' if ratio is None else f'{ratio:.2f}x'}",
              flush=True)
        rows.append(dict(what=what, shape=shape, median_s=sec, throughput=thr, x_faiss=ratio, **(extra or {})))

    rng = np.random.default_rng(0)
    for spec in args.shapes.split(","):
        n, d = (int(v) for v in spec.lower().split("x"))
        if args.n:
            n = args.n
        X = rng.standard_normal((n, d), dtype=np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        shape = f"{n}x{d}"

        # ---- add throughput (one add of all rows into an empty index)
        def add_faiss(d=d, X=X):
            ix = faiss.IndexFlatIP(d)
            ix.add(X)
            return ix

        def add_cp(dtype, d=d, X=X):
            ix = cp.FlatIPIndex(d, dtype=dtype)
            ix.add(X)
            return ix

        add_runs = max(1, args.runs // 2)
        t_f = median_time(add_faiss, add_runs, 0)
        emit("add faiss IndexFlatIP", shape, t_f, f"{n / t_f / 1e6:.2f} M vec/s", t_f, runs=add_runs, warmup=0)
        for dt in DTYPES:
            t = median_time(lambda dt=dt: add_cp(dt), add_runs, 0)
            emit(f"add FlatIPIndex {dt}", shape, t, f"{n / t / 1e6:.2f} M vec/s", t_f, runs=add_runs, warmup=0)
        gc.collect()

        fx = add_faiss()
        ours = {dt: add_cp(dt) for dt in DTYPES}
        sq = {}
        for name, qt in (("QT_fp16", faiss.ScalarQuantizer.QT_fp16), ("QT_8bit", faiss.ScalarQuantizer.QT_8bit)):
            sq[name] = faiss.IndexScalarQuantizer(d, qt, faiss.METRIC_INNER_PRODUCT)
            sq[name].train(X)
            sq[name].add(X)
        base_bytes = n * d * 4
        for dt, ix in ours.items():
            b = ix.memory_bytes
            print(f"# memory FlatIPIndex {dt}: {b / n:.1f} bytes/vector (vectors + id + id map) vs n*d*4/n = "
                  f"{base_bytes / n:.0f}: {b / base_bytes:.3f} of float32 payload")
            rows.append(dict(what=f"memory FlatIPIndex {dt}", shape=shape, bytes_per_vector=b / n,
                             ratio_vs_ndx4=b / base_bytes))
        print(f"# memory faiss IndexFlatIP: {fx.codes.size() / n:.1f} bytes/vector (codes only; ids implicit)")

        for nq in (int(v) for v in args.nq.split(",")):
            q = rng.standard_normal((nq, d), dtype=np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            qs = f"{shape} nq={nq}"
            t_f = median_time(lambda fx=fx, q=q: fx.search(q, args.k), args.runs, args.warmup)
            emit("search faiss IndexFlatIP", qs, t_f, qps(nq, t_f), t_f)
            _Df, If = fx.search(q, args.k)
            for name, sx in sq.items():
                t = median_time(lambda sx=sx, q=q: sx.search(q, args.k), args.runs, args.warmup)
                agree = float((sx.search(q, args.k)[1] == If).mean())
                emit(f"search faiss SQ {name} ({agree:.3f} ids)", qs, t, qps(nq, t), t_f, {"id_agreement": agree})
            for dt, ix in ours.items():
                t = median_time(lambda ix=ix, q=q: ix.search(q, args.k), args.runs, args.warmup)
                _Dc, Ic = ix.search(q, args.k)
                agree = float((Ic == If).mean())
                emit(f"search FlatIPIndex {dt} ({agree:.3f} ids)", qs, t, qps(nq, t), t_f, dict(id_agreement=agree))
            if not args.no_numpy:
                nr, nw = max(1, min(args.runs, 3)), min(args.warmup, 1)
                t = median_time(lambda X=X, q=q: numpy_search(X, q, args.k), nr, nw)
                emit("search numpy (matmul+argpartition)", qs, t, qps(nq, t), t_f, runs=nr, warmup=nw)
        del fx, ours, sq, X
        gc.collect()

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=hdr, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
