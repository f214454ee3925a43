"""An English phrase pool derived from captions: the frequent short phrases people use to describe photos.

    python benchmarks/make_caption_pool.py CAPTIONS [CAPTIONS ...] --out FILE [--min-count 3] [--max-words 3]

A phrase is a run of 1..max_words content words that are adjacent in a caption (no stopword or punctuation between
them: "flowered umbrella", "dump truck", "fire hydrant"), lower case, kept when it occurs in at least ``min-count``
different captions. One phrase per line, most frequent first. Build it from a split that is *not* the one you
evaluate on (eval_strategies.py also drops pool lines equal to a caption of the evaluated split).
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clipprompt as cp  # noqa: E402
from clipprompt.strategies import stopwords  # noqa: E402

_TOKEN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|[^\w\s]")


def caption_phrases(caption: str, max_words: int = 3) -> set[str]:
    """The distinct runs of 1..max_words adjacent content words of one caption."""
    stop = stopwords()
    out: set[str] = set()
    run: list[str] = []
    for tok in [*_TOKEN.findall(cp.normalize(caption, lowercase=True)), "."]:
        if tok in stop or not tok[0].isalnum() or tok.isdigit():
            for n in range(1, max_words + 1):
                out.update(" ".join(run[i:i + n]) for i in range(len(run) - n + 1))
            run = []
        else:
            run.append(tok)
    return out


def build_pool(captions, *, min_count: int = 3, max_words: int = 3) -> list[str]:
    counts: Counter = Counter()
    for c in captions:
        if c.strip():
            counts.update(caption_phrases(c, max_words))
    return [p for p, n in sorted(counts.items(), key=lambda t: (-t[1], t[0])) if n >= min_count]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captions", nargs="+", help="caption files, one caption per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-count", type=int, default=3)
    ap.add_argument("--max-words", type=int, default=3)
    args = ap.parse_args(argv)
    caps = [line for f in args.captions for line in pathlib.Path(f).read_text(encoding="utf-8").splitlines()]
    pool = build_pool(caps, min_count=args.min_count, max_words=args.max_words)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text("\n".join(pool) + "\n", encoding="utf-8")
    print(f"{len(pool)} phrases from {len(caps)} captions -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
