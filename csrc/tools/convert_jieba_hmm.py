"""Convert jieba's HMM tables (jieba/finalseg/prob_{start,trans,emit}.py) into clipprompt/data/jieba/hmm_model.txt
and copy jieba's dict.txt beside it.

The C segmenter (csrc/cp_jieba.c) must reproduce jieba's Viterbi bit for bit, so every probability is written as the
16 hex digits of its IEEE-754 binary64 bit pattern (exact, and parsed without strtod, so no locale can change it).
Absent entries are simply not listed; the C side uses jieba's MIN_FLOAT (-3.14e100) for them, as
`emit_p[y].get(c, MIN_FLOAT)` does.

    python csrc/tools/convert_jieba_hmm.py [--out clipprompt/data/jieba]

Format (UTF-8 text, one record a line, '#' comments):
    start <state> <bits>            state in B M E S
    trans <from> <to> <bits>
    emit <state> <codepoint hex> <bits>
"""
import argparse
import os
import shutil
import struct

import jieba
from jieba.finalseg.prob_emit import P as EMIT
from jieba.finalseg.prob_start import P as START
from jieba.finalseg.prob_trans import P as TRANS


def bits(x: float) -> str:
    return "%016x" % struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "clipprompt", "data", "jieba"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = ["# jieba %s finalseg HMM tables (MIT licence, see LICENSE), converted by csrc/tools/convert_jieba_hmm.py"
             % jieba.__version__,
             "# values: IEEE-754 binary64 bit patterns in hex; absent entries mean MIN_FLOAT (-3.14e100)"]
    for s in "BMES":
        lines.append("start %s %s" % (s, bits(START[s])))
    for a in "BMES":
        for b, v in sorted(TRANS[a].items()):
            lines.append("trans %s %s %s" % (a, b, bits(v)))
    for s in "BMES":
        for ch, v in sorted(EMIT[s].items(), key=lambda kv: ord(kv[0])):
            lines.append("emit %s %x %s" % (s, ord(ch), bits(v)))
    with open(os.path.join(args.out, "hmm_model.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    shutil.copyfile(os.path.join(os.path.dirname(jieba.__file__), "dict.txt"), os.path.join(args.out, "dict.txt"))
    print("wrote %d HMM records and dict.txt to %s" % (len(lines) - 2, args.out))


if __name__ == "__main__":
    main()
