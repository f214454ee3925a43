#!/usr/bin/env python3
"""Generate the tables of ftfy's mojibake repair in C (csrc/cp_mojibake.c) from ftfy 6.x and Python's codecs.

    python csrc/tools/gen_mojibake_tables.py        # rewrites csrc/cp_mojibake_tables.inc

Outputs (csrc/cp_mojibake_tables.inc):
  CP_MJ_DENSE[0x500] / CP_MJ_SPARSE   per code point a bit mask: ftfy.badness.MOJIBAKE_CATEGORIES membership (the
                                      character classes of BADNESS_RE), ftfy.chardata.UTF8_CLUES membership (the
                                      classes of UTF8_DETECTOR_RE), re's \\s, [a-zA-Z], [a-z], [a-z.,?!], and "first
                                      character of a literal BADNESS_RE alternative".
  CP_MJ_ENC                           for every non-ASCII code point (and U+001A, U+FFFD) that one of
                                      ftfy.chardata.CHARMAP_ENCODINGS can encode: the mask of encodings that can, and
                                      its byte in each (the order of CHARMAP_ENCODINGS).
  CP_MJ_CP1252                        strict windows-1252 decoding of bytes 0x80-0x9F (0 = undefined).
  CP_MJ_SLOPPY1252                    sloppy-windows-1252 decoding of bytes 0x80-0x9F (ftfy.fixes.fix_c1_controls).
  CP_MJ_WORD                          re's \\w (str patterns) as code-point ranges.
Everything is read from ftfy's own definitions and Python's codecs, and cross-checked against
ftfy.chardata.possible_encoding.
"""
from __future__ import annotations

import os
import re
import sys
import unicodedata

import ftfy
import ftfy.bad_codecs  # registers the sloppy-windows-* and utf-8-variants codecs
from ftfy import chardata
from ftfy.badness import MOJIBAKE_CATEGORIES

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.dirname(HERE)

CATS = ["common", "c1", "bad", "law", "currency", "start_punctuation", "end_punctuation", "numeric", "kaomoji",
        "upper_accented", "lower_accented", "upper_common", "lower_common", "box"]
CLUES = ["utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4", "utf8_continuation", "utf8_continuation_strict"]
# First characters of the BADNESS_RE alternatives written with literal characters (hand-listed from badness.py;
# the C matcher only looks at positions whose character has some bit set).
LIT_FIRST = "Œœ°ÂÃÎÐ×ØÙà√≈‚вВГРСβΒΓΞΟā"
BITS = CATS + ["az_AZ", "a_z", "a_z_punct", "space", "lit"] + CLUES
BMP = 0x10000


def masks() -> list[int]:
    m = [0] * BMP
    for bit, name in enumerate(BITS):
        if name in MOJIBAKE_CATEGORIES:
            rx = re.compile("[" + MOJIBAKE_CATEGORIES[name] + "]")
            assert max(map(ord, MOJIBAKE_CATEGORIES[name])) < BMP
        elif name in chardata.UTF8_CLUES:
            rx = re.compile("[" + chardata.UTF8_CLUES[name] + "]")
            assert max(map(ord, chardata.UTF8_CLUES[name])) < BMP
        elif name == "az_AZ":
            rx = re.compile("[a-zA-Z]")
        elif name == "a_z":
            rx = re.compile("[a-z]")
        elif name == "a_z_punct":
            rx = re.compile("[a-z.,?!]")
        elif name == "space":
            rx = re.compile(r"\s")
            assert not any(rx.match(chr(c)) for c in range(BMP, 0x110000))
        elif name == "lit":
            rx = re.compile("[" + LIT_FIRST + "]")
        else:
            raise AssertionError(name)
        for c in range(BMP):
            if c not in range(0xD800, 0xE000) and rx.match(chr(c)):
                m[c] |= 1 << bit
    return m


def word_ranges() -> list[tuple[int, int]]:
    rx = re.compile(r"\w")
    out: list[tuple[int, int]] = []
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        if rx.match(chr(c)):
            if out and out[-1][1] == c - 1:
                out[-1] = (out[-1][0], c)
            else:
                out.append((c, c))
    return out


def encodings() -> tuple[list[tuple[int, int, list[int]]], list[str]]:
    encs = list(chardata.CHARMAP_ENCODINGS)
    table: dict[int, list[int]] = {}
    for k, enc in enumerate(encs):
        byte_range = bytes(list(range(0x80, 0x100)) + [0x1A])
        dec = byte_range.decode(enc)
        # ASCII (except 0x1A) is the identity in every one of them
        assert bytes(range(0x80)).decode(enc)[:0x1A] == "".join(map(chr, range(0x1A)))
        for b, ch in zip(byte_range, dec):
            assert ch.encode(enc) == bytes([b]), (enc, b, ch)
            if ord(ch) < 0x80 and ord(ch) != 0x1A:
                continue
            ent = table.setdefault(ord(ch), [0] * len(encs))
            ent[k] = b
    rows = []
    for cp in sorted(table):
        mask = 0
        for k, enc in enumerate(encs):
            ok = chardata.possible_encoding(chr(cp), enc)
            assert ok == (table[cp][k] != 0 or (cp == 0x1A and False)), (cp, enc)
            if ok:
                mask |= 1 << k
        rows.append((cp, mask, table[cp]))
    # ASCII other than 0x1A is possible in every encoding; 0x1A only where it is in the table above
    for c in range(0x80):
        if c != 0x1A:
            assert all(chardata.possible_encoding(chr(c), e) for e in encs)
    return rows, encs


def main() -> None:
    m = masks()
    lines = [(f"/* ftfy {ftfy.__version__} mojibake-repair tables.\n * GENERATED by csrc/tools/gen_mojibake_tables.py "
             f"from Python {sys.version.split()[0]} (unicodedata {unicodedata.unidata_version}) -- do not edit by "
             "hand; rerun the script. */"), ""]
    for bit, name in enumerate(BITS):
        lines.append(f"#define MJ_{name.upper()} (1u << {bit})")
    lines.append("")
    dense = 0x500
    lines.append(f"#define CP_MJ_DENSE_N {dense:#x}")
    lines.append("static const uint32_t CP_MJ_DENSE[CP_MJ_DENSE_N] = {")
    for i in range(0, dense, 8):
        lines.append("    " + ", ".join(f"{m[c]:#x}" for c in range(i, i + 8)) + ",")
    lines.append("};")
    sparse = [(c, m[c]) for c in range(dense, BMP) if m[c]]
    lines.append(f"#define CP_MJ_SPARSE_N {len(sparse)}")
    lines.append("static const uint32_t CP_MJ_SPARSE[CP_MJ_SPARSE_N][2] = {")
    for i in range(0, len(sparse), 6):
        lines.append("    " + " ".join(f"{{{c:#x}, {v:#x}}}," for c, v in sparse[i:i + 6]))
    lines.append("};")
    lines.append("")
    rows, encs = encodings()
    lines.append("/* " + ", ".join(f"{k}: {e}" for k, e in enumerate(encs)) + " */")
    lines.append(f"#define CP_MJ_NENC {len(encs)}")
    for k, e in enumerate(encs):
        lines.append(f"#define MJ_ENC_{re.sub('[^A-Z0-9]', '_', e.upper())} {k}")
    lines.append(f"#define CP_MJ_ENC_N {len(rows)}")
    lines.append("static const cp_mj_enc CP_MJ_ENC[CP_MJ_ENC_N] = {")
    for cp, mask, bs in rows:
        lines.append(f"    {{{cp:#x}, {mask:#x}, {{" + ", ".join(f"{b:#x}" for b in bs) + "}},")
    lines.append("};")
    lines.append("")
    w1252 = []
    for b in range(0x80, 0xA0):
        try:
            w1252.append(ord(bytes([b]).decode("windows-1252")))
        except UnicodeDecodeError:
            w1252.append(0)
    lines.append("static const uint32_t CP_MJ_CP1252[0x20] = {" + ", ".join(f"{x:#x}" for x in w1252) + "};")
    sloppy = [ord(bytes([b]).decode("sloppy-windows-1252")) for b in range(0x80, 0xA0)]
    from ftfy.fixes import fix_c1_controls

    assert all(fix_c1_controls(chr(b)) == chr(x) for b, x in zip(range(0x80, 0xA0), sloppy))
    lines.append("static const uint32_t CP_MJ_SLOPPY1252[0x20] = {" + ", ".join(f"{x:#x}" for x in sloppy) + "};")
    lines.append("")
    wr = word_ranges()
    lines.append(f"#define CP_MJ_WORD_N {len(wr)}")
    lines.append("static const uint32_t CP_MJ_WORD[CP_MJ_WORD_N][2] = {")
    for i in range(0, len(wr), 6):
        lines.append("    " + " ".join(f"{{{a:#x}, {b:#x}}}," for a, b in wr[i:i + 6]))
    lines.append("};")
    with open(os.path.join(CSRC, "cp_mojibake_tables.inc"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"dense {dense}, sparse {len(sparse)}, encodable {len(rows)}, word ranges {len(wr)}")


if __name__ == "__main__":
    main()
