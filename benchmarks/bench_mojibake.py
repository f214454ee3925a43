"""What does ftfy's mojibake repair (fix_encoding, csrc/cp_mojibake.c) cost in cp.normalize, and how fast is it?

Same process, prompts/s of cp.normalize_batch (1 thread) with fix_encoding=True (the default) against
fix_encoding=False (the baseline: the normaliser without the repair) on
  captions     COCO + Flickr30K dev captions (10,070 lines, almost all ASCII: the byte fast path)
  stsb-zh+ja   STS-B dev zh + ja sentences (6,000 lines: the code-point path, clean text)
  non-ascii    every non-ASCII line of tests/data (clean text with accents, CJK, symbols; the 11 mojibake lines too)
  mojibake     generated mojibake: the non-ASCII lines encoded as UTF-8 and decoded as Windows-1252 / MacRoman /
               Windows-1251 in turn (every line needs the repair)
and, for the mojibake rows, Python's ftfy.fix_text (+ the same html/NFKC/collapse steps: normalize_reference).

    python benchmarks/bench_mojibake.py [--runs 15] [--warmup 1] [--clock wall|thread] [--json]

The configurations of a data set are timed interleaved (run 1 of each, run 2 of each, ...). --clock thread times
with the calling thread's CPU time (time.thread_time; the batches run on this one thread), which other processes on
a shared machine disturb far less than wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from _bench import ROOT, captions, cpu_name, print_table_head, utc_now

sys.path.insert(0, os.path.join(ROOT, "tests"))

import ftfy
import ftfy.bad_codecs  # registers the sloppy-windows-* and utf-8-variants codecs
from bench_normalize import stsb_cjk
from conftest import all_text_lines
from normalize_ref import normalize_reference  # tests/: the test oracle

import clipprompt as cp


def datasets() -> list[tuple[str, list[str]]]:
    lines = all_text_lines()
    non_ascii = [t for t in lines if not t.isascii()]
    codecs = ["sloppy-windows-1252", "macroman", "sloppy-windows-1251"]
    moji = [t.encode("utf-8").decode(codecs[i % 3]) for i, t in enumerate(non_ascii)]
    return [("captions", captions()), ("stsb-zh+ja", stsb_cjk()), ("non-ascii", non_ascii), ("mojibake", moji)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for dname, texts in datasets():
        n = len(texts)
        assert cp.normalize_batch(texts) == [normalize_reference(t) for t in texts]  # same answers first
        configs = [("cp.normalize_batch fix_encoding=False (baseline)",
                    lambda t=texts: cp.normalize_batch(t, fix_encoding=False), True),
                   ("cp.normalize_batch fix_encoding=True", lambda t=texts: cp.normalize_batch(t), False)]
        if dname == "mojibake":
            configs.append(("python ftfy.fix_text + html + NFKC + re",
                            lambda ts=texts: [normalize_reference(t) for t in ts], False))
        cp.set_num_threads(1)
        try:
            # interleaved (one run of each configuration in turn), so that load drift on a shared machine hits all
            times = {what: [] for what, _, _ in configs}
            for _ in range(args.warmup):
                for _, fn, _ in configs:
                    fn()
            clock = time.thread_time if args.clock == "thread" else time.perf_counter
            for _ in range(args.runs):
                for what, fn, _ in configs:
                    t0 = clock()
                    fn()
                    times[what].append(clock() - t0)
            base = None
            for what, _fn, is_base in configs:
                med = statistics.median(times[what])
                base = med if is_base else base
                rows.append({"data": dname, "what": what, "prompts": n, "median_s": med, "runs": args.runs,
                             "warmup": args.warmup,
                                 "prompts_per_s": n / med, "x_baseline": base / med})
        finally:
            cp.set_num_threads(0)
    head = {"date": utc_now(),
                "machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
                "ftfy": ftfy.__version__, "clipprompt": cp.__version__, "threads": 1, "clock": args.clock,
                "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    if args.json:
        print(json.dumps({"header": head, "rows": rows}, indent=2))
        return 0
    print(f"# bench_mojibake | {head['date']} | {head['machine']} | Python {head['python']} | ftfy {head['ftfy']} "
          f"| clipprompt {head['clipprompt']} | threads 1 | dtype: text (UTF-8) | clock {args.clock} "
          f"| load {head['load']}")
    print_table_head()
    for r in rows:
        print(f"| {r['what']} | {r['data']}, {r['prompts']} prompts | {r['median_s'] * 1e3:.1f} ({r['runs']}, "
              f"{r['warmup']}) | {r['prompts_per_s']:,.0f} prompts/s | {r['x_baseline']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
