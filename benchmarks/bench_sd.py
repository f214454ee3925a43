"""Stable Diffusion benchmarks: (1) the cross-attention K/V cache, (2) where long prompts are split.

1. K/V: a generation of ``--steps`` denoising steps with classifier-free guidance (batch 2: prompt + negative)
   recomputes every cross-attention layer's ``to_k`` / ``to_v`` projection at every step (what diffusers does, timed
   here as torch ``F.linear`` over the same weights); with ``CrossAttentionKV.get_or_compute`` the projections are
   computed once and every later step is a cache hit. Layer shapes are SD 1.5's (16 attn2 layers, context 768) and
   SDXL's (70 attn2 layers, context 2048), random weights of the real shapes. Timed interleaved in one process.
2. Chunking: COCO + Flickr30K dev captions concatenated into long prompts (``--per-prompt`` captions each); count the
   window cuts that fall inside a word (the token before the cut is not word-final) or not after punctuation, for
   clipprompt's windows and compel 2.5's (BRUTAL = a fixed cut every 75 tokens; its default SENTENCES mode).

    python benchmarks/bench_sd.py [--steps 50] [--runs 3] [--per-prompt 12]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import _bench
import numpy as np

import clipprompt as cp
from clipprompt import sd


def sd15_layers():
    out = []
    for d, c in ((0, 320), (1, 640), (2, 1280)):
        out += [(f"down_blocks.{d}.attentions.{a}.transformer_blocks.0.attn2", c) for a in range(2)]
    out.append(("mid_block.attentions.0.transformer_blocks.0.attn2", 1280))
    for u, c in ((1, 1280), (2, 640), (3, 320)):
        out += [(f"up_blocks.{u}.attentions.{a}.transformer_blocks.0.attn2", c) for a in range(3)]
    return out, 768


def sdxl_layers():
    out = []
    for d, c, depth in ((1, 640, 2), (2, 1280, 10)):
        out += [(f"down_blocks.{d}.attentions.{a}.transformer_blocks.{t}.attn2", c) for a in range(2)
                for t in range(depth)]
    out += [(f"mid_block.attentions.0.transformer_blocks.{t}.attn2", 1280) for t in range(10)]
    for u, c, depth in ((0, 1280, 10), (1, 640, 2)):
        out += [(f"up_blocks.{u}.attentions.{a}.transformer_blocks.{t}.attn2", c) for a in range(3)
                for t in range(depth)]
    return out, 2048


def bench_kv(name, layers, ctx, steps, runs):
    import torch

    rng = np.random.default_rng(0)
    weights = {n: ((rng.standard_normal((c, ctx)) * 0.02).astype(np.float32),
                   (rng.standard_normal((c, ctx)) * 0.02).astype(np.float32)) for n, c in layers}
    kv = sd.CrossAttentionKV(weights, f"bench-{name}", capacity_bytes=1 << 30)
    tw = {n: (torch.from_numpy(k), torch.from_numpy(v)) for n, (k, v) in weights.items()}
    emb = rng.standard_normal((2, 77, ctx)).astype(np.float32)
    temb = torch.from_numpy(emb)

    def recompute():
        with torch.no_grad():
            for _ in range(steps):
                for k, v in tw.values():
                    torch.nn.functional.linear(temb, k)
                    torch.nn.functional.linear(temb, v)

    def cached():
        kv.cache.clear()
        for _ in range(steps):
            kv.get_or_compute(emb)

    def cached_fp16():
        kv.cache.clear()
        for _ in range(steps):
            kv.get_or_compute(emb, dtype="float16")

    t = {"recompute (torch F.linear)": [], "cached fp32": [], "cached fp16": []}
    recompute(), cached()
    for _ in range(runs):  # interleaved
        for label, fn in zip(t, (recompute, cached, cached_fp16)):
            t0 = time.perf_counter()
            fn()
            t[label].append(time.perf_counter() - t0)
    base = statistics.median(t["recompute (torch F.linear)"])
    rows = []
    for label, ts in t.items():
        med = statistics.median(ts)
        rows.append(f"| {name} K/V, {len(layers)} layers, {steps} steps | {label} | {med * 1e3:.1f} | "
                    f"{base / med:.1f}x |")
    rows.append(f"| {name} bytes per cached prompt (B=2, 77 tokens) | fp32 / fp16 | "
                f"{2 * kv.bytes_per_prompt(77) / 2**20:.2f} MiB / {2 * kv.bytes_per_prompt(77, 'float16') / 2**20:.2f} "
                f"MiB | |")
    return rows


def mid_word_stats(per_prompt):
    import json

    from compel.embeddings_provider import EmbeddingsProvider, SplitLongTextMode
    from transformers import CLIPTokenizer

    caps = _bench.captions()
    prompts = [" ".join(caps[i:i + per_prompt]) for i in range(0, len(caps) - per_prompt + 1, per_prompt)]
    tok = sd.SDTokenizer()
    vocab = tok.vocab
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "clipprompt-bench-tok")
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f)
    import gzip

    with gzip.open(os.path.join(os.path.dirname(cp.__file__), "data", "bpe_simple_vocab_16e6.txt.gz"), "rt",
                   encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    hf = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), model_max_length=77)

    def compel_cuts(ids, mode):
        ep = EmbeddingsProvider(hf, None, device="cpu", truncate=False, split_long_text_mode=mode)
        cuts, pos, rest = [], 0, list(ids)
        while len(rest) > 75:
            k = ep._find_next_best_split_point(rest, max_length=75)
            pos += k
            cuts.append(pos)
            rest = rest[k:]
        return cuts

    def ours_cuts(ids):
        return [b for _, b in sd.chunk_token_ids(ids, vocab)[:-1]]

    punct = {",</w>", ".</w>", ";</w>", ":</w>", "!</w>", "?</w>"}
    res = {"clipprompt chunk": [0, 0, 0, 0], "compel BRUTAL (fixed 75)": [0, 0, 0, 0],
           "compel SENTENCES (its default)": [0, 0, 0, 0]}
    for p in prompts:
        ids = tok.encode(p)
        for label, cuts in (("clipprompt chunk", ours_cuts(ids)),
                            ("compel BRUTAL (fixed 75)", compel_cuts(ids, SplitLongTextMode.BRUTAL)),
                            ("compel SENTENCES (its default)", compel_cuts(ids, SplitLongTextMode.SENTENCES))):
            r = res[label]
            r[0] += len(cuts)
            r[1] += sum(not vocab[ids[c - 1]].endswith("</w>") for c in cuts)
            r[2] += sum(vocab[ids[c - 1]] not in punct for c in cuts)
            r[3] += len(cuts) + 1
    rows = [f"| {label} | {len(prompts)} | {r[0]} | {r[1]} ({100 * r[1] / max(1, r[0]):.1f}%) | "
            f"{r[2]} ({100 * r[2] / max(1, r[0]):.1f}%) | {r[3]} |" for label, r in res.items()]
    return prompts, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--per-prompt", type=int, default=12)
    ap.add_argument("--skip-kv", action="store_true")
    args = ap.parse_args()
    import torch

    info = cp.build_info()
    load = os.getloadavg()
    print(f"command: python benchmarks/bench_sd.py --steps {args.steps} --runs {args.runs} --per-prompt "
          f"{args.per_prompt}; date: {_bench.utc_now()}; CPU: {_bench.cpu_name()} ({os.cpu_count()} cores); "
          f"BLAS: {info.get('blas', '?')}; clipprompt threads {cp.get_num_threads()}, torch threads "
          f"{torch.get_num_threads()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    try:
        isa = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        flags = [f for f in ("avx2", "avx512f", "fma") if f in isa]
        print(f"ISA flags: {' '.join(flags)}")
    except OSError:
        pass
    if not args.skip_kv:
        print()
        print("| what | path | median ms per generation | x recompute |")
        print("|---|---|---|---|")
        for name, (layers, ctx) in (("SD 1.5", sd15_layers()), ("SDXL", sdxl_layers())):
            for row in bench_kv(name, layers, ctx, args.steps, args.runs):
                print(row)
    prompts, rows = mid_word_stats(args.per_prompt)
    print()
    print(f"Long prompts: {args.per_prompt} consecutive captions each ({len(prompts)} prompts, "
          f"{min(len(p) for p in prompts)}-{max(len(p) for p in prompts)} characters)")
    print("| splitter | prompts | window cuts | cuts inside a word | cuts not after punctuation | windows |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
