"""cp.normalize / cp.clip_clean against the Python reference (ftfy + html.unescape + re + str.lower)."""
import html
import re

import ftfy
import pytest

import clipprompt as cp
from conftest import all_text_lines


def clip_ref(text, fix_encoding=True):
    """OpenAI CLIP SimpleTokenizer: whitespace_clean(basic_clean(text)).lower()."""
    t = ftfy.fix_text(text, fix_encoding=fix_encoding)
    t = html.unescape(html.unescape(t)).strip()
    return re.sub(r"\s+", " ", t).strip().lower()


def test_clip_clean_every_data_line():
    lines = all_text_lines()
    ours = cp._C.clip_clean_batch(lines)
    bad = [(t, o) for t, o in zip(lines, ours) if o != clip_ref(t, fix_encoding=False)]
    assert not bad, bad[:5]


def test_normalize_example():
    assert cp.normalize("ＡＢＣ  &amp;amp; “hi”") == 'ABC & "hi"'
