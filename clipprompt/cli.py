"""Command line: python -m clipprompt {demo,normalize,tokenize,encode,expand,search,bench,info}.

`demo` is the README's main job on the bundled defaults; it grows as the parts land.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import clipprompt as cp

# Real messy prompts: curly quotes, entities, full-width letters, ligatures, mixed scripts, runs of spaces.
DEMO_PROMPTS = [
    "A child holding a flowered umbrella and petting a yak .",
    "“Red” summer dress &amp;amp; straw hat,   beach  ",
    "ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖",
    "shirt白色短袖",
    "红色连衣裙 女 夏季",
    "硬い帽子をかぶった男が踊っている。",
    "ﬁne art photo of a café at night\u00a0— 4K",
]


def _cmd_info(args) -> int:
    print(json.dumps(cp.build_info(), indent=2, sort_keys=True))
    return 0


def _read_inputs(args) -> list[str]:
    if args.text:
        return list(args.text)
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def _cmd_normalize(args) -> int:
    for t in _read_inputs(args):
        print(cp.normalize(t, lowercase=args.lowercase, form=args.form))
    return 0


def _cmd_demo(args) -> int:
    print("clipprompt", cp.__version__, "|", cp.build_info()["blas"])
    t0 = time.perf_counter()
    normed = cp.normalize_batch(DEMO_PROMPTS)
    dt = time.perf_counter() - t0
    print(f"\nnormalise ({len(DEMO_PROMPTS)} prompts, {dt * 1e6:.0f} µs):")
    for raw, out in zip(DEMO_PROMPTS, normed):
        print(f"  {raw!r:55} -> {out!r}")
    if hasattr(cp, "ClipTokenizer"):
        tok = cp.ClipTokenizer()
        ids = tok(normed)
        print("\nCLIP tokens (first 12 ids of each):")
        for out, row in zip(normed, ids):
            print(f"  {out[:40]!r:44} {row[:12].tolist()}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipprompt", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print build_info() as JSON").set_defaults(fn=_cmd_info)
    sub.add_parser("demo", help="the main job on the bundled defaults").set_defaults(fn=_cmd_demo)
    n = sub.add_parser("normalize", help="normalise text arguments (or stdin lines)")
    n.add_argument("text", nargs="*")
    n.add_argument("--lowercase", action="store_true")
    n.add_argument("--form", default="NFKC", choices=["NFC", "NFKC", "none"])
    n.set_defaults(fn=_cmd_normalize)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except cp.ClipPromptError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
