"""Shared fixtures: where the real data lives (tests/data, a vendored copy of ../shared/data)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The encoders' default dtype is "auto" (float32 or bfloat16, whichever measures faster on the CPU at hand). The
# parity tests compare against float32 references to float32 tolerances, so the suite pins "auto" to float32 here
# (subprocesses inherit it); tests/test_lowp.py removes the pin to test "auto" itself.
os.environ.setdefault("CLIPPROMPT_AUTO_DTYPE", "float32")
DATA = pathlib.Path(os.environ.get("CLIPPROMPT_TEST_DATA", ROOT / "tests" / "data"))


def read_lines(rel):
    """Non-empty lines of a data file (no trailing newline)."""
    with open(DATA / rel, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def read_stsb(lang):
    """STS-B dev pairs for en/zh/ja: list of (s1, s2, score)."""
    import csv

    with open(DATA / "stsb" / f"stsb-{lang}-dev.csv", encoding="utf-8", newline="") as f:
        return [(r[0], r[1], float(r[2])) for r in csv.reader(f)]


def all_text_lines():
    """Every line of text in the shared data: captions, STS-B en/zh/ja sentences, taxonomy, CLIP prompts.md."""
    lines = read_lines("captions/coco_dev_caps.txt") + read_lines("captions/f30k_dev_caps.txt")
    for lang in ("en", "zh", "ja"):
        for a, b, _ in read_stsb(lang):
            lines += [a, b]
    lines += read_lines("pool/google_product_taxonomy_en.txt")
    lines += read_lines("clip/prompts.md")
    return lines


@pytest.fixture(scope="session")
def data_dir():
    assert DATA.is_dir(), f"test data missing at {DATA}"
    return DATA
