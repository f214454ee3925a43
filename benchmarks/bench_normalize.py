"""How fast is the C normaliser against the Python reference it reproduces?

Prompts/s over the COCO + Flickr30K dev captions (tests/data/captions, 10,070 lines, almost all ASCII: the C
fast path) and, to time the full Unicode path too, the STS-B zh + ja dev sentences (6,000 lines), same process:
  clip_clean  cp.clip_clean_batch / per-call cp.clip_clean   vs  ftfy.fix_text + html.unescape x2 + re + lower
  normalize   cp.normalize_batch  / per-call cp.normalize    vs  tests/normalize_ref.py normalize_reference
              (ftfy.fix_text + html.unescape x2 + unicodedata NFKC + width map + re)

    python benchmarks/bench_normalize.py [--runs 7] [--warmup 1] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

import ftfy
from _bench import ROOT, captions, cpu_name, print_table_head, stsb_rows, timeit, utc_now, with_threads

import clipprompt as cp

sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test oracles live beside the tests
from normalize_ref import clip_clean_reference, normalize_reference


def stsb_cjk() -> list[str]:
    out = []
    for lang in ("zh", "ja"):
        for r in stsb_rows(lang):
            out += [r[0], r[1]]
    return out


def run_dataset(dname: str, texts: list[str], threads: int, runs: int, warmup: int) -> list[dict]:
    n = len(texts)
    # Same answers before timing anything.
    assert cp._C.clip_clean_batch(texts) == [clip_clean_reference(t) for t in texts]
    assert cp.normalize_batch(texts) == [normalize_reference(t) for t in texts]

    def single_threaded(fn):
        return with_threads(1, fn)

    configs = [
        ("clip_clean", "python ftfy+html+re (baseline)", lambda: [clip_clean_reference(t) for t in texts], True),
        ("clip_clean", "cp.clip_clean per call", lambda: [cp._C.clip_clean(t) for t in texts], False),
        ("clip_clean", "cp.clip_clean_batch 1 thread", single_threaded(lambda: cp._C.clip_clean_batch(texts)), False),
        ("clip_clean", f"cp.clip_clean_batch {threads} threads", lambda: cp._C.clip_clean_batch(texts), False),
        ("normalize", "python reference (baseline)", lambda: [normalize_reference(t) for t in texts], True),
        ("normalize", "cp.normalize per call", lambda: [cp.normalize(t) for t in texts], False),
        ("normalize", "cp.normalize_batch 1 thread", single_threaded(lambda: cp.normalize_batch(texts)), False),
        ("normalize", f"cp.normalize_batch {threads} threads", lambda: cp.normalize_batch(texts), False),
    ]
    rows, base = [], {}
    for group, what, fn, is_base in configs:
        ts = timeit(fn, runs, warmup)
        med = statistics.median(ts)
        if is_base:
            base[group] = med
        rows.append(dict(data=dname, group=group, what=what, prompts=n, median_s=med, runs=runs, warmup=warmup,
                         prompts_per_s=n / med, speedup=base[group] / med))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args()

    threads = cp.get_num_threads()
    datasets = [("captions", captions()), ("stsb-zh+ja", stsb_cjk())]
    rows = []
    for dname, texts in datasets:
        rows += run_dataset(dname, texts, threads, args.runs, args.warmup)
    n = sum(len(t) for _, t in datasets)

    info = cp.build_info()
    head = dict(date=utc_now(),
                machine=f"{cpu_name()}, {os.cpu_count()} CPUs", python=platform.python_version(),
                ftfy=ftfy.__version__, clipprompt=cp.__version__, utf8proc_pkgconfig=info.get("utf8proc"),
                threads=threads,
                data=f"captions = COCO+F30K dev captions; stsb-zh+ja = STS-B dev zh+ja sentences; {n} lines")
    if args.json:
        print(json.dumps(dict(header=head, rows=rows), indent=2))
        return 0
    print(f"# bench_normalize | {head['date']} | {head['machine']} | Python {head['python']} | ftfy {head['ftfy']} "
          f"| clipprompt {head['clipprompt']} | threads {threads} | dtype: text (UTF-8)")
    print(f"# data: {head['data']}")
    print_table_head()
    for r in rows:
        print(f"| {r['group']}: {r['what']} | {r['data']}, {r['prompts']} prompts | {r['median_s'] * 1e3:.1f} "
              f"({r['runs']}, {r['warmup']}) | {r['prompts_per_s']:,.0f} prompts/s | {r['speedup']:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
