"""Words of a prompt: the shipped stopwords, content words and the keyword form.

The lowest Python layer above ``clipprompt._C``: the strategies (``strategies.py``), the expander's guards
(``expand.py``), the pipeline and the SD windowing import from here, and this module imports none of them.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources

import clipprompt as cp

__all__ = ["CJK_CHAR", "content_words", "data_text", "keywords", "stopwords"]

# A word: letters/digits, with inner apostrophes or hyphens ("t-shirt", "men's"). Applied to each segment.
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
# One character of a script written without spaces (kana, CJK ideographs, Hangul): such text needs cp.segment.
CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def data_text(name: str) -> str:
    """The text of a file shipped in ``clipprompt/data/``."""
    return resources.files("clipprompt").joinpath("data").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def stopwords() -> frozenset[str]:
    """The shipped stopword set (English + Chinese function words), lower case."""
    words = set()
    for name in ("stopwords_en.txt", "stopwords_zh.txt"):
        for line in data_text(name).splitlines():
            word = line.strip()
            if word and not word.startswith("#"):
                words.add(word)
    return frozenset(words)


def _segments(text: str, lang: str) -> list[str]:
    # Whitespace split is exact for space-delimited scripts; CJK runs need the segmenter (C, cp.segment).
    if CJK_CHAR.search(text) is None:
        return text.split()
    return cp.segment(text, lang=lang)


def content_words(text: str, *, lang: str = "auto", normalized: bool = False,
                  words: Sequence[str] | None = None) -> list[str]:
    """Lower-cased content words of ``text`` in order, first occurrence only (stopwords and punctuation dropped).

    ``words``: the prompt's segmentation if already computed (``cp.segment`` output); ``normalized``: ``text`` is
    already ``cp.normalize``-d (skips the call). Raises EmptyPromptError for empty / whitespace-only text.
    """
    text = text.lower() if normalized else cp.normalize(text, lowercase=True)
    segs = words if words is not None else _segments(text, lang)
    stop = stopwords()
    out: list[str] = []
    seen: set[str] = set()
    for seg in segs:
        for w in _WORD.findall(seg.lower()):
            if w in stop or w in seen:
                continue
            seen.add(w)
            out.append(w)
    return out


def keywords(text: str, *, lang: str = "auto", normalized: bool = False, words: Sequence[str] | None = None) -> str:
    """The keyword prompt: content words joined by spaces ("A child holding a flowered umbrella." ->
    "child holding flowered umbrella"). Falls back to the (normalised) text when every word is a stopword."""
    ws = content_words(text, lang=lang, normalized=normalized, words=words)
    if ws:
        return " ".join(ws)
    return text if normalized else cp.normalize(text)
