"""GPU timings of clipprompt's CUDA backend against transformers / torch in the same process (issue 9).

Question: how fast are our CLIP text tower, MiniLM and flat search on one GPU, next to transformers fp16 eager and
torch.compile(mode="reduce-overhead") on the same inputs?

Models have random weights of the real shapes (CLIP ViT-B/32 text tower, all-MiniLM-L6-v2), as in the issue's
reference figures; nothing is downloaded. Prompt lengths are the CLIP BPE lengths of the 5000 COCO dev captions
(coco_clip_lengths.txt beside this file); token ids are random (the lengths are what matter for the compute).

Timing: CUDA events around each call, median of `runs` after `warm` warm-up calls. Our calls take NumPy ids and
return NumPy vectors (host->device, packing and device->host included); the torch baselines take device tensors and
leave their outputs on the device. transformers pads a batch to its longest prompt (that is how it is called); we pack
each prompt only up to its EOT.

    python benchmarks/gpu/bench_gpu.py [--json out.json] [--quick] [--no-compile]
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import torch  # noqa: E402
import transformers  # noqa: E402

import clipprompt as cp  # noqa: E402

T0 = time.time()


def cuda_time(fn, runs, warm):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times)), runs, warm


def coco_lengths():
    lines = (HERE / "coco_clip_lengths.txt").read_text().split("\n")
    return np.array([int(x) for x in lines if x and not x.startswith("#")], np.int64)


def clip_ids(lengths, L=77, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), L), np.int32)
    for b, n_raw in enumerate(lengths):
        n = int(min(n_raw, L - 2))
        ids[b, 0] = 49406
        ids[b, 1:1 + n] = rng.integers(1, 49406, size=n)
        ids[b, 1 + n] = 49407
    return ids


def trim(ids):
    """The batch padded to its longest prompt (what transformers is given)."""
    longest = int((ids != 0).sum(1).max())
    return ids[:, :longest]


class Table:
    def __init__(self):
        self.rows = []

    def add(self, what, shape, med, runs, warm, items, base=None):
        row = dict(what=what, shape=shape, median_ms=med, runs=runs, warm=warm, per_s=items / (med / 1e3),
                   x_baseline=(base / med) if base else None)
        self.rows.append(row)
        xb = f"{row['x_baseline']:.2f}x" if row["x_baseline"] else "1.00x (baseline)"
        print(f"{what:<44} | {shape:<22} | {med:9.3f} ms ({runs}, {warm}) | {row['per_s']:>12,.0f}/s | {xb}",
              flush=True)
        return med


def compiled(module, budget_s, args):
    """torch.compile(mode="reduce-overhead") of module, or None when skipped."""
    if args.no_compile or time.time() - T0 > budget_s:
        print(f"  (torch.compile skipped: {'--no-compile' if args.no_compile else 'time budget'})", flush=True)
        return None
    return torch.compile(module, mode="reduce-overhead", fullgraph=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the rows and header here")
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    ap.add_argument("--budget", type=float, default=330, help="seconds after which compiled baselines are skipped")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device visible to torch"
    dev = torch.device("cuda")
    info = cp.build_info()
    header = dict(date=datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", host=platform.node(),
                  device=torch.cuda.get_device_name(0), clipprompt=cp.__version__, torch=torch.__version__,
                  transformers=transformers.__version__, cuda=info.get("cuda_runtime"), cublas=info.get("cublas"),
                  cudnn=info.get("cudnn"), arch=info.get("cuda_arch"), dtype="float16", threads=cp.get_num_threads())
    print("# clipprompt GPU benchmark  " + "  ".join(f"{k}={v}" for k, v in header.items()), flush=True)
    print(f"{'what':<44} | {'shape':<22} | median ms (runs, warm-up) | {'throughput':>12}   | x baseline")
    runs_small, runs_big = (20, 10) if args.quick else (100, 30)
    tab = Table()
    lengths = coco_lengths()
    tmp = tempfile.mkdtemp(prefix="cp_bench_")

    # ---- CLIP B/32 text ------------------------------------------------------------------------------------
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                                      num_hidden_layers=12, projection_dim=512)
    hf = transformers.CLIPTextModelWithProjection(cfg).eval()
    hf.save_pretrained(tmp + "/clip")
    hf = hf.to(dev, torch.float16)
    from clipprompt.encoders import ClipTextEncoder, MiniLMEncoder

    ours = ClipTextEncoder.from_pretrained(tmp + "/clip", device="cuda", dtype="float16")
    run = ours._run  # the EncoderModelCUDA: ids in, vectors out

    def hf_clip(t):
        with torch.no_grad():
            return hf(input_ids=t).text_embeds

    # B = 1: one COCO caption per call (cycling through lengths); transformers padded to T=20 as in the reference
    ids1 = clip_ids(lengths[:256], seed=1)
    k = [0]

    def ours_b1():
        k[0] = (k[0] + 1) % len(ids1)
        run.encode(ids1[k[0]:k[0] + 1])

    t20 = torch.tensor(clip_ids([18], seed=2)[:, :20], dtype=torch.long, device=dev)
    base = tab.add("transformers fp16 eager (sdpa)", "B=1 T=20", *cuda_time(lambda: hf_clip(t20), runs_small, 10), 1)
    comp = compiled(hf, args.budget, args)
    if comp is not None:
        def c1():
            with torch.no_grad():
                return comp(input_ids=t20).text_embeds
        tab.add("transformers fp16 torch.compile(reduce-overhead)", "B=1 T=20", *cuda_time(c1, runs_small, 5), 1, base)
    tab.add("clipprompt cuda fp16 (graph)", "B=1 COCO lengths", *cuda_time(ours_b1, runs_small, 10), 1, base)

    # B = 1024 COCO captions
    ids_big = clip_ids(lengths[:1024], seed=3)
    tb = torch.tensor(trim(ids_big), dtype=torch.long, device=dev)
    shape = f"B=1024 COCO (T<= {tb.shape[1]})"
    base = tab.add("transformers fp16 eager (sdpa), padded", shape, *cuda_time(lambda: hf_clip(tb), runs_big, 3), 1024)
    comp = compiled(hf, args.budget, args)
    if comp is not None:
        def cb():
            with torch.no_grad():
                return comp(input_ids=tb).text_embeds
        tab.add("transformers fp16 torch.compile(reduce-overhead)", shape, *cuda_time(cb, runs_big, 3), 1024, base)
    tab.add("clipprompt cuda fp16 (packed to EOT)", "B=1024 COCO lengths",
            *cuda_time(lambda: run.encode(ids_big), runs_big, 3), 1024, base)
    run32 = ClipTextEncoder.from_pretrained(tmp + "/clip", device="cuda", dtype="float32")._run
    tab.add("clipprompt cuda fp32 (packed to EOT)", "B=1024 COCO lengths",
            *cuda_time(lambda: run32.encode(ids_big), runs_big, 3), 1024, base)
    hf = comp = None  # free the GPU memory before the next model
    torch.cuda.empty_cache()

    # ---- MiniLM (all-MiniLM-L6-v2 shapes), T = 16 ------------------------------------------------------------
    torch.manual_seed(1)
    bcfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                   intermediate_size=1536, max_position_embeddings=512)
    bert = transformers.BertModel(bcfg, add_pooling_layer=False).eval()
    bert.save_pretrained(tmp + "/minilm")
    bert = bert.to(dev, torch.float16)
    mini = MiniLMEncoder.from_pretrained(tmp + "/minilm", device="cuda", dtype="float16")._run
    B, T = 4096, 16
    rng = np.random.default_rng(4)
    mids = rng.integers(1000, 30000, size=(B, T)).astype(np.int32)
    mmask = np.ones((B, T), np.int32)
    ti, tm = torch.tensor(mids, dtype=torch.long, device=dev), torch.tensor(mmask, dtype=torch.long, device=dev)

    def hf_mini(m=bert):
        with torch.no_grad():
            h = m(input_ids=ti, attention_mask=tm).last_hidden_state
            w = tm.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1)

    base = tab.add("transformers fp16 eager (sdpa) + mean pool", "B=4096 T=16", *cuda_time(hf_mini, runs_big, 3), B)
    comp = compiled(bert, args.budget, args)
    if comp is not None:
        tab.add("transformers fp16 torch.compile(reduce-overhead)", "B=4096 T=16",
                *cuda_time(lambda: hf_mini(comp), runs_big, 3), B, base)
    tab.add("clipprompt cuda fp16", "B=4096 T=16", *cuda_time(lambda: mini.encode(mids, mmask), runs_big, 3), B, base)
    bert = comp = None
    torch.cuda.empty_cache()

    # ---- flat search 1M x 512 fp16, top-10 ---------------------------------------------------------------------
    N, d, kk = 1_000_000, 512, 10
    xg = torch.nn.functional.normalize(torch.randn(N, d, device=dev), dim=1).half()
    index = cp.FlatIPIndex(d, dtype="float16", device="cuda")
    step = 100_000
    for s in range(0, N, step):
        index.add(xg[s:s + step].float().cpu().numpy())
    for nq in (1, 1024):
        qg = torch.nn.functional.normalize(torch.randn(nq, d, device=dev), dim=1).half()
        qn = qg.float().cpu().numpy()

        def torch_search(qg=qg):
            return torch.topk(qg @ xg.T, kk, dim=1)

        base = tab.add("torch fp16 matmul + topk", f"1M x 512, nq={nq}, k=10", *cuda_time(torch_search, runs_big, 3),
                       nq)
        index.search(qn, kk)  # first search uploads the mirror
        tab.add("clipprompt FlatIPIndex cuda fp16", f"1M x 512, nq={nq}, k=10",
                *cuda_time(lambda qn=qn: index.search(qn, kk), runs_big, 3), nq, base)
        _D, I = index.search(qn, kk)
        ref = torch_search()
        agree = float(np.mean([len(set(I[i]) & set(ref.indices[i].cpu().numpy())) / kk for i in range(nq)]))
        print(f"  top-10 overlap with torch: {agree:.4f}", flush=True)

    print(f"# total {time.time() - T0:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=header, rows=tab.rows), f, indent=1)


if __name__ == "__main__":
    main()
