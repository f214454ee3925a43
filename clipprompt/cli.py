"""Command line: python -m clipprompt {demo,normalize,tokenize,encode,expand,search,bench,info,serve}.

`demo` is the README's main job on the bundled defaults (MiniLM + the shipped pool): it normalises, expands,
encodes, caches and searches a handful of real messy prompts and prints results, timings and the cache hit rate.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import clipprompt as cp
from clipprompt.strategies import EXPAND_DEFAULTS

from .protocols import TextEncoder

# Real messy prompts: curly quotes, entities, full-width letters, ligatures, mixed scripts, runs of spaces.
DEMO_PROMPTS = [
    "A child holding a flowered umbrella and petting a yak .",
    "“Red” summer dress &amp;amp; straw hat,   beach  ",
    "ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖",
    "shirt白色短袖",
    "红色连衣裙 女 夏季",
    "硬い帽子をかぶった男が踊っている。",
    "ﬁne art photo of a café at night\u00a0— 4K",
    "cat food   bowl stainless",
]


def _read_inputs(args: argparse.Namespace) -> list[str]:
    if getattr(args, "text", None):
        return list(args.text)
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def _load_encoder(args: argparse.Namespace, default: str = "minilm") -> TextEncoder:
    """--clip DIR > --minilm DIR > --encoder NAME (minilm | e5 | use)."""
    kw = {"dtype": args.dtype} if getattr(args, "dtype", None) else {}
    if getattr(args, "clip", None):
        return cp.ClipTextEncoder.from_pretrained(args.clip, **kw)
    if getattr(args, "minilm", None):
        return cp.MiniLMEncoder.from_pretrained(args.minilm, **kw)
    from .multilingual import encoder_by_name

    enc: TextEncoder = encoder_by_name(getattr(args, "encoder", None) or default, **kw)
    return enc


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(cp.build_info(), indent=2, sort_keys=True))
    return 0


def _cmd_normalize(args: argparse.Namespace) -> int:
    for t in _read_inputs(args):
        print(cp.normalize(t, lowercase=args.lowercase, form=args.form))
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    tok = cp.ClipTokenizer(args.vocab) if args.vocab else cp.ClipTokenizer()
    rows = [(t, tok.encode(t)) for t in _read_inputs(args)]
    if args.json:
        print(json.dumps([{"text": t, "n_tokens": len(ids) + 2, "ids": ids} for t, ids in rows], ensure_ascii=False))
    else:
        for t, ids in rows:
            flag = "  (over 77: truncated; see sd.encode_prompt(long_prompts='chunk'))" if len(ids) + 2 > 77 else ""
            print(f"{len(ids) + 2:4d} tokens{flag}  {t!r}\n     {ids}")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from .pipeline import PromptPipeline

    texts = _read_inputs(args)
    enc = _load_encoder(args)
    pipe = PromptPipeline(enc, strategy=args.strategy, template=args.template)
    t0 = time.perf_counter()
    vecs = pipe.encode(texts, progress=args.progress)
    dt = time.perf_counter() - t0
    if args.out:
        np.save(args.out, vecs)
        print(f"wrote {args.out}: float32 {list(vecs.shape)} ({dt * 1e3:.1f} ms)")
    else:
        print(f"float32 {list(vecs.shape)}  strategy={args.strategy}  {dt * 1e3:.1f} ms")
        for t, v in zip(texts, vecs):
            print(f"  {t[:40]!r:44} [{', '.join(f'{x:+.4f}' for x in v[:6])}, ...]")
    return 0


def _cmd_expand(args: argparse.Namespace) -> int:
    from .expand import PromptExpander

    path = _pool_cache_file(args, args.pool)
    cache, _ = _open_cache(path)
    exp = PromptExpander(args.pool, _load_encoder(args, default="minilm"), cache=cache)
    if path and cache.stats()["misses"]:
        _save_cache(cache, path)
    outs = exp.expand_batch(_read_inputs(args), top_k=args.top_k, min_score=args.min_score,
                            max_tokens=args.max_tokens, mmr=args.mmr)
    if args.json:
        print(json.dumps([{"text": e.text, "added": e.added, "tokens": e.tokens} for e in outs], ensure_ascii=False))
        return 0
    for e in outs:
        print(f"{e.prompt!r}\n  -> {e.text!r}  ({e.tokens} CLIP tokens)")
        for phrase, score in e.added:
            print(f"     + {score:.3f}  {phrase}")
    return 0


def _read_corpus(path: str | None) -> list[str]:
    from .expand import read_pool

    return read_pool(path)


def _cmd_search(args: argparse.Namespace) -> int:
    from .pipeline import PromptPipeline

    corpus = _read_corpus(args.corpus)
    enc = _load_encoder(args)
    path = _pool_cache_file(args, args.corpus)
    cache, _ = _open_cache(path)
    indexer = PromptPipeline(enc, cache=cache, strategy="raw")
    indexer.add(corpus, progress=args.progress)
    if path and cache.stats()["misses"]:
        _save_cache(cache, path)
    pipe = PromptPipeline(enc, cache=cache, index=indexer.index, strategy=args.strategy, template=args.template)
    queries = _read_inputs(args)
    D, I = pipe.search(queries, args.k)
    for q, d, i in zip(queries, D, I):
        print(f"{q!r}")
        for s, j in zip(d, i):
            if j >= 0:
                print(f"   {s:.3f}  {corpus[j]}")
    return 0


def _bench_row(what: str, shape: str, times: list[float], n: int, base: float | None = None) -> dict[str, Any]:
    med = float(np.median(times))
    return {"what": what, "shape": shape, "median_ms": med * 1e3, "runs": len(times),
            "per_s": n / med if med > 0 else float("inf"), "x_baseline": (base / med) if base else 1.0}


def _cmd_bench(args: argparse.Namespace) -> int:
    """Stage timings on the shipped pool phrases: normalise, tokenize, encode cold vs cached, index search."""
    from .expand import read_pool

    texts = read_pool(None)[: args.n]
    enc = _load_encoder(args)
    tok = cp.ClipTokenizer()
    rows = []

    def timed(fn: Callable[[], object], runs: int) -> list[float]:
        fn()  # warm-up
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return ts

    n = len(texts)
    rows.append(_bench_row("normalize_batch", f"[{n}]", timed(lambda: cp.normalize_batch(texts), 5), n))
    rows.append(_bench_row("ClipTokenizer", f"[{n}, 77]", timed(lambda: tok(texts), 5), n))
    t_enc = timed(lambda: enc.encode(texts), args.runs)
    rows.append(_bench_row("encode (no cache)", f"[{n}, {enc.dim}]", t_enc, n))
    # Like with like: each "x baseline" compares the same job done two ways (a cache lookup with a dict lookup, an
    # index search with NumPy brute force); encoding has no in-process peer here (see benchmarks/bench_encode.py).
    cache = cp.PromptCache()
    cache.get_or_encode(enc, texts)
    vecs = np.ascontiguousarray(enc.encode(texts), np.float32)
    table = {(enc.fingerprint, t): v for t, v in zip(texts, vecs)}
    t_dict = timed(lambda: np.stack([table[(enc.fingerprint, t)] for t in texts]), 5)
    rows.append(_bench_row("dict lookup + np.stack (peer)", f"[{n}, {enc.dim}]", t_dict, n))
    rows.append(_bench_row("PromptCache hit", f"[{n}, {enc.dim}]", timed(lambda: cache.get_or_encode(enc, texts), 5),
                           n, float(np.median(t_dict))))
    index = cp.FlatIPIndex(vecs.shape[1])
    index.add(vecs)

    kk = min(10, n)

    def numpy_top10() -> np.ndarray:
        s = vecs @ vecs.T
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        return np.take_along_axis(part, np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable"), 1)

    t_np = timed(numpy_top10, 5)
    rows.append(_bench_row("numpy matmul+argpartition k=10 (peer)", f"[{n}] x [{n}]", t_np, n))
    rows.append(_bench_row("FlatIPIndex.search k=10", f"[{n}] x [{n}]", timed(lambda: index.search(vecs, kk), 5), n,
                           float(np.median(t_np))))
    header = {"clipprompt": cp.__version__, "python": platform.python_version(), "numpy": np.__version__,
              "machine": platform.machine(), "threads": cp.get_num_threads(), "dtype": getattr(enc, "dtype", "float32"),
              "encoder": getattr(enc, "fingerprint", "?"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_avg_1m": round(os.getloadavg()[0], 1)}
    if args.json:
        print(json.dumps({"header": header, "rows": rows}))
        return 0
    print(" | ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'what':38} | {'shape':16} | {'median ms (runs, warm-up)':26} | {'throughput':14} | x baseline")
    for r in rows:
        print(f"{r['what']:38} | {r['shape']:16} | {r['median_ms']:9.2f} ({r['runs']}, 1){'':11} | "
              f"{r['per_s']:10.0f} /s | {r['x_baseline']:.1f}")
    return 0


def cache_dir() -> str:
    """Where the CLI keeps its cache files: ``$CLIPPROMPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/clipprompt`` (when
    set to an absolute path, per the XDG base-directory spec), else ``~/.cache/clipprompt``."""
    if os.environ.get("CLIPPROMPT_CACHE_DIR"):
        return os.environ["CLIPPROMPT_CACHE_DIR"]
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clipprompt")


def _default_cache_file(name: str = "demo-cache.cpc") -> str:
    return os.path.join(cache_dir(), name)


def _pool_cache_file(args: argparse.Namespace, given_pool: str | None) -> str:
    """The persistent cache for the shipped pool (expand / search without a pool of their own); '' for none."""
    if given_pool or args.cache_file == "":
        return ""
    return args.cache_file or _default_cache_file("pool-cache.cpc")


def _open_cache(path: str) -> tuple[cp.PromptCache, str]:
    """(PromptCache, note): loaded from ``path`` when it holds a valid cache file, else a new one."""
    if path and os.path.exists(path):
        try:
            return cp.PromptCache.load(path), f"cache file {path}"
        except cp.ClipPromptError as e:  # stale or damaged: start afresh (it is rewritten below)
            return cp.PromptCache(), f"cache file {path} unreadable ({type(e).__name__}), rebuilt"
    return cp.PromptCache(), (f"new cache file {path}" if path else "no cache file")


def _save_cache(cache: cp.PromptCache, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        cache.save(tmp)
        os.replace(tmp, path)  # atomic: a concurrent run reads the old file or the new one, never half of one
    except (OSError, cp.ClipPromptError) as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        print(f"   (could not write the cache file {path}: {e})", file=sys.stderr)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .expand import PromptExpander
    from .pipeline import PromptPipeline

    info = cp.build_info()
    print(f"clipprompt {cp.__version__} | {info.get('blas')} | threads {cp.get_num_threads()}")

    t0 = time.perf_counter()
    normed = [cp.normalize(p) for p in DEMO_PROMPTS]
    dt = time.perf_counter() - t0
    print(f"\n1. normalise ({len(DEMO_PROMPTS)} prompts, {dt * 1e6:.0f} µs)")
    for raw, out in zip(DEMO_PROMPTS, normed):
        print(f"   {raw!r:58} -> {out!r}")

    tok = cp.ClipTokenizer()
    print("\n2. CLIP tokens")
    for out in normed:
        ids = list(tok.encode(out))
        print(f"   {len(ids) + 2:3d}  {out[:44]!r:48} {ids[:8]}{' ...' if len(ids) > 8 else ''}")

    t0 = time.perf_counter()
    enc = _load_encoder(args, default="e5")
    t_load = time.perf_counter() - t0
    cache, cache_note = _open_cache(args.cache_file)
    t0 = time.perf_counter()
    exp = PromptExpander(args.pool, enc, cache=cache, tokenizer=tok)
    t_pool = time.perf_counter() - t0
    pool_stats = cache.stats()
    if args.cache_file:
        _save_cache(cache, args.cache_file)
    print(f"\n3. expand ({type(enc).__name__} loaded in {t_load:.2f} s; pool of {len(exp)} phrases embedded in "
          f"{t_pool:.2f} s: "
          f"{pool_stats['hits']} from the cache file, {pool_stats['misses']} encoded; {cache_note})")
    for e in exp.expand_batch(normed, top_k=args.top_k, mmr=0.7, min_score=0.25):
        added = ", ".join(f"{p} ({s:.2f})" for p, s in e.added) or "(nothing passed the guards)"
        print(f"   {e.prompt[:44]!r:48} + {added}")

    # Search: the pool phrases are the catalogue (already embedded: reuse the expander's vectors and cache).
    print(f"\n4. search the {len(exp)}-phrase catalogue, top 3 (raw prompt vs expanded prompt)")
    plain = PromptPipeline(enc, cache=cache, index=exp.index, strategy="raw")
    grow = PromptPipeline(enc, expander=exp, cache=cache, index=exp.index, strategy="expand", top_k=args.top_k,
                          mmr=0.7, min_score=0.25)
    Dr, Ir = plain.search(DEMO_PROMPTS, 3)
    De, Ie = grow.search(DEMO_PROMPTS, 3)
    for p, dr, ir, de, ie in zip(normed, Dr, Ir, De, Ie):
        print(f"   {p[:44]!r}")
        print(f"      raw:      {' | '.join(f'{exp.pool[j]} {s:.2f}' for s, j in zip(dr, ir) if j >= 0)}")
        print(f"      expanded: {' | '.join(f'{exp.pool[j]} {s:.2f}' for s, j in zip(de, ie) if j >= 0)}")

    first = grow.stats()
    grow.reset_stats()
    t0 = time.perf_counter()
    grow.search(DEMO_PROMPTS, 3)
    t_rep = time.perf_counter() - t0
    again = grow.stats()
    print("\n5. timings (expand pipeline, per prompt) and cache")
    for stage, us in first["us_per_prompt"].items():
        print(f"   {stage:10} {us / 1e3:8.2f} ms   (repeat: {again['us_per_prompt'][stage] / 1e3:8.2f} ms)")
    print(f"   first pass: {first['cache_hits']} hits / {first['cache_misses']} misses; "
          f"repeat pass: hit rate {again['hit_rate']:.0%} ({again['cache_hits']} hits), {t_rep * 1e3:.1f} ms total")
    s = cache.stats()
    print(f"   cache: {s['entries']} entries, {s['bytes'] / 2**20:.1f} MiB, overall hit rate {s['hit_rate']:.0%}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import serve

    return serve.run(serve.config_from_args(args))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipprompt", description=(__doc__ or "").splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--clip", metavar="DIR", help="CLIP text tower (HF dir or open_clip safetensors)")
        sp.add_argument("--minilm", metavar="DIR", help="MiniLM model dir (default: the bundled one)")
        sp.add_argument("--encoder", choices=["minilm", "e5", "use"], default=None,
                        help="sentence encoder by name (default: minilm)")
        sp.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "int8"], default=None,
                        help="CPU precision of the encoder's matmuls (default: auto = float32 or bfloat16, whichever "
                             "measures faster on this CPU)")

    def strategy_args(sp: argparse.ArgumentParser, default: str = "raw") -> None:
        sp.add_argument("--strategy", default=default, choices=["raw", "keywords", "templates", "expand"])
        sp.add_argument("--template", default="imagenet7",
                        help="template set for --strategy templates (imagenet7: 7 encodes per prompt; imagenet: 80)")

    def pool_cache_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--cache-file", default=None,
                        help="PromptCache file that keeps the shipped pool's embeddings between runs (used when no "
                             f"pool/corpus is given; default: {_default_cache_file('pool-cache.cpc')}; '' for none)")

    sub.add_parser("info", help="print build_info() as JSON").set_defaults(fn=_cmd_info)

    d = sub.add_parser("demo", help="the main job on the bundled defaults")
    d.add_argument("--minilm", metavar="DIR", help="MiniLM model dir (instead of --encoder)")
    d.add_argument("--encoder", choices=["minilm", "e5", "use"], default="e5",
                   help="sentence encoder for the expansion (default: e5, multilingual)")
    d.add_argument("--pool", help="phrase pool file (default: the shipped product taxonomy)")
    d.add_argument("--top-k", type=int, default=3)
    d.add_argument("--cache-file", default=_default_cache_file(),
                   help="PromptCache file kept between runs so the pool is embedded once (default: %(default)s; "
                        "'' for none)")
    d.set_defaults(fn=_cmd_demo)

    n = sub.add_parser("normalize", help="normalise text arguments (or stdin lines)")
    n.add_argument("text", nargs="*")
    n.add_argument("--lowercase", action="store_true")
    n.add_argument("--form", default="NFKC", choices=["NFC", "NFKC", "none"])
    n.set_defaults(fn=_cmd_normalize)

    t = sub.add_parser("tokenize", help="CLIP token ids of text arguments (or stdin lines)")
    t.add_argument("text", nargs="*")
    t.add_argument("--vocab", help="another BPE vocab file")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=_cmd_tokenize)

    e = sub.add_parser("encode", help="embed text arguments (or stdin lines)")
    e.add_argument("text", nargs="*")
    model_args(e)
    strategy_args(e)
    e.add_argument("--out", help="write the vectors to this .npy file")
    e.add_argument("--progress", action="store_true")
    e.set_defaults(fn=_cmd_encode)

    x = sub.add_parser("expand", help="expand prompts with related phrases from a pool")
    x.add_argument("text", nargs="*")
    x.add_argument("--pool", help="phrase pool file (default: the shipped product taxonomy)")
    x.add_argument("--top-k", type=int, default=5)
    x.add_argument("--min-score", type=float, default=EXPAND_DEFAULTS["min_score"],
                   help="cosine floor for an added phrase (default: %(default)s, the floor measured on COCO / "
                        "Flickr30K dev; -1 keeps every candidate)")
    x.add_argument("--max-tokens", type=int, default=77)
    x.add_argument("--mmr", type=float)
    x.add_argument("--json", action="store_true")
    x.add_argument("--encoder", choices=["minilm", "e5", "use"], default="minilm",
                   help="sentence encoder (default: minilm, the encoder the default --min-score was measured with; "
                        "e5 or use for Chinese / Japanese / mixed prompts)")
    pool_cache_arg(x)
    x.set_defaults(fn=_cmd_expand)

    s = sub.add_parser("search", help="search a corpus (one text per line) with query prompts")
    s.add_argument("text", nargs="*", help="queries")
    s.add_argument("--corpus", help="corpus file (default: the shipped pool)")
    s.add_argument("-k", type=int, default=5)
    model_args(s)
    strategy_args(s)
    s.add_argument("--progress", action="store_true")
    pool_cache_arg(s)
    s.set_defaults(fn=_cmd_search)

    b = sub.add_parser("bench", help="stage timings on the shipped pool phrases")
    b.add_argument("-n", type=int, default=512, help="number of phrases")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--json", action="store_true")
    model_args(b)
    b.set_defaults(fn=_cmd_bench)

    sv = sub.add_parser("serve", help="HTTP service: embeddings, expansion, search, the inspector page (needs "
                                      "clipprompt[serve])")
    from .serve import add_arguments as serve_arguments

    serve_arguments(sv)
    sv.set_defaults(fn=_cmd_serve)

    args = p.parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except cp.ClipPromptError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
