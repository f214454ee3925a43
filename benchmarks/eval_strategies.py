"""Do prompt strategies help retrieval? Recall@1/5/10 per strategy on real captions (5 per image).

    python benchmarks/eval_strategies.py --captions CAPS --ids IDS [--pool FILE] [--clip DIR]
                                         [--image-embeddings NPY] [--template imagenet7] [--limit N] [--json]

Protocol (text -> text, the default): for every image, one caption (``--held``, default the first) is held back as
the query; the gallery entry is the mean of the L2-normalised embeddings of the image's other captions, renormalised.
The held-back caption is turned into a user-style prompt by each strategy:

  raw        the full caption, unchanged — the upper bound (a user rarely types a whole caption);
  keywords   its content words only ("child holding flowered umbrella petting yak") — what users type;
  templates  the keywords placed in CLIP's templates, ensembled (mean of normalised embeddings, renormalised);
  expand     the keywords grown with pool phrases by PromptExpander (top_k, min_score, mmr as given).

With ``--image-embeddings`` (float32 [n_images, D], rows aligned to the unique ids in order of first appearance) and
``--clip DIR`` the gallery is the images and the queries are CLIP-encoded: true text -> image Recall@k.

Also reported per strategy: latency per prompt (cold cache: strategy + encode + search), the same with every query
repeated ``--repeat`` times in shuffled order through one PromptCache (hit rate and warm latency), and peak extra
resident memory while the strategy ran (sampled RSS). The pool must contain no text from the split: pool lines equal
(after normalisation, case-folded) to any caption of the split are removed and counted.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clipprompt as cp  # noqa: E402
from clipprompt.expand import PromptExpander, read_pool  # noqa: E402
from clipprompt.pipeline import PromptPipeline  # noqa: E402
from clipprompt.strategies import ExpandStrategy, KeywordStrategy, RawStrategy, TemplateStrategy  # noqa: E402


def load_split(caps_path, ids_path, limit=None):
    """(image ids in order of first appearance, captions per image)."""
    caps = pathlib.Path(caps_path).read_text(encoding="utf-8").splitlines()
    ids = pathlib.Path(ids_path).read_text(encoding="utf-8").splitlines()
    if len(caps) != len(ids):
        raise SystemExit(f"--captions has {len(caps)} lines but --ids has {len(ids)}")
    groups: dict[str, list[str]] = {}
    for c, i in zip(caps, ids):
        if c.strip():
            groups.setdefault(i.strip(), []).append(c)
    order = [i for i in groups if len(groups[i]) >= 2]
    if limit:
        order = order[:limit]
    return order, [groups[i] for i in order]


def clean_pool(pool_phrases, captions_per_image):
    """Drop pool lines equal (normalised, case-folded) to any caption of the split; returns (pool, n_removed)."""
    split = {cp.normalize(c, lowercase=True) for caps in captions_per_image for c in caps}
    kept = [p for p in pool_phrases if cp.normalize(p, lowercase=True) not in split]
    return kept, len(pool_phrases) - len(kept)


def recall_at(I, truth, ks=(1, 5, 10)):
    truth = np.asarray(truth)[:, None]
    return {k: float(np.mean(np.any(I[:, :k] == truth, axis=1))) for k in ks}


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms on a thread (MiB)."""

    def __enter__(self):
        import psutil

        self._p = psutil.Process()
        self.base = self.peak = self._p.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._p.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._p.memory_info().rss)
        self.mib = (self.peak - self.base) / 2**20


def build_gallery(encoder, captions_per_image, held, cache):
    """Mean of the normalised embeddings of each image's captions except the held-back one, renormalised."""
    texts, counts = [], []
    for caps in captions_per_image:
        rest = [c for j, c in enumerate(caps) if j != held % len(caps)]
        texts += [cp.normalize(c) for c in rest]
        counts.append(len(rest))
    from clipprompt.strategies import pool_vectors

    return pool_vectors(cache.get_or_encode(encoder, texts), counts)


def evaluate(encoder, captions_per_image, *, gallery=None, expander=None, template="imagenet7", held=0,
             top_k=5, min_score=None, mmr=None, repeat=3, repeat_n=200, strategies=None, progress=False, seed=0,
             expand_configs=None):
    """Run every strategy; returns a list of result dicts (one per strategy).

    ``expand_configs``: several (top_k, min_score, mmr) settings of the expand strategy, each its own row
    (default: the single one given by top_k / min_score / mmr)."""
    queries = [caps[held % len(caps)] for caps in captions_per_image]
    truth = np.arange(len(queries))
    if gallery is None:
        gallery = build_gallery(encoder, captions_per_image, held, cp.PromptCache())
    gallery = np.ascontiguousarray(gallery, np.float32)
    # User-style prompt = keywords of the held-back caption; every strategy but "raw" starts from it.
    kw = KeywordStrategy()
    user = [t[0] for t in kw.texts([cp.normalize(q) for q in queries])]
    runs = {
        "raw caption (upper bound)": (RawStrategy(), queries),
        "keywords (user prompt)": (RawStrategy(), user),
        f"templates ({template}) on keywords": (TemplateStrategy(template), user),
    }
    if expander is not None:
        for k, lo, m in expand_configs or [(top_k, min_score, mmr)]:
            label = f"expand top{k}" + (f" min{lo:g}" if lo is not None else "")
            label += f" mmr{m:g}" if m is not None else ""
            runs[f"{label} on keywords"] = (ExpandStrategy(expander, top_k=k, min_score=lo, mmr=m), user)
    if strategies:
        runs = {k: v for k, v in runs.items() if any(s in k for s in strategies)}
    rng = np.random.default_rng(seed)
    results = []
    for name, (strategy, prompts) in runs.items():
        pipe = PromptPipeline(encoder, cache=cp.PromptCache(), strategy=strategy)
        pipe.add_vectors(gallery)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            _D, I = pipe.search(prompts, 10, progress=progress)
            cold = (time.perf_counter() - t0) / len(prompts)
        rec = recall_at(I, truth)
        # Repeated queries: the first repeat_n prompts, each `repeat` times, shuffled, through the same cache.
        sub = prompts[:repeat_n]
        stream = [sub[i] for i in rng.permutation(np.repeat(np.arange(len(sub)), repeat))]
        # served as a stream in batches of 16 (repeats inside one batch are encoded once but count as misses)
        rep = PromptPipeline(encoder, cache=cp.PromptCache(), strategy=strategy, index=pipe.index, batch_size=16)
        t0 = time.perf_counter()
        rep.search(stream, 10)
        warm = (time.perf_counter() - t0) / len(stream)
        st = rep.stats()
        example = ""
        if isinstance(strategy, ExpandStrategy):
            example = expander.expand(prompts[0], **strategy.expand_kwargs).text
        elif isinstance(strategy, TemplateStrategy):
            example = strategy.texts([prompts[0]])[0][0]
        else:
            example = prompts[0]
        results.append({
            "strategy": name, "n_queries": len(prompts), "gallery": int(gallery.shape[0]),
            "r1": rec[1], "r5": rec[5], "r10": rec[10],
            "ms_per_prompt": cold * 1e3, "prompts_per_s": 1.0 / cold,
            "repeat": repeat, "repeat_hit_rate": st["hit_rate"], "repeat_ms_per_prompt": warm * 1e3,
            "peak_extra_mib": mem.mib, "example": example,
        })
    base = results[0]["ms_per_prompt"]
    for r in results:
        r["x_baseline_latency"] = r["ms_per_prompt"] / base
    return results


def header(encoder, args, extra):
    h = {
        "clipprompt": cp.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu", "threads": cp.get_num_threads(), "dtype": "float32",
        "encoder": getattr(encoder, "fingerprint", type(encoder).__name__),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }
    h.update(extra)
    return h


def print_table(h, results, out=sys.stdout):
    print(" | ".join(f"{k}={v}" for k, v in h.items()), file=out)
    print("| strategy | queries × gallery | R@1 | R@5 | R@10 | ms/prompt cold (1 run) | prompts/s | × raw latency "
          "| repeated ×{}: hit rate, ms/prompt | peak extra MiB |".format(results[0]["repeat"] if results else "-"),
          file=out)
    print("|---|---|---|---|---|---|---|---|---|---|", file=out)
    for r in results:
        print(f"| {r['strategy']} | {r['n_queries']} × {r['gallery']} | {r['r1'] * 100:.1f} | {r['r5'] * 100:.1f} | "
              f"{r['r10'] * 100:.1f} | {r['ms_per_prompt']:.2f} | {r['prompts_per_s']:.0f} | "
              f"{r['x_baseline_latency']:.1f} | {r['repeat_hit_rate'] * 100:.0f}%, {r['repeat_ms_per_prompt']:.3f} | "
              f"{r['peak_extra_mib']:.1f} |", file=out)
    for r in results:
        print(f"  e.g. {r['strategy']}: {r['example']!r}", file=out)


def _parse_config(text):
    k, lo, m = ([*text.split(":"), "-", "-"])[:3]
    return int(k), (None if lo == "-" else float(lo)), (None if m == "-" else float(m))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--pool", help="expansion pool (default: the shipped product taxonomy)")
    p.add_argument("--clip", metavar="DIR", help="CLIP text tower: queries (and the caption gallery) use it")
    p.add_argument("--minilm", metavar="DIR", help="MiniLM dir (default: the bundled model)")
    p.add_argument("--image-embeddings", metavar="NPY", help="[n_images, D] image embeddings aligned to unique ids")
    p.add_argument("--template", default="imagenet7", help="cp.templates() set (imagenet = all 80)")
    p.add_argument("--held", type=int, default=0, help="which caption of each image is the query")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--mmr", type=float, default=None)
    p.add_argument("--expand-config", action="append", metavar="K:MIN:MMR",
                   help="an expand setting (repeatable; '-' for none), e.g. 5:-:- 2:0.5:0.5; overrides the three above")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--repeat", type=int, default=3, help="times each query repeats in the cache test")
    p.add_argument("--no-expand", action="store_true")
    p.add_argument("--strategies", nargs="*", help="only these (substring match: raw keywords templates expand)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--threads", type=int, help="cp.set_num_threads(N) first (default: the library's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        cp.set_num_threads(args.threads)

    image_ids, caps = load_split(args.captions, args.ids, args.limit)
    minilm = cp.MiniLMEncoder.from_pretrained(args.minilm)
    encoder = cp.ClipTextEncoder.from_pretrained(args.clip) if args.clip else minilm
    gallery = None
    if args.image_embeddings:
        if not args.clip:
            raise SystemExit("--image-embeddings needs --clip (queries must be in the image embedding space)")
        emb = np.load(args.image_embeddings).astype(np.float32)
        if emb.ndim != 2 or emb.shape[1] != encoder.dim:
            raise SystemExit(f"--image-embeddings: expected [n_images, {encoder.dim}], got {list(emb.shape)}")
        if emb.shape[0] < len(image_ids):
            raise SystemExit(f"--image-embeddings has {emb.shape[0]} rows for {len(image_ids)} images")
        gallery = emb[: len(image_ids)]
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    expander, removed, pool_name = None, 0, "-"
    if not args.no_expand:
        pool, removed = clean_pool(read_pool(args.pool), caps)
        expander = PromptExpander(pool, minilm)
        pool_name = f"{pathlib.Path(args.pool).name if args.pool else 'shipped taxonomy'} ({len(pool)} phrases)"
    results = evaluate(encoder, caps, gallery=gallery, expander=expander, template=args.template, held=args.held,
                       top_k=args.top_k, min_score=args.min_score, mmr=args.mmr, repeat=args.repeat,
                       strategies=args.strategies, progress=args.progress,
                       expand_configs=[_parse_config(c) for c in args.expand_config or []] or None)
    h = header(encoder, args, {
        "split": pathlib.Path(args.captions).name, "images": len(caps),
        "metric": "text->image" if gallery is not None else "text->text (mean of other captions)",
        "pool": pool_name, "pool_lines_removed_as_in_split": removed,
        "expand": " ; ".join(args.expand_config) if args.expand_config else
        f"top_k={args.top_k} min_score={args.min_score} mmr={args.mmr}",
    })
    if args.json:
        print(json.dumps({"header": h, "results": results}, ensure_ascii=False))
    else:
        print_table(h, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
