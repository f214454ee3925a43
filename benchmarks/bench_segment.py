"""What CJK segmentation does to CLIP tokens, and how fast it is.

For STS-B zh/ja dev (both columns, 3000 sentences each):
  1. CLIP tokens per prompt (SOT + BPE + EOT) and the share of prompts over 77 tokens, raw vs segmented
     (cp.segment_join: words separated by spaces) — with cp.ClipTokenizer when this build has it, otherwise
     open_clip's SimpleTokenizer (the header says which);
  2. segmentation speed: cp.segment / cp.segment_batch vs jieba.lcut (zh) and vs fugashi (MeCab from Python, ja),
     each baseline run in the same process.

    python benchmarks/bench_segment.py [--runs 7] [--json out.json]
"""
import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import time

from _bench import median_time, print_table_head, stsb_rows, with_threads

import clipprompt as cp
from clipprompt import _C


def stsb(lang):
    rows = stsb_rows(lang)
    return [r[0] for r in rows] + [r[1] for r in rows]


def clip_counter():
    """(name, fn(text) -> number of CLIP tokens including SOT/EOT)."""
    if hasattr(cp, "ClipTokenizer"):
        tok = cp.ClipTokenizer()
        return "cp.ClipTokenizer", lambda s: len(tok.encode(s)) + 2
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    return "open_clip SimpleTokenizer", lambda s: len(tok.encode(s)) + 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    import fugashi

    data = {"zh": stsb("zh"), "ja": stsb("ja")}
    tname, count = clip_counter()
    mecab = _C.mecab_info()
    t0 = time.perf_counter()
    _C.jieba_info()  # first use loads the bundled dictionary
    load_s = time.perf_counter() - t0

    import importlib.metadata as md

    print(f"# bench_segment  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"# clipprompt {cp.__version__} | jieba {jieba.__version__} | fugashi {md.version('fugashi')} | "
          f"MeCab {mecab['version']} dic {mecab['dicdir']} | Python {platform.python_version()}")
    print(f"# machine {platform.machine()} {os.cpu_count()} CPUs | cp threads {cp.get_num_threads()} | "
          f"load avg {os.getloadavg()[0]:.1f} | CLIP token counts: {tname} | dictionary load {load_s * 1e3:.0f} ms")
    results = {"tokens": [], "speed": [], "tokenizer": tname, "dict_load_ms": load_s * 1e3}

    print("\n## CLIP tokens per prompt (incl. SOT/EOT), raw vs segmented")
    print("| set | prompts | raw mean | segmented mean | raw max | seg max | raw > 77 | seg > 77 |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, sents in data.items():
        raw = [count(s) for s in sents]
        seg = [count(_C.segment_join(s, "auto")) for s in sents]
        row = dict(set=f"STS-B {lang} dev", n=len(sents), raw_mean=statistics.mean(raw), seg_mean=statistics.mean(seg),
                   raw_max=max(raw), seg_max=max(seg), raw_over=sum(r > 77 for r in raw) / len(raw),
                   seg_over=sum(r > 77 for r in seg) / len(seg))
        results["tokens"].append(row)
        print(f"| {row['set']} | {row['n']} | {row['raw_mean']:.1f} | {row['seg_mean']:.1f} | {row['raw_max']} | "
              f"{row['seg_max']} | {100 * row['raw_over']:.2f}% | {100 * row['seg_over']:.2f}% |")

    tagger = fugashi.GenericTagger(" ".join((["-r", "/etc/mecabrc"] if os.path.exists("/etc/mecabrc") else
                                             ["-r", "/dev/null"]) +
                                             (["-d", mecab["dicdir"]] if mecab["dicdir"] else [])))
    zh, ja = data["zh"], data["ja"]
    nthreads = cp.get_num_threads()

    def batch1(texts, lang):
        return with_threads(1, lambda: cp.segment_batch(texts, lang))()

    configs = [
        ("zh", "jieba.lcut (baseline)", lambda: [jieba.lcut(s) for s in zh], True),
        ("zh", "cp._C.jieba_lcut (exact jieba output)", lambda: [_C.jieba_lcut(s) for s in zh], False),
        ("zh", "cp.segment(s, 'zh')", lambda: [cp.segment(s, "zh") for s in zh], False),
        ("zh", "cp.segment(s) auto", lambda: [cp.segment(s) for s in zh], False),
        ("zh", "cp.segment_batch(zh, 'zh'), 1 thread", lambda: batch1(zh, "zh"), False),
        ("zh", f"cp.segment_batch(zh, 'zh'), {nthreads} threads", lambda: cp.segment_batch(zh, "zh"), False),
        ("ja", "fugashi surfaces (baseline)", lambda: [[w.surface for w in tagger(s)] for s in ja], True),
        ("ja", "cp.segment(s, 'ja')", lambda: [cp.segment(s, "ja") for s in ja], False),
        ("ja", "cp.segment_batch(ja, 'ja'), 1 thread", lambda: batch1(ja, "ja"), False),
        ("ja", f"cp.segment_batch(ja, 'ja'), {nthreads} threads", lambda: cp.segment_batch(ja, "ja"), False),
    ]
    print(f"\n## Segmentation speed (median of {args.runs} runs, 1 warm-up; same process)")
    print_table_head()
    base = {}
    for lang, what, fn, is_base in configs:
        t = median_time(fn, args.runs)
        n = len(data[lang])
        if is_base:
            base[lang] = t
        row = dict(lang=lang, what=what, n=n, median_ms=t * 1e3, per_s=n / t, x=base[lang] / t)
        results["speed"].append(row)
        print(f"| {what} | {n} STS-B {lang} sentences | {t * 1e3:.1f} ({args.runs}, 1) | {n / t:,.0f} sent/s | "
              f"{row['x']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
