"""How fast is the C normaliser against the Python reference it reproduces?

Prompts/s over the COCO + Flickr30K dev captions (tests/data/captions, 10,070 lines), same process:
  clip_clean  cp.clip_clean_batch / per-call cp.clip_clean   vs  ftfy.fix_text + html.unescape x2 + re + lower
  normalize   cp.normalize_batch  / per-call cp.normalize    vs  clipprompt.normalize_ref.normalize_reference
              (ftfy.fix_text(fix_encoding=False) + html.unescape x2 + unicodedata NFKC + width map + re)

    python benchmarks/bench_normalize.py [--runs 7] [--warmup 1] [--json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ftfy  # noqa: E402

import clipprompt as cp  # noqa: E402
from clipprompt.normalize_ref import clip_clean_reference, normalize_reference  # noqa: E402

DATA = os.environ.get("CLIPPROMPT_TEST_DATA", os.path.join(ROOT, "tests", "data"))


def captions() -> list[str]:
    out = []
    for name in ("coco_dev_caps.txt", "f30k_dev_caps.txt"):
        with open(os.path.join(DATA, "captions", name), encoding="utf-8") as f:
            out += [line.rstrip("\n") for line in f if line.strip()]
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timeit(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args()

    texts = captions()
    n = len(texts)
    threads = cp.get_num_threads()
    # Same answers before timing anything.
    assert cp._C.clip_clean_batch(texts) == [clip_clean_reference(t) for t in texts]
    assert cp.normalize_batch(texts) == [normalize_reference(t) for t in texts]

    def single_threaded(fn):
        def run():
            cp.set_num_threads(1)
            try:
                fn()
            finally:
                cp.set_num_threads(0)
        return run

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
        ts = timeit(fn, args.runs, args.warmup)
        med = statistics.median(ts)
        if is_base:
            base[group] = med
        rows.append(dict(group=group, what=what, prompts=n, median_s=med, runs=args.runs, warmup=args.warmup,
                         prompts_per_s=n / med, speedup=base[group] / med))

    info = cp.build_info()
    head = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=f"{cpu_name()}, {os.cpu_count()} CPUs", python=platform.python_version(),
                ftfy=ftfy.__version__, clipprompt=cp.__version__, utf8proc_pkgconfig=info.get("utf8proc"),
                threads=threads, data=f"COCO+F30K dev captions, {n} lines")
    if args.json:
        print(json.dumps(dict(header=head, rows=rows), indent=2))
        return 0
    print(f"# bench_normalize | {head['date']} | {head['machine']} | Python {head['python']} | ftfy {head['ftfy']} "
          f"| clipprompt {head['clipprompt']} | threads {threads} | dtype: text (UTF-8)")
    print(f"# data: {head['data']}")
    print("| what | shape | median ms (runs, warm-up) | throughput | x baseline |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']}: {r['what']} | {r['prompts']} prompts | {r['median_s'] * 1e3:.1f} "
              f"({r['runs']}, {r['warmup']}) | {r['prompts_per_s']:,.0f} prompts/s | {r['speedup']:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
