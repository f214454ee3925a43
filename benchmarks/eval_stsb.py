"""STS-B evaluation: Spearman correlation between cosine similarity and the gold scores, for clipprompt's MiniLM
(C) and for sentence-transformers on the same model, in the same process.

    python benchmarks/eval_stsb.py [--csv tests/data/stsb/stsb-en-dev.csv] [--model DIR] [--json]

The csv has rows `sentence1,sentence2,score` (no header; a header row with a non-numeric score is skipped).
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

import clipprompt as cp  # noqa: E402  (after the repository root joins sys.path)


def read_pairs(path):
    pairs = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if len(row) < 3:
                continue
            try:
                pairs.append((row[0], row[1], float(row[2])))
            except ValueError:
                continue  # header
    return pairs


def spearman(x, y):
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def ours_encode(mini, sents, batch_size):
    if hasattr(cp, "WordPieceTokenizer"):
        return mini.encode(sents, batch_size=batch_size), "clipprompt WordPieceTokenizer"
    from transformers import BertTokenizerFast  # until cp.WordPieceTokenizer is merged

    tok = BertTokenizerFast.from_pretrained(mini.path)
    out = []
    for s in range(0, len(sents), batch_size):
        enc = tok(sents[s:s + batch_size], padding=True, truncation=True, max_length=mini.max_seq_length,
                  return_tensors="np")
        out.append(mini.encode((enc["input_ids"], enc["attention_mask"]), batch_size=batch_size))
    return np.concatenate(out), "transformers BertTokenizerFast (ids only)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=os.path.join(ROOT, "tests", "data", "stsb", "stsb-en-dev.csv"))
    ap.add_argument("--model", default=None, help="BERT sentence-transformers dir (default: bundled all-MiniLM-L6-v2)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-reference", action="store_true", help="skip sentence-transformers")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    pairs = read_pairs(args.csv)
    gold = np.array([s for _, _, s in pairs])
    sents = [a for a, _, _ in pairs] + [b for _, b, _ in pairs]
    n = len(pairs)
    mini = cp.MiniLMEncoder.from_pretrained(args.model)
    t = time.perf_counter()
    ours, tok_name = ours_encode(mini, sents, args.batch_size)
    t_ours = time.perf_counter() - t
    res = {"csv": args.csv, "pairs": n, "model": mini.path, "threads": cp.get_num_threads(), "tokenizer": tok_name,
           "clipprompt": {"spearman": spearman((ours[:n] * ours[n:]).sum(1), gold), "seconds": t_ours}}
    if not args.no_reference:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(mini.path, device="cpu")
        t = time.perf_counter()
        ref = st.encode(sents, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)
        t_ref = time.perf_counter() - t
        cos = (ours * ref).sum(1)
        import sentence_transformers

        res["sentence_transformers"] = {"spearman": spearman((ref[:n] * ref[n:]).sum(1), gold), "seconds": t_ref,
                                        "version": sentence_transformers.__version__}
        res["min_cosine_ours_vs_reference"] = float(cos.min())
        res["equal_to_4_decimals"] = round(res["clipprompt"]["spearman"], 4) == round(
            res["sentence_transformers"]["spearman"], 4)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"# STS-B {os.path.basename(args.csv)}: {n} pairs | {platform.processor() or platform.machine()} | "
          f"threads {res['threads']} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# model {mini.path}; our ids from {tok_name}")
    print(f"{'encoder':<24} | {'Spearman x100':>13} | {'seconds':>8}")
    print(f"{'clipprompt MiniLM (C)':<24} | {100 * res['clipprompt']['spearman']:13.4f} | {t_ours:8.2f}")
    if "sentence_transformers" in res:
        r = res["sentence_transformers"]
        print(f"{'sentence-transformers':<24} | {100 * r['spearman']:13.4f} | {r['seconds']:8.2f}")
        print(f"min cosine ours vs sentence-transformers: {res['min_cosine_ours_vs_reference']:.7f}; "
              f"Spearman equal to 4 decimals: {res['equal_to_4_decimals']}")


if __name__ == "__main__":
    main()
