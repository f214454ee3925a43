"""Slow pure-Python twins of cp.clip_clean and cp.normalize: the oracles of tests/test_normalize.py and the baselines
of benchmarks/bench_normalize.py. They import ftfy lazily; the product itself never calls them.

clip_clean_reference(text)  OpenAI CLIP SimpleTokenizer's cleaning, verbatim:
                            whitespace_clean(basic_clean(text)).lower()
normalize_reference(text)   what cp.normalize does, spelled with ftfy, html, unicodedata and re.

fix_encoding=True (the default) runs ftfy's mojibake repair too, as CLIP does; the C code reproduces it
(csrc/text/cp_mojibake.c), and fix_encoding=False is the twin of cp.normalize(..., fix_encoding=False).
"""
from __future__ import annotations

import functools
import html
import re
import unicodedata

_WS = re.compile(r"\s+")


def clip_clean_reference(text: str, fix_encoding: bool = True) -> str:
    import ftfy

    t = ftfy.fix_text(text, fix_encoding=fix_encoding)
    t = html.unescape(html.unescape(t)).strip()  # basic_clean
    t = _WS.sub(" ", t).strip()  # whitespace_clean
    return t.lower()


@functools.cache
def _width_map() -> dict[int, str]:
    m = {0x3000: " "}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(i))
        if alt != chr(i):
            m[i] = alt
    return m


_LATIN = r"0-9A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
_CJK = (r"\u1100-\u11ff\u2e80-\u2fdf\u3005-\u3007\u3040-\u30ff\u3100-\u318f\u31f0-\u31ff\u3400-\u4dbf"
        r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff")
_SCRIPT = re.compile(f"(?<=[{_LATIN}])(?=[{_CJK}])|(?<=[{_CJK}])(?=[{_LATIN}])")


def normalize_reference(text: str, *, lowercase: bool = False, form: str | None = "NFKC", fullwidth: bool = True,
                        html_passes: int = 2, ftfy_fixes: bool = True, collapse_whitespace: bool = True,
                        script_spaces: bool = True, fix_encoding: bool = True) -> str:
    """cp.normalize in Python (returns "" where cp.normalize raises EmptyPromptError)."""
    import ftfy

    t = text
    if ftfy_fixes:
        t = ftfy.fix_text(t, fix_encoding=fix_encoding)
    for _ in range(html_passes):
        t = html.unescape(t)
    if fullwidth:
        t = t.translate(_width_map())
    if form and form.lower() != "none":
        t = unicodedata.normalize(form.upper(), t)
    if lowercase:
        t = t.lower()
    if collapse_whitespace:
        t = _WS.sub(" ", t).strip()
    if script_spaces:
        t = _SCRIPT.sub(" ", t)
    return "" if t.isspace() or not t else t
