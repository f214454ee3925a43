"""Helpers shared by the benchmark scripts in this folder (each imports it as `_bench`; the script's own folder is
on sys.path when it runs): the repository root on sys.path, the dev data readers, the machine line, median timing
and the result-table header."""
from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DATA = os.environ.get("CLIPPROMPT_TEST_DATA", os.path.join(ROOT, "tests", "data"))

TABLE_COLUMNS = "| what | shape | {median} | throughput | x baseline |"


def captions() -> list[str]:
    """The COCO + Flickr30K dev captions (10,070 lines), in file order."""
    out = []
    for name in ("coco_dev_caps.txt", "f30k_dev_caps.txt"):
        with open(os.path.join(DATA, "captions", name), encoding="utf-8") as f:
            out += [line.rstrip("\n") for line in f if line.strip()]
    return out


def stsb_rows(lang: str) -> list[list[str]]:
    """The rows of tests/data/stsb/stsb-<lang>-dev.csv (sentence1, sentence2, score)."""
    with open(os.path.join(DATA, "stsb", f"stsb-{lang}-dev.csv"), encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def cpu_name(fallback: str | None = None) -> str:
    """The CPU model from /proc/cpuinfo, else platform.processor(), else `fallback` (default: the machine type)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or (fallback if fallback is not None else platform.machine())


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def timeit(fn, runs: int, warmup: int) -> list[float]:
    """Wall seconds of `runs` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def median_time(fn, runs: int, warmup: int = 1) -> float:
    return statistics.median(timeit(fn, runs, warmup))


def with_threads(n: int, fn):
    """fn wrapped to run with clipprompt limited to n threads (restored to the default after); returns its value."""
    import clipprompt as cp

    def run():
        cp.set_num_threads(n)
        try:
            return fn()
        finally:
            cp.set_num_threads(0)

    return run


def print_table_head(median: str = "median ms (runs, warm-up)") -> None:
    print(TABLE_COLUMNS.format(median=median))
    print("|---|---|---|---|---|")
