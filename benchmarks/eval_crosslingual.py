"""Cross-lingual retrieval proxy on STS-B dev: every sentence1 in zh (or ja) is a query; the candidates are the
distinct English sentence1s; a hit is the English row the query was translated from. R@1 and R@5 per encoder.

    python benchmarks/eval_crosslingual.py [--encoders minilm,e5,use] [--json]

e5 uses the "query: " prefix on both sides (symmetric task, as the model card advises).
"""
import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import clipprompt as cp  # noqa: E402


def sentence1(lang):
    with open(os.path.join(ROOT, "tests", "data", "stsb", f"stsb-{lang}-dev.csv"), encoding="utf-8", newline="") as f:
        return [r[0] for r in csv.reader(f) if len(r) >= 3]


def recall(q, c, target, ks=(1, 5)):
    sims = q @ c.T
    order = np.argsort(-sims, axis=1)[:, : max(ks)]
    return {f"R@{k}": float(np.mean([target[i] in order[i, :k] for i in range(len(q))])) for k in ks}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", default="minilm,e5,use")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    en = sentence1("en")
    distinct = sorted(set(en))
    row_of = {s: i for i, s in enumerate(distinct)}
    target = np.array([row_of[s] for s in en])
    from clipprompt.multilingual import encoder_by_name

    res = {"queries": len(en), "candidates": len(distinct), "threads": cp.get_num_threads(), "results": {}}
    for name in args.encoders.split(","):
        enc = encoder_by_name(name)
        t = time.perf_counter()
        c = enc.encode(distinct, batch_size=128)
        out = {}
        for lang in ("zh", "ja"):
            q = enc.encode(sentence1(lang), batch_size=128)
            out[f"{lang}->en"] = recall(q, c, target)
        out["seconds"] = time.perf_counter() - t
        res["results"][name] = out
    if args.json:
        print(json.dumps(res, indent=2))
        return
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# cross-lingual STS-B dev: {res['queries']} zh/ja sentence1 queries -> {res['candidates']} distinct "
          f"English sentence1s | {platform.machine()} | threads {res['threads']} | {when} | load {os.getloadavg()}")
    cols = " | ".join(f"{c:>10}" for c in ("zh->en R@1", "zh->en R@5", "ja->en R@1", "ja->en R@5"))
    print(f"{'encoder':<8} | {cols} | seconds")
    for name, r in res["results"].items():
        print(f"{name:<8} | {100 * r['zh->en']['R@1']:10.1f} | {100 * r['zh->en']['R@5']:10.1f} | "
              f"{100 * r['ja->en']['R@1']:10.1f} | {100 * r['ja->en']['R@5']:10.1f} | {r['seconds']:.1f}")


if __name__ == "__main__":
    main()
